//! The real binary: `token create|list|revoke` against a state directory, with no Xyte credential configured,
//! while a store (standing in for the running daemon) has the same database open.

mod support;

use std::path::Path;
use std::process::Output;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xyte_edge::config::Role;
use xyte_edge::store::{Store, now_ms, tokens};

fn token(state: &Path, args: &[&str]) -> Output {
    // `bin()` clears the environment: no XYTE_API_KEY, no config file other than the (absent) default.
    support::bin().arg("token").args(args).env("XYTE_STATE_DIR", state).output().expect("run xyte-edge")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn is_secret(s: &str) -> bool {
    s.strip_prefix("xe_")
        .is_some_and(|b| b.len() == 43 && b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// `token list` as rows of columns (header skipped); the timestamps contain no spaces, so splitting is exact.
fn list(state: &Path) -> Vec<Vec<String>> {
    let out = token(state, &["list"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("NAME") && header.contains("LAST USED"), "{stdout}");
    lines.map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

fn row(rows: &[Vec<String>], name: &str) -> Vec<String> {
    rows.iter().find(|r| r[0] == name).cloned().unwrap_or_else(|| panic!("{name} not listed: {rows:?}"))
}

fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    bytes
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn create_list_revoke_without_a_xyte_key_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The daemon's side: the same database, open the whole time.
    let daemon = Store::open(&state, Default::default()).unwrap();

    let out = token(&state, &["create", "--name", "ops-laptop", "--role", "operator"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let secret = stdout.trim_end_matches('\n');
    assert!(is_secret(secret) && !secret.contains('\n'), "stdout must be the secret alone: {stdout:?}");
    assert!(
        stderr.contains("only this once") && stderr.contains("ops-laptop") && stderr.contains("operator"),
        "{stderr}"
    );
    assert!(stderr.contains("never expires"), "{stderr}");
    assert!(!stderr.contains(secret), "the secret goes to stdout only");

    // The running daemon accepts it at once, with no reload.
    let presented = secret.to_string();
    let info = daemon.read_blocking(move |c| tokens::verify(c, &presented, now_ms())).unwrap().expect("verified");
    assert_eq!((info.name.as_str(), info.role), ("ops-laptop", Role::Operator));

    let rows = list(&state);
    assert_eq!(row(&rows, "ops-laptop")[1..3], ["operator", "active"]);
    assert_eq!(row(&rows, "ops-laptop")[4], "never");
    let listing = text(&token(&state, &["list"]));
    assert!(!listing.0.contains(secret) && !listing.1.contains(secret), "list must never show the secret");

    // The same name again: refused as a usage error, the first token untouched.
    let out = token(&state, &["create", "--name", "ops-laptop", "--role", "admin"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(row(&list(&state), "ops-laptop")[1..3], ["operator", "active"]);

    let out = token(&state, &["revoke", "ops-laptop"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("revoked") && stdout.contains("ops-laptop"), "{stdout}");
    assert_eq!(row(&list(&state), "ops-laptop")[2], "revoked");
    let presented = secret.to_string();
    assert!(daemon.read_blocking(move |c| tokens::verify(c, &presented, now_ms())).unwrap().is_none());

    // Revoking again changes nothing and says so; an unknown name is an error.
    let out = token(&state, &["revoke", "ops-laptop"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.contains("already revoked"), "{:?}", text(&out));
    let out = token(&state, &["revoke", "nobody"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out).1.contains("no token named \"nobody\""), "{:?}", text(&out));

    // A revoked name may be reused.
    let out = token(&state, &["create", "--name", "ops-laptop", "--role", "viewer"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let second = text(&out).0.trim().to_string();
    assert!(is_secret(&second) && second != secret);

    daemon.close();
    let bytes = all_bytes(&state);
    assert!(!bytes.is_empty());
    for s in [secret, second.as_str()] {
        assert!(!contains(&bytes, s.as_bytes()), "a secret was found in the state directory");
        assert!(!contains(&bytes, &s.as_bytes()[3..]), "a secret's body was found in the state directory");
    }
}

#[test]
fn expiry_is_listed_and_bad_arguments_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let out = token(&state, &["create", "--name", "kiosk.lobby", "--role", "viewer", "--expires", "1h"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(is_secret(stdout.trim()), "{stdout}");
    assert!(stderr.contains("expires") && stderr.contains("in 1h"), "{stderr}");
    let r = row(&list(&state), "kiosk.lobby");
    assert_eq!(r[1..3], ["viewer", "active"]);
    let created = OffsetDateTime::parse(&r[3], &Rfc3339).expect("created is RFC 3339");
    let expires = OffsetDateTime::parse(&r[4], &Rfc3339).expect("expires is RFC 3339");
    assert!(((expires - created).whole_seconds() - 3600).abs() <= 2, "{r:?}");
    assert_eq!(r[5], "never", "never used yet");

    let out = token(&state, &["create", "--name", "x", "--role", "root"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64));
    for role in ["viewer", "operator", "admin"] {
        assert!(stderr.contains(role), "the error must name the allowed roles: {stderr}");
    }
    for args in [
        &["create", "--name", "has space", "--role", "viewer"][..],
        &["create", "--name", "x", "--role", "viewer", "--expires", "soon"][..],
        &["create", "--name", "x", "--role", "viewer", "--expires", "0"][..],
        &["create", "--role", "viewer"][..],
        &["create", "--name", "x", "--role", "viewer", "--no-such-flag"][..],
        &["rename", "x"][..],
    ] {
        let out = token(&state, args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {:?}", text(&out));
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", text(&out).0);
    }
    assert_eq!(list(&state).len(), 1, "no refused command created anything");

    let out = support::bin().args(["token", "create", "--help"]).output().unwrap();
    let (help, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    for needle in ["--name", "--role", "--expires", "--config", "viewer", "operator", "admin", "never expires"] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn configuration_and_permission_problems_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // A config problem (here: a typo'd key) is EX_CONFIG, with the problem named; the missing key is not one.
    let conf = dir.path().join("xyte-edge.conf");
    std::fs::write(&conf, format!("XYTE_STATE_DIR={}\nXYTE_CACH_TTL=5\n", dir.path().join("s").display())).unwrap();
    let out = token(&dir.path().join("unused"), &["list", "--config", conf.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("XYTE_CACH_TTL") && !stderr.contains("XYTE_API_KEY"), "{stderr}");

    // The state directory comes from the file when the environment does not set it.
    std::fs::write(&conf, format!("XYTE_STATE_DIR={}\n", dir.path().join("from-file").display())).unwrap();
    let out = support::bin()
        .args(["token", "create", "--name", "f", "--role", "admin", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(dir.path().join("from-file").join(xyte_edge::store::DB_FILE).exists());

    // A state directory the caller cannot use: EX_NOPERM with what to do. Root ignores mode bits, so as root the
    // command runs as `nobody`; otherwise the directory is made inaccessible to its owner.
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let mut cmd = support::bin();
    cmd.args(["token", "list"]).env("XYTE_STATE_DIR", &locked);
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    } else {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = match cmd.output() {
        Ok(out) => out,
        // The build directory is not reachable for `nobody` on this machine; nothing to check here.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return,
        Err(e) => panic!("run xyte-edge: {e}"),
    };
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("permission denied") && stderr.contains("locked"), "{stderr}");
}
