//! TLS of alert receivers: what an `https://` receiver's certificate is checked
//! against, and the HTTP client of each receiver.
//!
//! A receiver trusts the system's roots (the platform's store, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set) unless it names a CA bundle ([`CaBundle`]), which then
//! replaces them, as `curl --cacert` does: a receiver behind a private CA is not also
//! trusted under every public CA. The client speaks rustls with the `ring` provider,
//! built here and handed to reqwest ready, so delivery needs no process-wide provider
//! and never brings in another one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The I/O error is in the message and not a `source`, so a report that prints
    // the chain says it once.
    #[error("cannot read the CA file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the CA file {} is not valid PEM: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error(
        "the CA file {} holds no certificate; it needs PEM `BEGIN CERTIFICATE` blocks",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("the CA file {}: certificate {number} cannot be a trusted root: {message}", path.display())]
    Certificate {
        path: PathBuf,
        number: usize,
        message: String,
    },
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
}

/// Trusted roots read from a PEM file, for the receivers that name it.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    roots: Arc<RootCertStore>,
}

impl CaBundle {
    /// Reads every certificate of the PEM file at `path`. A file that cannot be read,
    /// is malformed or holds no certificate is an error naming it, so a mistake shows
    /// at start-up rather than as failed deliveries later.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(path).map_err(|error| TlsError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut roots = RootCertStore::empty();
        for (index, certificate) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let certificate = certificate.map_err(|error| TlsError::Pem {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
            roots
                .add(certificate)
                .map_err(|error| TlsError::Certificate {
                    path: path.to_path_buf(),
                    number: index + 1,
                    message: error.to_string(),
                })?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            roots: Arc::new(roots),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Certificates in the bundle.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.roots.len())
            .finish()
    }
}

/// The HTTP client of the receiver at `url`: trusting its CA bundle when it has one,
/// else the system's roots, which are read only for an `https://` receiver.
pub(crate) fn client(
    url: &str,
    ca_bundle: Option<&CaBundle>,
    timeout: Duration,
) -> Result<reqwest::Client, TlsError> {
    let roots = match ca_bundle {
        Some(bundle) => bundle.roots.as_ref().clone(),
        None if url.starts_with("https://") => system_roots(),
        None => RootCertStore::empty(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| TlsError::Client(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|error| TlsError::Client(error.to_string()))
}

fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "cannot read some of the system's CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(found.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "system CA certificates skipped");
    }
    if roots.is_empty() {
        // Not fatal: the receiver may get its CA later (SSL_CERT_FILE and a restart);
        // until then each attempt fails and is retried like any other failure.
        tracing::warn!(
            "no system CA certificates found: an https:// receiver without ca_file cannot be verified"
        );
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key-only.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB0L\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let error = CaBundle::load(&path).expect_err("a key is no certificate");
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        assert!(error.to_string().contains("key-only.pem"), "{error}");
    }

    #[test]
    fn a_certificate_that_is_not_der_is_refused_with_its_number() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("broken.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = CaBundle::load(&path).expect_err("not a certificate");
        let message = error.to_string();
        assert!(
            message.contains("broken.pem") && message.contains("certificate 1"),
            "{message}"
        );
    }
}
