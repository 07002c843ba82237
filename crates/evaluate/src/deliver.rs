//! Alert delivery: the task that takes alert transitions from the store's outbox to
//! their receivers, one loop per receiver.
//!
//! - [`signature`]: HMAC-SHA256 of webhook bodies (no I/O).
//! - [`backoff`]: retry delays, exponential with jitter (no I/O).
//! - [`tls`]: the HTTP client of each receiver, `http://` or `https://`; an HTTPS
//!   receiver is verified against its CA bundle when it names one, else the system's
//!   roots.
//! - [`section`]: the config-file sections `[alerts]`, `[alerts.webhook]` and
//!   `[alerts.alertmanager]`, with their defaults, checked into a [`DeliveryConfig`].
//! - a generic webhook (`POST` of the [`Alert`] as JSON, signed, with an
//!   `Idempotency-Key`) and Prometheus Alertmanager (`POST /api/v2/alerts`).
//!
//! The evaluator queues each transition in the same store commit as the state that
//! produced it; this task never touches the evaluator or the stream, so a slow or dead
//! receiver only grows the outbox (bounded, see `EvaluationCommit::outbox_limit`).
//! Per receiver, entries go out in queue order: a failed head is retried after its
//! backoff before anything behind it, so a resolution never overtakes its firing.
//! An entry leaves the outbox only after the receiver answered 2xx: a crash between
//! the answer and the removal sends it again, with the same idempotency key (at least
//! once); a graceful stop lets the attempt in flight finish and settle first.

pub mod backoff;
pub mod section;
pub mod signature;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use ais_model::time::unix_now_ms;
use ais_store::outbox::{AlertOutbox, OutboxEntry, OutboxOutcome};
use rand::Rng;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::alert::{Alert, AlertState};
use crate::deliver::tls::CaBundle;

/// Outbox sink of the webhook.
pub const SINK_WEBHOOK: &str = "webhook";
/// Outbox sink of Alertmanager.
pub const SINK_ALERTMANAGER: &str = "alertmanager";

/// Entries read from the outbox at a time per receiver.
const PENDING_BATCH: usize = 64;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://…` or `https://…` URL the alerts are posted to.
    pub url: String,
    /// HMAC key of `X-Ais-Signature`.
    pub secret: Vec<u8>,
    /// Roots an `https://` URL is verified against instead of the system's.
    pub ca_bundle: Option<CaBundle>,
}

#[derive(Debug, Clone)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093` or `https://alertmanager.internal`;
    /// alerts go to `{url}/api/v2/alerts`.
    pub url: String,
    /// `endsAt` of a firing alert: this long after it is sent. Alertmanager resolves
    /// an alert by itself at `endsAt`, so it must outlast the incident; the resolution
    /// ends it earlier.
    pub firing_ttl: Duration,
    /// `generatorURL` of every alert (e.g. the dashboard), when set.
    pub generator_url: Option<String>,
    /// A firing alert is sent again this often while it fires, so it outlives
    /// `firing_ttl` in Alertmanager; shorter than `firing_ttl`.
    pub renew_interval: Duration,
    /// Roots an `https://` URL is verified against instead of the system's.
    pub ca_bundle: Option<CaBundle>,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub webhook: Option<WebhookConfig>,
    pub alertmanager: Option<AlertmanagerConfig>,
    /// First retry delay; doubles per failure up to `retry_max`, with jitter.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Failed attempts after which an entry is abandoned (logged and counted).
    pub max_attempts: u32,
    /// Per attempt: connect, send and answer.
    pub timeout: Duration,
    /// How often an idle receiver loop looks for new entries.
    pub poll: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            webhook: None,
            alertmanager: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_attempts: 30,
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(500),
        }
    }
}

impl DeliveryConfig {
    /// Sinks that get firing alerts again while they fire, and how often.
    pub fn renewing(&self) -> Option<(Vec<String>, Duration)> {
        self.alertmanager
            .as_ref()
            .map(|config| (vec![SINK_ALERTMANAGER.to_string()], config.renew_interval))
    }

    /// The outbox sinks of the configured receivers.
    pub fn sinks(&self) -> Vec<String> {
        let mut sinks = Vec::new();
        if self.webhook.is_some() {
            sinks.push(SINK_WEBHOOK.to_string());
        }
        if self.alertmanager.is_some() {
            sinks.push(SINK_ALERTMANAGER.to_string());
        }
        sinks
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    /// With its causes: reqwest's own message omits them, and the cause is what tells
    /// an untrusted certificate from a refused connection.
    #[error("request failed: {0}")]
    Request(String),
    #[error("receiver answered {0}")]
    Status(reqwest::StatusCode),
    #[error("cannot encode the alert: {0}")]
    Encode(String),
}

enum Receiver {
    Webhook(WebhookConfig),
    Alertmanager(AlertmanagerConfig),
}

impl Receiver {
    fn sink(&self) -> &'static str {
        match self {
            Self::Webhook(_) => SINK_WEBHOOK,
            Self::Alertmanager(_) => SINK_ALERTMANAGER,
        }
    }

    /// The receiver's own client: each may trust its own CA bundle.
    fn client(&self, timeout: Duration) -> Result<reqwest::Client, tls::TlsError> {
        match self {
            Self::Webhook(config) => tls::client(&config.url, config.ca_bundle.as_ref(), timeout),
            Self::Alertmanager(config) => {
                tls::client(&config.url, config.ca_bundle.as_ref(), timeout)
            }
        }
    }

    async fn send(&self, client: &reqwest::Client, alert: &Alert) -> Result<(), SendError> {
        let request = match self {
            Self::Webhook(config) => {
                let body = serde_json::to_vec(alert)
                    .map_err(|error| SendError::Encode(error.to_string()))?;
                let timestamp = unix_now_ms() / 1000;
                client
                    .post(&config.url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", &alert.id)
                    .header("x-ais-timestamp", timestamp.to_string())
                    .header(
                        "x-ais-signature",
                        signature::signature_header(&config.secret, timestamp, &body),
                    )
                    .body(body)
            }
            Self::Alertmanager(config) => {
                let body = alertmanager_body(alert, config, unix_now_ms())?;
                client
                    .post(format!(
                        "{}/api/v2/alerts",
                        config.url.trim_end_matches('/')
                    ))
                    .header("content-type", "application/json")
                    .body(body)
            }
        };
        let response = request.send().await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SendError::Status(response.status()))
        }
    }
}

/// The Alertmanager v2 body of one alert: `[{labels, annotations, startsAt, endsAt,
/// generatorURL}]`. A firing alert ends `firing_ttl` after `now_ms` unless resolved
/// first; a resolved one at its resolution.
fn alertmanager_body(
    alert: &Alert,
    config: &AlertmanagerConfig,
    now_ms: i64,
) -> Result<Vec<u8>, SendError> {
    let ends_at_ms = match (alert.state, alert.ends_at_ms) {
        (AlertState::Resolved, Some(ends)) => ends,
        _ => {
            now_ms.max(alert.starts_at_ms)
                + i64::try_from(config.firing_ttl.as_millis()).unwrap_or(i64::MAX / 2)
        }
    };
    let mut annotations = alert.annotations.clone();
    annotations.insert("ais_transition_id".to_string(), alert.id.clone());
    let mut body = json!({
        "labels": alert.labels,
        "annotations": annotations,
        "startsAt": rfc3339(alert.starts_at_ms)?,
        "endsAt": rfc3339(ends_at_ms)?,
    });
    if let Some(url) = &config.generator_url {
        body["generatorURL"] = url.clone().into();
    }
    serde_json::to_vec(&[body]).map_err(|error| SendError::Encode(error.to_string()))
}

impl From<reqwest::Error> for SendError {
    fn from(error: reqwest::Error) -> Self {
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            cause = inner.source();
        }
        Self::Request(message)
    }
}

fn rfc3339(ms: i64) -> Result<String, SendError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|error| SendError::Encode(error.to_string()))?
        .format(&Rfc3339)
        .map_err(|error| SendError::Encode(error.to_string()))
}

/// Runs one loop per configured receiver until `shutdown`; each finishes the attempt
/// in flight and records its outcome before returning.
pub async fn run(config: DeliveryConfig, store: Arc<dyn AlertOutbox>, shutdown: CancellationToken) {
    let mut receivers = Vec::new();
    if let Some(webhook) = &config.webhook {
        receivers.push(Receiver::Webhook(webhook.clone()));
    }
    if let Some(alertmanager) = &config.alertmanager {
        receivers.push(Receiver::Alertmanager(alertmanager.clone()));
    }
    let mut loops = tokio::task::JoinSet::new();
    for receiver in receivers {
        let client = match receiver.client(config.timeout) {
            Ok(client) => client,
            Err(error) => {
                let sink = receiver.sink();
                tracing::error!(%error, sink, "cannot build the receiver's HTTP client: its alerts stay in the outbox");
                continue;
            }
        };
        // Every outcome exported at zero, so an alert on the first abandoned delivery
        // sees an increase.
        for outcome in ["delivered", "failed", "abandoned"] {
            metrics::counter!("ais_alert_deliveries_total", "sink" => receiver.sink(), "outcome" => outcome)
                .increment(0);
        }
        loops.spawn(deliver_loop(
            receiver,
            config.clone(),
            client,
            store.clone(),
            shutdown.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
}

async fn deliver_loop(
    receiver: Receiver,
    config: DeliveryConfig,
    client: reqwest::Client,
    store: Arc<dyn AlertOutbox>,
    shutdown: CancellationToken,
) {
    let sink = receiver.sink();
    'outer: loop {
        if shutdown.is_cancelled() {
            return;
        }
        let pending = match store.outbox_pending(sink, PENDING_BATCH).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, sink, "cannot read the alert outbox; will retry");
                Vec::new()
            }
        };
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.poll) => {}
            }
            continue;
        }
        for entry in pending {
            let wait = entry.next_attempt_ms - unix_now_ms();
            if wait > 0 {
                let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            let outcome = attempt(&receiver, &client, &config, &entry).await;
            let failed = !matches!(outcome, OutboxOutcome::Delivered);
            if let Err(error) = store.outbox_settle(entry.id, outcome).await {
                tracing::warn!(%error, sink, "cannot record a delivery; it may be sent again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(config.poll) => {}
                }
                continue 'outer;
            }
            if failed {
                // Re-read: the head now waits for its backoff, in order.
                continue 'outer;
            }
        }
    }
}

/// One delivery attempt of `entry` and what should become of it.
async fn attempt(
    receiver: &Receiver,
    client: &reqwest::Client,
    config: &DeliveryConfig,
    entry: &OutboxEntry,
) -> OutboxOutcome {
    let sink = receiver.sink();
    let alert: Alert = match serde_json::from_slice(&entry.payload) {
        Ok(alert) => alert,
        Err(error) => {
            tracing::error!(%error, sink, key = %entry.key, "unreadable alert in the outbox; dropped");
            metrics::counter!("ais_alert_deliveries_total", "sink" => sink, "outcome" => "abandoned")
                .increment(1);
            return OutboxOutcome::Abandoned;
        }
    };
    let started = std::time::Instant::now();
    let result = receiver.send(client, &alert).await;
    metrics::histogram!("ais_alert_delivery_seconds", "sink" => sink)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            metrics::counter!("ais_alert_deliveries_total", "sink" => sink, "outcome" => "delivered")
                .increment(1);
            tracing::debug!(sink, id = %alert.id, state = alert.state.as_str(), "alert delivered");
            OutboxOutcome::Delivered
        }
        Err(error) => {
            let attempts = entry.attempts.saturating_add(1);
            if attempts >= config.max_attempts {
                metrics::counter!("ais_alert_deliveries_total", "sink" => sink, "outcome" => "abandoned")
                    .increment(1);
                tracing::error!(%error, sink, id = %alert.id, attempts, "alert delivery abandoned");
                return OutboxOutcome::Abandoned;
            }
            metrics::counter!("ais_alert_deliveries_total", "sink" => sink, "outcome" => "failed")
                .increment(1);
            let delay = backoff::retry_delay(
                attempts,
                config.retry_initial,
                config.retry_max,
                rand::rng().random::<f64>(),
            );
            tracing::warn!(%error, sink, id = %alert.id, attempts, retry_in = ?delay, "alert delivery failed");
            OutboxOutcome::Retry {
                attempts,
                next_attempt_ms: unix_now_ms()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alert::{base_labels, AlertKind};

    fn alert(state: AlertState, ends_at_ms: Option<i64>) -> Alert {
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), "chat burns its budget".to_string());
        Alert::new(
            AlertKind::BurnRate,
            state,
            base_labels(
                "AisSloBurnRate",
                AlertKind::BurnRate,
                "acme",
                Some("m"),
                "page",
            ),
            annotations,
            1_800_000_000_000,
            ends_at_ms,
            BTreeMap::new(),
        )
    }

    fn config() -> AlertmanagerConfig {
        AlertmanagerConfig {
            url: "http://127.0.0.1:9093".to_string(),
            firing_ttl: Duration::from_secs(3600),
            generator_url: None,
            renew_interval: Duration::from_secs(900),
            ca_bundle: None,
        }
    }

    #[test]
    fn alertmanager_bodies_carry_labels_and_times() {
        let firing = alertmanager_body(
            &alert(AlertState::Firing, None),
            &config(),
            1_800_000_060_000,
        )
        .expect("encodes");
        let firing: serde_json::Value = serde_json::from_slice(&firing).expect("json");
        assert_eq!(firing[0]["labels"]["alertname"], "AisSloBurnRate");
        assert_eq!(firing[0]["labels"]["tenant"], "acme");
        assert_eq!(firing[0]["startsAt"], "2027-01-15T08:00:00Z");
        // An hour after it was sent.
        assert_eq!(firing[0]["endsAt"], "2027-01-15T09:01:00Z");
        let resolved = alertmanager_body(
            &alert(AlertState::Resolved, Some(1_800_000_300_000)),
            &config(),
            1_800_000_900_000,
        )
        .expect("encodes");
        let resolved: serde_json::Value = serde_json::from_slice(&resolved).expect("json");
        assert_eq!(resolved[0]["endsAt"], "2027-01-15T08:05:00Z");
        assert_eq!(resolved[0]["labels"], firing[0]["labels"]);
    }

    #[test]
    fn an_incident_is_routed_by_its_labels_and_described_by_its_annotations() {
        use crate::alert::AlertBuilder;

        let incident = AlertBuilder::new(AlertKind::Anomaly, "acme", Some("m"), "warning")
            .label("incident", "0123")
            .annotation("detectors", "error_rate_wilson, latency_p95_zscore")
            .annotation("peak_score", "6.500")
            .firing(1_800_000_000_000);
        let body = alertmanager_body(&incident, &config(), 1_800_000_060_000).expect("encodes");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let labels: BTreeMap<String, String> =
            serde_json::from_value(body[0]["labels"].clone()).expect("labels");
        let names: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "alertname",
                "incident",
                "kind",
                "model",
                "severity",
                "source",
                "tenant"
            ]
        );
        assert_eq!(labels["alertname"], "AisAnomaly");
        assert_eq!(labels["incident"], "0123");
        let annotations = &body[0]["annotations"];
        assert_eq!(
            annotations["detectors"],
            "error_rate_wilson, latency_p95_zscore"
        );
        assert_eq!(annotations["peak_score"], "6.500");
        assert_eq!(annotations["ais_transition_id"], incident.id.as_str());
    }
}
