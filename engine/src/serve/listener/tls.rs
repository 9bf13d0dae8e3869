//! HTTPS for `backflow serve --tls-cert FILE --tls-key FILE`: rustls (on the ring provider
//! the process installs at start), HTTP/1.1. The certificate and key are PEM files; SIGHUP
//! re-reads them (a renewed certificate needs no restart), and a pair that no longer loads
//! leaves the previous one serving.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{flag} {}: {source}", path.display())]
    Pem {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("--tls-cert {}: no certificate (expected a PEM `CERTIFICATE` block)", .0.display())]
    NoCertificate(PathBuf),
    /// rustls refused the pair (a key that does not match the certificate, for one).
    #[error("--tls-cert {} with --tls-key {}: {source}", cert.display(), key.display())]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// The service's TLS configuration, reloadable from its files.
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsConfig {
    /// Loads the certificate chain and key (both PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        Ok(TlsConfig {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(server_config(cert, key)?)),
        })
    }

    /// Re-reads the files; on error the previous configuration keeps serving.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(server_config(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor with the current configuration (new connections pick up a reload).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    fn pem(flag: &'static str, path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
        let path = path.to_path_buf();
        move |source| TlsError::Pem {
            flag,
            path: path.clone(),
            source,
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem("--tls-cert", cert))?
        .collect::<Result<_, _>>()
        .map_err(pem("--tls-cert", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(pem("--tls-key", key))?;
    // The process-wide provider (the host installs it too; whichever comes first wins).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::Refused {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
