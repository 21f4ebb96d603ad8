//! The real binary: `check-config`, `version`, usage errors — exit codes and what the admin sees.

use std::path::Path;
use std::process::{Command, Output};

fn xyte_edge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xyte-edge"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run xyte-edge")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn conf(dir: &Path, body: &str) -> String {
    let p = dir.join("xyte-edge.conf");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn check_config_reports_every_problem_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = conf(
        dir.path(),
        "XYTE_RATE_LIMT=10\nXYTE_CACHE_TTL=soon\nXYTE_MAX_CONNECTIONS=0\nXYTE_OUTBOX_MAX=20\nXYTE_OUTBOX_MAX_PER_DEVICE=25\n",
    );
    let out = xyte_edge(&["check-config", "--config", &path], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "stdout: {stdout}\nstderr: {stderr}");
    for needle in [
        "5 problems",
        "XYTE_RATE_LIMT: unknown key",
        "did you mean XYTE_RATE_LIMIT?",
        "XYTE_CACHE_TTL: invalid value \"soon\"",
        "XYTE_MAX_CONNECTIONS: invalid value \"0\": must be a whole number from 1 to 65535",
        "XYTE_OUTBOX_MAX_PER_DEVICE: invalid value \"25\": must not be more than XYTE_OUTBOX_MAX (20)",
        "XYTE_API_KEY: no Xyte credential",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn check_config_prints_effective_values_with_secrets_masked_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "file-secret-value-123\n").unwrap();
    let path =
        conf(dir.path(), "XYTE_CACHE_TTL=120\nXYTE_ENV=lab\nXYTE_WEBHOOK_SECRET=\"webhook secret value 0123\"\n");
    let out = xyte_edge(
        &["check-config", "--config", &path],
        &[("XYTE_API_KEY_FILE", key_file.to_str().unwrap()), ("XYTE_ENV", "site-b")],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stdout.contains("file-secret-value-123") && !stderr.contains("file-secret-value-123"));
    assert!(!stdout.contains("webhook secret value") && !stderr.contains("webhook secret value"));
    let line = |key: &str| stdout.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_default().to_string();
    assert!(line("XYTE_CACHE_TTL").contains("120") && line("XYTE_CACHE_TTL").contains("file line 1"), "{stdout}");
    assert!(line("XYTE_ENV").contains("site-b") && line("XYTE_ENV").contains("environment"), "{stdout}");
    assert!(line("XYTE_WEBHOOK_SECRET").contains("***"), "{stdout}");
    assert!(line("XYTE_RATE_LIMIT").contains("60") && line("XYTE_RATE_LIMIT").contains("default"), "{stdout}");
    // Derived defaults are shown with what they came from.
    let outbox = line("XYTE_OUTBOX_MAX");
    assert!(
        outbox.contains("300") && outbox.contains("default (from XYTE_RATE_LIMIT and XYTE_COMMAND_TTL)"),
        "{outbox}"
    );
    let per_device = line("XYTE_OUTBOX_MAX_PER_DEVICE");
    assert!(per_device.contains("30") && per_device.contains("default (from XYTE_OUTBOX_MAX)"), "{per_device}");
    assert!(stdout.contains("configuration ok; Xyte credential: api key"), "{stdout}");
}

#[test]
fn systemd_credentials_directory_supplies_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("xyte-api-key"), "cred-secret-1\n").unwrap();
    let path = conf(dir.path(), "");
    let out = xyte_edge(&["check-config", "--config", &path], &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Xyte credential: api key") && !stdout.contains("cred-secret-1"));
}

#[test]
fn missing_explicit_config_file_is_a_config_error() {
    let out = xyte_edge(&["check-config", "--config", "/nonexistent/xyte-edge.conf"], &[("XYTE_API_KEY", "k")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr.contains("cannot read /nonexistent/xyte-edge.conf"), "{stderr}");
}

#[test]
fn serve_refuses_bad_configuration_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = conf(dir.path(), "XYTE_API_KEY=k\nXYTE_POLL_INTERVAL=often\n");
    let out = xyte_edge(&["serve", "--config", &path], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("XYTE_POLL_INTERVAL"), "{stderr}");
}

#[test]
fn version_help_and_usage_errors() {
    for args in [&["version"][..], &["--version"][..]] {
        let out = xyte_edge(args, &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out).0.starts_with(&format!("xyte-edge {}", env!("CARGO_PKG_VERSION"))));
    }
    let out = xyte_edge(&["--help"], &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        ["serve", "sim", "mcp", "status", "check-config", "token", "diagnose", "backup", "restore", "version", "help"],
        "{stdout}"
    );

    let out = xyte_edge(&["serve", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(64));
    let out = xyte_edge(&["sim", "--faults", "latency=fast"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out).1.contains("latency"), "{}", text(&out).1);
}

/// The packaged `/etc/xyte-edge/xyte-edge.conf` lists every setting `check-config` knows, commented out with its
/// default, and is valid as shipped (once a credential is set). Piping the output into `head` ends quietly.
#[test]
fn the_packaged_config_file_names_every_setting_and_is_valid() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/xyte-edge.conf");
    let out = xyte_edge(&["check-config", "--config", conf], &[("XYTE_API_KEY", "k")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let file = std::fs::read_to_string(conf).unwrap();
    let keys: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("XYTE_")).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(keys.len() > 30, "{stdout}");
    for key in keys {
        assert!(file.lines().any(|l| l.starts_with(&format!("#{key}="))), "{key} is missing from {conf}");
    }

    // A reader that has already gone, as with `| head -0`.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_xyte-edge"))
        .args(["check-config", "--config", conf])
        .env("XYTE_API_KEY", "k")
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{}: {err}", out.status);
}
