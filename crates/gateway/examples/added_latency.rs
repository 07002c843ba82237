//! The latency the gateway adds to a call: the same paced load sent straight to a test
//! upstream and through the gateway in front of it, on this machine, and the
//! percentiles of both.
//!
//! `cargo run --release -p ais-gateway --example added_latency -- RATE SECONDS [stream]
//! [awake] [realtime] [shared | wide]` (e.g. `1000 20`); `-- saturate SECONDS CALLERS
//! [stream] [awake] [shared | wide]` instead
//! keeps CALLERS calls in flight at all times (each caller sends its next call when the
//! last one is answered) and prints the calls answered per second: the throughput at
//! saturation. Events go to a sink that drops them, so the log's cost is not counted
//! (ingest's benchmarks measure it).
//!
//! **Where each party runs.** By default the gateway has a core of its own: its
//! runtime's one worker thread is pinned to the last core, while the caller and the
//! upstream share one worker pinned to the first (the nearest this one machine comes
//! to the caller and the model server being other machines). Both paths are measured
//! with the caller and the upstream on that same core, so the difference between them
//! is the gateway's. With `shared`, all three share one runtime over every core, as a
//! gateway beside its callers would. With `wide`, the gateway's runtime has a worker
//! on every core (the caller and the upstream stay on the first): for loads one core
//! of gateway does not carry.
//!
//! **`awake`** keeps every core from going idle while measuring: a spinning thread per
//! core under `SCHED_IDLE`, which any other thread preempts at once. On a virtual
//! machine a halted vCPU takes up to milliseconds to wake, and a call through the
//! gateway wakes the other core four times (request and answer, on each hop); with
//! `awake` the figures are the software's, without it they include those wakes.
//!
//! **`realtime`** runs the benchmark's own threads (the caller's, the upstream's and
//! the gateway's) under `SCHED_FIFO`, so no ordinary thread of another process
//! preempts them. A core is only the gateway's own if nothing else runs there: other
//! processes of the machine that wake for milliseconds at a time and at a higher
//! priority than the benchmark (on the benchmark's VM, its guest agent, at nice -10,
//! for 3-40 ms about once a second, and the kernel's memory monitor for 2-4 ms) hold up
//! every call in flight through a core they take, and the calls queued behind them.
//! Under `SCHED_FIFO` they run only when the benchmark's threads wait. For paced loads
//! the cores carry only: a `SCHED_FIFO` thread that never waits holds its core (the
//! kernel's real-time limit leaves others 5% of it), so `saturate` ignores it.

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

async fn gateway(upstream_base: &str) -> String {
    let text = format!(
        "[gateway]\n[[gateway.upstreams]]\nmodel = \"m\"\nprovider = \"openai\"\nurls = [\"{upstream_base}\"]\n"
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

/// Where the caller, the upstream and the gateway run.
struct Layout {
    /// The caller's and the upstream's runtime.
    caller: tokio::runtime::Runtime,
    /// The gateway's runtime: its own, on a core of its own, or `None` to share the
    /// caller's.
    gateway: Option<tokio::runtime::Runtime>,
    /// The gateway's runtime has a worker on every core (the caller's and its own).
    wide: bool,
}

impl Layout {
    fn new(shared: bool, wide: bool) -> Layout {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if shared || cores < 2 {
            prioritise();
            let caller = tokio::runtime::Builder::new_multi_thread()
                .on_thread_start(prioritise)
                .enable_all()
                .build()
                .expect("runtime");
            return Layout {
                caller,
                gateway: None,
                wide: false,
            };
        }
        let pinned = |core: usize| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .on_thread_start(move || {
                    pin_to(core);
                    prioritise();
                })
                .enable_all()
                .build()
                .expect("runtime")
        };
        // The thread that drives the caller's futures (`block_on`) is this one.
        pin_to(0);
        prioritise();
        let gateway = if wide {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores)
                .on_thread_start(prioritise)
                .enable_all()
                .build()
                .expect("runtime")
        } else {
            pinned(cores - 1)
        };
        Layout {
            caller: pinned(0),
            gateway: Some(gateway),
            wide,
        }
    }

    fn describe(&self) -> &'static str {
        match (&self.gateway, self.wide) {
            (Some(_), false) => "gateway on a core of its own, caller and upstream on another",
            (Some(_), true) => {
                "gateway with a worker on each core, caller and upstream on the first"
            }
            (None, _) => "caller, upstream and gateway sharing every core",
        }
    }

    /// Starts the gateway in front of `upstream` on its runtime; its base URL.
    fn gateway(&self, upstream: &Upstream) -> String {
        let runtime = self.gateway.as_ref().unwrap_or(&self.caller);
        let base = upstream.base.clone();
        runtime.block_on(async move { gateway(&base).await })
    }
}

/// Pins the calling thread to `core`, so the parties do not take each other's (with
/// `taskset`, which needs no unsafe code here; unpinned, with a word, without it).
fn pin_to(core: usize) {
    let pinned = own_thread_id()
        .and_then(|thread| {
            std::process::Command::new("taskset")
                .args(["-p", "-c", &core.to_string(), &thread])
                .stdout(std::process::Stdio::null())
                .status()
                .ok()
        })
        .is_some_and(|status| status.success());
    if !pinned {
        eprintln!("could not pin a thread to core {core}; it runs unpinned");
    }
}

/// With `realtime`, the benchmark's threads run under `SCHED_FIFO`.
static REALTIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Under `realtime`, puts the calling thread under `SCHED_FIFO` (priority 1).
fn prioritise() {
    if !REALTIME.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let done = own_thread_id().is_some_and(|thread| {
        std::process::Command::new("chrt")
            .args(["--fifo", "--pid", "1", &thread])
            .status()
            .is_ok_and(|status| status.success())
    });
    if !done {
        eprintln!("could not put a thread under SCHED_FIFO; it runs at its normal priority");
    }
}

/// A thread per core that spins under `SCHED_IDLE` until the process ends, so no core
/// halts between calls (see the module docs).
fn keep_cores_awake() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for core in 0..cores {
        std::thread::spawn(move || {
            pin_to(core);
            let idle = own_thread_id().is_some_and(|thread| {
                std::process::Command::new("chrt")
                    .args(["--idle", "--pid", "0", &thread])
                    .status()
                    .is_ok_and(|status| status.success())
            });
            if !idle {
                eprintln!("could not make a spinning thread SCHED_IDLE; not spinning");
                return;
            }
            loop {
                std::hint::spin_loop();
            }
        });
    }
}

/// The calling thread's id, as `taskset` and `chrt` take it.
fn own_thread_id() -> Option<String> {
    let path = std::fs::read_link("/proc/thread-self").ok()?;
    Some(path.file_name()?.to_str()?.to_string())
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let stream = args.iter().any(|a| a == "stream");
    let awake = args.iter().any(|a| a == "awake");
    if awake {
        keep_cores_awake();
    }
    let saturating = args.get(1).is_some_and(|a| a == "saturate");
    // Not at saturation: a thread that never waits would hold its core (module docs).
    REALTIME.store(
        !saturating && args.iter().any(|a| a == "realtime"),
        std::sync::atomic::Ordering::Relaxed,
    );
    let layout = Layout::new(
        args.iter().any(|a| a == "shared"),
        args.iter().any(|a| a == "wide"),
    );
    let upstream = Upstream::start(layout.caller.handle());
    let through = layout.gateway(&upstream);
    let kind = format!(
        "{}{}{}",
        if stream { "streamed" } else { "whole" },
        if awake { ", cores kept awake" } else { "" },
        if REALTIME.load(std::sync::atomic::Ordering::Relaxed) {
            ", under SCHED_FIFO"
        } else {
            ""
        },
    );
    if saturating {
        let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
        let callers: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
        layout.caller.block_on(async {
            let _ = saturate(&upstream.base, callers, 2, stream).await;
            let _ = saturate(&through, callers, 2, stream).await;
            let (direct, direct_failed) = saturate(&upstream.base, callers, seconds, stream).await;
            let (gateway, gateway_failed) = saturate(&through, callers, seconds, stream).await;
            let per_second = |count: u64| count as f64 / seconds as f64;
            println!(
                "saturated by {callers} callers for {seconds} s, {kind} ({}): direct {:.0} calls/s ({direct_failed} failed); through the gateway {:.0} calls/s ({gateway_failed} failed)",
                layout.describe(),
                per_second(direct),
                per_second(gateway),
            );
        });
        return;
    }
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    layout.caller.block_on(async {
        // Warm both paths (connections, allocations) before measuring.
        let _ = run(&upstream.base, rate, 2, stream).await;
        let _ = run(&through, rate, 2, stream).await;
        let (direct, direct_failed) = run(&upstream.base, rate, seconds, stream).await;
        let (gateway, gateway_failed) = run(&through, rate, seconds, stream).await;
        println!(
            "{rate} req/s for {seconds} s, {kind} ({}): direct p50 {:.3} ms p99 {:.3} ms ({} answered, failed: {direct_failed:?}); through the gateway p50 {:.3} ms p99 {:.3} ms ({} answered, failed: {gateway_failed:?}); added p50 {:.3} ms p99 {:.3} ms",
            layout.describe(),
            ms(&direct, 0.5),
            ms(&direct, 0.99),
            direct.len(),
            ms(&gateway, 0.5),
            ms(&gateway, 0.99),
            gateway.len(),
            ms(&gateway, 0.5) - ms(&direct, 0.5),
            ms(&gateway, 0.99) - ms(&direct, 0.99),
        );
    });
}
