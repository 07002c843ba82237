//! Detector quality on simulated days with labelled incidents.
//!
//! `cargo run --release -p ais-evaluate --example quality -- [TRACE.csv] [DAYS] [SEED]`
//! (default trace: ../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv,
//! 10 days per case, seed 2026).
//!
//! A simulated day is 1,440 one-minute windows tiled from the trace (minute `w` replays
//! trace minute `w` mod the trace's minutes, 58, each request's latency jittered). Three models share the
//! traffic round-robin, each with its own speed. Latency is derived from tokens:
//! TTFT = (20 ms + 0.03 ms × context tokens) × jitter, latency = TTFT + model speed ×
//! 15 ms × generated tokens × jitter (log-normal jitter, σ 0.3); 1% of calls fail ([`BASE_ERROR`]).
//! Each incident day injects one labelled incident into one model at a random window
//! after a four-hour warm-up; incident-free days measure false alarms. Every window is
//! rolled up exactly as the pipeline does (`RollupPartial`) and fed to the detectors
//! with the evaluator's default settings.
//!
//! Prompt-length mix days are shaped like a conversation trace instead: outside a
//! three-hour stretch, requests of over 3,000 context tokens are resampled to short
//! ones of the trace until 3% remain; inside it the trace's own mix holds (a fifth of
//! prompts over 3,000 tokens), so TTFT grows by the TTFT rule above with nothing wrong.
//! Those days run incident-free (false alarms of a mix shift) and with an incident
//! starting 30 to 120 windows into the stretch (detection under the shift).
//!
//! Besides the evaluator's detectors, `ttft_per_input_token_zscore` (mean TTFT per mean
//! input token, a plain ratio) is scored as the candidate the TTFT fit was chosen over.
//!
//! Incidents confined to one endpoint: a tenant's calls (the three models') go to
//! four endpoints by share (50%, 25%, 15%, 10%), the detectors of each endpoint (the
//! evaluator's location detectors, on the tenant's models together at that value) run
//! beside the models'; one endpoint gets a ×2 latency step or an error burst while the
//! rest of the traffic is as usual. Reported: each default detector at that endpoint,
//! the location incidents delivered (and whether they were narrower than the models),
//! the models' incidents during them, false incidents per location-day and per
//! model-day.
//!
//! Delays are counted in windows from the labelled start, and also in windows with
//! traffic enough to score (20 requests, the detectors' default minimum): the trace has
//! minutes without calls, and windows with too few are skipped by design.
//!
//! What is delivered is scored too: each day's anomalies of the detectors on by default
//! (fired and resolved as the evaluator records them) are grouped into incidents by
//! [`incident::group`] with the default gap, and the incidents table gives, per case, how
//! many incidents a labelled incident becomes, the incidents that overlap none, and how
//! long after the labelled start the incident starts.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use ais_evaluate::detector::{
    latency_explained, per_token_latency, ErrorRateConfig, ErrorRateDetector, Verdict,
    ZScoreConfig, ZScoreDetector,
};
use ais_evaluate::gate::Transition;
use ais_evaluate::incident;
use ais_evaluate::ttft_fit::TtftFitDetector;
use ais_model::{Event, EventId, Status};
use ais_rollup::RollupPartial;
use ais_store::evaluation::{AnomalyRecord, AnomalyState, Location};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const WINDOWS_PER_DAY: usize = 1_440;
const WINDOW_MS: i64 = 60_000;
const WARM_UP: usize = 240;
/// Share of calls that fail outside an error burst (a burst is 20%).
const BASE_ERROR: f64 = 0.01;
const MODELS: &[(&str, f64)] = &[("fast", 0.6), ("medium", 1.0), ("slow", 2.0)];
/// An alert counts as a detection if it fires within this many windows after the
/// incident ends (detection delay is still reported from its start).
const GRACE: usize = 3;
/// Prompts longer than this are "long" in the mix days.
const LONG_PROMPT: u64 = 3_000;
/// Share of long prompts outside the mix days' stretch.
const USUAL_LONG_SHARE: f64 = 0.03;
/// Length of the mix days' stretch of long prompts, in windows.
const STRETCH: usize = 180;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Incident {
    LatencyStep(f64),
    SlowDrift,
    ErrorBurst,
    OutlierWindow,
    TtftRegression,
    TtftStep(f64),
}

impl Incident {
    fn name(self) -> String {
        match self {
            Incident::LatencyStep(factor) => format!("latency step x{factor}"),
            Incident::SlowDrift => "slow drift to x2 over 60 min".to_string(),
            Incident::ErrorBurst => "error burst 20% for 10 min".to_string(),
            Incident::OutlierWindow => "single outlier window x10".to_string(),
            Incident::TtftRegression => "TTFT regression x3".to_string(),
            Incident::TtftStep(factor) => format!("TTFT step x{factor}"),
        }
    }

    fn duration(self) -> usize {
        match self {
            Incident::SlowDrift => 90,
            Incident::ErrorBurst => 10,
            Incident::OutlierWindow => 1,
            _ => 20,
        }
    }

    /// (latency factor, ttft factor, error probability) at `offset` windows in.
    fn effect(self, offset: usize) -> (f64, f64, f64) {
        match self {
            Incident::LatencyStep(factor) => (factor, 1.0, BASE_ERROR),
            Incident::SlowDrift => (1.0 + (offset as f64 / 60.0).min(1.0), 1.0, BASE_ERROR),
            Incident::ErrorBurst => (1.0, 1.0, 0.2),
            Incident::OutlierWindow => (10.0, 1.0, BASE_ERROR),
            Incident::TtftRegression => (1.0, 3.0, BASE_ERROR),
            Incident::TtftStep(factor) => (1.0, factor, BASE_ERROR),
        }
    }
}

struct TraceRow {
    minute: usize,
    context: u64,
    generated: u64,
}

fn load_trace(path: &str) -> Vec<TraceRow> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"));
    let mut rows = Vec::new();
    let mut first: Option<f64> = None;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 3 {
            continue;
        }
        let Some((_, clock)) = fields[0].split_once(' ') else {
            continue;
        };
        let parts: Vec<f64> = clock.split(':').filter_map(|p| p.parse().ok()).collect();
        if parts.len() != 3 {
            continue;
        }
        let seconds = parts[0] * 3600.0 + parts[1] * 60.0 + parts[2];
        let start = *first.get_or_insert(seconds);
        rows.push(TraceRow {
            minute: ((seconds - start) / 60.0) as usize,
            context: fields[1].trim().parse().unwrap_or(0),
            generated: fields[2].trim().parse().unwrap_or(0),
        });
    }
    rows
}

fn lognormal(rng: &mut SmallRng, sigma: f64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).exp()
}

/// The detectors of one (tenant, model), as the evaluator runs them (the TTFT p95 one
/// only when configured), and the plain-ratio candidate.
struct Detectors {
    latency_per_token: ZScoreDetector,
    latency_p95: ZScoreDetector,
    latency_mean: ZScoreDetector,
    ttft_p95: ZScoreDetector,
    error_rate: ErrorRateDetector,
    ttft_input_fit: TtftFitDetector,
    ttft_per_input_token: ZScoreDetector,
}

const DETECTORS: &[&str] = &[
    "latency_p95_zscore",
    "latency_mean_zscore",
    "ttft_p95_zscore",
    "error_rate_wilson",
    "latency_per_token_zscore",
    "ttft_input_fit_zscore",
    "ttft_per_input_token_zscore",
];

/// The detectors on by default, with the metric each watches (as the evaluator names
/// them): their anomalies are what delivery groups into incidents.
const DEFAULT_ON: &[(&str, &str)] = &[
    ("latency_p95_zscore", "latency_p95"),
    ("latency_mean_zscore", "latency_mean"),
    ("latency_per_token_zscore", "latency_ms_per_output_token"),
    ("ttft_input_fit_zscore", "ttft_over_input_fit"),
    ("error_rate_wilson", "error_rate"),
];

/// The latency detectors together: alerts within `UNION_GAP` windows of the previous
/// one count once. Kept beside the incidents, which are what is delivered: an incident
/// takes every default detector of its model (TTFT and errors too), so it cannot say
/// whether the latency detectors between them catch a latency step; this row does.
const ANY_LATENCY: &str = "any latency detector";
const UNION_GAP: usize = 10;
const REPORTED: &[&str] = &[
    "latency_p95_zscore",
    "latency_mean_zscore",
    "latency_per_token_zscore",
    ANY_LATENCY,
    "ttft_input_fit_zscore",
    "ttft_p95_zscore",
    "ttft_per_input_token_zscore",
    "error_rate_wilson",
];

/// Adds the [`ANY_LATENCY`] alerts to a day's alerts.
fn with_union(mut alerts: Vec<(usize, &'static str)>) -> Vec<(usize, &'static str)> {
    let latency = union(&alerts, |name| name.starts_with("latency_"));
    alerts.extend(latency.into_iter().map(|window| (window, ANY_LATENCY)));
    alerts
}

/// Windows of the pages the alerts of detectors `of` make together.
fn union(alerts: &[(usize, &'static str)], of: impl Fn(&str) -> bool) -> Vec<usize> {
    let mut windows: Vec<usize> = alerts
        .iter()
        .filter(|(_, name)| of(name))
        .map(|(window, _)| *window)
        .collect();
    windows.sort_unstable();
    let mut pages = Vec::new();
    let mut last: Option<usize> = None;
    for window in windows {
        if last.is_none_or(|previous| window > previous + UNION_GAP) {
            pages.push(window);
        }
        last = Some(window);
    }
    pages
}

impl Detectors {
    fn new() -> Self {
        Self {
            latency_per_token: ZScoreDetector::new(ZScoreConfig::default()),
            latency_p95: ZScoreDetector::new(ZScoreConfig::default()),
            latency_mean: ZScoreDetector::new(ZScoreConfig::default()),
            ttft_p95: ZScoreDetector::new(ZScoreConfig::default()),
            error_rate: ErrorRateDetector::new(ErrorRateConfig::default()),
            ttft_input_fit: TtftFitDetector::new(ZScoreConfig::default()),
            ttft_per_input_token: ZScoreDetector::new(ZScoreConfig::default()),
        }
    }

    /// The detectors that fired or resolved on this window.
    fn observe(&mut self, partial: &RollupPartial) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut check = |detector, observed, verdict: Verdict| {
            if verdict.transition != Transition::None {
                changes.push(Change {
                    detector,
                    observed,
                    verdict,
                });
            }
        };
        // As the evaluator does: per output token first, since a window it finds
        // normal explains the p95 and the mean.
        let per_token = per_token_latency(partial).map(|per_token| {
            let verdict = self.latency_per_token.observe(per_token, partial.requests);
            (per_token, verdict)
        });
        let explained = latency_explained(per_token.map(|(_, verdict)| verdict));
        if let Some(p95) = partial.latency_quantiles().p95 {
            check(
                DETECTORS[0],
                p95,
                self.latency_p95
                    .observe_unless_explained(p95, partial.requests, explained),
            );
        }
        if let Some(mean) = partial.latency_ms.mean() {
            check(
                DETECTORS[1],
                mean,
                self.latency_mean
                    .observe_unless_explained(mean, partial.requests, explained),
            );
        }
        if let Some(p95) = partial.ttft_quantiles().p95 {
            check(
                DETECTORS[2],
                p95,
                self.ttft_p95.observe(p95, partial.ttft_ms.count()),
            );
        }
        let error_rate = partial.errors as f64 / partial.requests.max(1) as f64;
        check(
            DETECTORS[3],
            error_rate,
            self.error_rate.observe(partial.errors, partial.requests),
        );
        if let Some((per_token, verdict)) = per_token {
            check(DETECTORS[4], per_token, verdict);
        }
        let (fit_ratio, fit_verdict) = self.ttft_input_fit.observe(partial);
        check(DETECTORS[5], fit_ratio.unwrap_or(0.0), fit_verdict);
        if let (Some(mean), true) = (partial.ttft_ms.mean(), partial.input_tokens > 0) {
            let per_token = mean * partial.requests as f64 / partial.input_tokens as f64;
            check(
                DETECTORS[6],
                per_token,
                self.ttft_per_input_token
                    .observe(per_token, partial.ttft_ms.count()),
            );
        }
        changes
    }
}

/// A detector's alert firing or resolving on a window.
struct Change {
    detector: &'static str,
    observed: f64,
    verdict: Verdict,
}

/// One model's simulated day: every detector's alerts (window, detector), the
/// anomalies of the detectors on by default as the evaluator stores them, and which
/// windows had traffic enough to score ([`min_requests`]).
struct Day {
    alerts: Vec<(usize, &'static str)>,
    anomalies: Vec<AnomalyRecord>,
    scored: Vec<bool>,
}

/// Requests a window needs before the detectors score it (their default).
fn min_requests() -> u64 {
    ZScoreConfig::default().min_requests
}

/// Windows in `from..to` with traffic enough to score: a delay counted in them says
/// how long a detector took once there was anything to see (windows without traffic
/// enough are skipped by design). Negative when `to` is before `from`.
fn traffic_windows(scored: &[bool], from: usize, to: usize) -> i64 {
    let count = |range: Range<usize>| {
        scored.get(range).map_or(0, |windows| {
            windows.iter().filter(|scored| **scored).count()
        }) as i64
    };
    if to >= from {
        count(from..to)
    } else {
        -count(to..from)
    }
}

/// What one key's detectors fired (every detector) and the anomalies of the default
/// ones as the evaluator records them: fired, then resolved at the window where the
/// gate resolves.
#[derive(Default)]
struct Recorder {
    alerts: Vec<(usize, &'static str)>,
    anomalies: Vec<AnomalyRecord>,
    /// The firing anomaly of each default detector, as its index in `anomalies`.
    firing: BTreeMap<&'static str, usize>,
}

impl Recorder {
    /// Records a window's changes for `model` (at `location`, if one).
    fn record(
        &mut self,
        window: usize,
        model: &str,
        location: Option<&Location>,
        changes: Vec<Change>,
    ) {
        let window_start_ms = window as i64 * WINDOW_MS;
        for change in changes {
            if change.verdict.transition == Transition::Fire {
                self.alerts.push((window, change.detector));
            }
            let Some((_, metric)) = DEFAULT_ON
                .iter()
                .find(|(detector, _)| *detector == change.detector)
            else {
                continue;
            };
            match change.verdict.transition {
                Transition::None => {}
                Transition::Fire => {
                    self.firing.insert(change.detector, self.anomalies.len());
                    self.anomalies.push(AnomalyRecord {
                        location: location.cloned(),
                        // A day is one tenant's traffic.
                        tenant: "tenant".to_string(),
                        model: model.to_string(),
                        detector: change.detector.to_string(),
                        metric: metric.to_string(),
                        window_start_ms,
                        observed: change.observed,
                        baseline: change.verdict.baseline.unwrap_or(0.0),
                        score: change.verdict.score.unwrap_or(0.0),
                        state: AnomalyState::Firing,
                        resolved_window_ms: None,
                    });
                }
                Transition::Resolve => {
                    if let Some(index) = self.firing.remove(change.detector) {
                        self.anomalies[index].state = AnomalyState::Resolved;
                        self.anomalies[index].resolved_window_ms = Some(window_start_ms);
                    }
                }
            }
        }
    }
}

/// The trace, indexed for replay and for the mix days' resampling.
struct Replay {
    trace: Vec<TraceRow>,
    by_minute: BTreeMap<usize, Vec<usize>>,
    trace_minutes: usize,
    /// Rows of at most [`LONG_PROMPT`] context tokens.
    short: Vec<usize>,
    /// Chance a long row is kept outside the stretch, so [`USUAL_LONG_SHARE`] remain.
    keep_long: f64,
}

impl Replay {
    fn new(trace: Vec<TraceRow>) -> Self {
        let mut by_minute: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, row) in trace.iter().enumerate() {
            by_minute.entry(row.minute).or_default().push(index);
        }
        let trace_minutes = by_minute.keys().max().map_or(1, |m| m + 1);
        let short: Vec<usize> = (0..trace.len())
            .filter(|index| trace[*index].context <= LONG_PROMPT)
            .collect();
        let long_share = 1.0 - short.len() as f64 / trace.len().max(1) as f64;
        let keep_long = if long_share > 0.0 {
            (USUAL_LONG_SHARE / long_share).min(1.0)
        } else {
            1.0
        };
        Self {
            trace,
            by_minute,
            trace_minutes,
            short,
            keep_long,
        }
    }

    fn long_share(&self) -> f64 {
        1.0 - self.short.len() as f64 / self.trace.len().max(1) as f64
    }
}

/// One model's simulated day; `stretch`: a mix day's windows of long prompts (3%
/// elsewhere), `None` for the trace's own mix.
fn simulate_day(
    replay: &Replay,
    model_index: usize,
    incident: Option<(Incident, usize)>,
    stretch: Option<std::ops::Range<usize>>,
    rng: &mut SmallRng,
) -> Day {
    let Replay {
        trace,
        by_minute,
        trace_minutes,
        ..
    } = replay;
    let trace_minutes = *trace_minutes;
    let (model, speed) = MODELS[model_index];
    let mut detectors = Detectors::new();
    let mut recorder = Recorder::default();
    let mut scored = Vec::with_capacity(WINDOWS_PER_DAY);
    let empty = Vec::new();
    for window in 0..WINDOWS_PER_DAY {
        let (latency_factor, ttft_factor, error_probability) = match incident {
            Some((kind, start)) if (start..start + kind.duration()).contains(&window) => {
                kind.effect(window - start)
            }
            _ => (1.0, 1.0, BASE_ERROR),
        };
        let mut partial = RollupPartial::new();
        let rows = by_minute.get(&(window % trace_minutes)).unwrap_or(&empty);
        for (position, index) in rows.iter().enumerate() {
            if position % MODELS.len() != model_index {
                continue;
            }
            let mut row = &trace[*index];
            let resample = stretch
                .as_ref()
                .is_some_and(|stretch| !stretch.contains(&window))
                && row.context > LONG_PROMPT
                && !replay.short.is_empty()
                && !rng.random_bool(replay.keep_long);
            if resample {
                row = &trace[replay.short[rng.random_range(0..replay.short.len())]];
            }
            let ttft = (20.0 + 0.03 * row.context as f64) * lognormal(rng, 0.3) * ttft_factor;
            let latency =
                (ttft + speed * 15.0 * row.generated as f64 * lognormal(rng, 0.3)) * latency_factor;
            let failed = rng.random_bool(error_probability);
            let event = Event {
                ttft_ms: Some(ttft),
                input_tokens: Some(row.context),
                output_tokens: Some(row.generated),
                status: if failed { Status::Error } else { Status::Ok },
                ..Event::new(Cow::Borrowed("m"), EventId::Generated(0), 0, latency)
            };
            partial.add(&event, false);
        }
        scored.push(partial.requests >= min_requests());
        recorder.record(window, model, None, detectors.observe(&partial));
    }
    Day {
        alerts: recorder.alerts,
        anomalies: recorder.anomalies,
        scored,
    }
}

#[derive(Default)]
struct Tally {
    incidents: usize,
    detected: usize,
    delays: Vec<usize>,
    /// The same delays counted in windows with traffic enough to score.
    traffic_delays: Vec<i64>,
    alerts_inside: usize,
    alerts_outside: usize,
}

/// What delivery made of a case's days: the incidents of the default detectors.
#[derive(Default)]
struct IncidentTally {
    model_days: usize,
    labelled: usize,
    /// Labelled incidents that some incident overlaps.
    detected: usize,
    /// Incidents that overlap a labelled incident, over all labelled incidents.
    on_labelled: usize,
    /// The anomalies of those incidents: the alerts delivery would send without
    /// grouping.
    members_on_labelled: usize,
    /// Incidents that overlap no labelled incident.
    false_incidents: usize,
    /// Windows from a labelled incident's start to the start of the first incident
    /// that overlaps it (negative if that incident was already open).
    delays: Vec<i64>,
    /// The same, counted in windows with traffic enough to score.
    traffic_delays: Vec<i64>,
}

/// The median and the maximum of `delays`, as table cells.
fn p50_max<T: Ord + Copy + ToString>(delays: &[T]) -> (String, String) {
    let mut sorted = delays.to_vec();
    sorted.sort_unstable();
    (
        sorted
            .get(sorted.len() / 2)
            .map_or("-".to_string(), ToString::to_string),
        sorted.last().map_or("-".to_string(), ToString::to_string),
    )
}

impl IncidentTally {
    /// Groups a day's anomalies into incidents with the default gap and scores them
    /// against the day's labelled incident: its windows, with the grace.
    fn add_day(
        &mut self,
        anomalies: &[AnomalyRecord],
        scored: &[bool],
        labelled: Option<Range<usize>>,
    ) {
        self.model_days += 1;
        let incidents = incident::group(anomalies, incident::DEFAULT_GAP);
        let Some(labelled) = labelled else {
            self.false_incidents += incidents.len();
            return;
        };
        self.labelled += 1;
        let from_ms = labelled.start as i64 * WINDOW_MS;
        let to_ms = labelled.end as i64 * WINDOW_MS;
        let overlapping: Vec<&incident::Incident> = incidents
            .iter()
            .filter(|incident| incident.overlaps(from_ms, to_ms))
            .collect();
        self.false_incidents += incidents.len() - overlapping.len();
        self.on_labelled += overlapping.len();
        self.members_on_labelled += overlapping
            .iter()
            .map(|incident| incident.members.len())
            .sum::<usize>();
        if let Some(first_start_ms) = overlapping.iter().map(|incident| incident.start_ms).min() {
            self.detected += 1;
            self.delays.push((first_start_ms - from_ms) / WINDOW_MS);
            let first = usize::try_from(first_start_ms / WINDOW_MS).unwrap_or(0);
            self.traffic_delays
                .push(traffic_windows(scored, labelled.start, first));
        }
    }

    fn merge(&mut self, other: &IncidentTally) {
        self.model_days += other.model_days;
        self.labelled += other.labelled;
        self.detected += other.detected;
        self.on_labelled += other.on_labelled;
        self.members_on_labelled += other.members_on_labelled;
        self.false_incidents += other.false_incidents;
        self.delays.extend_from_slice(&other.delays);
        self.traffic_delays.extend_from_slice(&other.traffic_delays);
    }

    /// A row of the incidents table.
    fn row(&self, case: &str) -> String {
        let (delay_p50, delay_max) = p50_max(&self.delays);
        let (traffic_p50, traffic_max) = p50_max(&self.traffic_delays);
        let per_real = |count: usize| {
            if self.detected == 0 {
                "-".to_string()
            } else {
                format!("{:.2}", count as f64 / self.detected as f64)
            }
        };
        format!(
            "| {case} | {} | {}/{} | {} | {} | {} ({:.2}) | {delay_p50} | {delay_max} | {traffic_p50} | {traffic_max} |",
            self.model_days,
            self.detected,
            self.labelled,
            per_real(self.on_labelled),
            per_real(self.members_on_labelled),
            self.false_incidents,
            self.false_incidents as f64 / self.model_days.max(1) as f64,
        )
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        "../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv".to_string()
    });
    let days: usize = args.next().and_then(|d| d.parse().ok()).unwrap_or(10);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2026);
    let replay = Replay::new(load_trace(&path));
    println!(
        "trace: {} requests over {} minutes ({:.1}% of prompts over {LONG_PROMPT} tokens); {} models; {days} simulated days per case",
        replay.trace.len(),
        replay.trace_minutes,
        100.0 * replay.long_share(),
        MODELS.len()
    );
    println!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);

    println!(
        "\nincident-free, the trace's own mix: {} model-days",
        days * MODELS.len()
    );
    let mut delivered = vec![(
        "incident-free, trace's mix".to_string(),
        false_alarms(&replay, days, false, &mut rng),
    )];
    let cases = [
        Incident::LatencyStep(1.5),
        Incident::LatencyStep(2.0),
        Incident::LatencyStep(5.0),
        Incident::SlowDrift,
        Incident::ErrorBurst,
        Incident::OutlierWindow,
        Incident::TtftRegression,
        Incident::TtftStep(1.5),
    ];
    println!("\nincidents, the trace's own mix: one per model-day, {days} per case");
    delivered.extend(incidents(&replay, days, &cases, false, &mut rng));

    println!(
        "\nincident-free, prompt-length mix days ({:.0}% of prompts over {LONG_PROMPT} tokens for {} hours, {:.0}% elsewhere): {} model-days",
        100.0 * replay.long_share(),
        STRETCH / 60,
        100.0 * USUAL_LONG_SHARE,
        days * MODELS.len()
    );
    delivered.push((
        "incident-free, mix days".to_string(),
        false_alarms(&replay, days, true, &mut rng),
    ));
    let cases = [
        Incident::TtftRegression,
        Incident::TtftStep(1.5),
        Incident::LatencyStep(1.5),
        Incident::LatencyStep(2.0),
        Incident::ErrorBurst,
    ];
    println!(
        "\nincidents during the stretch of long prompts (30 to 120 windows into it): one per model-day, {days} per case"
    );
    delivered.extend(incidents(&replay, days, &cases, true, &mut rng));

    println!(
        "\nincidents delivered: the default detectors' anomalies grouped by incident::group (gap {} min); \
         an incident is false if it overlaps no labelled incident (its windows + {GRACE}); \
         per real incident: incidents overlapping a detected labelled incident, and their anomalies; delay in windows from the labelled start to the incident's",
        incident::DEFAULT_GAP.as_secs() / 60
    );
    println!("| case | model-days | detected | incidents per real incident | anomalies per real incident | false incidents (per model-day) | delay p50 | delay max | p50, windows with traffic | max, windows with traffic |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut total = IncidentTally::default();
    for (case, tally) in &delivered {
        println!("{}", tally.row(case));
        total.merge(tally);
    }
    println!("{}", total.row("all cases"));

    endpoint_days(&replay, days, &mut rng);
}

/// A mix day's stretch of long prompts, starting after the warm-up and leaving room
/// for an incident inside it.
fn stretch(rng: &mut SmallRng) -> std::ops::Range<usize> {
    let start = rng.random_range(WARM_UP..WINDOWS_PER_DAY - STRETCH - 60);
    start..start + STRETCH
}

/// Prints false alarms per detector over `days` incident-free days of each model;
/// returns the incidents delivered on them.
fn false_alarms(replay: &Replay, days: usize, mix: bool, rng: &mut SmallRng) -> IncidentTally {
    let mut false_alarms: BTreeMap<&str, usize> = BTreeMap::new();
    let mut delivered = IncidentTally::default();
    for _ in 0..days {
        for model in 0..MODELS.len() {
            let stretch = mix.then(|| stretch(rng));
            let day = simulate_day(replay, model, None, stretch, rng);
            delivered.add_day(&day.anomalies, &day.scored, None);
            for (_, name) in with_union(day.alerts) {
                *false_alarms.entry(name).or_default() += 1;
            }
        }
    }
    let model_days = days * MODELS.len();
    println!("| detector | false alarms | per model-day |");
    println!("|---|---|---|");
    for name in REPORTED {
        let count = false_alarms.get(name).copied().unwrap_or(0);
        println!(
            "| {name} | {count} | {:.2} |",
            count as f64 / model_days as f64
        );
    }
    delivered
}

/// Prints recall, precision and delays per detector of each case, one incident per
/// model-day; `mix`: on mix days, the incident inside the stretch of long prompts.
/// Returns the incidents delivered in each case.
fn incidents(
    replay: &Replay,
    days: usize,
    cases: &[Incident],
    mix: bool,
    rng: &mut SmallRng,
) -> Vec<(String, IncidentTally)> {
    let mut delivered = Vec::new();
    println!("| incident | detector | recall | precision | delay p50 (windows) | delay max | p50, windows with traffic | max, windows with traffic |");
    println!("|---|---|---|---|---|---|---|---|");
    for case in cases.iter().copied() {
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut case_delivered = IncidentTally::default();
        for day in 0..days {
            let model = day % MODELS.len();
            let (start, stretch) = if mix {
                let stretch = stretch(rng);
                (stretch.start + rng.random_range(30..120), Some(stretch))
            } else {
                (rng.random_range(WARM_UP..WINDOWS_PER_DAY - 120), None)
            };
            let day = simulate_day(replay, model, Some((case, start)), stretch, rng);
            let end = start + case.duration() + GRACE;
            case_delivered.add_day(&day.anomalies, &day.scored, Some(start..end));
            let alerts = with_union(day.alerts);
            for name in REPORTED {
                let tally = tallies.entry(name).or_default();
                tally.incidents += 1;
                let mine: Vec<usize> = alerts
                    .iter()
                    .filter(|(_, n)| n == name)
                    .map(|(w, _)| *w)
                    .collect();
                if let Some(first) = mine.iter().find(|w| (start..end).contains(*w)) {
                    tally.detected += 1;
                    tally.delays.push(first - start);
                    tally
                        .traffic_delays
                        .push(traffic_windows(&day.scored, start, *first));
                }
                tally.alerts_inside += mine.iter().filter(|w| (start..end).contains(*w)).count();
                tally.alerts_outside += mine.iter().filter(|w| !(start..end).contains(*w)).count();
            }
        }
        for name in REPORTED {
            let tally = &tallies[name];
            let (delay_p50, delay_max) = p50_max(&tally.delays);
            let (traffic_p50, traffic_max) = p50_max(&tally.traffic_delays);
            let alerts = tally.alerts_inside + tally.alerts_outside;
            println!(
                "| {} | {name} | {}/{} | {} | {delay_p50} | {delay_max} | {traffic_p50} | {traffic_max} |",
                case.name(),
                tally.detected,
                tally.incidents,
                if alerts == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", tally.alerts_inside as f64 / alerts as f64)
                },
            );
        }
        let setting = if mix {
            "during the long-prompt stretch"
        } else {
            "trace's mix"
        };
        delivered.push((format!("{}, {setting}", case.name()), case_delivered));
    }
    delivered
}

/// Endpoints of a tenant's traffic and their shares, for the days of incidents
/// confined to one endpoint: each call goes to one, at random by share.
const ENDPOINTS: &[(&str, f64)] = &[
    ("/chat", 0.50),
    ("/complete", 0.25),
    ("/search", 0.15),
    ("/batch", 0.10),
];

/// A tenant's simulated day with its calls spread over [`ENDPOINTS`]: what the
/// detectors of each model, and of each endpoint (the location detectors, on the
/// tenant's models together at that value), recorded, and the windows each endpoint scored.
struct TenantDay {
    models: Vec<Recorder>,
    endpoints: Vec<Recorder>,
    endpoint_scored: Vec<Vec<bool>>,
}

impl TenantDay {
    /// Every default detector's anomalies of the day, the models' and the endpoints'.
    fn anomalies(&self) -> Vec<AnomalyRecord> {
        self.models
            .iter()
            .chain(&self.endpoints)
            .flat_map(|recorder| recorder.anomalies.iter().cloned())
            .collect()
    }
}

/// The endpoint a call goes to, by [`ENDPOINTS`]' shares.
fn endpoint_of(rng: &mut SmallRng) -> usize {
    let mut draw: f64 = rng.random_range(0.0..1.0);
    for (index, (_, share)) in ENDPOINTS.iter().enumerate() {
        if draw < *share {
            return index;
        }
        draw -= share;
    }
    ENDPOINTS.len() - 1
}

/// One tenant's day of the trace's mix, the three models as in [`simulate_day`];
/// `incident`: (what, first window, endpoint), the incident confined to the calls of
/// that endpoint, every model's.
fn simulate_tenant_day(
    replay: &Replay,
    incident: Option<(Incident, usize, usize)>,
    rng: &mut SmallRng,
) -> TenantDay {
    let mut model_detectors: Vec<Detectors> = MODELS.iter().map(|_| Detectors::new()).collect();
    let mut endpoint_detectors: Vec<Detectors> =
        ENDPOINTS.iter().map(|_| Detectors::new()).collect();
    let mut day = TenantDay {
        models: MODELS.iter().map(|_| Recorder::default()).collect(),
        endpoints: ENDPOINTS.iter().map(|_| Recorder::default()).collect(),
        endpoint_scored: vec![Vec::with_capacity(WINDOWS_PER_DAY); ENDPOINTS.len()],
    };
    let locations: Vec<Location> = ENDPOINTS
        .iter()
        .map(|(value, _)| Location::new("endpoint", value))
        .collect();
    let empty = Vec::new();
    for window in 0..WINDOWS_PER_DAY {
        let mut model_partials: Vec<RollupPartial> =
            MODELS.iter().map(|_| RollupPartial::new()).collect();
        let mut endpoint_partials: Vec<RollupPartial> =
            ENDPOINTS.iter().map(|_| RollupPartial::new()).collect();
        let rows = replay
            .by_minute
            .get(&(window % replay.trace_minutes))
            .unwrap_or(&empty);
        for (position, index) in rows.iter().enumerate() {
            let row = &replay.trace[*index];
            let model = position % MODELS.len();
            let endpoint = endpoint_of(rng);
            let (latency_factor, ttft_factor, error_probability) = match incident {
                Some((kind, start, at))
                    if at == endpoint && (start..start + kind.duration()).contains(&window) =>
                {
                    kind.effect(window - start)
                }
                _ => (1.0, 1.0, BASE_ERROR),
            };
            let speed = MODELS[model].1;
            let ttft = (20.0 + 0.03 * row.context as f64) * lognormal(rng, 0.3) * ttft_factor;
            let latency =
                (ttft + speed * 15.0 * row.generated as f64 * lognormal(rng, 0.3)) * latency_factor;
            let failed = rng.random_bool(error_probability);
            let event = Event {
                ttft_ms: Some(ttft),
                input_tokens: Some(row.context),
                output_tokens: Some(row.generated),
                status: if failed { Status::Error } else { Status::Ok },
                ..Event::new(Cow::Borrowed("m"), EventId::Generated(0), 0, latency)
            };
            model_partials[model].add(&event, false);
            endpoint_partials[endpoint].add(&event, false);
        }
        for (model, partial) in model_partials.iter().enumerate() {
            let changes = model_detectors[model].observe(partial);
            day.models[model].record(window, MODELS[model].0, None, changes);
        }
        for (endpoint, partial) in endpoint_partials.iter().enumerate() {
            day.endpoint_scored[endpoint].push(partial.requests >= min_requests());
            let changes = endpoint_detectors[endpoint].observe(partial);
            // A location's anomalies are of the tenant's models together.
            day.endpoints[endpoint].record(window, "*", Some(&locations[endpoint]), changes);
        }
    }
    day
}

/// What delivery and the endpoint's own detectors made of a case's tenant-days.
#[derive(Default)]
struct EndpointTally {
    tenant_days: usize,
    labelled: usize,
    /// Labelled incidents that an incident of their endpoint overlaps.
    detected: usize,
    /// Incidents of locations overlapping a labelled incident and holding its endpoint.
    on_labelled: usize,
    /// Of the first such incident of each labelled one: confined to its locations.
    narrower: usize,
    /// Incidents of the models overlapping a labelled incident: the model moved too.
    models_too: usize,
    /// Incidents of locations that overlap no labelled incident or miss its endpoint.
    false_locations: usize,
    /// Incidents of the models overlapping no labelled incident.
    false_models: usize,
    delays: Vec<i64>,
    traffic_delays: Vec<i64>,
    /// Per detector at the labelled endpoint: detections, delays, delays in windows
    /// with traffic.
    detectors: BTreeMap<&'static str, (usize, Vec<usize>, Vec<i64>)>,
}

impl EndpointTally {
    /// Scores a tenant-day against its labelled incident: (windows with the grace,
    /// endpoint).
    fn add_day(&mut self, day: &TenantDay, labelled: Option<(Range<usize>, usize)>) {
        self.tenant_days += 1;
        let incidents = incident::group(&day.anomalies(), incident::DEFAULT_GAP);
        let (of_locations, of_models): (Vec<&incident::Incident>, Vec<&incident::Incident>) =
            incidents.iter().partition(|incident| incident.model == "*");
        let Some((windows, endpoint)) = labelled else {
            self.false_locations += of_locations.len();
            self.false_models += of_models.len();
            return;
        };
        self.labelled += 1;
        let from_ms = windows.start as i64 * WINDOW_MS;
        let to_ms = windows.end as i64 * WINDOW_MS;
        let location = Location::new("endpoint", ENDPOINTS[endpoint].0);
        let mut matching: Vec<&incident::Incident> = of_locations
            .iter()
            .copied()
            .filter(|incident| {
                incident.overlaps(from_ms, to_ms) && incident.locations.contains(&location)
            })
            .collect();
        matching.sort_by_key(|incident| incident.start_ms);
        self.false_locations += of_locations.len() - matching.len();
        self.on_labelled += matching.len();
        let models_too = of_models
            .iter()
            .filter(|incident| incident.overlaps(from_ms, to_ms))
            .count();
        self.models_too += models_too;
        self.false_models += of_models.len() - models_too;
        if let Some(first) = matching.first() {
            self.detected += 1;
            self.narrower += usize::from(first.extent() == Some("narrower"));
            self.delays.push((first.start_ms - from_ms) / WINDOW_MS);
            let first_window = usize::try_from(first.start_ms / WINDOW_MS).unwrap_or(0);
            self.traffic_delays.push(traffic_windows(
                &day.endpoint_scored[endpoint],
                windows.start,
                first_window,
            ));
        }
        for (name, _) in DEFAULT_ON {
            let entry = self.detectors.entry(name).or_default();
            let fired = day.endpoints[endpoint]
                .alerts
                .iter()
                .find(|(window, detector)| detector == name && windows.contains(window));
            if let Some((window, _)) = fired {
                entry.0 += 1;
                entry.1.push(window - windows.start);
                entry.2.push(traffic_windows(
                    &day.endpoint_scored[endpoint],
                    windows.start,
                    *window,
                ));
            }
        }
    }
}

/// Prints the days of incidents confined to one endpoint: per detector at that
/// endpoint, then as delivered (location incidents, whether the models fired too,
/// false incidents per location-day and per model-day).
fn endpoint_days(replay: &Replay, days: usize, rng: &mut SmallRng) {
    let shares: Vec<String> = ENDPOINTS
        .iter()
        .map(|(name, share)| format!("{name} {:.0}%", 100.0 * share))
        .collect();
    println!(
        "\nincidents confined to one endpoint (the trace's mix; the tenant's calls spread over {}; \
         the location detectors see each endpoint's calls of the three models together): {days} tenant-days per case",
        shares.join(", ")
    );
    let mut cases: Vec<(String, EndpointTally)> = Vec::new();
    let mut free = EndpointTally::default();
    for _ in 0..days {
        let day = simulate_tenant_day(replay, None, rng);
        free.add_day(&day, None);
    }
    cases.push(("incident-free".to_string(), free));
    // Every endpoint but the largest, whose incidents would be most of the traffic's.
    for (endpoint, (name, _)) in ENDPOINTS.iter().enumerate().skip(1) {
        for kind in [Incident::LatencyStep(2.0), Incident::ErrorBurst] {
            let mut tally = EndpointTally::default();
            for _ in 0..days {
                let start = rng.random_range(WARM_UP..WINDOWS_PER_DAY - 120);
                let day = simulate_tenant_day(replay, Some((kind, start, endpoint)), rng);
                let end = start + kind.duration() + GRACE;
                tally.add_day(&day, Some((start..end, endpoint)));
            }
            cases.push((format!("{} at {name}", kind.name()), tally));
        }
    }
    println!("| incident | detector at the endpoint | recall | delay p50 | delay max | p50, windows with traffic | max, windows with traffic |");
    println!("|---|---|---|---|---|---|---|");
    for (case, tally) in cases.iter().skip(1) {
        for (name, (detected, delays, traffic)) in &tally.detectors {
            if *detected == 0 {
                continue;
            }
            let (delay_p50, delay_max) = p50_max(delays);
            let (traffic_p50, traffic_max) = p50_max(traffic);
            println!(
                "| {case} | {name} | {detected}/{} | {delay_p50} | {delay_max} | {traffic_p50} | {traffic_max} |",
                tally.labelled
            );
        }
    }
    println!(
        "\nas delivered: location incidents (model \"*\", with locations) and the models' incidents, grouped as above; \
         a location incident is false if it overlaps no labelled incident or does not hold its endpoint"
    );
    println!("| case | tenant-days | detected | location incidents per real incident | narrower | model incidents during it | false location incidents (per location-day) | false model incidents (per model-day) | delay p50 | delay max | p50, windows with traffic | max, windows with traffic |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut false_locations = 0;
    let mut false_models = 0;
    let mut tenant_days = 0;
    for (case, tally) in &cases {
        let (delay_p50, delay_max) = p50_max(&tally.delays);
        let (traffic_p50, traffic_max) = p50_max(&tally.traffic_delays);
        let per_real = if tally.detected == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", tally.on_labelled as f64 / tally.detected as f64)
        };
        println!(
            "| {case} | {} | {}/{} | {per_real} | {}/{} | {} | {} ({:.3}) | {} ({:.3}) | {delay_p50} | {delay_max} | {traffic_p50} | {traffic_max} |",
            tally.tenant_days,
            tally.detected,
            tally.labelled,
            tally.narrower,
            tally.detected,
            tally.models_too,
            tally.false_locations,
            tally.false_locations as f64 / (tally.tenant_days * ENDPOINTS.len()).max(1) as f64,
            tally.false_models,
            tally.false_models as f64 / (tally.tenant_days * MODELS.len()).max(1) as f64,
        );
        false_locations += tally.false_locations;
        false_models += tally.false_models;
        tenant_days += tally.tenant_days;
    }
    println!(
        "all endpoint days: {tenant_days} tenant-days, {} location-days: {false_locations} false location incidents ({:.3} per location-day), {false_models} false model incidents ({:.3} per model-day)",
        tenant_days * ENDPOINTS.len(),
        false_locations as f64 / (tenant_days * ENDPOINTS.len()).max(1) as f64,
        false_models as f64 / (tenant_days * MODELS.len()).max(1) as f64,
    );
}
