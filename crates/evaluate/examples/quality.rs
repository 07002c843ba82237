//! Detector quality on simulated days with labelled incidents.
//!
//! `cargo run --release -p ais-evaluate --example quality -- [TRACE.csv] [DAYS]`
//! (default trace: ../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv).
//!
//! A simulated day is 1,440 one-minute windows tiled from the trace (minute `w` replays
//! trace minute `w mod 57`, each request's latency jittered). Three models share the
//! traffic round-robin, each with its own speed. Latency is derived from tokens:
//! TTFT = (20 ms + 0.03 ms × context tokens) × jitter, latency = TTFT + model speed ×
//! 15 ms × generated tokens × jitter (log-normal jitter, σ 0.3); 0.5% of calls fail.
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

use std::borrow::Cow;
use std::collections::BTreeMap;

use ais_evaluate::detector::{ErrorRateConfig, ErrorRateDetector, ZScoreConfig, ZScoreDetector};
use ais_evaluate::gate::Transition;
use ais_evaluate::ttft_fit::TtftFitDetector;
use ais_model::{Event, EventId, Status};
use ais_rollup::RollupPartial;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const WINDOWS_PER_DAY: usize = 1_440;
const WARM_UP: usize = 240;
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
            Incident::LatencyStep(factor) => (factor, 1.0, 0.005),
            Incident::SlowDrift => (1.0 + (offset as f64 / 60.0).min(1.0), 1.0, 0.005),
            Incident::ErrorBurst => (1.0, 1.0, 0.2),
            Incident::OutlierWindow => (10.0, 1.0, 0.005),
            Incident::TtftRegression => (1.0, 3.0, 0.005),
            Incident::TtftStep(factor) => (1.0, factor, 0.005),
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

/// The detectors on by default: what an operator is paged by, one page per burst of
/// alerts (as [`ANY_LATENCY`]).
const DEFAULT_ON: &[&str] = &[
    "latency_p95_zscore",
    "latency_mean_zscore",
    "latency_per_token_zscore",
    "ttft_input_fit_zscore",
    "error_rate_wilson",
];
const ANY_DEFAULT: &str = "any default detector";

/// What an operator sees from the latency detectors together: one page per burst of
/// alerts (alerts within `UNION_GAP` windows of the previous one are the same page).
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
    ANY_DEFAULT,
];

/// Adds the [`ANY_LATENCY`] and [`ANY_DEFAULT`] alerts to a day's alerts.
fn with_union(mut alerts: Vec<(usize, &'static str)>) -> Vec<(usize, &'static str)> {
    let latency = union(&alerts, |name| name.starts_with("latency_"));
    let default_on = union(&alerts, |name| DEFAULT_ON.contains(&name));
    alerts.extend(latency.into_iter().map(|window| (window, ANY_LATENCY)));
    alerts.extend(default_on.into_iter().map(|window| (window, ANY_DEFAULT)));
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

    /// Detector names that fired on this window.
    fn observe(&mut self, partial: &RollupPartial) -> Vec<&'static str> {
        let mut fired = Vec::new();
        let mut check = |name, transition| {
            if transition == Transition::Fire {
                fired.push(name);
            }
        };
        if let Some(p95) = partial.latency_quantiles().p95 {
            check(
                DETECTORS[0],
                self.latency_p95.observe(p95, partial.requests).transition,
            );
        }
        if let Some(mean) = partial.latency_ms.mean() {
            check(
                DETECTORS[1],
                self.latency_mean.observe(mean, partial.requests).transition,
            );
        }
        if let Some(p95) = partial.ttft_quantiles().p95 {
            check(
                DETECTORS[2],
                self.ttft_p95
                    .observe(p95, partial.ttft_ms.count())
                    .transition,
            );
        }
        check(
            DETECTORS[3],
            self.error_rate
                .observe(partial.errors, partial.requests)
                .transition,
        );
        if let (Some(mean), true) = (partial.latency_ms.mean(), partial.output_tokens > 0) {
            let per_token = mean * partial.requests as f64 / partial.output_tokens as f64;
            check(
                DETECTORS[4],
                self.latency_per_token
                    .observe(per_token, partial.requests)
                    .transition,
            );
        }
        check(
            DETECTORS[5],
            self.ttft_input_fit.observe(partial).1.transition,
        );
        if let (Some(mean), true) = (partial.ttft_ms.mean(), partial.input_tokens > 0) {
            let per_token = mean * partial.requests as f64 / partial.input_tokens as f64;
            check(
                DETECTORS[6],
                self.ttft_per_input_token
                    .observe(per_token, partial.ttft_ms.count())
                    .transition,
            );
        }
        fired
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

/// Alerts (window, detector) of one model over one simulated day; `stretch`: a mix
/// day's windows of long prompts (3% elsewhere), `None` for the trace's own mix.
fn simulate_day(
    replay: &Replay,
    model_index: usize,
    incident: Option<(Incident, usize)>,
    stretch: Option<std::ops::Range<usize>>,
    rng: &mut SmallRng,
) -> Vec<(usize, &'static str)> {
    let Replay {
        trace,
        by_minute,
        trace_minutes,
        ..
    } = replay;
    let trace_minutes = *trace_minutes;
    let (_, speed) = MODELS[model_index];
    let mut detectors = Detectors::new();
    let mut alerts = Vec::new();
    let empty = Vec::new();
    for window in 0..WINDOWS_PER_DAY {
        let (latency_factor, ttft_factor, error_probability) = match incident {
            Some((kind, start)) if (start..start + kind.duration()).contains(&window) => {
                kind.effect(window - start)
            }
            _ => (1.0, 1.0, 0.005),
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
        for name in detectors.observe(&partial) {
            alerts.push((window, name));
        }
    }
    alerts
}

#[derive(Default)]
struct Tally {
    incidents: usize,
    detected: usize,
    delays: Vec<usize>,
    alerts_inside: usize,
    alerts_outside: usize,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        "../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv".to_string()
    });
    let days: usize = args.next().and_then(|d| d.parse().ok()).unwrap_or(10);
    let replay = Replay::new(load_trace(&path));
    println!(
        "trace: {} requests over {} minutes ({:.1}% of prompts over {LONG_PROMPT} tokens); {} models; {days} simulated days per case",
        replay.trace.len(),
        replay.trace_minutes,
        100.0 * replay.long_share(),
        MODELS.len()
    );
    let mut rng = SmallRng::seed_from_u64(2026);

    println!(
        "\nincident-free, the trace's own mix: {} model-days",
        days * MODELS.len()
    );
    false_alarms(&replay, days, false, &mut rng);
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
    incidents(&replay, days, &cases, false, &mut rng);

    println!(
        "\nincident-free, prompt-length mix days ({:.0}% of prompts over {LONG_PROMPT} tokens for {} hours, {:.0}% elsewhere): {} model-days",
        100.0 * replay.long_share(),
        STRETCH / 60,
        100.0 * USUAL_LONG_SHARE,
        days * MODELS.len()
    );
    false_alarms(&replay, days, true, &mut rng);
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
    incidents(&replay, days, &cases, true, &mut rng);
}

/// A mix day's stretch of long prompts, starting after the warm-up and leaving room
/// for an incident inside it.
fn stretch(rng: &mut SmallRng) -> std::ops::Range<usize> {
    let start = rng.random_range(WARM_UP..WINDOWS_PER_DAY - STRETCH - 60);
    start..start + STRETCH
}

/// Prints false alarms per detector over `days` incident-free days of each model.
fn false_alarms(replay: &Replay, days: usize, mix: bool, rng: &mut SmallRng) {
    let mut false_alarms: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..days {
        for model in 0..MODELS.len() {
            let stretch = mix.then(|| stretch(rng));
            for (_, name) in with_union(simulate_day(replay, model, None, stretch, rng)) {
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
}

/// Prints recall, precision and delays per detector of each case, one incident per
/// model-day; `mix`: on mix days, the incident inside the stretch of long prompts.
fn incidents(replay: &Replay, days: usize, cases: &[Incident], mix: bool, rng: &mut SmallRng) {
    println!("| incident | detector | recall | precision | delay p50 (windows) | delay max |");
    println!("|---|---|---|---|---|---|");
    for case in cases.iter().copied() {
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        for day in 0..days {
            let model = day % MODELS.len();
            let (start, stretch) = if mix {
                let stretch = stretch(rng);
                (stretch.start + rng.random_range(30..120), Some(stretch))
            } else {
                (rng.random_range(WARM_UP..WINDOWS_PER_DAY - 120), None)
            };
            let alerts = with_union(simulate_day(
                replay,
                model,
                Some((case, start)),
                stretch,
                rng,
            ));
            let end = start + case.duration() + GRACE;
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
                }
                tally.alerts_inside += mine.iter().filter(|w| (start..end).contains(*w)).count();
                tally.alerts_outside += mine.iter().filter(|w| !(start..end).contains(*w)).count();
            }
        }
        for name in REPORTED {
            let tally = &tallies[name];
            let mut delays = tally.delays.clone();
            delays.sort_unstable();
            let alerts = tally.alerts_inside + tally.alerts_outside;
            println!(
                "| {} | {name} | {}/{} | {} | {} | {} |",
                case.name(),
                tally.detected,
                tally.incidents,
                if alerts == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", tally.alerts_inside as f64 / alerts as f64)
                },
                delays
                    .get(delays.len() / 2)
                    .map_or("-".to_string(), |d| d.to_string()),
                delays.last().map_or("-".to_string(), |d| d.to_string()),
            );
        }
    }
}
