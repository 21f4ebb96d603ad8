//! LAN HTTP: TLS and loopback listeners, bearer-token principals, REST mapped onto the operation
//! catalogue, health and the OpenAPI document. Nothing here reaches Xyte or SQL except through `ops` and the
//! store's typed functions.

pub mod auth;
mod body;
mod dashboard;
mod docs;
mod mcp;
mod metrics;
pub mod openapi;
pub mod query;
mod response;
mod rest;
pub mod router;
mod server;
mod sse;
mod state;
pub mod tls;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::runtime::App;
use crate::systemd::Heartbeat;

/// The LAN certificate in use, kept so SIGHUP can reload it.
pub struct Certificate {
    source: tls::Source,
    resolver: Arc<tls::Resolver>,
    pub fingerprint: String,
    pub path: PathBuf,
}

impl Certificate {
    /// Re-reads the certificate; new handshakes use it, open connections are not touched. A broken file is
    /// reported and the old certificate kept.
    pub fn reload(&self) {
        match tls::load(&self.source) {
            Ok(loaded) => {
                self.resolver.replace(loaded.key);
                tracing::info!(fingerprint = %loaded.fingerprint, "TLS certificate reloaded");
            }
            Err(e) => tracing::error!("TLS certificate not reloaded, keeping the current one: {e}"),
        }
    }
}

/// What `start` bound, for the start-up banner.
pub struct Started {
    pub lan: Vec<SocketAddr>,
    pub local: Vec<SocketAddr>,
    pub certificate: Option<Certificate>,
}

/// Binds every listener (before READY) and serves them on `tasks` until `shutdown`.
pub async fn start(
    config: &Config,
    app: Arc<App>,
    mcp_extension: Arc<dyn crate::mcp::Extension>,
    heartbeats: Vec<Heartbeat>,
    connections: Arc<Semaphore>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Started, String> {
    let lan = server::bind(&config.http_listen, true, config.demo).await?;
    let local = server::bind(&config.http_local_listen, false, config.demo).await?;
    let certificate = if lan.is_empty() {
        None
    } else {
        let source = match &config.tls {
            Some(files) => tls::Source::Files { cert: files.cert.clone(), key: files.key.clone() },
            None => tls::Source::SelfSigned { dir: config.state_dir.join("tls"), names: certificate_names(config) },
        };
        let loaded = tls::load(&source)?;
        if loaded.generated {
            tracing::info!(path = %loaded.cert_path.display(), "generated a self-signed TLS certificate");
        }
        tracing::info!(fingerprint = %loaded.fingerprint, path = %loaded.cert_path.display(), "TLS certificate");
        Some(Certificate {
            source,
            resolver: tls::Resolver::new(loaded.key),
            fingerprint: loaded.fingerprint,
            path: loaded.cert_path,
        })
    };
    let acceptor =
        certificate.as_ref().map(|c| tokio_rustls::TlsAcceptor::from(tls::server_config(c.resolver.clone())));
    let known_tokens = auth::KnownTokens::new(app.store.path());
    let http = Arc::new(state::Http {
        app,
        mcp_extension,
        limiter: Default::default(),
        known_tokens,
        heartbeats,
        webhook_secret: config.webhook_secret.clone(),
        allowed_hosts: config.allowed_hosts.clone(),
        shutdown: shutdown.clone(),
        mcp_sessions: Default::default(),
    });
    let started = Started {
        lan: lan.iter().map(|b| b.addr).collect(),
        local: local.iter().map(|b| b.addr).collect(),
        certificate,
    };
    let tracker = Arc::new(server::Tracker::default());
    for bound in lan.into_iter().chain(local) {
        let acceptor = if bound.tls { acceptor.clone() } else { None };
        tasks.spawn(server::serve(
            bound,
            http.clone(),
            acceptor,
            connections.clone(),
            tracker.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    Ok(started)
}

/// Subject alternative names for the generated certificate: this host's names and addresses.
fn certificate_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> =
        crate::config::machine_hosts().into_iter().map(|h| h.trim_matches(['[', ']']).to_string()).collect();
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    for host in &config.allowed_hosts {
        let h = host.trim_matches(['[', ']']).to_string();
        if !names.contains(&h) {
            names.push(h);
        }
    }
    names
}
