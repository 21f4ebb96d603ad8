//! TLS for the gateway's outgoing connections that are not Xyte's (the MQTT broker, remote syslog; e-mail and chat
//! webhooks next): rustls with ring as the only provider, trusting either one CA file (a site's own PKI) or the Mozilla
//! roots built in (webpki-roots), optionally with a client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;

/// A client certificate chain and its key, and the name of their setting for errors.
pub type ClientAuth<'a> = (&'a str, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A client configuration trusting `ca_file` (PEM) if given, else the built-in roots. `what` names the CA setting in
/// errors (`XYTE_MQTT_CA_FILE`, `channel "syslog": ca_file`).
pub fn config(
    what: &str,
    ca_file: Option<&Path>,
    client_auth: Option<ClientAuth<'_>>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| format!("{what} {}: not a PEM certificate file: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{what} {} holds no usable CA certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots);
    let config = match client_auth {
        Some((setting, certs, key)) => {
            builder.with_client_auth_cert(certs, key).map_err(|e| format!("{setting}: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
