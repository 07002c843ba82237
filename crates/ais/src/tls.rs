//! HTTPS for `ais serve`: rustls (with the `ring` provider) from PEM files, reloaded on
//! SIGHUP. A reload swaps the configuration that new handshakes use; open connections
//! keep theirs, so rotating a certificate drops nothing. A reload that fails (missing
//! or mismatched files) is logged and the old certificate stays in service.

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsFiles;

pub async fn load(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
    // One process-wide provider; a second install (tests, reloads) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .with_context(|| {
            format!(
                "cannot load TLS certificate {} and key {}",
                files.cert.display(),
                files.key.display()
            )
        })
}

pub async fn reload_on_sighup(config: RustlsConfig, files: TlsFiles) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; TLS files will not be reloaded");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded"),
            Err(error) => tracing::error!(
                %error,
                cert = %files.cert.display(),
                "TLS reload failed; the previous certificate stays in service"
            ),
        }
    }
}
