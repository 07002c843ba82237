//! `ais loadgen`: sends events to `POST /v1/events` at a target rate and reports what
//! came back.
//!
//! - Pacing: batch `k` is due at `start + k × batch / rate`; workers (`--concurrency`)
//!   take the next due batch, wait for its time, send it. Ack latency is measured from
//!   the batch's due time, not from when a worker got to it, so a slow server cannot
//!   hide its queueing (coordinated omission). With `--rate 0` batches go as fast as
//!   acks return and latency is measured from the send.
//! - Synthetic events: `--models` models with log-normal latencies, TTFT a fraction of
//!   latency, token counts, users from a pool of 10,000, `--error-rate` failures; every
//!   event carries a unique `event_id` (run id + index), so a retried batch would be
//!   deduplicated.
//! - Trace replay (`--trace CSV`, e.g. the Azure LLM inference trace): events take
//!   their token counts from the rows in order, and batches are due at the trace's
//!   arrival times compressed so that the mean rate is `--rate` (the trace is tiled when
//!   the run outlasts it). Latency is derived from tokens: TTFT = 20 ms + 0.03 ms per
//!   context token (prefill at ~33k tokens/s), latency = TTFT + 15 ms per generated
//!   token (decode at ~66 tokens/s), each × a log-normal jitter (σ = 0.2).
//! - Event timestamps are the send time, so every event is within the accepted window.
//! - Prebuilt bodies (`--prebuilt`, [`prebuilt`]): a pool of JSON batches written before
//!   the run, each send a copy with the events' ids and timestamps stamped in place, so
//!   a rate far beyond what the generator's cores serialize stays on its schedule.
//! - Backfill (`--backfill 1h`): the events a fleet sending at `--rate` would have sent
//!   over the last hour, sent as fast as the server acks. Batch `k`'s events are stamped
//!   `start − span + k × batch / rate`, and the run ends once the span is covered
//!   (`--duration` is not used): how a benchmark gets an hour of data in minutes. A
//!   batch the server turns away for now (429, 503, no answer) is sent again after its
//!   `Retry-After` or a backoff, so the span is whole even where ingest pushes back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::args::parse_duration;

mod prebuilt;

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Base URL of the ingest API
    #[arg(long, env = "AIS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (none when the server has no keys)
    #[arg(long, env = "AIS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Target events per second; 0 sends as fast as the server acks
    #[arg(long, env = "AIS_RATE", default_value_t = 10_000.0)]
    pub rate: f64,
    /// Events (spans) per request [default: 1000; 512 with --format otlp, the batch
    /// span processor's default]
    #[arg(long, env = "AIS_BATCH")]
    pub batch: Option<usize>,
    /// json: POST /v1/events; otlp: OTLP/HTTP protobuf spans to POST /v1/traces;
    /// reserve: POST /v1/budgets/reserve, one call's estimate per request
    #[arg(long, env = "AIS_FORMAT", value_enum, default_value_t = LoadFormat::Json)]
    pub format: LoadFormat,
    /// Requests in flight at once
    #[arg(long, env = "AIS_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// How long to send: 30s, 2m, or seconds
    #[arg(long, env = "AIS_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Replay arrival shape and token counts from a CSV trace (TIMESTAMP,ContextTokens,GeneratedTokens)
    #[arg(long, env = "AIS_TRACE")]
    pub trace: Option<PathBuf>,
    /// Number of synthetic models
    #[arg(long, env = "AIS_MODELS", default_value_t = 4)]
    pub models: usize,
    /// Share of requests that fail
    #[arg(long, env = "AIS_ERROR_RATE", default_value_t = 0.01)]
    pub error_rate: f64,
    /// Seed of the synthetic values (event ids stay unique per run)
    #[arg(long, env = "AIS_SEED", default_value_t = 1)]
    pub seed: u64,
    /// An `input` (prompt text) of this many bytes in every JSON event, with an e-mail
    /// address and a phone number in each KiB for redaction to find; kept only where
    /// the server captures payloads [default: 0, none]
    #[arg(long, env = "AIS_INPUT_BYTES", default_value_t = 0)]
    pub input_bytes: usize,
    /// An `output` (response text) of this many bytes in every JSON event, as
    /// `--input-bytes` [default: 0, none]
    #[arg(long, env = "AIS_OUTPUT_BYTES", default_value_t = 0)]
    pub output_bytes: usize,
    /// Send the events of this past span (1h, 30m) at `--rate`, as fast as the server
    /// acks, stamped with the times they would have had; ends when the span is covered
    /// (`--duration` is not used) [default: off, events are stamped when sent]
    #[arg(long, env = "AIS_BACKFILL", value_parser = parse_duration)]
    pub backfill: Option<std::time::Duration>,
    /// Prepare a small pool of JSON bodies before the run and send copies of them,
    /// each event's id and timestamp stamped in place, instead of writing every body
    /// as it is sent: for rates far beyond what one client core serializes
    /// (`--format json`, without `--trace`)
    #[arg(long, env = "AIS_PREBUILT")]
    pub prebuilt: bool,
    /// Print the result as one JSON line as well
    #[arg(long)]
    pub json: bool,
}

/// What `ais loadgen` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadFormat {
    /// Native v1 events, a JSON array per request.
    Json,
    /// OTLP/HTTP protobuf: GenAI spans in an ExportTraceServiceRequest.
    Otlp,
    /// Budget reservations: one call's estimate (a micro-dollar, held for a second) per
    /// request; a granted reservation counts as accepted, a refusal as rejected.
    Reserve,
}

/// Requests per batch when `--batch` is not given: the native default, and the OTLP
/// batch span processor's `max_export_batch_size`.
const DEFAULT_JSON_BATCH: usize = 1_000;
const DEFAULT_OTLP_BATCH: usize = 512;

const SYNTHETIC_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet-4",
    "llama-3.1-8b-instruct",
    "gemini-2.5-flash",
    "mistral-small",
    "o4-mini",
    "text-embedding-3-small",
];
const USER_POOL: u64 = 10_000;
const ERROR_TYPES: &[&str] = &["timeout", "rate_limited", "server_error", "content_filter"];

/// One row of a trace: arrival offset from the trace start, and token counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceRow {
    pub(crate) offset_s: f64,
    pub(crate) context_tokens: u64,
    pub(crate) generated_tokens: u64,
}

pub(crate) struct Trace {
    pub(crate) rows: Vec<TraceRow>,
    /// Seconds from the first arrival to one mean gap past the last, so tiles do not
    /// overlap.
    pub(crate) span_s: f64,
}

pub(crate) fn load_trace(path: &Path) -> anyhow::Result<Trace> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trace {}", path.display()))?;
    let mut rows = Vec::new();
    let mut first: Option<f64> = None;
    for (line_number, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [stamp, context, generated] = fields.as_slice() else {
            bail!(
                "trace line {} must have 3 columns: {line:?}",
                line_number + 1
            );
        };
        let seconds = parse_trace_time(stamp)
            .with_context(|| format!("trace line {}: bad TIMESTAMP {stamp:?}", line_number + 1))?;
        let start = *first.get_or_insert(seconds);
        rows.push(TraceRow {
            offset_s: seconds - start,
            context_tokens: context
                .trim()
                .parse()
                .with_context(|| format!("trace line {}: bad ContextTokens", line_number + 1))?,
            generated_tokens: generated
                .trim()
                .parse()
                .with_context(|| format!("trace line {}: bad GeneratedTokens", line_number + 1))?,
        });
    }
    if rows.len() < 2 {
        bail!("trace {} has fewer than 2 rows", path.display());
    }
    rows.sort_by(|a, b| a.offset_s.total_cmp(&b.offset_s));
    let last = rows[rows.len() - 1].offset_s;
    let span_s = last + last / (rows.len() - 1) as f64;
    Ok(Trace { rows, span_s })
}

/// `YYYY-MM-DD HH:MM:SS.fffffff` → seconds since the day began (traces span hours).
fn parse_trace_time(stamp: &str) -> Option<f64> {
    let (date, clock) = stamp.trim().split_once(' ')?;
    let day: f64 = date.split('-').nth(2)?.parse().ok()?;
    let mut parts = clock.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(day * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds)
}

/// When each batch is due and what its events look like.
struct Plan {
    batch: usize,
    format: LoadFormat,
    rate: f64,
    trace: Option<Trace>,
    models: Vec<&'static str>,
    error_rate: f64,
    seed: u64,
    run_id: u64,
    /// Trace seconds per wall second.
    speedup: f64,
    /// Every JSON event's `input` and `output` (empty: the field is left out).
    input: String,
    output: String,
    /// With `--backfill`: the past span's events, in batches stamped in order.
    backfill: Option<Backfill>,
}

/// The batches of a backfill: the first is stamped `start_ms`, each next one
/// `batch / rate` seconds later.
#[derive(Debug, Clone, Copy)]
struct Backfill {
    start_ms: i64,
    batches: u64,
}

impl Backfill {
    /// The timestamp of batch `k`'s events; `None` once the span is covered.
    fn stamp_ms(&self, k: u64, batch: usize, rate: f64) -> Option<i64> {
        (k < self.batches).then(|| {
            let offset_s = (k * batch as u64) as f64 / rate;
            self.start_ms + (offset_s * 1000.0) as i64
        })
    }
}

/// Prose of `bytes` bytes (ASCII, nothing JSON must escape) with an e-mail address and
/// a phone number in each KiB: what payload redaction scans in a typical prompt.
fn payload_text(bytes: usize) -> String {
    const WORDS: [&str; 12] = [
        "the",
        "model",
        "answer",
        "please",
        "summarize",
        "report",
        "customer",
        "order",
        "latency",
        "because",
        "tokens",
        "support",
    ];
    let mut text = String::with_capacity(bytes + 32);
    let mut n = 0;
    while text.len() < bytes {
        if n % 160 == 80 {
            text.push_str("contact jane.doe@example.com ");
        } else if n % 160 == 159 {
            text.push_str("call +1 415 555 0100 ");
        } else {
            text.push_str(WORDS[n % WORDS.len()]);
            text.push(' ');
        }
        n += 1;
    }
    text.truncate(bytes);
    text
}

impl Plan {
    /// Seconds after the start when batch `k` is due; `None` when unpaced.
    fn due_s(&self, k: u64) -> Option<f64> {
        if self.rate <= 0.0 || self.backfill.is_some() {
            return None;
        }
        let first_event = k * self.batch as u64;
        match &self.trace {
            None => Some(first_event as f64 / self.rate),
            Some(trace) => {
                let rows = trace.rows.len() as u64;
                let lap = first_event / rows;
                let row = trace.rows[(first_event % rows) as usize];
                Some((lap as f64 * trace.span_s + row.offset_s) / self.speedup)
            }
        }
    }

    fn write_batch(&self, k: u64, now_ms: i64, body: &mut String) {
        self.write_batch_with_slots(k, now_ms, body, None);
    }

    /// [`Plan::write_batch`], keeping where each event's id digits and timestamp are
    /// when `slots` is given (`prebuilt`).
    fn write_batch_with_slots(
        &self,
        k: u64,
        now_ms: i64,
        body: &mut String,
        mut slots: Option<&mut prebuilt::Slots>,
    ) {
        body.clear();
        body.push('[');
        let first_event = k * self.batch as u64;
        let mut rng = SmallRng::seed_from_u64(self.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for j in 0..self.batch as u64 {
            let index = first_event + j;
            if j > 0 {
                body.push(',');
            }
            self.write_event(index, now_ms, &mut rng, body, slots.as_deref_mut());
        }
        body.push(']');
    }

    /// The synthetic call number `index`.
    fn call(&self, index: u64, rng: &mut SmallRng) -> Call {
        let model = self.models[(index % self.models.len() as u64) as usize];
        let jitter = lognormal(rng, 0.2);
        let (input_tokens, output_tokens, ttft_ms, latency_ms) = match &self.trace {
            Some(trace) => {
                let row = trace.rows[(index % trace.rows.len() as u64) as usize];
                let ttft = (20.0 + 0.03 * row.context_tokens as f64) * jitter;
                let latency = ttft + 15.0 * row.generated_tokens as f64 * jitter;
                (row.context_tokens, row.generated_tokens, ttft, latency)
            }
            None => {
                let input = rng.random_range(50..4_000u64);
                let output = rng.random_range(10..800u64);
                let base = 300.0 + 12.0 * output as f64;
                let latency = base * lognormal(rng, 0.4);
                (
                    input,
                    output,
                    latency * rng.random_range(0.05..0.3),
                    latency,
                )
            }
        };
        let user = rng.random_range(0..USER_POOL);
        let failed = rng.random_bool(self.error_rate.clamp(0.0, 1.0));
        let error_type = failed.then(|| ERROR_TYPES[rng.random_range(0..ERROR_TYPES.len())]);
        Call {
            model,
            input_tokens,
            output_tokens,
            ttft_ms,
            latency_ms,
            user,
            error_type,
        }
    }

    /// Event `index`; its id's digits are fixed-width (zero-padded), so that
    /// `prebuilt` can stamp them in place.
    fn write_event(
        &self,
        index: u64,
        now_ms: i64,
        rng: &mut SmallRng,
        body: &mut String,
        slots: Option<&mut prebuilt::Slots>,
    ) {
        let call = self.call(index, rng);
        let _ = write!(body, r#"{{"event_id":"lg-{run:x}-"#, run = self.run_id);
        let id_at = body.len();
        let _ = write!(body, "{index:0width$}", width = prebuilt::ID_DIGITS);
        body.push_str(r#"","timestamp":"#);
        if let Some(slots) = slots {
            slots.ids.push(id_at);
            slots.timestamps.push(body.len());
        }
        let _ = write!(
            body,
            r#"{now_ms},"model":"{model}","provider":"loadgen","operation":"chat","latency_ms":{latency_ms:.3},"ttft_ms":{ttft_ms:.3},"input_tokens":{input_tokens},"output_tokens":{output_tokens},"user_id":"user-{user}","status":"{status}""#,
            model = call.model,
            latency_ms = call.latency_ms,
            ttft_ms = call.ttft_ms,
            input_tokens = call.input_tokens,
            output_tokens = call.output_tokens,
            user = call.user,
            status = if call.error_type.is_some() {
                "error"
            } else {
                "ok"
            },
        );
        if let Some(kind) = call.error_type {
            let _ = write!(body, r#","error_type":"{kind}""#);
        }
        for (field, text) in [("input", &self.input), ("output", &self.output)] {
            if !text.is_empty() {
                let _ = write!(body, r#","{field}":"{text}""#);
            }
        }
        body.push('}');
    }

    /// Batch `k` as an OTLP protobuf export: one span per call, GenAI attributes as
    /// the OpenTelemetry instrumentations set them; ids from the run and the index, so
    /// a retried batch would be deduplicated.
    fn write_otlp_batch(&self, k: u64, now_ms: i64, body: &mut Vec<u8>) {
        use ais_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
        use ais_model::otlp::resource::Resource;
        use ais_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
        use prost::Message;

        let attribute = |key: &str, value: Value| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        };
        let first_event = k * self.batch as u64;
        let mut rng = SmallRng::seed_from_u64(self.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let start_ns = u64::try_from(now_ms).unwrap_or(0) * 1_000_000;
        let spans = (0..self.batch as u64)
            .map(|j| {
                let index = first_event + j;
                let call = self.call(index, &mut rng);
                let mut attributes = vec![
                    attribute(
                        "gen_ai.operation.name",
                        Value::StringValue("chat".to_string()),
                    ),
                    attribute(
                        "gen_ai.provider.name",
                        Value::StringValue("loadgen".to_string()),
                    ),
                    attribute(
                        "gen_ai.request.model",
                        Value::StringValue(call.model.to_string()),
                    ),
                    attribute(
                        "gen_ai.usage.input_tokens",
                        Value::IntValue(call.input_tokens as i64),
                    ),
                    attribute(
                        "gen_ai.usage.output_tokens",
                        Value::IntValue(call.output_tokens as i64),
                    ),
                    attribute(
                        "gen_ai.response.time_to_first_chunk",
                        Value::DoubleValue(call.ttft_ms / 1000.0),
                    ),
                    attribute("user.id", Value::StringValue(format!("user-{}", call.user))),
                ];
                if let Some(kind) = call.error_type {
                    attributes.push(attribute(
                        "error.type",
                        Value::StringValue(kind.to_string()),
                    ));
                }
                let mut trace_id = self.run_id.to_be_bytes().to_vec();
                trace_id.extend_from_slice(&index.to_be_bytes());
                Span {
                    trace_id,
                    span_id: (index + 1).to_be_bytes().to_vec(),
                    name: format!("chat {}", call.model),
                    start_time_unix_nano: start_ns,
                    end_time_unix_nano: start_ns + (call.latency_ms * 1e6) as u64,
                    attributes,
                    status: call.error_type.map(|_| Status {
                        code: StatusCode::Error as i32,
                        message: String::new(),
                    }),
                    ..Default::default()
                }
            })
            .collect();
        let request = ais_model::otlp::ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attribute(
                        "service.name",
                        Value::StringValue("ais-loadgen".to_string()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        body.clear();
        // Encoding into a Vec cannot run out of space.
        let _ = request.encode(body);
    }
}

/// One synthetic inference call.
struct Call {
    model: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    ttft_ms: f64,
    latency_ms: f64,
    user: u64,
    error_type: Option<&'static str>,
}

/// exp(σ·N(0,1)) by Box–Muller: a multiplicative jitter with median 1.
fn lognormal(rng: &mut SmallRng, sigma: f64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (sigma * normal).exp()
}

#[derive(Default)]
struct Tally {
    requests: u64,
    events_sent: u64,
    events_accepted: u64,
    events_rejected: u64,
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    /// Sends again of batches turned away for now (`--backfill` only).
    retries: u64,
    last_error: Option<String>,
}

pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let batch = args.batch.unwrap_or(match args.format {
        LoadFormat::Json => DEFAULT_JSON_BATCH,
        LoadFormat::Otlp => DEFAULT_OTLP_BATCH,
        LoadFormat::Reserve => 1,
    });
    if batch == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    if args.format == LoadFormat::Reserve && batch != 1 {
        bail!("--format reserve sends one call per request: --batch must be 1");
    }
    if args.prebuilt && (args.format != LoadFormat::Json || args.trace.is_some()) {
        bail!("--prebuilt prepares synthetic JSON bodies: --format json, without --trace");
    }
    let trace = args.trace.as_deref().map(load_trace).transpose()?;
    let backfill = match args.backfill {
        None => None,
        Some(_) if args.rate <= 0.0 || trace.is_some() || args.format != LoadFormat::Json => {
            bail!("--backfill sends JSON events at a --rate above 0, without --trace")
        }
        Some(span) => {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as i64)
                .unwrap_or(0);
            let events = (span.as_secs_f64() * args.rate).ceil() as u64;
            Some(Backfill {
                start_ms: now_ms - span.as_millis() as i64,
                batches: events.div_ceil(batch as u64),
            })
        }
    };
    let speedup = match &trace {
        Some(trace) if args.rate > 0.0 => args.rate / (trace.rows.len() as f64 / trace.span_s),
        _ => 1.0,
    };
    let models: Vec<&'static str> = SYNTHETIC_MODELS
        .iter()
        .copied()
        .cycle()
        .take(args.models.clamp(1, SYNTHETIC_MODELS.len()))
        .collect();
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let plan = Arc::new(Plan {
        batch,
        format: args.format,
        rate: args.rate,
        trace,
        models,
        error_rate: args.error_rate,
        seed: args.seed,
        run_id,
        speedup,
        input: payload_text(args.input_bytes),
        output: payload_text(args.output_bytes),
        backfill,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pool = if args.prebuilt {
        let pool = prebuilt::Pool::build(
            &plan,
            unix_now_ms(),
            prebuilt::POOL_TEMPLATES,
            prebuilt::POOL_MAX_BYTES,
        )?;
        Some(Arc::new(pool))
    } else {
        None
    };
    runtime.block_on(drive(args, plan, pool))
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

async fn drive(
    args: LoadgenArgs,
    plan: Arc<Plan>,
    pool: Option<Arc<prebuilt::Pool>>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let path = match plan.format {
        LoadFormat::Json => "/v1/events",
        LoadFormat::Otlp => "/v1/traces",
        LoadFormat::Reserve => "/v1/budgets/reserve",
    };
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let next_batch = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let histogram = Arc::new(Mutex::new(Latencies::new()?));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let url = url.clone();
        let api_key = args.api_key.clone();
        let plan = Arc::clone(&plan);
        let pool = pool.clone();
        let next_batch = Arc::clone(&next_batch);
        let tally = Arc::clone(&tally);
        let histogram = Arc::clone(&histogram);
        workers.spawn(async move {
            let mut body = String::with_capacity(plan.batch * 400);
            let mut otlp_body = Vec::with_capacity(plan.batch * 300);
            loop {
                let k = next_batch.fetch_add(1, Ordering::Relaxed);
                let due = plan.due_s(k).map(|s| start + Duration::from_secs_f64(s));
                let now_ms = match plan.backfill {
                    Some(backfill) => match backfill.stamp_ms(k, plan.batch, plan.rate) {
                        Some(stamp_ms) => stamp_ms,
                        None => break,
                    },
                    None => {
                        if due.unwrap_or_else(Instant::now) >= deadline {
                            break;
                        }
                        if let Some(due) = due {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        unix_now_ms()
                    }
                };
                let (content_type, payload) = match (plan.format, &pool) {
                    (LoadFormat::Json, Some(pool)) => match pool.body(k, now_ms) {
                        Ok(payload) => ("application/json", payload),
                        Err(error) => {
                            if let Ok(mut tally) = tally.lock() {
                                tally.last_error = Some(error.to_string());
                            }
                            break;
                        }
                    },
                    (LoadFormat::Json, None) => {
                        plan.write_batch(k, now_ms, &mut body);
                        ("application/json", body.clone().into_bytes())
                    }
                    (LoadFormat::Otlp, _) => {
                        plan.write_otlp_batch(k, now_ms, &mut otlp_body);
                        ("application/x-protobuf", otlp_body.clone())
                    }
                    (LoadFormat::Reserve, _) => {
                        let model = plan.models[(k % plan.models.len() as u64) as usize];
                        let call =
                            format!(r#"{{"model":"{model}","cost_usd":0.000001,"ttl_secs":1}}"#);
                        ("application/json", call.into_bytes())
                    }
                };
                let payload = bytes::Bytes::from(payload);
                let send = || {
                    let mut request = client
                        .post(&url)
                        .header("content-type", content_type)
                        .body(payload.clone());
                    if let Some(key) = &api_key {
                        request = request.bearer_auth(key);
                    }
                    request.send()
                };
                let sent_at = Instant::now();
                let mut outcome = send().await;
                if plan.backfill.is_some() {
                    // A backfill is there to leave the whole span behind it: a batch
                    // turned away for now is sent again, with the same event ids, so
                    // a batch that did land is deduplicated.
                    let mut attempt = 0;
                    while let Some(pause) = retry_pause(&outcome, attempt) {
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                        outcome = send().await;
                    }
                    if let Ok(mut tally) = tally.lock() {
                        tally.retries += u64::from(attempt);
                    }
                }
                let measured_from = due.unwrap_or(sent_at);
                let elapsed_us = measured_from.elapsed().as_micros() as u64;
                let mut accepted = 0;
                let mut rejected = 0;
                let status = match outcome {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if status == 202 {
                            if let Ok(answer) = response.json::<serde_json::Value>().await {
                                accepted = answer["accepted"].as_u64().unwrap_or(0);
                                rejected =
                                    answer["rejected"].as_array().map_or(0, |r| r.len() as u64);
                            }
                        } else if status == 200 && plan.format == LoadFormat::Otlp {
                            (accepted, rejected) = otlp_outcome(response, plan.batch).await;
                        } else if status == 200 && plan.format == LoadFormat::Reserve {
                            let granted = response
                                .json::<serde_json::Value>()
                                .await
                                .is_ok_and(|answer| answer["allowed"] == true);
                            (accepted, rejected) = if granted { (1, 0) } else { (0, 1) };
                        } else {
                            // Read to its end, the answer leaves its connection to the
                            // pool for the next send instead of a new handshake.
                            let _ = response.bytes().await;
                        }
                        Ok(status)
                    }
                    Err(error) => Err(error.to_string()),
                };
                if let Ok(mut histogram) = histogram.lock() {
                    let answered = matches!(status, Ok(code) if (200..300).contains(&code));
                    histogram.record(elapsed_us, answered);
                }
                if let Ok(mut tally) = tally.lock() {
                    tally.requests += 1;
                    tally.events_sent += plan.batch as u64;
                    tally.events_accepted += accepted;
                    tally.events_rejected += rejected;
                    match status {
                        Ok(code) => *tally.by_status.entry(code).or_default() += 1,
                        Err(message) => {
                            tally.transport_errors += 1;
                            tally.last_error = Some(message);
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    report(&args, &plan, elapsed, &tally, &histogram)
}

/// Most sends again of one backfill batch: with pauses of up to
/// [`BACKFILL_MAX_PAUSE`], a server saturated for minutes.
const BACKFILL_RETRIES: u32 = 600;
const BACKFILL_MAX_PAUSE: Duration = Duration::from_secs(2);

/// How long to wait before sending a backfill batch again, when the server turned it
/// away for now (429, 503, or no answer): its `Retry-After` when it gave one, else 50 ms
/// doubled each attempt, at most [`BACKFILL_MAX_PAUSE`]; `None` when the answer is
/// final or the attempts are spent.
fn retry_pause(
    outcome: &Result<reqwest::Response, reqwest::Error>,
    attempt: u32,
) -> Option<Duration> {
    if attempt >= BACKFILL_RETRIES {
        return None;
    }
    let backoff = Duration::from_millis(50 << attempt.min(6)).min(BACKFILL_MAX_PAUSE);
    match outcome {
        Err(_) => Some(backoff),
        Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
            let asked = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Some(asked.unwrap_or(backoff).min(BACKFILL_MAX_PAUSE))
        }
        Ok(_) => None,
    }
}

/// Accepted and refused spans of an OTLP answer (its partial success).
async fn otlp_outcome(response: reqwest::Response, batch: usize) -> (u64, u64) {
    use prost::Message;
    let Ok(bytes) = response.bytes().await else {
        return (0, 0);
    };
    let refused = ais_model::otlp::ExportTraceServiceResponse::decode(bytes)
        .ok()
        .and_then(|answer| answer.partial_success)
        .map_or(0, |partial| {
            u64::try_from(partial.rejected_spans).unwrap_or(0)
        });
    ((batch as u64).saturating_sub(refused), refused)
}

/// Ack latencies in microseconds (1 µs to 10 min, 3 significant digits): of every
/// answer, and of the accepted ones alone (a refusal's latency says how fast the
/// server turned it away, an acceptance's how long a kept request waited).
struct Latencies {
    all: Histogram<u64>,
    accepted: Histogram<u64>,
}

impl Latencies {
    fn new() -> anyhow::Result<Self> {
        let histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
        Ok(Self {
            all: histogram().context("histogram bounds")?,
            accepted: histogram().context("histogram bounds")?,
        })
    }

    fn record(&mut self, micros: u64, accepted: bool) {
        let _ = self.all.record(micros.max(1));
        if accepted {
            let _ = self.accepted.record(micros.max(1));
        }
    }
}

fn report(
    args: &LoadgenArgs,
    plan: &Plan,
    elapsed_s: f64,
    tally: &Mutex<Tally>,
    latencies: &Mutex<Latencies>,
) -> anyhow::Result<()> {
    let tally = tally
        .lock()
        .map_err(|_| anyhow::anyhow!("tally lock poisoned"))?;
    let latencies = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    let histogram = &latencies.all;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let accepted = &latencies.accepted;
    let accepted_ms = |quantile: f64| accepted.value_at_quantile(quantile) as f64 / 1000.0;
    let throughput = tally.events_accepted as f64 / elapsed_s;
    println!(
        "loadgen: {} requests, {} events sent, {} accepted, {} rejected in {:.1} s",
        tally.requests, tally.events_sent, tally.events_accepted, tally.events_rejected, elapsed_s
    );
    println!(
        "throughput: {:.0} events/s accepted ({:.0} requests/s); target {}",
        throughput,
        tally.requests as f64 / elapsed_s,
        if let (Some(span), true) = (args.backfill, plan.rate > 0.0) {
            format!(
                "{:.0} events/s over the past {:.0} s, sent unpaced",
                plan.rate,
                span.as_secs_f64()
            )
        } else if plan.rate > 0.0 {
            format!("{:.0} events/s", plan.rate)
        } else {
            "max".to_string()
        }
    );
    println!(
        "ack latency (ms, from {}): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        if plan.due_s(0).is_some() {
            "due time"
        } else {
            "send"
        },
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    println!(
        "accepted requests' ack latency (ms): p50 {:.2}  p99 {:.2}  max {:.2}",
        accepted_ms(0.5),
        accepted_ms(0.99),
        accepted.max() as f64 / 1000.0
    );
    let non_2xx: Vec<String> = tally
        .by_status
        .iter()
        .filter(|(code, _)| !(200..300).contains(*code))
        .map(|(code, count)| format!("{code}: {count}"))
        .collect();
    println!(
        "non-2xx: {}; transport errors: {}{}",
        if non_2xx.is_empty() {
            "none".to_string()
        } else {
            non_2xx.join(", ")
        },
        tally.transport_errors,
        tally
            .last_error
            .as_ref()
            .map(|error| format!(" (last: {error})"))
            .unwrap_or_default()
    );
    if args.backfill.is_some() {
        println!(
            "backfill: {} batches sent again after the server turned them away for now",
            tally.retries
        );
    }
    if args.json {
        let line = serde_json::json!({
            "requests": tally.requests,
            "events_sent": tally.events_sent,
            "events_accepted": tally.events_accepted,
            "events_rejected": tally.events_rejected,
            "elapsed_s": elapsed_s,
            "events_per_s": throughput,
            "ack_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": histogram.max() as f64 / 1000.0},
            "accepted_ack_ms": {"p50": accepted_ms(0.5), "p99": accepted_ms(0.99), "max": accepted.max() as f64 / 1000.0},
            "status": tally.by_status,
            "transport_errors": tally.transport_errors,
            "retries": tally.retries,
        });
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_times_parse_to_seconds_of_the_day() {
        let t = parse_trace_time("2023-11-16 18:17:03.9799600").expect("valid stamp");
        assert!((t - (16.0 * 86_400.0 + 18.0 * 3600.0 + 17.0 * 60.0 + 3.97996)).abs() < 1e-6);
        assert_eq!(parse_trace_time("yesterday"), None);
    }

    #[test]
    fn synthetic_batches_are_valid_json_with_unique_ids() {
        let plan = Plan {
            batch: 50,
            format: LoadFormat::Json,
            rate: 1000.0,
            trace: None,
            models: SYNTHETIC_MODELS[..3].to_vec(),
            error_rate: 0.5,
            seed: 7,
            run_id: 42,
            speedup: 1.0,
            input: payload_text(2048),
            output: payload_text(1024),
            backfill: None,
        };
        let mut body = String::new();
        let mut ids = std::collections::HashSet::new();
        for k in 0..3 {
            plan.write_batch(k, 1_795_339_620_000, &mut body);
            let events: Vec<serde_json::Value> =
                serde_json::from_str(&body).expect("loadgen writes valid JSON");
            assert_eq!(events.len(), 50);
            for event in events {
                assert!(ids.insert(event["event_id"].as_str().unwrap_or_default().to_string()));
                let input = event["input"].as_str().expect("an input");
                assert_eq!(input.len(), 2048);
                assert_eq!(
                    input.matches("@example.com").count(),
                    2,
                    "one address a KiB"
                );
                assert_eq!(event["output"].as_str().map(str::len), Some(1024));
            }
        }
        assert_eq!(plan.due_s(10), Some(0.5));
    }

    #[test]
    fn a_backfill_stamps_its_batches_across_the_span_and_ends_there() {
        // An hour at 16,667 events/s in batches of 100: 60,001,200 events, 600,012 batches.
        let (span_ms, rate, batch) = (3_600_000, 16_667.0, 100);
        let events = (span_ms as f64 / 1000.0 * rate).ceil() as u64;
        let backfill = Backfill {
            start_ms: 1_795_339_620_000 - span_ms,
            batches: events.div_ceil(batch as u64),
        };
        let first = backfill.stamp_ms(0, batch, rate);
        let last = backfill.stamp_ms(backfill.batches - 1, batch, rate);
        assert_eq!(first, Some(backfill.start_ms));
        let last = last.expect("the last batch is stamped");
        assert!(
            last < backfill.start_ms + span_ms,
            "inside the span: {last}"
        );
        assert!(
            last > backfill.start_ms + span_ms - 10,
            "at its end: {last}"
        );
        assert_eq!(backfill.stamp_ms(backfill.batches, batch, rate), None);
        let stamps: Vec<i64> = (0..backfill.batches)
            .filter_map(|k| backfill.stamp_ms(k, batch, rate))
            .collect();
        assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn otlp_batches_map_to_one_event_per_span() {
        let plan = Plan {
            batch: 20,
            format: LoadFormat::Otlp,
            rate: 1000.0,
            trace: None,
            models: SYNTHETIC_MODELS[..2].to_vec(),
            error_rate: 0.5,
            seed: 7,
            run_id: 42,
            speedup: 1.0,
            input: String::new(),
            output: String::new(),
            backfill: None,
        };
        let now_ms = 1_795_339_620_000;
        let mut body = Vec::new();
        plan.write_otlp_batch(3, now_ms, &mut body);
        let request =
            ais_model::otlp::decode_request(&body, ais_model::otlp::OtlpEncoding::Protobuf, 100)
                .expect("loadgen writes valid OTLP");
        let prices = ais_model::price::PriceTable::with_defaults();
        let context = ais_model::decode::ValidationContext {
            now_ms,
            max_age_ms: 3_600_000,
            max_future_ms: 300_000,
            max_events: 100,
            prices: &prices,
            payload_max_bytes: None,
        };
        let mapped = ais_model::otlp::map_request(&request, &context);
        assert_eq!(
            (mapped.events.len(), mapped.skipped, mapped.rejected),
            (20, 0, 0)
        );
        assert!(mapped
            .events
            .iter()
            .any(|event| event.status == ais_model::Status::Error));
    }
}
