//! The latency the gateway adds to a call: the same paced load sent straight to a test
//! upstream and through the gateway in front of it, on this machine, and the
//! percentiles of both.
//!
//! `cargo run -p ais-gateway --example added_latency -- RATE SECONDS [stream]`
//! (e.g. `1000 20`); `-- saturate SECONDS CALLERS [stream]` instead keeps CALLERS
//! calls in flight at all times (each caller sends its next call when the last one is
//! answered) and prints the calls answered per second: the throughput at saturation. Client, gateway and upstream share the machine's cores, so the
//! figures include their competition; events go to a sink that drops them, so the
//! log's cost is not counted (ingest's benchmarks measure it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ais_gateway::config::GatewaySection;
use ais_gateway::record::{EventSink, Recorder, Validation};
use ais_gateway::GatewayState;
use ais_ingest::ratelimit::TenantLimiter;
use ais_log::RecordBatch;
use ais_model::auth::Keyring;
use ais_model::price::PriceTable;
use ais_model::time::{Clock, SystemClock};
use ais_testkit::upstream::Upstream;
use axum::serve::ListenerExt;
use hdrhistogram::Histogram;
use serde_json::json;

struct Discard;

#[async_trait::async_trait]
impl EventSink for Discard {
    async fn append(&self, _batch: RecordBatch) -> Result<(), String> {
        Ok(())
    }
}

const KEY: &str = "bench-key";

async fn gateway(upstream: &Upstream) -> String {
    let text = format!(
        "[gateway]\n[[gateway.upstreams]]\nmodel = \"m\"\nprovider = \"openai\"\nurls = [\"{}\"]\n",
        upstream.base
    );
    #[derive(serde::Deserialize)]
    struct File {
        gateway: GatewaySection,
    }
    let config = toml::from_str::<File>(&text)
        .expect("config")
        .gateway
        .resolve(&|_| None)
        .expect("resolves");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (recorder, _writer) = Recorder::spawn(
        Arc::new(Discard),
        Validation {
            prices: Arc::new(PriceTable::with_defaults()),
            max_event_age: Duration::from_secs(3600),
            max_event_future: Duration::from_secs(300),
            payloads: None,
        },
        65_536,
        clock.clone(),
    );
    let state = GatewayState::new(
        &config,
        Arc::new(Keyring::parse_plain(&format!("bench:{KEY}")).expect("keys")),
        Arc::new(TenantLimiter::unlimited()),
        recorder,
        clock,
    )
    .expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, ais_gateway::router(state)).await;
    });
    format!("http://{address}/v1")
}

/// Paced calls to `base` for `seconds`; the latency of each, send to last byte.
async fn run(
    base: &str,
    rate: u64,
    seconds: u64,
    stream: bool,
) -> (Histogram<u64>, std::collections::BTreeMap<String, u64>) {
    let client = reqwest::Client::new();
    let body = json!({"model": "m", "stream": stream,
        "messages": [{"role": "user", "content": "how long does this take"}]});
    let histogram = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let failures = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        ticker.tick().await;
        // Measured from the due time, so queueing in the client is not hidden.
        let due = Instant::now();
        let (client, body, url) = (
            client.clone(),
            body.clone(),
            format!("{base}/chat/completions"),
        );
        let (histogram, failures) = (histogram.clone(), failures.clone());
        tasks.spawn(async move {
            let answer = client.post(url).bearer_auth(KEY).json(&body).send().await;
            let failure = match answer {
                Ok(response) if response.status().is_success() => match response.bytes().await {
                    Ok(_) => None,
                    Err(_) => Some("body cut".to_string()),
                },
                Ok(response) => Some(response.status().as_u16().to_string()),
                Err(error) if error.is_connect() => Some("connect".to_string()),
                Err(_) => Some("send".to_string()),
            };
            match failure {
                None => {
                    let micros = due.elapsed().as_micros() as u64;
                    let _ = histogram.lock().expect("lock").record(micros.max(1));
                }
                Some(kind) => *failures.lock().expect("lock").entry(kind).or_insert(0) += 1,
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let histogram = histogram.lock().expect("lock").clone();
    let failures = failures.lock().expect("lock").clone();
    (histogram, failures)
}

/// CALLERS callers each sending its next call as soon as the last is answered, for
/// `seconds`: (answered, failed).
async fn saturate(base: &str, callers: usize, seconds: u64, stream: bool) -> (u64, u64) {
    let client = reqwest::Client::new();
    let body = json!({"model": "m", "stream": stream,
        "messages": [{"role": "user", "content": "how long does this take"}]});
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, body, url) = (
            client.clone(),
            body.clone(),
            format!("{base}/chat/completions"),
        );
        tasks.spawn(async move {
            let (mut answered, mut failed) = (0u64, 0u64);
            while Instant::now() < end {
                let answer = client.post(&url).bearer_auth(KEY).json(&body).send().await;
                let ok = match answer {
                    Ok(response) if response.status().is_success() => {
                        response.bytes().await.is_ok()
                    }
                    _ => false,
                };
                if ok {
                    answered += 1;
                } else {
                    failed += 1;
                }
            }
            (answered, failed)
        });
    }
    let (mut answered, mut failed) = (0, 0);
    while let Some(Ok((ok, bad))) = tasks.join_next().await {
        answered += ok;
        failed += bad;
    }
    (answered, failed)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "saturate") {
        let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
        let callers: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
        let stream = args.get(4).is_some_and(|a| a == "stream");
        let upstream = Upstream::start(&tokio::runtime::Handle::current());
        let through = gateway(&upstream).await;
        let _ = saturate(&upstream.base, callers, 2, stream).await;
        let _ = saturate(&through, callers, 2, stream).await;
        let (direct, direct_failed) = saturate(&upstream.base, callers, seconds, stream).await;
        let (gateway, gateway_failed) = saturate(&through, callers, seconds, stream).await;
        let per_second = |count: u64| count as f64 / seconds as f64;
        println!(
            "saturated by {callers} callers for {seconds} s, {}: direct {:.0} calls/s ({direct_failed} failed); through the gateway {:.0} calls/s ({gateway_failed} failed)",
            if stream { "streamed" } else { "whole" },
            per_second(direct),
            per_second(gateway),
        );
        return;
    }
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let stream = args.get(3).is_some_and(|a| a == "stream");
    let upstream = Upstream::start(&tokio::runtime::Handle::current());
    let through = gateway(&upstream).await;
    // Warm both paths (connections, allocations) before measuring.
    let _ = run(&upstream.base, rate, 2, stream).await;
    let _ = run(&through, rate, 2, stream).await;
    let (direct, direct_failed) = run(&upstream.base, rate, seconds, stream).await;
    let (gateway, gateway_failed) = run(&through, rate, seconds, stream).await;
    println!(
        "{rate} req/s for {seconds} s, {}: direct p50 {:.3} ms p99 {:.3} ms ({} answered, failed: {direct_failed:?}); through the gateway p50 {:.3} ms p99 {:.3} ms ({} answered, failed: {gateway_failed:?}); added p50 {:.3} ms p99 {:.3} ms",
        if stream { "streamed" } else { "whole" },
        ms(&direct, 0.5),
        ms(&direct, 0.99),
        direct.len(),
        ms(&gateway, 0.5),
        ms(&gateway, 0.99),
        gateway.len(),
        ms(&gateway, 0.5) - ms(&direct, 0.5),
        ms(&gateway, 0.99) - ms(&direct, 0.99),
    );
}
