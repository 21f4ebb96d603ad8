//! The configuration file: bytes written to a file and loaded by `Config::load_from` (the systemd
//! `EnvironmentFile=` syntax of `config::file`, then every value through `config::values` and the per-key checks),
//! with an empty environment. Loading must give a configuration or a list of problems, never a panic, and secrets
//! must stay masked. Each value is also fed to the value parsers directly, which must agree with themselves
//! (a parsed duration printed with `human` parses back to the same duration).
//!
//! Input: the first byte's bit 0 selects demo mode; the rest is the file.
#![no_main]

use std::collections::HashMap;
use std::io::{Seek, Write};
use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use xyte_edge::config::{Config, LoadOptions, values};

const SECRET_KEYS: [&str; 4] = ["XYTE_API_KEY", "XYTE_USER_TOKEN", "XYTE_OAUTH_TOKEN", "XYTE_WEBHOOK_SECRET"];

/// One file per process, rewritten for every input (under `$TMPDIR`, removed at exit).
static FILE: LazyLock<Mutex<tempfile::NamedTempFile>> =
    LazyLock::new(|| Mutex::new(tempfile::NamedTempFile::new().expect("config file")));

fuzz_target!(|data: &[u8]| {
    let Some((&options, text)) = data.split_first() else { return };
    let mut file = FILE.lock().expect("file lock");
    let f = file.as_file_mut();
    f.set_len(0).expect("truncate");
    f.rewind().expect("rewind");
    f.write_all(text).expect("write");
    let opts = LoadOptions { path: Some(file.path().to_path_buf()), demo: options & 1 != 0 };
    match Config::load_from(&opts, &HashMap::new()) {
        Ok(config) => {
            for e in config.effective.iter().filter(|e| SECRET_KEYS.contains(&e.key)) {
                assert!(e.value.is_empty() || e.value == "***", "{} shown as {:?}", e.key, e.value);
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            let _ = e.to_string();
        }
    }
    if let Ok(text) = std::str::from_utf8(text) {
        text.lines().filter_map(|l| l.split_once('=')).for_each(|(key, value)| check_values(key, value));
    }
});

fn check_values(key: &str, value: &str) {
    if let Ok(d) = values::duration(value) {
        let shown = values::human(d);
        assert_eq!(values::duration(&shown), Ok(d), "{value:?} → {d:?} → {shown:?}");
    }
    if let Ok(n) = values::integer_in(value, 1, 6000) {
        assert!((1..=6000).contains(&n));
    }
    let _ = values::boolean(value);
    assert!(values::list(value).iter().all(|item| !item.is_empty() && item.trim() == item), "{value:?}");
    let _ = (values::socket_addr(value), values::ip(value));
    if key.len() + value.len() > 512 {
        return; // quadratic; the daemon only measures key names
    }
    let d = values::distance(key, value);
    assert_eq!(d, values::distance(value, key), "{key:?} {value:?}");
    assert!(d <= key.chars().count().max(value.chars().count()), "{key:?} {value:?}");
}
