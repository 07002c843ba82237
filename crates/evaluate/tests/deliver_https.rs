//! Alert delivery to `https://` receivers: a local HTTPS receiver (axum-server with
//! rustls) whose certificate is signed by a CA made for the test. With that CA as the
//! receiver's bundle, a signed webhook alert and an Alertmanager alert arrive over TLS;
//! trusting only the system's roots, the same receiver is refused at the handshake and
//! the entry is retried, then abandoned, as any failed delivery is.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ais_evaluate::alert::{base_labels, Alert, AlertKind, AlertState};
use ais_evaluate::deliver::tls::CaBundle;
use ais_evaluate::deliver::{
    self, AlertmanagerConfig, DeliveryConfig, WebhookConfig, SINK_ALERTMANAGER, SINK_WEBHOOK,
};
use ais_store::outbox::{AlertOutbox, OutboxEntry, OutboxOutcome};
use ais_store::StoreError;
use ais_testkit::{hmac_sha256, PATIENCE};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something it expects before failing.
const SECRET: &[u8] = b"https-webhook-secret";

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA `ca.pem` and a receiver certificate `receiver.pem`/`receiver.key` for
/// localhost and 127.0.0.1 signed by it, as the listener's TLS test makes them.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ais receiver test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "receiver.key",
        "-out",
        "receiver.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "receiver.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "receiver.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// One request the receiver answered.
#[derive(Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// An HTTPS receiver on 127.0.0.1 port 0 answering 200 to the webhook and Alertmanager
/// paths; returns its `https://127.0.0.1:PORT` base and what it receives.
async fn https_receiver(dir: &Path) -> (String, mpsc::UnboundedReceiver<Received>) {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("receiver.pem"))
            .expect("receiver certificate")
            .collect::<Result<_, _>>()
            .expect("receiver certificate parses");
    let key = PrivateKeyDer::from_pem_file(dir.join("receiver.key")).expect("receiver key");
    // The server names its provider too, so nothing in this process installs a default
    // one: delivery must work without it.
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certificates, key)
    .expect("server certificate");
    let (sender, received) = mpsc::unbounded_channel();
    let record = move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
        let sender = sender.clone();
        async move {
            let _ = sender.send(Received {
                path: uri.path().to_string(),
                headers,
                body: body.to_vec(),
            });
            "ok"
        }
    };
    let app = Router::new()
        .route("/hook", post(record.clone()))
        .route("/api/v2/alerts", post(record));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("receiver binds");
    listener.set_nonblocking(true).expect("non-blocking");
    let address = listener.local_addr().expect("receiver address");
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_config)),
    )
    .expect("receiver server");
    tokio::spawn(server.serve(app.into_make_service()));
    (format!("https://127.0.0.1:{}", address.port()), received)
}

/// The outbox in memory: entries per sink, and every settlement as it happens.
struct MemoryOutbox {
    entries: Mutex<Vec<OutboxEntry>>,
    settled: mpsc::UnboundedSender<(String, OutboxOutcome)>,
}

#[async_trait::async_trait]
impl AlertOutbox for MemoryOutbox {
    async fn outbox_pending(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let entries = self.entries.lock().expect("outbox");
        Ok(entries
            .iter()
            .filter(|entry| entry.sink == sink)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn outbox_settle(&self, id: i64, outcome: OutboxOutcome) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().expect("outbox");
        let Some(index) = entries.iter().position(|entry| entry.id == id) else {
            return Ok(());
        };
        let sink = entries[index].sink.clone();
        match outcome {
            OutboxOutcome::Retry {
                attempts,
                next_attempt_ms,
            } => {
                entries[index].attempts = attempts;
                entries[index].next_attempt_ms = next_attempt_ms;
            }
            OutboxOutcome::Delivered | OutboxOutcome::Abandoned => {
                entries.remove(index);
            }
        }
        let _ = self.settled.send((sink, outcome));
        Ok(())
    }
}

fn alert() -> Alert {
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert("summary".to_string(), "acme spent its budget".to_string());
    Alert::new(
        AlertKind::Budget,
        AlertState::Firing,
        base_labels(
            "AisBudget",
            AlertKind::Budget,
            "acme",
            Some("m"),
            "critical",
        ),
        annotations,
        1_800_000_000_000,
        None,
        std::collections::BTreeMap::new(),
    )
}

/// An outbox holding `alert` once for each of `sinks`.
fn outbox(
    alert: &Alert,
    sinks: &[&str],
) -> (
    Arc<MemoryOutbox>,
    mpsc::UnboundedReceiver<(String, OutboxOutcome)>,
) {
    let payload = serde_json::to_vec(alert).expect("alert encodes");
    let entries = sinks
        .iter()
        .zip(1..)
        .map(|(sink, id)| OutboxEntry {
            id,
            sink: sink.to_string(),
            key: alert.id.clone(),
            payload: payload.clone(),
            attempts: 0,
            next_attempt_ms: 0,
        })
        .collect();
    let (settled, settlements) = mpsc::unbounded_channel();
    (
        Arc::new(MemoryOutbox {
            entries: Mutex::new(entries),
            settled,
        }),
        settlements,
    )
}

fn delivery(base: &str, ca_bundle: Option<CaBundle>) -> DeliveryConfig {
    DeliveryConfig {
        webhook: Some(WebhookConfig {
            url: format!("{base}/hook"),
            secret: SECRET.to_vec(),
            ca_bundle: ca_bundle.clone(),
        }),
        alertmanager: Some(AlertmanagerConfig {
            url: base.to_string(),
            firing_ttl: Duration::from_secs(3600),
            generator_url: None,
            renew_interval: Duration::from_secs(900),
            ca_bundle,
        }),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(40),
        max_attempts: 2,
        timeout: Duration::from_secs(5),
        poll: Duration::from_millis(20),
    }
}

async fn next<T>(channel: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, channel.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("header {name} missing"))
}

#[tokio::test]
async fn with_the_ca_bundle_a_signed_alert_is_delivered_over_https() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_certificates(dir.path());
    let (base, mut received) = https_receiver(dir.path()).await;
    let bundle = CaBundle::load(&dir.path().join("ca.pem")).expect("the test CA loads");
    let alert = alert();
    let (store, mut settlements) = outbox(&alert, &[SINK_WEBHOOK, SINK_ALERTMANAGER]);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(deliver::run(
        delivery(&base, Some(bundle)),
        store.clone(),
        shutdown.clone(),
    ));

    let mut paths = Vec::new();
    for _ in 0..2 {
        let request = next(&mut received, "request at the receiver").await;
        if request.path == "/hook" {
            let timestamp = header(&request.headers, "x-ais-timestamp");
            let mut signed = timestamp.as_bytes().to_vec();
            signed.push(b'.');
            signed.extend_from_slice(&request.body);
            let expected: String = hmac_sha256(SECRET, &signed)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            assert_eq!(
                header(&request.headers, "x-ais-signature"),
                format!("sha256={expected}"),
                "the signature verifies"
            );
            assert_eq!(header(&request.headers, "idempotency-key"), alert.id);
            let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
            assert_eq!(body["labels"]["alertname"], "AisBudget");
        } else {
            let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
            assert_eq!(
                body[0]["annotations"]["ais_transition_id"],
                alert.id.as_str()
            );
        }
        paths.push(request.path);
    }
    paths.sort();
    assert_eq!(paths, ["/api/v2/alerts", "/hook"]);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(next(&mut settlements, "settlement").await);
    }
    assert!(
        outcomes
            .iter()
            .all(|(_, outcome)| *outcome == OutboxOutcome::Delivered),
        "{outcomes:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("delivery stops")
        .expect("delivery task ends cleanly");
}

#[tokio::test]
async fn with_system_roots_only_a_self_signed_receiver_is_retried_then_abandoned() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_certificates(dir.path());
    let (base, mut received) = https_receiver(dir.path()).await;
    let alert = alert();
    let (store, mut settlements) = outbox(&alert, &[SINK_WEBHOOK]);
    let shutdown = CancellationToken::new();
    let mut config = delivery(&base, None);
    config.alertmanager = None;
    let task = tokio::spawn(deliver::run(config, store.clone(), shutdown.clone()));

    let (sink, first) = next(&mut settlements, "first settlement").await;
    assert_eq!(sink, SINK_WEBHOOK);
    assert!(
        matches!(first, OutboxOutcome::Retry { attempts: 1, .. }),
        "an untrusted receiver is a failed attempt, retried: {first:?}"
    );
    let (_, second) = next(&mut settlements, "second settlement").await;
    assert_eq!(
        second,
        OutboxOutcome::Abandoned,
        "after max_attempts it is given up, as any failure"
    );
    assert!(
        received.try_recv().is_err(),
        "nothing reached the receiver: the handshake failed before any request"
    );
    assert!(store.entries.lock().expect("outbox").is_empty());
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("delivery stops")
        .expect("delivery task ends cleanly");
}

#[test]
fn a_missing_or_empty_ca_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing-ca.pem");
    let error = CaBundle::load(&missing).expect_err("no such file");
    let message = error.to_string();
    assert!(message.contains("missing-ca.pem"), "{message}");

    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let message = CaBundle::load(&empty)
        .expect_err("no certificate")
        .to_string();
    assert!(message.contains("empty-ca.pem"), "{message}");
    assert!(message.contains("no certificate"), "{message}");
}
