//! Where alerts go (`alerter/deliver.rs` sends through these): one sender per channel type,
//! each bounded in time and answering "delivered" or why not, so the caller can retry with backoff or give up. What a
//! message says is `alerts::message`; which alerts exist is `alerts`.

pub mod email;
pub mod http;
pub mod syslog;

/// A TLS receiver for the senders' tests.
#[cfg(test)]
mod test_tls {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    /// A self-signed certificate for `localhost`, written to `dir/ca.pem` for the sender to trust, and an acceptor
    /// that serves it.
    pub fn localhost(dir: &Path) -> (PathBuf, tokio_rustls::TlsAcceptor) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        (ca, tokio_rustls::TlsAcceptor::from(Arc::new(server)))
    }
}
