use super::*;
use std::io::Write;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
    p
}

fn with_file(text: &str) -> (tempfile::TempDir, LoadOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "xyte-edge.conf", text);
    (dir, LoadOptions { path: Some(path), demo: false })
}

fn problems(err: ConfigError) -> Vec<String> {
    err.problems.iter().map(|p| p.to_string()).collect()
}

#[test]
fn defaults_with_only_a_key() {
    let (_d, opts) = with_file("XYTE_API_KEY=abc123\n");
    let c = Config::load_from(&opts, &env(&[])).unwrap();
    assert_eq!(c.base_url, DEFAULT_BASE_URL);
    assert_eq!(c.cache_ttl, Duration::from_secs(60));
    assert_eq!(c.poll_interval, Some(Duration::from_secs(30)));
    assert_eq!(c.rate_limit_per_min, 60);
    assert_eq!(c.request_timeout, Duration::from_secs(15));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/xyte-edge"));
    assert_eq!(c.mcp_socket, PathBuf::from("/run/xyte-edge/mcp.sock"));
    assert_eq!(c.mcp_socket_role, Role::Operator);
    assert_eq!(c.http_listen, vec!["0.0.0.0:8443".parse().unwrap()]);
    assert_eq!(c.http_local_listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(c.command_ttl, Duration::from_secs(600));
    assert_eq!((c.event_retention_days, c.event_retention_rows), (14, 200_000));
    assert_eq!(c.max_connections, 1024);
    assert!(!c.read_only && !c.experimental_apis && c.tls.is_none() && c.webhook_secret.is_none());
    assert!(c.allowed_hosts.contains(&"localhost".to_string()));
    assert_eq!(c.credential, Some(XyteCredential::ApiKey(Secret::new("abc123".into()))));
}

/// The `KEYS` table is the one place defaults are written: an empty configuration shows each of them as in force,
/// `Config::defaults` (what `App::new` starts from) equals a loaded empty configuration, and a value that fails to
/// parse is replaced by the table's default while the problem refuses the configuration.
#[test]
fn every_default_is_what_an_empty_configuration_holds() {
    let mut layers = Layers::defaults();
    let defaults = build(&mut layers, &LoadOptions::default(), &HashMap::new(), None, false);
    assert!(layers.problems.is_empty() && layers.warnings.is_empty(), "{:?} {:?}", layers.problems, layers.warnings);
    let (_d, opts) = with_file("XYTE_API_KEY=k\n");
    let loaded = Config::load_from(&opts, &env(&[])).unwrap();
    for k in KEYS.iter().filter(|k| !k.default.is_empty()) {
        for c in [&defaults, &loaded] {
            let e = c.effective.iter().find(|e| e.key == k.name).unwrap();
            assert_eq!((e.value.as_str(), e.source.as_str()), (k.default, "default"), "{}", k.name);
        }
    }
    let typed = |c: Config| {
        format!("{:?}", Config { config_file: None, credential: None, effective: vec![], warnings: vec![], ..c })
    };
    assert_eq!(typed(Config::defaults()), typed(loaded));

    let mut layers = Layers::defaults();
    layers.values.insert("XYTE_RATE_LIMIT", ("lots".into(), Source::Env));
    let c = build(&mut layers, &LoadOptions::default(), &HashMap::new(), None, false);
    assert_eq!((c.rate_limit_per_min, c.outbox_max, layers.problems.len()), (60, 300, 1));
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let (_d, opts) = with_file("XYTE_API_KEY=from-file\nXYTE_CACHE_TTL=120\nXYTE_ENV=staging\n");
    let c = Config::load_from(&opts, &env(&[("XYTE_CACHE_TTL", "5m"), ("XYTE_API_KEY", "from-env")])).unwrap();
    assert_eq!(c.cache_ttl, Duration::from_secs(300));
    assert_eq!(c.env_label, "staging");
    assert_eq!(c.credential, Some(XyteCredential::ApiKey(Secret::new("from-env".into()))));
    let ttl = c.effective.iter().find(|e| e.key == "XYTE_CACHE_TTL").unwrap();
    assert_eq!((ttl.value.as_str(), ttl.source.as_str()), ("5m", "environment"));
    let label = c.effective.iter().find(|e| e.key == "XYTE_ENV").unwrap();
    assert_eq!(label.source, "file line 3");
}

#[test]
fn credential_precedence_user_then_oauth_then_key() {
    let base = [("XYTE_API_KEY", "k"), ("XYTE_OAUTH_TOKEN", "xoat_t"), ("XYTE_USER_TOKEN", "u")];
    let opts = LoadOptions::default();
    let c = Config::load_from(&LoadOptions { path: Some("/nonexistent-ok".into()), ..opts.clone() }, &env(&base));
    assert!(c.is_err(), "an explicit --config that does not exist is a problem");
    let dir = tempfile::tempdir().unwrap();
    let empty = write_file(dir.path(), "empty.conf", "");
    let opts = LoadOptions { path: Some(empty), demo: false };
    let c = Config::load_from(&opts, &env(&base)).unwrap();
    assert!(matches!(c.credential, Some(XyteCredential::UserToken(_))));
    let c = Config::load_from(&opts, &env(&base[..2])).unwrap();
    assert!(matches!(c.credential, Some(XyteCredential::OAuth(_))));
    let c = Config::load_from(&opts, &env(&base[..1])).unwrap();
    assert!(matches!(c.credential, Some(XyteCredential::ApiKey(_))));
}

#[test]
fn every_problem_is_reported_at_once() {
    let (_d, opts) = with_file(
        "XYTE_CACHE_TLL=5\nXYTE_RATE_LIMIT=lots\nXYTE_LOG_FORMAT=xml\nXYTE_HTTP_LOCAL_LISTEN=0.0.0.0:8080\n\
         XYTE_MCP_SOCKET_ROLE=root\nXYTE_TLS_CERT=/etc/cert.pem\nthis is not an assignment\nXYTE_SYSLOG=carrier-pigeon\n",
    );
    let got = problems(Config::load_from(&opts, &env(&[])).unwrap_err());
    let expect = [
        "XYTE_CACHE_TLL: unknown key",
        "did you mean XYTE_CACHE_TTL?",
        "XYTE_RATE_LIMIT: invalid value \"lots\"",
        "XYTE_LOG_FORMAT: invalid value \"xml\"",
        "XYTE_HTTP_LOCAL_LISTEN",
        "XYTE_ALLOW_PLAINTEXT_LAN=true",
        "XYTE_MCP_SOCKET_ROLE: invalid value \"root\"",
        "XYTE_TLS_KEY",
        "line 7: expected KEY=VALUE",
        "XYTE_SYSLOG",
        "XYTE_API_KEY: no Xyte credential",
    ];
    for e in expect {
        assert!(got.iter().any(|p| p.contains(e)), "missing {e:?} in {got:#?}");
    }
    assert_eq!(got.len(), 9, "{got:#?}");
}

#[test]
fn secrets_are_masked_in_problems_debug_and_effective_values() {
    let (_d, opts) = with_file("XYTE_API_KEY=super-secret-key-1\nXYTE_WEBHOOK_SECRET=short-secret\n");
    let err = Config::load_from(&opts, &env(&[])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("XYTE_WEBHOOK_SECRET: must be at least 16 characters"), "{text}");
    assert!(!text.contains("short-secret") && !text.contains("super-secret-key-1"));

    let (_d, opts) = with_file("XYTE_API_KEY=super-secret-key-1\nXYTE_WEBHOOK_SECRET=long-enough-webhook-secret\n");
    let c = Config::load_from(&opts, &env(&[])).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("super-secret-key-1") && !debug.contains("long-enough-webhook-secret"), "{debug}");
    for e in &c.effective {
        assert!(!e.value.contains("super-secret") && !e.value.contains("long-enough"), "{e:?}");
    }
    let key = c.effective.iter().find(|e| e.key == "XYTE_API_KEY").unwrap();
    assert_eq!(key.value, "***");
}

#[test]
fn secret_files_and_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_file(dir.path(), "key", "file-key\n");
    let empty = write_file(dir.path(), "empty.conf", "");
    let opts = LoadOptions { path: Some(empty), demo: false };

    let c = Config::load_from(&opts, &env(&[("XYTE_API_KEY_FILE", key_file.to_str().unwrap())])).unwrap();
    assert_eq!(c.credential, Some(XyteCredential::ApiKey(Secret::new("file-key".into()))));

    let both = env(&[("XYTE_API_KEY_FILE", key_file.to_str().unwrap()), ("XYTE_API_KEY", "x")]);
    assert!(problems(Config::load_from(&opts, &both).unwrap_err())[0].contains("not both"));

    let missing = env(&[("XYTE_API_KEY_FILE", "/nonexistent/key")]);
    assert!(
        problems(Config::load_from(&opts, &missing).unwrap_err())[0]
            .contains("cannot read secret file /nonexistent/key")
    );
    let zeros = env(&[("XYTE_API_KEY_FILE", "/dev/zero")]);
    assert!(problems(Config::load_from(&opts, &zeros).unwrap_err())[0].contains("is larger than 65536 bytes"));

    let creds = tempfile::tempdir().unwrap();
    write_file(creds.path(), "xyte-api-key", "cred-key\n");
    write_file(creds.path(), "webhook-secret", "0123456789abcdef0123\n");
    let c = Config::load_from(&opts, &env(&[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())])).unwrap();
    assert_eq!(c.credential, Some(XyteCredential::ApiKey(Secret::new("cred-key".into()))));
    assert_eq!(c.webhook_secret, Some(Secret::new("0123456789abcdef0123".to_string())));

    write_file(creds.path(), "xyte-api-key", "\n");
    let err = Config::load_from(&opts, &env(&[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())])).unwrap_err();
    assert!(problems(err).iter().any(|p| p.contains("is empty")));
}

#[test]
fn demo_needs_no_key_and_uses_per_user_paths() {
    let c =
        Config::load_from(&LoadOptions { path: None, demo: true }, &env(&[("XDG_STATE_HOME", "/home/u/.local/state")]))
            .unwrap();
    assert!(c.credential.is_none());
    assert_eq!(c.state_dir, PathBuf::from("/home/u/.local/state/xyte-edge-demo"));
    assert_eq!(c.mcp_socket, PathBuf::from(".xyte-edge/mcp.sock"));
    let c = Config::load_from(
        &LoadOptions { path: None, demo: true },
        &env(&[("XDG_RUNTIME_DIR", "/run/user/1000"), ("XYTE_STATE_DIR", "/tmp/s")]),
    )
    .unwrap();
    assert_eq!(c.mcp_socket, PathBuf::from("/run/user/1000/xyte-edge-demo/mcp.sock"));
    assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
}

#[test]
fn predecessor_aliases_map_with_a_warning() {
    let (_d, opts) = with_file("XYTE_API_KEY=k\nMCP_INSPECTOR_PORT=6278\n");
    let c = Config::load_from(&opts, &env(&[])).unwrap();
    assert_eq!(c.http_local_listen, vec!["127.0.0.1:6278".parse().unwrap()]);
    assert!(c.warnings.iter().any(|w| w.contains("deprecated")));
    // A LAN bind through the alias is still refused without the explicit opt-in.
    let err = Config::load_from(&opts, &env(&[("MCP_INSPECTOR_HOST", "0.0.0.0")])).unwrap_err();
    assert!(problems(err)[0].contains("XYTE_ALLOW_PLAINTEXT_LAN"));
    let c = Config::load_from(&opts, &env(&[("MCP_INSPECTOR_HOST", "0.0.0.0"), ("XYTE_ALLOW_PLAINTEXT_LAN", "yes")]))
        .unwrap();
    assert_eq!(c.http_local_listen, vec!["0.0.0.0:6278".parse().unwrap()]);
}

#[test]
fn poll_zero_disables_and_log_levels_normalise() {
    let (_d, opts) = with_file("XYTE_API_KEY=k\nXYTE_POLL_INTERVAL=0\nXYTE_LOG_LEVEL=WARNING\nXYTE_HTTP_LISTEN=\n");
    let c = Config::load_from(&opts, &env(&[])).unwrap();
    assert_eq!(c.poll_interval, None);
    assert_eq!(c.log_filter, "warn");
    assert!(c.http_listen.is_empty());
    let c = Config::load_from(&opts, &env(&[("XYTE_LOG_LEVEL", " info , xyte_edge=debug ")])).unwrap();
    assert_eq!(c.log_filter, "info,xyte_edge=debug");
    // Refused with the reason, not a panic: the fuzz target's find (white space, then a multi-byte character in a
    // directive) and control characters.
    for bad in ["warn,\u{c}1$$L\u{d2}=", "info,\u{1}x=debug"] {
        let err = Config::load_from(&opts, &env(&[("XYTE_LOG_LEVEL", bad)])).unwrap_err();
        assert!(problems(err).iter().any(|p| p.contains("XYTE_LOG_LEVEL") && p.contains("must be error")), "{bad:?}");
    }
}

#[test]
fn unknown_environment_keys_only_warn() {
    let (_d, opts) = with_file("XYTE_API_KEY=k\n");
    let c = Config::load_from(&opts, &env(&[("XYTE_SOMETHING_ELSE", "1")])).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("XYTE_SOMETHING_ELSE")));
}

#[test]
fn local_commands_need_no_credential_but_everything_else_is_still_checked() {
    let (_d, opts) = with_file("XYTE_STATE_DIR=/srv/xyte-state\n");
    assert!(problems(Config::load_from(&opts, &env(&[])).unwrap_err()).iter().any(|p| p.starts_with("XYTE_API_KEY")));
    let c = Config::load_layers(&opts, &env(&[]), false).unwrap();
    assert_eq!((c.state_dir, c.credential), (PathBuf::from("/srv/xyte-state"), None));
    // A credential, when configured, is still read and checked.
    let c = Config::load_layers(&opts, &env(&[("XYTE_API_KEY", "k")]), false).unwrap();
    assert_eq!(c.credential_kind(), "api key");
    let (_d, opts) = with_file("XYTE_STATE_DIR=relative/dir\nXYTE_CACHE_TTL=soon\n");
    let found = problems(Config::load_layers(&opts, &env(&[]), false).unwrap_err());
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|p| !p.starts_with("XYTE_API_KEY")), "{found:?}");
}

/// The inputs the fuzz target `config` keeps (tests/fuzz: `regressions/` once failed it, `corpus/` are its seeds),
/// loaded as the target loads them: the first byte's bit 0 is demo mode, the rest is the file. Each must give a
/// configuration with its secrets masked, or a non-empty list of problems.
#[test]
fn fuzz_inputs_still_load() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for kind in ["regressions", "corpus"] {
        // An empty `regressions/<target>` is not in git, hence not there at all.
        for entry in std::fs::read_dir(fuzz.join(kind).join("config")).into_iter().flatten() {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            let Some((&options, text)) = input.split_first() else { continue };
            let path = dir.path().join("xyte-edge.conf");
            std::fs::write(&path, text).unwrap();
            match Config::load_from(&LoadOptions { path: Some(path), demo: options & 1 != 0 }, &env(&[])) {
                Ok(c) => assert!(c.effective.iter().all(|e| !KEYS.iter().any(|k| k.name == e.key && k.secret)
                    || e.value.is_empty()
                    || e.value == "***")),
                Err(e) => assert!(!e.problems.is_empty()),
            }
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} fuzz inputs for config found under {}", fuzz.display());
}

#[test]
fn outbox_limits_derive_from_the_budget_and_bad_values_are_refused() {
    let load = |pairs: &[(&str, &str)]| {
        let mut all = vec![("XYTE_API_KEY", "k")];
        all.extend_from_slice(pairs);
        Config::load_from(&LoadOptions { path: Some("/dev/null".into()), demo: false }, &env(&all))
    };
    let shown = |c: &Config, key: &str| {
        let e = c.effective.iter().find(|e| e.key == key).unwrap();
        (e.value.clone(), e.source.clone())
    };
    // 60/min for 600 s at half the budget; a tenth of that per device.
    let c = load(&[]).unwrap();
    assert_eq!((c.outbox_max, c.outbox_max_per_device), (300, 30));
    assert_eq!(
        shown(&c, "XYTE_OUTBOX_MAX"),
        ("300".into(), "default (from XYTE_RATE_LIMIT and XYTE_COMMAND_TTL)".into())
    );
    assert_eq!(shown(&c, "XYTE_OUTBOX_MAX_PER_DEVICE"), ("30".into(), "default (from XYTE_OUTBOX_MAX)".into()));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A small budget: 10/min for a minute delivers 5 at half the rate, and a device may take all of them.
    let c = load(&[("XYTE_RATE_LIMIT", "10"), ("XYTE_COMMAND_TTL", "1m")]).unwrap();
    assert_eq!((c.outbox_max, c.outbox_max_per_device), (5, 5));
    // The per-device default follows an explicit outbox size; explicit values are taken as they are.
    let c = load(&[("XYTE_OUTBOX_MAX", "50")]).unwrap();
    assert_eq!((c.outbox_max, c.outbox_max_per_device), (50, 10));
    assert_eq!(shown(&c, "XYTE_OUTBOX_MAX"), ("50".into(), "environment".into()));
    let c = load(&[("XYTE_OUTBOX_MAX", "40"), ("XYTE_OUTBOX_MAX_PER_DEVICE", "3")]).unwrap();
    assert_eq!((c.outbox_max, c.outbox_max_per_device), (40, 3));
    // More than even the whole budget delivers within the TTL (600) is allowed, with a warning.
    let c = load(&[("XYTE_OUTBOX_MAX", "1000")]).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("XYTE_OUTBOX_MAX=1000") && w.contains("expire")), "{:?}", c.warnings);

    let got = problems(load(&[("XYTE_OUTBOX_MAX", "0"), ("XYTE_OUTBOX_MAX_PER_DEVICE", "lots")]).unwrap_err());
    assert_eq!(
        got,
        [
            "XYTE_OUTBOX_MAX: invalid value \"0\": must be a whole number from 1 to 1000000",
            "XYTE_OUTBOX_MAX_PER_DEVICE: invalid value \"lots\": must be a whole number from 1 to 1000000",
        ]
    );
    let got = problems(load(&[("XYTE_OUTBOX_MAX", "20"), ("XYTE_OUTBOX_MAX_PER_DEVICE", "21")]).unwrap_err());
    assert_eq!(got, ["XYTE_OUTBOX_MAX_PER_DEVICE: invalid value \"21\": must not be more than XYTE_OUTBOX_MAX (20)"]);
}

/// The MQTT uplink: off without a URL (its other keys then only warn), defaults derived from the host name, and every
/// bad value refused with the key named.
#[test]
fn mqtt_uplink_settings() {
    let load = |pairs: &[(&str, &str)]| {
        let mut all = vec![("XYTE_API_KEY", "k")];
        all.extend_from_slice(pairs);
        Config::load_from(&LoadOptions { path: Some("/dev/null".into()), demo: false }, &env(&all))
    };
    let c = load(&[]).unwrap();
    assert!(c.mqtt.is_none() && c.warnings.is_empty(), "{:?}", c.warnings);
    let c = load(&[("XYTE_MQTT_COMMANDS", "on")]).unwrap();
    assert!(c.mqtt.is_none());
    assert!(
        c.warnings.iter().any(|w| w.contains("XYTE_MQTT_COMMANDS set but XYTE_MQTT_URL is not")),
        "{:?}",
        c.warnings
    );

    let c = load(&[("XYTE_MQTT_URL", "mqtt://127.0.0.1"), ("XYTE_SITE", "hq-berlin")]).unwrap();
    let m = c.mqtt.unwrap();
    assert_eq!((m.host.as_str(), m.port, m.tls), ("127.0.0.1", 1883, false));
    assert_eq!(m.topic_prefix, "xyte-edge/v1/hq-berlin");
    assert!(m.client_id.starts_with("xyte-edge-"), "{}", m.client_id);
    assert_eq!((m.commands, m.role), (false, Role::Operator));
    let shown = c.effective.iter().find(|e| e.key == "XYTE_MQTT_TOPIC_PREFIX").unwrap();
    assert_eq!((shown.value.as_str(), shown.source.as_str()), ("xyte-edge/v1/hq-berlin", "default (from XYTE_SITE)"));

    let dir = tempfile::tempdir().unwrap();
    let password = write_file(dir.path(), "mqtt-password", "s3cret\n");
    let c = load(&[
        ("XYTE_MQTT_URL", "mqtts://broker.lan"),
        ("XYTE_MQTT_USERNAME", "gw"),
        ("XYTE_MQTT_PASSWORD_FILE", password.to_str().unwrap()),
        ("XYTE_MQTT_COMMANDS", "on"),
        ("XYTE_MQTT_ROLE", "viewer"),
        ("XYTE_MQTT_TOPIC_PREFIX", "fleet/berlin"),
    ])
    .unwrap();
    let m = c.mqtt.unwrap();
    assert_eq!((m.port, m.tls, m.commands, m.role), (8883, true, true, Role::Viewer));
    assert_eq!(m.password.as_ref().map(|p| p.expose().as_str()), Some("s3cret"));
    assert_eq!(m.topic_prefix, "fleet/berlin");

    let err = load(&[
        ("XYTE_MQTT_URL", "http://broker"),
        ("XYTE_MQTT_COMMANDS", "maybe"),
        ("XYTE_MQTT_ROLE", "root"),
        ("XYTE_MQTT_TOPIC_PREFIX", "a/+/b"),
        ("XYTE_MQTT_PASSWORD", "p"),
        ("XYTE_MQTT_CLIENT_CERT", "/nonexistent/cert.pem"),
    ])
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "XYTE_MQTT_URL",
        "XYTE_MQTT_COMMANDS",
        "XYTE_MQTT_ROLE",
        "XYTE_MQTT_TOPIC_PREFIX",
        "XYTE_MQTT_PASSWORD",
        "XYTE_MQTT_CLIENT_CERT",
    ] {
        assert!(keys.contains(&key), "{key} not reported: {err}");
    }
    assert!(!err.to_string().contains("\"p\""), "the password is never shown: {err}");
}

#[test]
fn periodic_backups_are_off_by_default_and_checked_when_on() {
    let (_d, opts) = with_file("XYTE_API_KEY=abc123\n");
    assert_eq!(Config::load_from(&opts, &env(&[])).unwrap().backup, None);
    let on = Config::load_from(&opts, &env(&[("XYTE_BACKUP_DIR", "/srv/backups"), ("XYTE_BACKUP_KEEP", "3")])).unwrap();
    assert_eq!(
        on.backup,
        Some(BackupSchedule { dir: "/srv/backups".into(), interval: Duration::from_secs(86_400), keep: 3 })
    );
    let bad = env(&[("XYTE_BACKUP_DIR", "backups"), ("XYTE_BACKUP_INTERVAL", "0"), ("XYTE_BACKUP_KEEP", "0")]);
    let found = problems(Config::load_from(&opts, &bad).unwrap_err());
    for (key, why) in [
        ("XYTE_BACKUP_DIR", "absolute path"),
        ("XYTE_BACKUP_INTERVAL", "between 1s and 365d"),
        ("XYTE_BACKUP_KEEP", "from 1 to 1000"),
    ] {
        assert!(found.iter().any(|p| p.contains(key) && p.contains(why)), "{key}: {found:?}");
    }
}
