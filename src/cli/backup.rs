//! `xyte-edge backup` and `xyte-edge restore`: the operator's side of [`crate::backup`].

use std::path::PathBuf;
use std::process::ExitCode;

use crate::backup::{self, BackupError, files::ConfigOutcome};
use crate::config::{Config, LoadOptions};
use crate::exit;

/// `backup [--config PATH] [--to FILE] [--with-secrets]`: works while the daemon runs. Exit 0 with the file written,
/// 74 when it cannot be, 78 for a configuration that does not load.
pub fn backup(config_path: Option<PathBuf>, to: Option<PathBuf>, with_secrets: bool) -> ExitCode {
    let opts = LoadOptions { path: config_path, demo: false };
    // `load_local`: the Xyte credential may live in a systemd credential only the service sees.
    let config = match Config::load_local(&opts) {
        Ok(c) => c,
        Err(e) => return super::config_failed(&opts, &e),
    };
    let dest = to.unwrap_or_else(|| {
        PathBuf::from(backup::periodic::file_name(&crate::config::host_name(), &backup::stamp_now()))
    });
    let files = backup::files::collect(&config, with_secrets);
    match backup::create(&config.state_dir, &files, with_secrets, &dest) {
        Ok(m) => {
            let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            let shown = std::path::absolute(&dest).unwrap_or(dest);
            println!("{}", shown.display());
            eprintln!("backup written: {} ({size} bytes, mode 0600, schema {})", shown.display(), m.schema);
            eprintln!("  {}", m.counts);
            for f in &m.files {
                let what = if f.note.is_empty() { "included".to_string() } else { f.note.clone() };
                eprintln!("  {}: {what}", f.path.display());
            }
            if !with_secrets {
                eprintln!("  secrets were left out; `--with-secrets` includes them (keep that file safe)");
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("xyte-edge backup: {e}");
            ExitCode::from(match e {
                BackupError::NoDatabase(_) => exit::UNAVAILABLE,
                _ => exit::IO_ERROR,
            })
        }
    }
}

/// `restore FILE [--config PATH] [--with-config]`: the daemon must be stopped. Exit 0 when restored; 65 (EX_DATAERR)
/// for a file that is not a usable backup, with the reason; 75 while the daemon runs; 78 for a backup of a newer
/// schema (installing that release is the fix, as for the database itself).
pub fn restore(file: PathBuf, config_path: Option<PathBuf>, with_config: bool) -> ExitCode {
    let opts = LoadOptions { path: config_path, demo: false };
    let config = match Config::load_local(&opts) {
        Ok(c) => c,
        Err(e) => return super::config_failed(&opts, &e),
    };
    let stamp = backup::stamp_now();
    let restored = match backup::restore(&file, &config.state_dir, &stamp) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xyte-edge restore: {e}");
            eprintln!("nothing was changed");
            return ExitCode::from(match e {
                BackupError::Foreign { .. } | BackupError::Truncated { .. } | BackupError::Damaged { .. } => {
                    exit::DATA_ERROR
                }
                BackupError::TooNew { .. } => exit::CONFIG,
                BackupError::Busy(_) => exit::TEMPFAIL,
                BackupError::NoDatabase(_) | BackupError::Io { .. } | BackupError::Sql { .. } => exit::IO_ERROR,
            });
        }
    };
    let m = &restored.manifest;
    println!(
        "restored the database of {} from {} (xyte-edge {}, schema {}): {}",
        m.host, m.created_at, m.version, m.schema, m.counts
    );
    if m.schema < crate::store::schema_version() {
        println!("  it is upgraded to schema {} when the daemon starts", crate::store::schema_version());
    }
    match &restored.set_aside {
        Some(p) => println!("  the database it replaced is kept at {}", p.display()),
        None => println!("  there was no database before"),
    }
    for p in &restored.state_files {
        println!("  restored {}", p.display());
    }
    if let Some(p) = &restored.state_set_aside {
        println!("  the TLS directory it replaced is kept at {}", p.display());
    }
    if m.counts.commands_waiting > 0 {
        println!(
            "  {} commands were waiting for delivery; those older than XYTE_COMMAND_TTL expire instead of being sent",
            m.counts.commands_waiting
        );
    }
    let mut code = exit::OK;
    if with_config {
        match backup::files::restore_config(&m.files, &stamp) {
            Ok(done) => {
                for (f, outcome) in done {
                    let path = f.path.display();
                    match outcome {
                        ConfigOutcome::Unchanged => println!("  {path}: unchanged"),
                        ConfigOutcome::Restored { set_aside: Some(a) } => {
                            println!("  {path}: restored (the file it replaced is kept at {})", a.display())
                        }
                        ConfigOutcome::Restored { set_aside: None } if f.secrets_removed => {
                            println!("  {path}: restored; fill in its secrets, marked {}", backup::files::SECRET_MARK)
                        }
                        ConfigOutcome::Restored { set_aside: None } => println!("  {path}: restored"),
                        ConfigOutcome::Beside(b) => println!(
                            "  {path}: kept as it is (the backup's copy lacks its secrets); the backup's copy is at {}",
                            b.display()
                        ),
                        ConfigOutcome::LeftOut => println!("  {path}: not restored ({})", f.note),
                    }
                }
            }
            Err(e) => {
                eprintln!("xyte-edge restore: the database was restored, but a configuration file was not: {e}");
                code = exit::IO_ERROR;
            }
        }
    } else {
        let n = m.files.iter().filter(|f| f.kind == backup::FileKind::Config && f.content.is_some()).count();
        if n > 0 {
            let (files, them) = if n == 1 { ("file", "it") } else { ("files", "them") };
            println!("  the backup also holds {n} configuration {files}; `--with-config` restores {them}");
        }
    }
    println!("start the daemon: systemctl start xyte-edge");
    ExitCode::from(code)
}
