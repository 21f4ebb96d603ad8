//! TLS for the LAN listener: the configured PEM pair, or a self-signed certificate generated once in the
//! state directory. The certificate sits behind a resolver that SIGHUP can swap, so a renewed certificate is used by
//! new handshakes while open connections carry on undisturbed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `XYTE_TLS_CERT` / `XYTE_TLS_KEY`.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated once into the state directory, for these subject alternative names.
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

#[derive(Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate (DER), as `AA:BB:…`, for people to compare with what their browser shows.
    pub fingerprint: String,
    pub cert_path: PathBuf,
    pub generated: bool,
}

fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

pub(crate) fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    Ok((certs, key))
}

fn certified(certs: Vec<CertificateDer<'static>>, key: &PrivateKeyDer<'static>) -> Result<CertifiedKey, String> {
    let signing = any_supported_type(key).map_err(|e| format!("unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(ck)
}

/// Writes a new self-signed certificate and key (0600) into `dir`.
fn generate(dir: &Path, names: &[String]) -> Result<(), String> {
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("invalid certificate names: {e}"))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("xyte-edge {}", names[0]));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "xyte-edge (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("cannot sign the certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key_path = dir.join("key.pem");
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(dir.join("cert.pem"), cert.pem()).map_err(|e| format!("cannot write the certificate: {e}"))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Loads the certificate, generating the self-signed one first when it does not exist yet.
pub fn load(source: &Source) -> Result<Loaded, String> {
    let (cert, key, generated) = match source {
        Source::Files { cert, key } => (cert.clone(), key.clone(), false),
        Source::SelfSigned { dir, names } => {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let missing = !cert.exists() || !key.exists();
            if missing {
                generate(dir, names)?;
            }
            (cert, key, missing)
        }
    };
    let (certs, private) = read_pair(&cert, &key)?;
    let fingerprint = fingerprint(certs[0].as_ref());
    Ok(Loaded { key: Arc::new(certified(certs, &private)?), fingerprint, cert_path: cert, generated })
}

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Resolver> {
        Arc::new(Resolver { current: RwLock::new(key) })
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut k) = self.current.write() {
            *k = key;
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

/// rustls server configuration: TLS 1.2 and 1.3 (ring), ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<Resolver>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let source = Source::SelfSigned { dir: dir.path().join("tls"), names: vec!["gw".into(), "127.0.0.1".into()] };
        let first = load(&source).unwrap();
        assert!(first.generated);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("tls/key.pem")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = load(&source).unwrap();
        assert!(!again.generated);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);

        let wrong = Source::Files { cert: dir.path().join("tls/cert.pem"), key: dir.path().join("nope.pem") };
        assert!(load(&wrong).unwrap_err().contains("nope.pem"));
    }
}
