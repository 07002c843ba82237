//! `ais serve`: the whole pipeline in one process on embedded storage.
//!
//! Start-up: open the WAL (recovering its tail) and the SQLite store (which also keeps
//! the dead letters), start the stream processor on its own thread (its CPU-heavy batches never stall the HTTP workers),
//! bind the HTTP and OTLP/gRPC listeners, print the ready line. Shutdown on
//! SIGINT/SIGTERM, in order: stop accepting on both and finish in-flight requests,
//! close the log (everything acknowledged is
//! fsync'd), let the processor drain the log into the store and commit, then exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ais_evaluate::budget::reserve::Reservations;
use ais_evaluate::evaluator::Evaluator;
use ais_ingest::pressure::Pressure;
use ais_ingest::ratelimit::TenantLimiter;
use ais_ingest::{IngestConfig, IngestState};
use ais_log::wal::{Wal, WalConfig};
use ais_log::Log;
use ais_model::dead_letter::DeadLetterSource;
use ais_model::report::IngestReport;
use ais_model::time::unix_now_ms;
use ais_model::time::SystemClock;
use ais_serve::objectives::ObjectivesState;
use ais_serve::{
    DlqState, LedgerState, QueryState, Readiness, ReadinessCheck, ReportState, ReserveState,
    UsageState,
};
use ais_store::sqlite::SqliteStore;
use ais_store::Store;
use ais_stream::{Processor, ProcessorConfig, Progress};
use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Args;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::args::{parse_listen_or_off, ListenOrOff};
use crate::config::{EdgeConfig, ServeConfig};

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// HTTP listen address (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, env = "AIS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// OTLP/gRPC listen address, or `off` (port 0 picks a free port) [default: 127.0.0.1:4317]
    #[arg(long, env = "AIS_OTLP_GRPC_LISTEN", value_parser = parse_listen_or_off)]
    pub otlp_grpc_listen: Option<ListenOrOff>,
    /// Directory of the write-ahead log and the store [default: ./ais-data]
    #[arg(long, env = "AIS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (keys, prices, limits)
    #[arg(long, env = "AIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Byte cap of the write-ahead log; beyond it ingest answers 503 [default: 1 GiB]
    #[arg(long, env = "AIS_WAL_MAX_BYTES")]
    pub wal_max_bytes: Option<u64>,
    /// How long after a minute ends its window stays open for late events [default: 120]
    #[arg(long, env = "AIS_ALLOWED_LATENESS_SECS")]
    pub allowed_lateness_secs: Option<u64>,
    /// Records the stream processor reads and commits as one batch, at most (one
    /// partition's records, one store transaction) [default: 65536]
    #[arg(long, env = "AIS_MAX_BATCH_RECORDS")]
    pub max_batch_records: Option<usize>,
    /// TLS certificate chain (PEM); with --tls-key, the listener speaks HTTPS only.
    /// SIGHUP reloads both files without dropping connections
    #[arg(long, env = "AIS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "AIS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Default per-tenant rate limit in events/s (tenants without their own limit in the
    /// config file); none: unlimited
    #[arg(long, env = "AIS_RATE_LIMIT_EPS")]
    pub rate_limit_eps: Option<f64>,
    /// Burst of the default rate limit, in events [default: one second of events]
    #[arg(long, env = "AIS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// How often the anomaly evaluator looks for newly final windows, in ms [default: 5000]
    #[arg(long, env = "AIS_EVALUATE_INTERVAL_MS")]
    pub evaluate_interval_ms: Option<u64>,
    /// Oldest event accepted, in hours (the raw-event retention) [default: 168]
    #[arg(long, env = "AIS_RAW_RETENTION_HOURS")]
    pub raw_retention_hours: Option<u64>,
    /// How long the payloads (`input`, `output`) of raw events are kept, in hours; the
    /// events stay, without them. At most the raw-event retention [default: 72]
    #[arg(long, env = "AIS_PAYLOAD_RETENTION_HOURS")]
    pub payload_retention_hours: Option<u64>,
    /// How long rollups are kept, in days [default: 90]
    #[arg(long, env = "AIS_ROLLUP_RETENTION_DAYS")]
    pub rollup_retention_days: Option<u64>,
    /// How often retention and the compaction of final raw-event hours run, in ms [default: 60000]
    #[arg(long, env = "AIS_MAINTENANCE_INTERVAL_MS")]
    pub maintenance_interval_ms: Option<u64>,
    /// The gateway's listen address (OpenAI-compatible calls routed to the upstreams of
    /// `[gateway]`; port 0 picks a free port); none: no gateway unless `[gateway] listen`
    #[arg(long, env = "AIS_GATEWAY_LISTEN")]
    pub gateway_listen: Option<SocketAddr>,
    /// How long a query that scans raw events (a breakdown) may run before it answers
    /// 503, in ms [default: 10000]
    #[arg(long, env = "AIS_QUERY_TIMEOUT_MS")]
    pub query_timeout_ms: Option<u64>,
    #[command(flatten)]
    pub pressure: PressureArgs,
    #[command(flatten)]
    pub demo: crate::demo::DemoArgs,
}

/// Backpressure at the ingest edge, shared by `serve` and `ingest`.
#[derive(Debug, Default, Clone, Args)]
pub struct PressureArgs {
    /// Requests held at once (being read, decoded or awaiting the log); beyond it 503
    /// with Retry-After [default: 1024]
    #[arg(long, env = "AIS_MAX_IN_FLIGHT_REQUESTS")]
    pub max_in_flight_requests: Option<usize>,
    /// Request body bytes held at once, compressed and decompressed; beyond it 503 with
    /// Retry-After [default: 268435456, 256 MiB]
    #[arg(long, env = "AIS_MAX_IN_FLIGHT_BYTES")]
    pub max_in_flight_bytes: Option<usize>,
    /// Queueing the edge allows before it admits fewer requests at once: the shortest
    /// time from admission to answer over an interval, in ms; 0: the fixed counts
    /// alone [default: 50]
    #[arg(long, env = "AIS_ADMISSION_TARGET_MS")]
    pub admission_target_ms: Option<u64>,
}

/// How long in-flight HTTPS requests may take to finish at shutdown.
const GRACEFUL_PATIENCE: Duration = Duration::from_secs(30);
/// How long shutdown waits for the processor to drain before giving up on it; what it
/// did not commit is still in the log and is replayed at the next start.
pub(crate) const DRAIN_PATIENCE: Duration = Duration::from_secs(30);
/// Beyond one delivery attempt's timeout, how long shutdown waits for the delivery
/// task to record the outcome of the attempt in flight.
const DELIVERY_PATIENCE: Duration = Duration::from_secs(5);

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let demo_args = args.demo.clone();
    let config = ServeConfig::resolve(args)?;
    let demo = if demo_args.demo {
        Some(DemoPlan {
            arrivals: crate::demo::Arrivals::choose(&demo_args, crate::demo::SEED)?,
            seed: crate::demo::SEED,
        })
    } else {
        None
    };
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    ais_store::register_metrics();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;

    let wal = Arc::new(open_wal(&config)?);
    let store = Arc::new(
        SqliteStore::open(&config.data_dir.join("ais.sqlite"))
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?,
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ais-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, wal, store, metrics, demo))
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only the ready line.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn open_wal(config: &ServeConfig) -> anyhow::Result<Wal> {
    let dir = config.data_dir.join("wal");
    Wal::open(WalConfig {
        max_bytes: config.wal_max_bytes,
        ..WalConfig::new(dir.clone())
    })
    .with_context(|| format!("cannot open the write-ahead log in {}", dir.display()))
}

/// What `--demo` sends: its arrival shape and the seed of everything random in it.
struct DemoPlan {
    arrivals: crate::demo::Arrivals,
    seed: u64,
}

async fn serve(
    mut config: ServeConfig,
    wal: Arc<Wal>,
    store: Arc<SqliteStore>,
    metrics: PrometheusHandle,
    demo: Option<DemoPlan>,
) -> anyhow::Result<()> {
    let log: Arc<dyn Log> = wal.clone();
    let store_dyn: Arc<dyn Store> = store.clone();
    let stop_processor = CancellationToken::new();
    let processor_config = ProcessorConfig {
        allowed_lateness: config.allowed_lateness,
        max_batch_records: config.max_batch_records,
        dimensions: config.dimensions.clone(),
        usage: config.usage.clone(),
        ..ProcessorConfig::default()
    };
    let dedup_horizon_ms = processor_config.dedup.horizon_ms;
    // Reservations learn the spend the store holds before the stream commits anything
    // more, then each batch's as it lands: no batch is counted twice or missed.
    let reservations = Arc::new(std::sync::Mutex::new(Reservations::new(
        config.evaluator.budgets.clone(),
        ais_serve::reserve::DEFAULT_MAX_HOLDS,
        ais_serve::reserve::DEFAULT_MAX_VALUES,
    )));
    ais_serve::book::load_spend(store.as_ref(), &config.evaluator.budgets, |entries| {
        reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(entries)
    })
    .await
    .context("cannot read the budgets' spend from the store")?;
    let processor = Processor::new(processor_config);
    // Without budgets there is nothing to keep up to date: no copy of each batch's usage.
    let processor = if config.evaluator.budgets.is_empty() {
        processor
    } else {
        let observed = reservations.clone();
        processor.with_usage_observer(Arc::new(
            move |landed: &ais_stream::processor::LandedUsage| {
                let (settled, unknown) = {
                    let mut book = observed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // One step: a settled hold's estimate leaves as its real spend arrives.
                    book.observe(&landed.entries);
                    let outcome = book.settle(&landed.settled);
                    book.forget_before(unix_now_ms());
                    outcome
                };
                metrics::counter!("ais_budget_settlements_total", "outcome" => "settled")
                    .increment(settled);
                metrics::counter!("ais_budget_settlements_total", "outcome" => "unknown")
                    .increment(unknown);
            },
        ))
    };
    let progress = processor.progress();
    let processor_thread = ais_stream::thread::spawn(
        processor,
        log.clone(),
        store_dyn.clone(),
        stop_processor.clone(),
    )?;

    let demo_identity = demo
        .as_ref()
        .map(|_| crate::demo::identity(&mut config.keyring));
    let keyring = Arc::new(std::mem::take(&mut config.keyring));
    let ingest_state = ingest_state(
        &config.edge,
        config.raw_retention,
        log.clone(),
        keyring.clone(),
    );
    let ingest = ais_ingest::router(ingest_state.clone());
    let ingest_router_for_demo = ingest.clone();
    let letters: Arc<dyn DeadLetterSource> = store.clone();
    let dlq = ais_serve::dlq_router(DlqState {
        letters: Some(letters),
        log: Some(log.clone()),
        keyring: keyring.clone(),
        unavailable: String::new(),
    });
    let report = ais_serve::report_router(ReportState {
        report: ingest_state.report.clone(),
        keyring: keyring.clone(),
    });
    let query_state = QueryState {
        store: store_dyn.clone(),
        keyring: keyring.clone(),
        limits: config.query_limits,
        incident_gap: config.incident_gap,
        payload_readers: config.payload_readers,
    };
    let objectives = ais_serve::objectives_router(ObjectivesState {
        query: query_state.clone(),
        evaluation: store_dyn.clone(),
        slos: Arc::new(config.evaluator.slos.clone()),
        budgets: Arc::new(config.evaluator.budgets.clone()),
    });
    let backlog: ais_serve::ledger::Backlog = {
        let (log, progress) = (log.clone(), progress.clone());
        Arc::new(move || Some(progress.lag_records(&log.status().end_offsets)))
    };
    let ledger = ais_serve::ledger_router(LedgerState {
        query: query_state.clone(),
        backlog,
    });
    // The gateway's calls reserve against the same book as `/v1/budgets/reserve`.
    let gateway_budgets: Option<Arc<dyn ais_gateway::budget::BudgetGate>> =
        match (&config.gateway, config.evaluator.budgets.is_empty()) {
            (Some(gateway), false) => Some(Arc::new(crate::budget_gate::BookGate {
                book: ais_serve::book::Book::Local(reservations.clone()),
                hold_ttl: gateway.limits.timeout + crate::budget_gate::SETTLED_HOLD,
            })),
            _ => None,
        };
    let reserve = ais_serve::reserve_router(ReserveState {
        keyring: keyring.clone(),
        book: ais_serve::book::Book::Local(reservations),
    });
    let usage = ais_serve::usage_router(UsageState {
        query: query_state.clone(),
        config: Arc::new(config.usage.clone()),
    });
    let query = ais_serve::query_router(query_state);
    // Filled once the gateway has started (after the routes are built).
    let gateway_readiness = GatewayReadiness::default();
    let ops = ais_serve::ops_router(
        readiness(
            log.clone(),
            progress,
            store.clone(),
            gateway_readiness.clone(),
        ),
        Some(metrics),
        keyring.clone(),
    );
    let app = axum::Router::new()
        .merge(ingest)
        .merge(query)
        .merge(ledger)
        .merge(usage)
        .merge(reserve)
        .merge(dlq)
        .merge(objectives)
        .merge(report)
        .merge(ops)
        .merge(ais_serve::dashboard_router());

    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener
        .set_nonblocking(true)
        .context("listener to non-blocking")?;
    let bound: SocketAddr = listener.local_addr().context("listener address")?;

    // One signal stops every listener; each finishes its in-flight requests.
    let stop_servers = stop_on_signal();
    let (grpc_bound, grpc_server) = match config.otlp_grpc_listen {
        None => (None, None),
        Some(address) => {
            let grpc_listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for OTLP/gRPC on {address}"))?;
            let grpc_bound = grpc_listener
                .local_addr()
                .context("OTLP/gRPC listener address")?;
            let server = tokio::spawn(ais_ingest::grpc::serve(
                ingest_state.clone(),
                grpc_listener,
                stop_servers.clone().cancelled_owned(),
            ));
            (Some(grpc_bound), Some(server))
        }
    };
    let gateway = match &config.gateway {
        None => None,
        Some(gateway) => Some(
            start_gateway(
                gateway,
                &ingest_state,
                keyring.clone(),
                log.clone(),
                axum::Router::new(),
                gateway_budgets,
                stop_servers.clone(),
            )
            .await?,
        ),
    };
    if let Some(gateway) = &gateway {
        let _ = gateway_readiness.set(gateway.registry.clone());
    }
    let bound_addresses = Bound {
        http: bound,
        otlp_grpc: grpc_bound,
        gateway: gateway.as_ref().map(|gateway| gateway.bound),
    };

    let evaluator = tokio::spawn(
        Evaluator::new(config.evaluator.clone()).run(store_dyn.clone(), stop_processor.clone()),
    );
    // Alert delivery: its own task and stop signal, so shutdown lets the attempt in
    // flight finish and record its outcome (a delivered alert is not sent again).
    let stop_delivery = CancellationToken::new();
    let delivery_patience = config.delivery.timeout + DELIVERY_PATIENCE;
    let delivery = tokio::spawn(ais_evaluate::deliver::run(
        config.delivery.clone(),
        store_dyn.clone(),
        stop_delivery.clone(),
    ));
    let retention = tokio::spawn(ais_store::maintenance::run(
        store_dyn.clone(),
        ais_store::maintenance::Retain {
            raw: config.raw_retention,
            payloads: config.payload_retention,
            rollups: config.rollup_retention,
            dedup_horizon_ms,
        },
        config.maintenance_interval,
        stop_processor.clone(),
    ));

    let demo_task = match (demo, demo_identity) {
        (Some(plan), Some(identity)) => Some(tokio::spawn(crate::demo::run(
            ingest_router_for_demo,
            store_dyn.clone(),
            identity,
            plan.arrivals,
            plan.seed,
            stop_servers.clone(),
        ))),
        _ => None,
    };

    match &config.tls {
        None => {
            let listener =
                tokio::net::TcpListener::from_std(listener).context("listener to tokio")?;
            announce(&bound_addresses, false, &config.data_dir);
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_servers.clone().cancelled_owned())
                .await
                .context("HTTP server failed")?;
        }
        Some(files) => {
            let tls = crate::tls::load(files).await?;
            let reloader = tokio::spawn(crate::tls::reload_on_sighup(tls.clone(), files.clone()));
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            let stop_https = stop_servers.clone();
            tokio::spawn(async move {
                stop_https.cancelled().await;
                stopper.graceful_shutdown(Some(GRACEFUL_PATIENCE));
            });
            announce(&bound_addresses, true, &config.data_dir);
            axum_server::from_tcp_rustls(listener, tls)
                .context("HTTPS listener")?
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .context("HTTPS server failed")?;
            reloader.abort();
        }
    }

    // The HTTP server returns once stopped; an HTTP failure stops gRPC too.
    stop_servers.cancel();
    if let Some(server) = grpc_server {
        match tokio::time::timeout(GRACEFUL_PATIENCE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "OTLP/gRPC server failed"),
            Ok(Err(error)) => tracing::error!(%error, "OTLP/gRPC server task failed"),
            Err(_) => {
                tracing::warn!("OTLP/gRPC exports did not finish within {GRACEFUL_PATIENCE:?}")
            }
        }
    }

    if let Some(gateway) = gateway {
        gateway.stop().await;
    }

    if let Some(task) = demo_task {
        // Stopped by the same signal; it must be done before the log closes.
        let _ = task.await;
    }
    tracing::info!("shutting down: closing the log");
    if let Err(error) = log.close().await {
        tracing::error!(%error, "closing the log failed");
    }
    stop_processor.cancel();
    retention.abort();
    evaluator.abort();
    stop_delivery.cancel();
    if tokio::time::timeout(delivery_patience, delivery)
        .await
        .is_err()
    {
        tracing::warn!("alert delivery did not stop within {delivery_patience:?}; unsettled alerts are sent again at the next start");
    }
    let joined = tokio::task::spawn_blocking(move || processor_thread.join(DRAIN_PATIENCE))
        .await
        .context("joining the stream processor")?;
    joined?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The gateway of `ais serve`, running.
pub(crate) struct RunningGateway {
    pub(crate) bound: SocketAddr,
    /// Its upstreams, for `/readyz`.
    pub(crate) registry: Arc<ais_gateway::registry::Registry>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Writes the calls' events into the log; ends once the server is gone and every
    /// queued event is written.
    writer: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// Waits for the stopped server to finish its calls (streams included), then for
    /// their events to reach the log: before the log closes.
    pub(crate) async fn stop(self) {
        match tokio::time::timeout(GRACEFUL_PATIENCE, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "gateway server failed"),
            Ok(Err(error)) => tracing::error!(%error, "gateway server task failed"),
            Err(_) => {
                tracing::warn!("gateway calls did not finish within {GRACEFUL_PATIENCE:?}")
            }
        }
        if tokio::time::timeout(GRACEFUL_PATIENCE, self.writer)
            .await
            .is_err()
        {
            tracing::warn!(
                "the gateway's call events did not reach the log within {GRACEFUL_PATIENCE:?}"
            );
        }
    }
}

/// Binds the gateway and serves it, with `extra` routes beside its own, until `stop`;
/// each call's event goes into `log` through the same validation (prices, accepted
/// ages) as ingest's, and each caller is admitted by ingest's keyring and rate limiter.
pub(crate) async fn start_gateway(
    gateway: &ais_gateway::config::GatewayConfig,
    ingest: &IngestState,
    keyring: Arc<ais_model::auth::Keyring>,
    log: Arc<dyn Log>,
    extra: axum::Router,
    budgets: Option<Arc<dyn ais_gateway::budget::BudgetGate>>,
    stop: CancellationToken,
) -> anyhow::Result<RunningGateway> {
    use ais_gateway::record::{LogSink, Recorder, Validation};

    let listen = gateway
        .listen
        .context("the gateway has no listen address")?;
    let clock: Arc<dyn ais_model::time::Clock> = Arc::new(SystemClock);
    let (recorder, writer) = Recorder::spawn(
        Arc::new(LogSink(log)),
        Validation {
            prices: ingest.prices.clone(),
            max_event_age: ingest.config.max_event_age,
            max_event_future: ingest.config.max_event_future,
            payloads: ingest.config.payloads.clone(),
        },
        gateway.max_pending_events,
        clock.clone(),
    );
    let state =
        ais_gateway::GatewayState::new(gateway, keyring, ingest.limiter.clone(), recorder, clock)?;
    let state = match budgets {
        Some(gate) => state.with_budgets(ais_gateway::budget::Budgets {
            gate,
            prices: ingest.prices.clone(),
        }),
        None => state,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for the gateway on {listen}"))?;
    let bound = listener.local_addr().context("gateway listener address")?;
    // Ends with the registry, once the server is gone.
    let _gauges = ais_gateway::spawn_gauge_refresh(&state.registry);
    let registry = state.registry.clone();
    let app = ais_gateway::router(state).merge(extra);
    // Each streamed chunk goes out at once: with Nagle's algorithm a small write waits
    // for the caller's delayed ACK, some 40 ms per chunk.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Ok(RunningGateway {
        bound,
        registry,
        server,
        writer,
    })
}

/// What the ingest routes need, from the resolved configuration.
pub(crate) fn ingest_state(
    edge: &EdgeConfig,
    max_event_age: Duration,
    log: Arc<dyn Log>,
    keyring: Arc<ais_model::auth::Keyring>,
) -> IngestState {
    IngestState {
        log,
        keyring,
        prices: Arc::new(edge.prices.clone()),
        limiter: Arc::new(TenantLimiter::new(
            edge.default_rate_limit,
            edge.tenant_rate_limits.clone(),
            Box::new(SystemClock),
        )),
        pressure: Arc::new(Pressure::new(edge.pressure)),
        report: Arc::new(IngestReport::new(unix_now_ms())),
        config: Arc::new(IngestConfig {
            max_event_age,
            payloads: edge.payloads.clone(),
            ..IngestConfig::default()
        }),
    }
}

/// A token cancelled by SIGINT or SIGTERM.
pub(crate) fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    stop
}

/// The addresses the listeners got (port 0 picks one).
struct Bound {
    http: SocketAddr,
    otlp_grpc: Option<SocketAddr>,
    gateway: Option<SocketAddr>,
}

/// Prints the ready line (stdout, one JSON object) and logs it.
fn announce(bound: &Bound, tls: bool, data_dir: &std::path::Path) {
    let mut line = serde_json::json!({ "ready": true, "http": bound.http.to_string(), "tls": tls });
    if let Some(grpc) = bound.otlp_grpc {
        line["otlp_grpc"] = grpc.to_string().into();
    }
    if let Some(gateway) = bound.gateway {
        line["gateway"] = gateway.to_string().into();
    }
    println!("{line}");
    tracing::info!(http = %bound.http, otlp_grpc = ?bound.otlp_grpc, gateway = ?bound.gateway, tls, data_dir = %data_dir.display(), "ais serve is ready");
}

/// Each component's readiness. Counts of events, records and offsets go in `counts`,
/// which `/readyz` shows only to admin keys (or on an open server); the details name
/// no counts, since anyone may read them.
/// The gateway's upstreams once it runs, for `/readyz`.
pub(crate) type GatewayReadiness = Arc<std::sync::OnceLock<Arc<ais_gateway::registry::Registry>>>;

/// `/readyz`'s `gateway` component, when the gateway runs: ready whatever its upstreams
/// do (an upstream outage is not this process's, and taking it out of rotation would
/// not help), the detail naming the models with open circuits.
pub(crate) fn gateway_component(gateway: &GatewayReadiness) -> Option<Readiness> {
    let registry = gateway.get()?;
    let (replicas, open, detail) = registry.availability();
    Some(Readiness {
        component: "gateway",
        ready: true,
        detail,
        facts: [
            ("replicas", replicas as i64),
            ("replicas_open", open as i64),
        ]
        .into_iter()
        .collect(),
        counts: Default::default(),
    })
}

fn readiness(
    log: Arc<dyn Log>,
    progress: Progress,
    store: Arc<SqliteStore>,
    gateway: GatewayReadiness,
) -> ReadinessCheck {
    Arc::new(move || {
        let raw = store.raw_stats();
        let status = log.status();
        let lag = progress.lag_records(&status.end_offsets);
        let committed: u64 = progress.committed_offsets().values().sum();
        vec![
            Readiness {
                component: "log",
                ready: status.writable,
                detail: status.detail,
                facts: Default::default(),
                counts: status.counts,
            },
            Readiness {
                component: "stream",
                // A lagging stream does not stop ingest: the log buffers it.
                ready: true,
                detail: if lag == 0 {
                    "caught up with the log".to_string()
                } else {
                    "behind the log".to_string()
                },
                facts: Default::default(),
                counts: [
                    ("lag_records", lag as i64),
                    ("committed_offset", committed as i64),
                ]
                .into_iter()
                .collect(),
            },
            Readiness {
                component: "store",
                ready: true,
                detail: format!("{} bytes of raw events in Parquet files", raw.bytes),
                facts: [("raw_bytes", raw.bytes as i64)].into_iter().collect(),
                counts: [
                    ("raw_files", raw.files as i64),
                    ("raw_events", raw.rows as i64),
                ]
                .into_iter()
                .collect(),
            },
        ]
        .into_iter()
        .chain(gateway_component(&gateway))
        .collect()
    })
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("signal received: stopping");
}
