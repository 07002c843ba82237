//! The config-file sections of delivery, as a file spells them: `[alerts]`,
//! `[alerts.webhook]` and `[alerts.alertmanager]`, with the defaults of
//! [`DeliveryConfig`] for the keys they leave out. Turning them into a
//! [`DeliveryConfig`] checks what serde cannot (URL schemes, CA files, the renewal
//! against the TTL) and names the section in each refusal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::deliver::tls::{CaBundle, TlsError};
use crate::deliver::{AlertmanagerConfig, DeliveryConfig, WebhookConfig};
use crate::evaluator::DEFAULT_OUTBOX_LIMIT;

const WEBHOOK: &str = "[alerts.webhook]";
const ALERTMANAGER: &str = "[alerts.alertmanager]";
/// `endsAt` of a firing alert in Alertmanager unless configured.
pub const DEFAULT_FIRING_TTL_HOURS: u64 = 4;
/// How often a firing alert is sent to Alertmanager again unless configured.
pub const DEFAULT_RENEW_MINUTES: u64 = 60;

/// `[alerts]`: how alerts are logged, kept and delivered, and the receivers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// Log every alert transition; absent: the command decides (the demo does not).
    pub log: Option<bool>,
    pub outbox_limit: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub webhook: Option<WebhookSection>,
    pub alertmanager: Option<AlertmanagerSection>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        let defaults = DeliveryConfig::default();
        Self {
            log: None,
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
            retry_initial_ms: millis(defaults.retry_initial),
            retry_max_ms: millis(defaults.retry_max),
            max_attempts: defaults.max_attempts,
            timeout_ms: millis(defaults.timeout),
            webhook: None,
            alertmanager: None,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `[alerts.webhook]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: String,
    /// HMAC key; a secret given outside the file wins over it.
    pub secret: Option<String>,
    /// PEM roots an `https://` URL is verified against instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// `[alerts.alertmanager]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSection {
    pub url: String,
    #[serde(default = "default_firing_ttl_hours")]
    pub firing_ttl_hours: u64,
    #[serde(default = "default_renew_minutes")]
    pub renew_minutes: u64,
    pub generator_url: Option<String>,
    /// PEM roots an `https://` URL is verified against instead of the system's.
    pub ca_file: Option<PathBuf>,
}

fn default_firing_ttl_hours() -> u64 {
    DEFAULT_FIRING_TTL_HOURS
}

fn default_renew_minutes() -> u64 {
    DEFAULT_RENEW_MINUTES
}

/// A section whose receiver cannot be reached as written.
#[derive(Debug, thiserror::Error)]
pub enum AlertsSectionError {
    #[error("{section} url must be an http:// or https:// URL, found {url:?}")]
    UrlScheme { section: &'static str, url: String },
    /// A bundle on an `http://` URL suggests the receiver was meant to be reached over
    /// TLS and would silently not be.
    #[error("{section} ca_file {} is for an https:// url, but url is {url:?}", path.display())]
    CaFileOnHttp {
        section: &'static str,
        path: PathBuf,
        url: String,
    },
    #[error("{section} ca_file")]
    CaFile {
        section: &'static str,
        #[source]
        source: TlsError,
    },
    #[error("[alerts.webhook] needs a secret to sign with")]
    MissingSecret,
    #[error("[alerts.alertmanager] renew_minutes must be shorter than firing_ttl_hours, or firing alerts lapse between renewals")]
    RenewalOutlastsTtl,
}

impl AlertsSection {
    /// Delivery settings; `webhook_secret` is the webhook's key, wherever the caller
    /// found it. CA files are read now, so a missing one stops the start-up.
    pub fn delivery(
        &self,
        webhook_secret: Option<Vec<u8>>,
    ) -> Result<DeliveryConfig, AlertsSectionError> {
        let mut delivery = DeliveryConfig::default();
        if let Some(webhook) = &self.webhook {
            check_url(&webhook.url, WEBHOOK)?;
            let ca_bundle = ca_bundle(&webhook.url, webhook.ca_file.as_deref(), WEBHOOK)?;
            let secret = webhook_secret
                .filter(|secret| !secret.is_empty())
                .ok_or(AlertsSectionError::MissingSecret)?;
            delivery.webhook = Some(WebhookConfig {
                url: webhook.url.clone(),
                secret,
                ca_bundle,
            });
        }
        if let Some(alertmanager) = &self.alertmanager {
            check_url(&alertmanager.url, ALERTMANAGER)?;
            let ca_bundle = ca_bundle(
                &alertmanager.url,
                alertmanager.ca_file.as_deref(),
                ALERTMANAGER,
            )?;
            let firing_ttl = Duration::from_secs(3600 * alertmanager.firing_ttl_hours.max(1));
            let renew_interval = Duration::from_secs(60 * alertmanager.renew_minutes.max(1));
            if renew_interval >= firing_ttl {
                return Err(AlertsSectionError::RenewalOutlastsTtl);
            }
            delivery.alertmanager = Some(AlertmanagerConfig {
                url: alertmanager.url.clone(),
                firing_ttl,
                generator_url: alertmanager.generator_url.clone(),
                renew_interval,
                ca_bundle,
            });
        }
        delivery.retry_initial = Duration::from_millis(self.retry_initial_ms.max(1));
        delivery.retry_max = Duration::from_millis(self.retry_max_ms.max(1));
        delivery.max_attempts = self.max_attempts.max(1);
        delivery.timeout = Duration::from_millis(self.timeout_ms.max(1));
        Ok(delivery)
    }
}

fn check_url(url: &str, section: &'static str) -> Result<(), AlertsSectionError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(AlertsSectionError::UrlScheme {
        section,
        url: url.to_string(),
    })
}

fn ca_bundle(
    url: &str,
    ca_file: Option<&Path>,
    section: &'static str,
) -> Result<Option<CaBundle>, AlertsSectionError> {
    let Some(path) = ca_file else {
        return Ok(None);
    };
    if !url.starts_with("https://") {
        return Err(AlertsSectionError::CaFileOnHttp {
            section,
            path: path.to_path_buf(),
            url: url.to_string(),
        });
    }
    CaBundle::load(path)
        .map(Some)
        .map_err(|source| AlertsSectionError::CaFile { section, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_delivers_with_the_defaults() {
        let delivery = AlertsSection::default()
            .delivery(None)
            .expect("nothing to check");
        let defaults = DeliveryConfig::default();
        assert_eq!(
            (
                delivery.retry_initial,
                delivery.retry_max,
                delivery.max_attempts,
                delivery.timeout
            ),
            (
                defaults.retry_initial,
                defaults.retry_max,
                defaults.max_attempts,
                defaults.timeout
            )
        );
        assert!(delivery.webhook.is_none() && delivery.alertmanager.is_none());
    }

    #[test]
    fn a_renewal_as_long_as_the_ttl_is_refused() {
        let section = AlertsSection {
            alertmanager: Some(AlertmanagerSection {
                url: "http://am".to_string(),
                firing_ttl_hours: 1,
                renew_minutes: 60,
                generator_url: None,
                ca_file: None,
            }),
            ..AlertsSection::default()
        };
        assert!(matches!(
            section.delivery(None),
            Err(AlertsSectionError::RenewalOutlastsTtl)
        ));
    }
}
