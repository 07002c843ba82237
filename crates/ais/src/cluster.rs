//! The distributed commands: `ais migrate`, `ais ingest`, `ais stream`, `ais query`.
//!
//! Each builds its engines from the addresses given (`--kafka`, `--clickhouse`), the
//! same way and in this one place, and reuses the single-node pieces: the ingest
//! router writes to a [`KafkaLog`] instead of the WAL, the stream processor reads a
//! Kafka consumer group and commits to a [`ClickhouseStore`] (its dead letters going to
//! the topic `TOPIC.dlq` first), the query API reads that store (and, with `--kafka`,
//! the dead-letter topic). Each resolves its own settings from its own flags
//! ([`crate::config`]: flags, then `AIS_*`, then the config file, then defaults), keys,
//! prices, rate limits and detector settings exactly as `ais serve` does.
//!
//! Each command exists only in a binary built with its engines (the crate's features):
//! `ingest` with `kafka` and `redis`; `stream`, `query` and `migrate` with `kafka` and
//! `clickhouse`. The module is built when one of those sets is, so Kafka is always
//! here and an item of one set names only the other engine in its `#[cfg]`: `redis`
//! for `ingest`, `clickhouse` for the rest.

pub mod args;
#[cfg(all(feature = "redis", feature = "clickhouse"))]
mod holds;

use std::net::SocketAddr;
use std::sync::Arc;

use ais_log::kafka::{KafkaConfig, KafkaLog};
use ais_log::Log;
use ais_serve::{Readiness, ReadinessCheck};
use anyhow::{bail, Context};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::FileEngines;
use crate::serve::{init_tracing, stop_on_signal, DRAIN_PATIENCE};
use args::KafkaArgs;

// `ingest`: the Kafka log behind the breaker, the Redis overflow beside it.
#[cfg(feature = "redis")]
use {
    crate::config::{GatewayCommandConfig, IngestConfig},
    crate::serve::{gateway_component, ingest_state, start_gateway, GatewayReadiness},
    ais_log::breaker::BreakerLog,
    ais_log::overflow::{OverflowConfig, RedisOverflow},
    args::{GatewayArgs, IngestArgs},
};

// `stream`, `query`, `migrate`: Kafka and ClickHouse.
#[cfg(feature = "clickhouse")]
use {
    crate::config::{QueryConfig, StreamConfig, DEFAULT_TOPIC},
    ais_evaluate::deliver::DeliveryConfig,
    ais_evaluate::evaluator::{Evaluator, EvaluatorConfig},
    ais_log::kafka::consumer::{register_group_metrics, GroupHealth},
    ais_log::kafka::dlq::{DlqReader, KafkaDeadLetters},
    ais_log::kafka::{create_topics, TopicOutcome},
    ais_model::dead_letter::DeadLetterSource,
    ais_serve::objectives::ObjectivesState,
    ais_serve::{DlqState, LedgerState, QueryState, UsageState},
    ais_store::clickhouse::{ClickhouseConfig, ClickhouseStore, Dialect},
    ais_store::Store,
    ais_stream::{Processor, ProcessorConfig, Progress},
    args::{MigrateArgs, QueryArgs, StreamArgs},
    std::time::Duration,
    tokio_util::sync::CancellationToken,
};

#[cfg(feature = "clickhouse")]
pub const DEFAULT_GROUP: &str = "ais-stream";

/// How often a stream process checks whether it owns partition 0, where the evaluator
/// and retention run.
#[cfg(feature = "clickhouse")]
const EVALUATOR_OWNERSHIP_CHECK: Duration = Duration::from_secs(1);

fn kafka_config(args: &KafkaArgs, file: &FileEngines) -> anyhow::Result<KafkaConfig> {
    let Some(brokers) = args.kafka.clone().or_else(|| file.kafka.clone()) else {
        bail!("no Kafka brokers: pass --kafka HOST:PORT[,HOST:PORT…] (or AIS_KAFKA)");
    };
    let topic = crate::config::topic(args.topic.as_deref(), file);
    Ok(KafkaConfig::new(brokers, topic))
}

#[cfg(feature = "clickhouse")]
fn clickhouse_config(
    flag: &Option<String>,
    file: &FileEngines,
) -> anyhow::Result<ClickhouseConfig> {
    let Some(url) = flag.clone().or_else(|| file.clickhouse.clone()) else {
        bail!(
            "no ClickHouse: pass --clickhouse http://HOST:8123/?database=ais (or AIS_CLICKHOUSE)"
        );
    };
    Ok(ClickhouseConfig::from_url(&url)?)
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ais-http")
        .build()
        .context("cannot start the async runtime")
}

/// Binds `address` (port 0 picks one).
async fn bind(address: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr().context("listener address")?;
    Ok((listener, bound))
}

/// Prints the ready line: one JSON object on stdout with the bound addresses.
fn announce(command: &str, addresses: serde_json::Value) {
    let mut line = serde_json::json!({ "ready": true });
    if let (Some(line), Some(addresses)) = (line.as_object_mut(), addresses.as_object()) {
        line.extend(addresses.clone());
    }
    println!("{line}");
    tracing::info!(%line, "ais {command} is ready");
}

// ---------------------------------------------------------------------------------
// migrate

#[cfg(feature = "clickhouse")]
pub fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    init_tracing();
    if args.print_ddl {
        let dialect = if args.dialect == "legacy" {
            Dialect::Legacy
        } else {
            Dialect::Current
        };
        for statements in ais_store::clickhouse::schema::migrations(&args.database, dialect) {
            for statement in statements {
                println!("{statement};\n");
            }
        }
        return Ok(());
    }
    let file = crate::config::migrate_engines(args.config.as_deref())?;
    let wants_kafka = args.kafka.kafka.is_some() || file.kafka.is_some();
    let wants_clickhouse = args.clickhouse.is_some() || file.clickhouse.is_some();
    if !wants_kafka && !wants_clickhouse {
        bail!("nothing to migrate: pass --clickhouse URL, --kafka BROKERS, or both");
    }
    if args.partitions < 1 {
        bail!("--partitions must be at least 1, got {}", args.partitions);
    }
    runtime()?.block_on(async {
        if wants_clickhouse {
            let config = clickhouse_config(&args.clickhouse, &file)?;
            let report = ais_store::clickhouse::migrate(&config)
                .await
                .context("ClickHouse migration failed")?;
            println!(
                "clickhouse: database {} at schema version {} (was {}; server {}, {:?} DDL)",
                config.database,
                report.to_version,
                report.from_version,
                report.server_version,
                report.dialect
            );
        }
        if wants_kafka {
            let config = kafka_config(&args.kafka, &file)?;
            let outcomes = create_topics(&config, args.partitions, args.replication_factor)
                .await
                .context("Kafka topic creation failed")?;
            for (topic, outcome) in outcomes {
                let what = match outcome {
                    TopicOutcome::Created => format!(
                        "created with {} partitions, replication factor {}",
                        args.partitions, args.replication_factor
                    ),
                    TopicOutcome::Existed => "exists (left as it is)".to_string(),
                };
                println!("kafka: topic {topic} {what}");
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------
// ingest

#[cfg(feature = "redis")]
pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    init_tracing();
    let mut config = IngestConfig::resolve(&args)?;
    let kafka = kafka_config(&args.kafka, &config.engines)?;
    let overflow = config.overflow.take();
    let metrics = install_metrics()?;
    let log = Arc::new(
        KafkaLog::connect(kafka.clone())
            .with_context(|| format!("cannot use Kafka at {}", kafka.brokers))?,
    );
    runtime()?.block_on(async move {
        let guarded = guarded_log(log, config.breaker.clone(), overflow).await?;
        run_ingest(config, guarded, metrics).await
    })
}

/// Kafka behind the circuit breaker, with the Redis overflow beside it when one is
/// configured: how `ais ingest` and `ais gateway` write to the log.
#[cfg(feature = "redis")]
async fn guarded_log(
    log: Arc<KafkaLog>,
    breaker: ais_log::breaker::BreakerConfig,
    overflow: Option<OverflowConfig>,
) -> anyhow::Result<Arc<BreakerLog>> {
    let overflow = match overflow {
        Some(overflow) => Some(Arc::new(connect_overflow(overflow).await?)),
        None => None,
    };
    Ok(Arc::new(BreakerLog::new(log, breaker, overflow)))
}

/// Opens the overflow and says loudly when its server does not fsync every write.
#[cfg(feature = "redis")]
async fn connect_overflow(config: OverflowConfig) -> anyhow::Result<RedisOverflow> {
    let overflow = RedisOverflow::connect(config.clone())
        .with_context(|| format!("cannot use Redis at {}", config.url))?;
    match overflow.durability().await {
        Some((appendonly, appendfsync)) if appendonly == "yes" && appendfsync == "always" => {
            tracing::info!(key = %config.key, cap = config.max_bytes, "redis overflow ready (AOF, appendfsync always)");
        }
        Some((appendonly, appendfsync)) => tracing::warn!(
            %appendonly,
            %appendfsync,
            "the redis overflow server does not fsync every write (needs appendonly yes, appendfsync always): events acknowledged while the kafka circuit is open can be lost if redis crashes"
        ),
        None => tracing::warn!(
            "cannot read the redis overflow server's AOF settings (down, or CONFIG disabled); it must run with appendonly yes and appendfsync always"
        ),
    }
    Ok(overflow)
}

#[cfg(feature = "redis")]
async fn run_ingest(
    mut config: IngestConfig,
    log: Arc<BreakerLog>,
    metrics: PrometheusHandle,
) -> anyhow::Result<()> {
    let log_dyn: Arc<dyn Log> = log.clone();
    let keyring = Arc::new(std::mem::take(&mut config.keyring));
    let ingest_state = ingest_state(
        &config.edge,
        config.raw_retention,
        log_dyn.clone(),
        keyring.clone(),
    );
    let readiness: ReadinessCheck = {
        let log = log_dyn.clone();
        Arc::new(move || {
            let status = log.status();
            vec![Readiness {
                component: "log",
                ready: status.writable,
                detail: status.detail,
                facts: Default::default(),
                counts: status.counts,
            }]
        })
    };
    let stop = stop_on_signal();
    // The drain also probes a circuit that is not closed, so it runs without an
    // overflow too.
    let drain = {
        // Unique per process: the pod's name where there is one, the pid, the start.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ingest".to_string());
        let holder = format!("{host}:{}:{started}", std::process::id());
        tokio::spawn(
            log.clone()
                .run_drain(holder, stop.clone().cancelled_owned()),
        )
    };
    let app = axum::Router::new()
        .merge(ais_ingest::router(ingest_state.clone()))
        .merge(ais_serve::report_router(ais_serve::ReportState {
            report: ingest_state.report.clone(),
            keyring: keyring.clone(),
        }))
        .merge(ais_serve::ops_router(readiness, Some(metrics), keyring));

    let (listener, http) = bind(config.listen).await?;
    let mut grpc = None;
    let mut grpc_bound = None;
    if let Some(address) = config.otlp_grpc_listen {
        let (grpc_listener, bound) = bind(address).await?;
        grpc_bound = Some(bound);
        grpc = Some(tokio::spawn(ais_ingest::grpc::serve(
            ingest_state.clone(),
            grpc_listener,
            stop.clone().cancelled_owned(),
        )));
    }
    let mut addresses = serde_json::json!({ "http": http.to_string() });
    if let Some(bound) = grpc_bound {
        addresses["otlp_grpc"] = bound.to_string().into();
    }
    announce("ingest", addresses);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await
        .context("HTTP server failed")?;
    stop.cancel();
    if let Some(grpc) = grpc {
        if let Ok(Ok(Err(error))) = tokio::time::timeout(DRAIN_PATIENCE, grpc).await {
            tracing::error!(%error, "OTLP/gRPC server failed");
        }
    }
    // Whatever stays in the overflow is drained by the next pod to hold the lease.
    let _ = tokio::time::timeout(DRAIN_PATIENCE, drain).await;
    // Every request answered 202 had its delivery reports; this flushes the rest.
    tracing::info!("shutting down: flushing the Kafka producer");
    log.close().await.context("flushing the Kafka producer")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

// ---------------------------------------------------------------------------------
// gateway

/// `ais gateway`: the gateway alone, its calls' events into Kafka through the same
/// circuit breaker and Redis overflow as `ais ingest`.
#[cfg(feature = "redis")]
pub fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    init_tracing();
    let mut config = GatewayCommandConfig::resolve(&args)?;
    let kafka = kafka_config(&args.kafka, &config.engines)?;
    let overflow = config.overflow.take();
    // The budgets' holds are in the overflow's Redis, their spend in ClickHouse.
    #[cfg(feature = "clickhouse")]
    let budget_engines = match (&overflow, &args.clickhouse, &config.engines.clickhouse) {
        (Some(overflow), flag, file) if flag.is_some() || file.is_some() => Some((
            overflow.url.clone(),
            clickhouse_config(&args.clickhouse, &config.engines)?,
        )),
        _ => None,
    };
    let metrics = install_metrics()?;
    let log = Arc::new(
        KafkaLog::connect(kafka.clone())
            .with_context(|| format!("cannot use Kafka at {}", kafka.brokers))?,
    );
    runtime()?.block_on(async move {
        let guarded = guarded_log(log, config.breaker.clone(), overflow).await?;
        #[cfg(feature = "clickhouse")]
        let budgets = gateway_budgets(budget_engines, &config).await?;
        #[cfg(not(feature = "clickhouse"))]
        let budgets = None;
        run_gateway(config, guarded, budgets, metrics).await
    })
}

/// What the gateway's calls reserve against: the holds shared with `ais query`, when
/// budgets are configured and both Redis and ClickHouse are given; otherwise nothing
/// is enforced, and a warning says why when budgets are configured.
#[cfg(all(feature = "redis", feature = "clickhouse"))]
async fn gateway_budgets(
    engines: Option<(String, ClickhouseConfig)>,
    config: &GatewayCommandConfig,
) -> anyhow::Result<Option<Arc<dyn ais_gateway::budget::BudgetGate>>> {
    if config.budgets.is_empty() {
        return Ok(None);
    }
    let Some((redis, clickhouse)) = engines else {
        tracing::warn!("budgets are configured but the gateway enforces them only with --redis and --clickhouse");
        return Ok(None);
    };
    let store: Arc<dyn ais_store::QueryStore> = Arc::new(
        ClickhouseStore::connect(clickhouse.clone())
            .await
            .with_context(|| format!("cannot use ClickHouse at {}", clickhouse.url))?,
    );
    let book = holds::reserving_book(Some(&redis), &clickhouse.database, &config.budgets, store)
        .await?
        .context("budgets and Redis are given: the shared book exists")?;
    Ok(Some(Arc::new(crate::budget_gate::BookGate {
        book: ais_serve::book::Book::Shared(book),
        hold_ttl: config.gateway.limits.timeout + crate::budget_gate::SETTLED_HOLD,
    })))
}

#[cfg(feature = "redis")]
async fn run_gateway(
    mut config: GatewayCommandConfig,
    log: Arc<BreakerLog>,
    budgets: Option<Arc<dyn ais_gateway::budget::BudgetGate>>,
    metrics: PrometheusHandle,
) -> anyhow::Result<()> {
    let log_dyn: Arc<dyn Log> = log.clone();
    let keyring = Arc::new(std::mem::take(&mut config.keyring));
    // Ingest's admission, prices and accepted ages: the gateway's events are ingest's.
    let ingest = ingest_state(
        &config.edge,
        config.raw_retention,
        log_dyn.clone(),
        keyring.clone(),
    );
    // Filled once the gateway has started (after the routes are built).
    let gateway_readiness = GatewayReadiness::default();
    let readiness: ReadinessCheck = {
        let log = log_dyn.clone();
        let gateway = gateway_readiness.clone();
        Arc::new(move || {
            let status = log.status();
            std::iter::once(Readiness {
                component: "log",
                ready: status.writable,
                detail: status.detail,
                facts: Default::default(),
                counts: status.counts,
            })
            .chain(gateway_component(&gateway))
            .collect()
        })
    };
    let stop = stop_on_signal();
    let drain = {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".to_string());
        let holder = format!("{host}:{}:{started}", std::process::id());
        tokio::spawn(
            log.clone()
                .run_drain(holder, stop.clone().cancelled_owned()),
        )
    };
    let ops = ais_serve::ops_router(readiness, Some(metrics), keyring.clone());
    let gateway = start_gateway(
        &config.gateway,
        &ingest,
        keyring,
        log_dyn,
        ops,
        budgets,
        stop.clone(),
    )
    .await?;
    let _ = gateway_readiness.set(gateway.registry.clone());
    let bound = gateway.bound.to_string();
    announce(
        "gateway",
        serde_json::json!({ "http": bound, "gateway": bound }),
    );
    stop.cancelled().await;
    gateway.stop().await;
    let _ = tokio::time::timeout(DRAIN_PATIENCE, drain).await;
    tracing::info!("shutting down: flushing the Kafka producer");
    log.close().await.context("flushing the Kafka producer")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

// ---------------------------------------------------------------------------------
// stream

#[cfg(feature = "clickhouse")]
pub fn stream(args: StreamArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = StreamConfig::resolve(&args)?;
    let mut kafka = kafka_config(&args.kafka, &config.engines)?;
    kafka.group = args
        .group
        .clone()
        .or_else(|| config.engines.group.clone())
        .unwrap_or_else(|| DEFAULT_GROUP.to_string());
    kafka.instance_id = args
        .instance_id
        .clone()
        .filter(|instance_id| !instance_id.trim().is_empty());
    let mut clickhouse = clickhouse_config(&args.clickhouse, &config.engines)?;
    // The dedup window is rebuilt over the horizon the stream checks (its defaults are
    // the ones run_stream gives the processor).
    clickhouse.dedup_horizon = Duration::from_millis(
        u64::try_from(ProcessorConfig::default().dedup.horizon_ms).unwrap_or(0),
    );
    let metrics = install_metrics()?;
    ais_store::register_metrics();
    register_group_metrics();
    let log = Arc::new(
        KafkaLog::connect(kafka.clone())
            .with_context(|| format!("cannot use Kafka at {}", kafka.brokers))?,
    );
    log.check_dead_letter_topic()
        .context("the stream needs the dead-letter topic for records it cannot process")?;
    runtime()?.block_on(async move {
        // Two clients: HTTP connections belong to the runtime that opened them, and the
        // processor runs on a runtime of its own.
        let connect = || async {
            ClickhouseStore::connect(clickhouse.clone())
                .await
                .with_context(|| format!("cannot use ClickHouse at {}", clickhouse.url))
        };
        let rest = connect().await?;
        if let Err(error) = rest.keep_payloads_for(config.payload_retention).await {
            // Maintenance's mutation still clears old payloads on its passes.
            tracing::warn!(%error, "the payload columns' TTL is not set");
        }
        let stores = StreamStores {
            processor: Arc::new(connect().await?),
            rest: Arc::new(rest),
            database: clickhouse.database.clone(),
            #[cfg(feature = "redis")]
            redis: args.redis.clone().or_else(|| config.engines.redis.clone()),
        };
        run_stream(config, args.listen, log, stores, metrics).await
    })
}

/// The store, once for the processor's runtime and once for everything else.
#[cfg(feature = "clickhouse")]
struct StreamStores {
    processor: Arc<ClickhouseStore>,
    rest: Arc<ClickhouseStore>,
    /// Names the shared budget holds' keys.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    database: String,
    /// Where the shared budget holds are, to settle.
    #[cfg(feature = "redis")]
    redis: Option<String>,
}

#[cfg(feature = "clickhouse")]
async fn run_stream(
    config: StreamConfig,
    listen: Option<SocketAddr>,
    log: Arc<KafkaLog>,
    stores: StreamStores,
    metrics: PrometheusHandle,
) -> anyhow::Result<()> {
    let log_dyn: Arc<dyn Log> = log.clone();
    #[cfg(feature = "redis")]
    let (redis, database) = (stores.redis, stores.database);
    let store_dyn: Arc<dyn Store> = stores.rest;
    let stop = stop_on_signal();
    // Records the stream cannot process go to TOPIC.dlq before their batch commits.
    let processor_config = ProcessorConfig {
        allowed_lateness: config.allowed_lateness,
        max_batch_records: config.max_batch_records,
        dimensions: config.dimensions.clone(),
        usage: config.usage.clone(),
        ..ProcessorConfig::default()
    };
    let dedup_horizon_ms = processor_config.dedup.horizon_ms;
    let processor = Processor::new(processor_config).with_dead_letter_sink(log.clone());
    #[cfg(feature = "redis")]
    let processor = holds::settle_landed(
        processor,
        redis.as_deref(),
        &database,
        &config.evaluator.budgets,
    )?;
    let progress = processor.progress();
    let processor_thread =
        ais_stream::thread::spawn(processor, log_dyn, stores.processor, stop.clone())?;

    let singletons = tokio::spawn(singletons_while_owning_partition_zero(
        config.evaluator.clone(),
        config.delivery.clone(),
        ais_store::maintenance::Retain {
            raw: config.raw_retention,
            payloads: config.payload_retention,
            rollups: config.rollup_retention,
            dedup_horizon_ms,
        },
        config.maintenance_interval,
        store_dyn.clone(),
        progress.clone(),
        stop.clone(),
    ));
    let server = match listen {
        Some(address) => {
            let (listener, http) = bind(address).await?;
            // `ais stream` takes no keys: its listener is for the operator's monitors
            // (metrics and probes), so its readiness shows counts as an open server.
            let app = ais_serve::ops_router(
                stream_readiness(progress.clone(), log.group_health()),
                Some(metrics),
                Arc::new(ais_model::auth::Keyring::default()),
            );
            let stop = stop.clone();
            announce("stream", serde_json::json!({ "http": http.to_string() }));
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => {
            announce("stream", serde_json::json!({}));
            None
        }
    };

    // Runs until a signal, or until the processor stops by itself (an error).
    let processor_thread = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            processor_thread.wait_while_running(&stop);
            processor_thread
        })
        .await
        .context("watching the stream processor")?
    };
    stop.cancel();
    if let Err(error) = singletons.await {
        tracing::error!(%error, "evaluator task failed");
    }
    if let Some(server) = server {
        if let Ok(Err(error)) = server.await {
            tracing::error!(%error, "metrics listener failed");
        }
    }
    let joined = tokio::task::spawn_blocking(move || processor_thread.join(DRAIN_PATIENCE))
        .await
        .context("joining the stream processor")?;
    joined?;
    tracing::info!("shut down cleanly");
    Ok(())
}

#[cfg(feature = "clickhouse")]
fn stream_readiness(progress: Progress, group: GroupHealth) -> ReadinessCheck {
    Arc::new(move || {
        let owned = progress.owned_partitions();
        let stuck = group.stuck();
        vec![
            Readiness {
                component: "stream",
                // Owning no partition is normal (more members than partitions).
                ready: true,
                detail: format!("owns partitions {owned:?}"),
                facts: [("partitions_owned", owned.len() as i64)]
                    .into_iter()
                    .collect(),
                counts: Default::default(),
            },
            Readiness {
                component: "consumer_group",
                ready: stuck.is_none(),
                detail: match &stuck {
                    Some(cause) => format!("stuck ({}): {cause}", cause.label()),
                    None => "every partition with records is being read".to_string(),
                },
                facts: [(
                    "partitions_waiting",
                    stuck.map_or(0, |cause| cause.waiting().len() as i64),
                )]
                .into_iter()
                .collect(),
                counts: Default::default(),
            },
        ]
    })
}

/// What must run once per cluster, the anomaly evaluator, alert delivery and
/// retention, runs in the stream process that owns partition 0: exactly one while the
/// group is stable. The
/// evaluator's state is in the store, so a move to another process resumes where it
/// stopped, and an alert's identity keeps a replayed window from firing twice.
#[cfg(feature = "clickhouse")]
async fn singletons_while_owning_partition_zero(
    evaluator: EvaluatorConfig,
    delivery: DeliveryConfig,
    retain: ais_store::maintenance::Retain,
    maintenance_interval: Duration,
    store: Arc<dyn Store>,
    progress: Progress,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(EVALUATOR_OWNERSHIP_CHECK);
    let mut running: Option<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let owner = progress.owned_partitions().contains(&0);
        match (&running, owner) {
            (None, true) => {
                tracing::info!("owning partition 0: starting the evaluator and retention");
                let token = stop.child_token();
                let tasks = vec![
                    tokio::spawn(
                        Evaluator::new(evaluator.clone()).run(store.clone(), token.clone()),
                    ),
                    tokio::spawn(ais_store::maintenance::run(
                        store.clone(),
                        retain,
                        maintenance_interval,
                        token.clone(),
                    )),
                    tokio::spawn(ais_evaluate::deliver::run(
                        delivery.clone(),
                        store.clone(),
                        token.clone(),
                    )),
                ];
                running = Some((token, tasks));
            }
            (Some(_), false) => {
                tracing::info!("partition 0 moved away: stopping the evaluator and retention");
                if let Some((token, tasks)) = running.take() {
                    token.cancel();
                    for task in tasks {
                        let _ = task.await;
                    }
                }
            }
            _ => {}
        }
    }
    if let Some((token, tasks)) = running.take() {
        token.cancel();
        for task in tasks {
            let _ = task.await;
        }
    }
}

// ---------------------------------------------------------------------------------
// query

#[cfg(feature = "clickhouse")]
pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = QueryConfig::resolve(&args)?;
    let clickhouse = clickhouse_config(&args.clickhouse, &config.engines)?;
    let dlq_engines = dlq_engines(query_kafka(&args.kafka, &config.engines)?.as_ref())?;
    let metrics = install_metrics()?;
    runtime()?.block_on(async move {
        let store = Arc::new(
            ClickhouseStore::connect(clickhouse.clone())
                .await
                .with_context(|| format!("cannot use ClickHouse at {}", clickhouse.url))?,
        );
        let store_dyn: Arc<dyn Store> = store;
        let keyring = Arc::new(config.keyring);
        let reserve = reserve_router(
            #[cfg(feature = "redis")]
            holds::reserving_book(
                args.redis.as_deref().or(config.engines.redis.as_deref()),
                &clickhouse.database,
                &config.budgets,
                store_dyn.clone(),
            )
            .await?,
            &config.budgets,
            keyring.clone(),
        );
        let dlq = dlq_state(dlq_engines, keyring.clone());
        let query_state = QueryState {
            store: store_dyn.clone(),
            keyring: keyring.clone(),
            limits: config.query_limits,
            incident_gap: config.incident_gap,
            payload_readers: config.payload_readers,
        };
        let readiness: ReadinessCheck = Arc::new(move || {
            vec![Readiness {
                component: "store",
                ready: true,
                detail: format!("ClickHouse database {}", clickhouse.database),
                facts: Default::default(),
                counts: Default::default(),
            }]
        });
        let app = axum::Router::new()
            .merge(ais_serve::query_router(query_state.clone()))
            // The query server does not read the log: an unbalanced hour is pending.
            .merge(ais_serve::ledger_router(LedgerState {
                query: query_state.clone(),
                backlog: Arc::new(|| None),
            }))
            .merge(reserve)
            .merge(ais_serve::usage_router(UsageState {
                query: query_state.clone(),
                config: Arc::new(config.usage),
            }))
            .merge(ais_serve::dlq_router(dlq))
            .merge(ais_serve::objectives_router(ObjectivesState {
                query: query_state,
                evaluation: store_dyn,
                slos: Arc::new(config.slos),
                budgets: Arc::new(config.budgets),
            }))
            .merge(ais_serve::ops_router(readiness, Some(metrics), keyring))
            .merge(ais_serve::dashboard_router());
        let stop = stop_on_signal();
        let (listener, http) = bind(config.listen).await?;
        announce("query", serde_json::json!({ "http": http.to_string() }));
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .context("HTTP server failed")
    })
}

/// `/v1/budgets/check` and `/v1/budgets/reserve` of `ais query`: against the shared
/// holds; with no budget configured, every call is allowed and told so; with budgets
/// but no Redis, a 501 that says what to start with.
#[cfg(feature = "clickhouse")]
fn reserve_router(
    #[cfg(feature = "redis")] shared: Option<Arc<ais_serve::book::shared::SharedBook>>,
    budgets: &[ais_evaluate::budget::BudgetConfig],
    keyring: Arc<ais_model::auth::Keyring>,
) -> axum::Router {
    use ais_serve::book::Book;
    #[cfg(feature = "redis")]
    if let Some(book) = shared {
        return ais_serve::reserve_router(ais_serve::ReserveState {
            keyring,
            book: Book::Shared(book),
        });
    }
    if !budgets.is_empty() {
        return ais_serve::reserve_unavailable_router();
    }
    ais_serve::reserve_router(ais_serve::ReserveState {
        keyring,
        book: Book::Local(Arc::new(std::sync::Mutex::new(
            ais_evaluate::budget::reserve::Reservations::new(Vec::new(), 0, 0),
        ))),
    })
}

/// The Kafka of `ais query`, when given: the dead-letter API reads and replays through
/// it; without it the API says how to turn it on.
#[cfg(feature = "clickhouse")]
fn query_kafka(args: &KafkaArgs, file: &FileEngines) -> anyhow::Result<Option<KafkaConfig>> {
    if args.kafka.is_none() && file.kafka.is_none() {
        return Ok(None);
    }
    kafka_config(args, file).map(Some)
}

/// The dead-letter routes of `ais query`: the topic `TOPIC.dlq` read back, replays
/// produced to `TOPIC`; without Kafka they say how to turn them on.
#[cfg(feature = "clickhouse")]
fn dlq_state(engines: Option<DlqEngines>, keyring: Arc<ais_model::auth::Keyring>) -> DlqState {
    match engines {
        Some((letters, log)) => DlqState {
            letters: Some(letters),
            log: Some(log),
            keyring,
            unavailable: String::new(),
        },
        None => DlqState {
            letters: None,
            log: None,
            keyring,
            unavailable: format!(
                "the dead letters are in the Kafka topic {DEFAULT_TOPIC}.dlq (or TOPIC.dlq): start ais query with --kafka HOST:PORT [--topic TOPIC]"
            ),
        },
    }
}

/// Where `ais query` reads dead letters and appends replays.
#[cfg(feature = "clickhouse")]
type DlqEngines = (Arc<dyn DeadLetterSource>, Arc<dyn Log>);

/// Connects to the events topic (replays) and checks the dead-letter topic (reads).
#[cfg(feature = "clickhouse")]
fn dlq_engines(kafka: Option<&KafkaConfig>) -> anyhow::Result<Option<DlqEngines>> {
    let Some(kafka) = kafka else {
        return Ok(None);
    };
    let log = KafkaLog::connect(kafka.clone())
        .with_context(|| format!("cannot use Kafka at {}", kafka.brokers))?;
    log.check_dead_letter_topic()
        .context("the dead-letter API needs the dead-letter topic")?;
    let letters: Arc<dyn DeadLetterSource> = Arc::new(KafkaDeadLetters::new(DlqReader::new(kafka)));
    let log: Arc<dyn Log> = Arc::new(log);
    Ok(Some((letters, log)))
}
