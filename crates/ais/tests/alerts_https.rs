//! Alert receivers over HTTPS through `ais serve`: a budget alert reaches a local
//! HTTPS webhook (axum-server with rustls, its certificate signed by a CA made for the
//! test) named in `[alerts.webhook] ca_file`, signed; a receiver URL of another scheme,
//! or a CA file that is missing or holds no certificate, stops the start-up with an
//! error naming the setting and the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};

use ais_testkit::hmac_sha256;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use common::certs::make_certificates;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

/// How long the test waits for something it expects before failing.
const SECRET: &str = "https-webhook-secret";

/// One request the receiver answered.
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// An HTTPS webhook receiver on 127.0.0.1 port 0 with `{name}.pem`/`{name}.key`,
/// answering 200; its URL and what it receives.
fn https_receiver(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    name: &str,
) -> (String, mpsc::Receiver<Received>) {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
            .expect("receiver certificate")
            .collect::<Result<_, _>>()
            .expect("receiver certificate parses");
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("receiver key");
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certificates, key)
    .expect("server certificate");
    let (sender, received) = mpsc::channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(Received {
                    headers,
                    body: body.to_vec(),
                });
                "ok"
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("receiver binds");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("receiver address").port();
    let _guard = runtime.enter();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_config)),
    )
    .expect("receiver server");
    runtime.spawn(server.serve(app.into_make_service()));
    (format!("https://127.0.0.1:{port}/hook"), received)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("header {name} missing"))
}

fn write_config(dir: &Path, alerts: &str) -> PathBuf {
    let path = dir.join("ais.toml");
    let config = format!(
        r#"
[[budgets]]
tenant = "default"
daily_usd = 0.01
thresholds = [100]

[alerts]
retry_initial_ms = 100
retry_max_ms = 400
{alerts}
"#
    );
    std::fs::write(&path, config).expect("config written");
    path
}

/// `ais serve` with `config`, expected to refuse to start: its stderr.
fn refused_start(dir: &Path, config: &Path) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_ais"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(config)
        .env_remove("AIS_API_KEYS")
        .env_remove("AIS_WEBHOOK_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ais starts");
    // Killed if the wait below gives up: a server that started must not outlive the test.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let mut child = KillOnDrop(child);
    let status = eventually(
        &format!("ais serve to refuse {}", config.display()),
        || match child.0.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still running".to_string()),
            Err(error) => Err(error.to_string()),
        },
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut child.0.stderr.take().expect("piped stderr"),
        &mut stderr,
    )
    .expect("stderr");
    assert!(!status.success(), "refused with a failure status: {stderr}");
    stderr
}

#[test]
fn a_budget_alert_reaches_an_https_webhook_that_trusts_the_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_certificates(dir.path(), "receiver");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (url, received) = https_receiver(&runtime, dir.path(), "receiver");
    let ca_file = dir.path().join("receiver-ca.pem");
    let config = write_config(
        dir.path(),
        &format!(
            "[alerts.webhook]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nca_file = {:?}\n",
            ca_file.display().to_string()
        ),
    );
    let server = Server::start_with(
        &dir.path().join("data"),
        &[],
        &[
            "--evaluate-interval-ms",
            "200",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        None,
    );
    // A few minutes back, so its window becomes final once the watermark moves on.
    let event = json!({
        "timestamp": minute_floor(now_ms()) - 5 * 60_000,
        "model": "chat",
        "latency_ms": 120,
        "cost_usd": 0.02,
    });
    let (status, body) = post_json(&client(), &server, None, &event);
    assert_eq!(status, 202, "{body}");

    let request = received
        .recv_timeout(PATIENCE)
        .expect("the budget alert reaches the HTTPS receiver");
    let timestamp = header(&request.headers, "x-ais-timestamp");
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&request.body);
    let expected: String = hmac_sha256(SECRET.as_bytes(), &signed)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        header(&request.headers, "x-ais-signature"),
        format!("sha256={expected}"),
        "the signature verifies"
    );
    let alert: Value = serde_json::from_slice(&request.body).expect("JSON alert");
    assert_eq!(alert["labels"]["alertname"], "AisBudget");
    assert_eq!(alert["state"], "firing");
    assert_eq!(header(&request.headers, "idempotency-key"), alert["id"]);
    let exit = server.stop();
    assert!(exit.success(), "graceful exit: {exit:?}");
}

#[test]
fn a_bad_receiver_scheme_or_ca_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");

    let config = write_config(
        dir.path(),
        &format!("[alerts.webhook]\nurl = \"ftp://alerts.internal/ais\"\nsecret = \"{SECRET}\"\n"),
    );
    let stderr = refused_start(dir.path(), &config);
    assert!(
        stderr.contains("[alerts.webhook] url") && stderr.contains("ftp://alerts.internal/ais"),
        "{stderr}"
    );

    let missing = dir.path().join("missing-ca.pem");
    let config = write_config(
        dir.path(),
        &format!(
            "[alerts.alertmanager]\nurl = \"https://alertmanager.internal\"\nca_file = {:?}\n",
            missing.display().to_string()
        ),
    );
    let stderr = refused_start(dir.path(), &config);
    assert!(
        stderr.contains("[alerts.alertmanager] ca_file") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );

    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "no certificate in here\n").expect("write");
    let config = write_config(
        dir.path(),
        &format!(
            "[alerts.webhook]\nurl = \"https://alerts.internal/ais\"\nsecret = \"{SECRET}\"\nca_file = {:?}\n",
            empty.display().to_string()
        ),
    );
    let stderr = refused_start(dir.path(), &config);
    assert!(
        stderr.contains("empty-ca.pem") && stderr.contains("no certificate"),
        "{stderr}"
    );
}
