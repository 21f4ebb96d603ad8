//! The MCP Unix socket: newline-delimited JSON-RPC, one independent session per connection, mode 0660
//! with the `xyte-edge` group, a stale socket replaced, anything else at the path refused. Each peer's uid/gid/pid
//! (SO_PEERCRED) is logged and decides its role: root and the daemon's own uid are admin, others get
//! `XYTE_MCP_SOCKET_ROLE`.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::Session;
use super::{Extension, MAX_MESSAGE, jsonrpc, outgoing};
use crate::config::Role;
use crate::runtime::{App, Principal};
use crate::stall::StallGuard;

pub const SOCKET_GROUP: &str = "xyte-edge";

/// Binds the socket at `path`, replacing a stale one and refusing to touch anything that is not a socket.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server (another xyte-edge?)", path.display()),
                ));
            }
            // Nobody listens: left behind by a crash. Safe to replace.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (check XYTE_MCP_SOCKET)",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name(SOCKET_GROUP) {
        // Under the packaged unit (`Group=xyte-edge`) the socket is born in the group, and chown is not even allowed
        // (its system-call filter denies @privileged): only change what is not right yet. Otherwise this works when
        // we run as root or are a member of the group, and the socket keeps our primary group when it does not.
        let current = std::fs::metadata(path)?.gid();
        if current != group.gid.as_raw()
            && let Err(e) = nix::unistd::chown(path, None, Some(group.gid))
        {
            tracing::warn!(error = %e, "could not give {} to group {SOCKET_GROUP}", path.display());
        }
    }
    Ok(listener)
}

/// Serves connections until `shutdown`; then closes every connection (in-flight work ends with them).
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    app: Arc<App>,
    extension: Arc<dyn Extension>,
    peer_role: Role,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let own_uid = nix::unistd::getuid().as_raw();
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "MCP socket accept failed");
                    continue;
                }
            },
        };
        let (principal, pid) = match stream.peer_cred() {
            Ok(cred) => {
                let uid = cred.uid();
                let role = if uid == 0 || uid == own_uid { Role::Admin } else { peer_role };
                (Principal { id: format!("uid:{uid}"), role }, (cred.gid(), cred.pid()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer's credentials; refusing the connection");
                continue;
            }
        };
        tracing::info!(peer = %principal.id, gid = pid.0, pid = ?pid.1, role = %principal.role, "MCP client connected on the socket");
        let (app, extension, stop) = (app.clone(), extension.clone(), shutdown.clone());
        connections.spawn(async move {
            let _open = crate::metrics::mcp_connection("unix");
            app.mcp_clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            connection(stream, app.clone(), extension, principal, stop).await;
            app.mcp_clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
    let _ = std::fs::remove_file(&path);
}

async fn connection(
    stream: UnixStream,
    app: Arc<App>,
    extension: Arc<dyn Extension>,
    principal: Principal,
    shutdown: CancellationToken,
) {
    let (read, write) = stream.into_split();
    let (tx, mut rx) = outgoing::queue();
    let who = principal.id.clone();
    let session = Session::new(app, extension, principal, tx.clone());
    // Set when the peer stopped reading: the reader stops too and the connection closes.
    let stalled = CancellationToken::new();
    // One writer per connection: responses and notifications interleave as whole lines. Each message's room in the
    // queue is given back once it is written.
    let writer = tokio::spawn({
        let (stalled, who) = (stalled.clone(), who.clone());
        async move {
            let mut write = StallGuard::new(write);
            while let Some(out) = rx.recv().await {
                if let Err(e) = write.write_all(out.line()).await {
                    if crate::stall::is_stall(&e) {
                        tracing::warn!(peer = %who, "MCP client on the socket disconnected: {e} while answers waited");
                        crate::metrics::stalled_client("unix");
                        stalled.cancel();
                    }
                    break;
                }
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        // Backpressure: while the answers already queued fill the connection's queue, its next request is not read.
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = stalled.cancelled() => break,
            r = async {
                tx.room().await;
                read_line(&mut reader, &mut buf).await
            } => r,
        };
        match read {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                let e = jsonrpc::RpcError::new(
                    jsonrpc::INVALID_REQUEST,
                    format!("message larger than {MAX_MESSAGE} bytes"),
                );
                session.receive_error(e).await;
            }
            Ok(Line::Data) => {
                let line = buf.strip_suffix(b"\r").unwrap_or(&buf);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    tokio::select! {
                        _ = stalled.cancelled() => break,
                        _ = session.receive(line) => {}
                    }
                }
            }
            Err(_) => break,
        }
    }
    drop(tx);
    // The peer has gone: streams that end only when the client leaves (subscriptions/listen) must end now.
    session.close();
    drop(session);
    // Let in-flight answers go out; on shutdown, do not wait for long-running tools.
    tokio::select! {
        _ = writer => {}
        _ = shutdown.cancelled() => {}
    }
    tracing::info!(peer = %who, "MCP client disconnected");
}

enum Line {
    Data,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line into `buf` without ever holding more than [`MAX_MESSAGE`] bytes of it.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::Eof
            } else if too_long {
                Line::TooLong
            } else {
                Line::Data
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1),
            None => (available, available.len()),
        };
        if !too_long {
            if buf.len() + chunk.len() > MAX_MESSAGE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let found_newline = done <= available.len() && available.get(done - 1) == Some(&b'\n');
        reader.consume(done);
        if found_newline {
            return Ok(if too_long { Line::TooLong } else { Line::Data });
        }
    }
}
