//! The results page's TLS: the operator's certificate, or one made on the first start.
//!
//! Why: patient data crosses the clinic's LAN, so the page is served over TLS only (rustls, the
//! `ring` provider: pure Rust plus assembly, cross-compiles for the boards as the rest does). A
//! clinic rarely has a certificate authority for a box beside a scanner, so without a configured
//! certificate the appliance makes a self-signed one once (`<state>/web/tls/`, in the private
//! folder) and shows its SHA-256 fingerprint on the bedside display and in the log: the person at
//! the browser compares it with what the browser shows before trusting it
//! (docs/operations.md). The same certificate is kept across restarts and upgrades, so that
//! trust is given once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::classify::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("making the self-signed certificate: {0}")]
    Generate(String),
    #[error("the certificate and key do not form a TLS configuration: {0}")]
    Config(String),
}

/// Where the generated certificate and key live.
pub fn generated_paths(state: &Path) -> (PathBuf, PathBuf) {
    let dir = super::auth::web_dir(state).join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A loaded certificate chain and key, and the leaf's fingerprint.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate (DER), uppercase hex in colon-separated pairs, as
    /// browsers show it.
    pub fingerprint: String,
    /// Where it was read from.
    pub cert_path: PathBuf,
}

/// Read `cert` and `key` (PEM), or, when none are configured, the generated pair in `state`,
/// making it first if it does not exist yet.
pub fn identity(configured: Option<(&Path, &Path)>, state: &Path, names: &[String]) -> Result<Identity, TlsError> {
    let (cert, key) = match configured {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => {
            let (c, k) = generated_paths(state);
            if !c.exists() || !k.exists() {
                generate(&c, &k, names)?;
            }
            (c, k)
        }
    };
    load(&cert, &key)
}

fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let pem = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(pem(cert, "no certificate in the file".into()));
    };
    let fingerprint = colon_pairs(&sha256_hex(leaf.as_ref()));
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    Ok(Identity {
        chain,
        key: key_der,
        fingerprint,
        cert_path: cert.to_path_buf(),
    })
}

/// A self-signed certificate for `names` (host names and addresses), written with its key into
/// the private folder; key first, certificate last, each atomically, so a half-made pair is
/// never taken for a whole one (the certificate's presence is the mark).
fn generate(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let made = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let dir = cert.parent().expect("generated paths have a folder");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    super::auth::create_private_dir(dir).map_err(io(dir))?;
    crate::fsys::write_atomic_private(key, made.signing_key.serialize_pem().as_bytes()).map_err(io(key))?;
    crate::fsys::write_atomic_private(cert, made.cert.pem().as_bytes()).map_err(io(cert))?;
    Ok(())
}

/// `ab12cd…` → `AB:12:CD:…`.
pub fn colon_pairs(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// rustls' *ring* provider. rustls 0.23.48 marks it deprecated because it has no post-quantum
/// key exchange (aws-lc-rs has); aws-lc-rs needs CMake and a C toolchain per target, which the
/// static musl and aarch64 builds of the boards do not have. TLS 1.3 with X25519 is what the
/// page needs on a hospital LAN; revisit when *ring* gains ML-KEM or the boards' builds can take
/// aws-lc-rs.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The rustls server configuration: TLS 1.2 and 1.3 with rustls' safe defaults, HTTP/1.1.
pub fn server_config(id: Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_certificate_is_made_once_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let a = identity(None, dir.path(), &names).unwrap();
        let b = identity(None, dir.path(), &names).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        server_config(a).unwrap();
    }

    #[test]
    fn a_configured_file_that_is_not_pem_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.pem");
        let k = dir.path().join("k.pem");
        std::fs::write(&c, "not a certificate").unwrap();
        std::fs::write(&k, "not a key").unwrap();
        let e = identity(Some((&c, &k)), dir.path(), &[]).err().unwrap();
        assert!(e.to_string().contains("c.pem"), "{e}");
    }
}
