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

use std::borrow::Cow;
use std::collections::BTreeMap;

use ais_evaluate::detector::{ErrorRateConfig, ErrorRateDetector, ZScoreConfig, ZScoreDetector};
use ais_evaluate::gate::Transition;
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Incident {
    LatencyStep(f64),
    SlowDrift,
    ErrorBurst,
    OutlierWindow,
    TtftRegression,
}

impl Incident {
    fn name(self) -> String {
        match self {
            Incident::LatencyStep(factor) => format!("latency step x{factor}"),
            Incident::SlowDrift => "slow drift to x2 over 60 min".to_string(),
            Incident::ErrorBurst => "error burst 20% for 10 min".to_string(),
            Incident::OutlierWindow => "single outlier window x10".to_string(),
            Incident::TtftRegression => "TTFT regression x3".to_string(),
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

/// The detectors of one (tenant, model), as the evaluator runs them.
struct Detectors {
    latency_per_token: ZScoreDetector,
    latency_p95: ZScoreDetector,
    latency_mean: ZScoreDetector,
    ttft_p95: ZScoreDetector,
    error_rate: ErrorRateDetector,
}

const DETECTORS: &[&str] = &[
    "latency_p95_zscore",
    "latency_mean_zscore",
    "ttft_p95_zscore",
    "error_rate_wilson",
    "latency_per_token_zscore",
];

/// What an operator sees from the latency detectors together: one page per burst of
/// alerts (alerts within `UNION_GAP` windows of the previous one are the same page).
const ANY_LATENCY: &str = "any latency detector";
const UNION_GAP: usize = 10;
const REPORTED: &[&str] = &[
    "latency_p95_zscore",
    "latency_mean_zscore",
    "latency_per_token_zscore",
    ANY_LATENCY,
    "ttft_p95_zscore",
    "error_rate_wilson",
];

/// Adds the [`ANY_LATENCY`] alerts to a day's alerts.
fn with_union(mut alerts: Vec<(usize, &'static str)>) -> Vec<(usize, &'static str)> {
    let mut latency: Vec<usize> = alerts
        .iter()
        .filter(|(_, name)| name.starts_with("latency_"))
        .map(|(window, _)| *window)
        .collect();
    latency.sort_unstable();
    let mut last: Option<usize> = None;
    for window in latency {
        if last.is_none_or(|previous| window > previous + UNION_GAP) {
            alerts.push((window, ANY_LATENCY));
        }
        last = Some(window);
    }
    alerts
}

impl Detectors {
    fn new() -> Self {
        Self {
            latency_per_token: ZScoreDetector::new(ZScoreConfig::default()),
            latency_p95: ZScoreDetector::new(ZScoreConfig::default()),
            latency_mean: ZScoreDetector::new(ZScoreConfig::default()),
            ttft_p95: ZScoreDetector::new(ZScoreConfig::default()),
            error_rate: ErrorRateDetector::new(ErrorRateConfig::default()),
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
        fired
    }
}

/// Alerts (window, detector) of one model over one simulated day.
fn simulate_day(
    trace: &[TraceRow],
    by_minute: &BTreeMap<usize, Vec<usize>>,
    trace_minutes: usize,
    model_index: usize,
    incident: Option<(Incident, usize)>,
    rng: &mut SmallRng,
) -> Vec<(usize, &'static str)> {
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
            let row = &trace[*index];
            let ttft = (20.0 + 0.03 * row.context as f64) * lognormal(rng, 0.3) * ttft_factor;
            let latency =
                (ttft + speed * 15.0 * row.generated as f64 * lognormal(rng, 0.3)) * latency_factor;
            let failed = rng.random_bool(error_probability);
            let event = Event {
                ttft_ms: Some(ttft),
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
    let trace = load_trace(&path);
    let mut by_minute: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (index, row) in trace.iter().enumerate() {
        by_minute.entry(row.minute).or_default().push(index);
    }
    let trace_minutes = by_minute.keys().max().map_or(1, |m| m + 1);
    println!(
        "trace: {} requests over {trace_minutes} minutes; {} models; {days} simulated days per case",
        trace.len(),
        MODELS.len()
    );
    let mut rng = SmallRng::seed_from_u64(2026);

    // Incident-free days: false alarms per model-day, per detector.
    let mut false_alarms: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..days {
        for model in 0..MODELS.len() {
            for (_, name) in with_union(simulate_day(
                &trace,
                &by_minute,
                trace_minutes,
                model,
                None,
                &mut rng,
            )) {
                *false_alarms.entry(name).or_default() += 1;
            }
        }
    }
    let model_days = days * MODELS.len();
    println!("\nincident-free: {model_days} model-days");
    println!("| detector | false alarms | per model-day |");
    println!("|---|---|---|");
    for name in REPORTED {
        let count = false_alarms.get(name).copied().unwrap_or(0);
        println!(
            "| {name} | {count} | {:.2} |",
            count as f64 / model_days as f64
        );
    }

    let cases = [
        Incident::LatencyStep(1.5),
        Incident::LatencyStep(2.0),
        Incident::LatencyStep(5.0),
        Incident::SlowDrift,
        Incident::ErrorBurst,
        Incident::OutlierWindow,
        Incident::TtftRegression,
    ];
    println!("\nincidents: one per model-day, {days} per case");
    println!("| incident | detector | recall | precision | delay p50 (windows) | delay max |");
    println!("|---|---|---|---|---|---|");
    for case in cases {
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        for day in 0..days {
            let model = day % MODELS.len();
            let start = rng.random_range(WARM_UP..WINDOWS_PER_DAY - 120);
            let alerts = with_union(simulate_day(
                &trace,
                &by_minute,
                trace_minutes,
                model,
                Some((case, start)),
                &mut rng,
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
