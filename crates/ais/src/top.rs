//! `ais top`: a live per-model table in the terminal, read from
//! `GET /v1/query/summary` of a running server: requests, requests per second, error
//! rate, latency p50 and p99 and cost per minute over a sliding window (the last
//! `--window`, the current minute included), redrawn in place every `--interval`.
//! `--once` prints one table and exits (for scripts and tests); piped output gets one
//! plain table per refresh instead of terminal control codes.
//!
//! `--by DIMENSION` (any dimension of `GET /v1/query/breakdown`: `endpoint`, `region`,
//! `user_id`, `attr.feature`, …) lists one row per value of that dimension instead of
//! per model, and `--filter D:v1|v2` (repeatable) narrows the rows to matching events;
//! both read the breakdown, whose `other` row holds whatever is past its 1,000 groups.

use ais_model::time::unix_now_ms;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

const MINUTE_MS: i64 = 60_000;

/// `ais top` flags.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Base URL of the server
    #[arg(long, env = "AIS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with read access (none when the server has no keys)
    #[arg(long, env = "AIS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the table once and exit
    #[arg(long)]
    pub once: bool,
    /// How far back the table looks, in whole minutes (5m, 1h, …); the current minute
    /// is included
    #[arg(long, env = "AIS_TOP_WINDOW", default_value = "5m", value_parser = crate::args::parse_duration)]
    pub window: Duration,
    /// Time between refreshes
    #[arg(long, env = "AIS_TOP_INTERVAL", default_value = "2s", value_parser = crate::args::parse_duration)]
    pub interval: Duration,
    /// Order of the rows
    #[arg(long, value_enum, default_value_t = SortBy::Cost)]
    pub sort: SortBy,
    /// One row per value of this dimension instead of per model (endpoint, region,
    /// user_id, attr.KEY, …)
    #[arg(long, env = "AIS_TOP_BY")]
    pub by: Option<String>,
    /// Only events matching DIMENSION:V1|V2 (or DIMENSION:!V1|V2); repeat to AND them
    #[arg(long)]
    pub filter: Vec<String>,
}

/// Groups asked of the breakdown: more rows than a terminal shows.
const BREAKDOWN_ROWS: &str = "1000";

/// What `ais top` sorts by (largest first; `model` alphabetically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Cost,
    Requests,
    Errors,
    P99,
    Model,
}

#[derive(Debug, Deserialize)]
struct Summary {
    from: i64,
    models: Vec<ModelLine>,
}

#[derive(Debug, Deserialize)]
struct ModelLine {
    model: String,
    requests: u64,
    errors: u64,
    latency_ms: Quantiles,
    cost_usd: f64,
}

/// A `GET /v1/query/breakdown` answer, as far as the table needs it.
#[derive(Debug, Deserialize)]
struct Breakdown {
    from: i64,
    groups: Vec<Group>,
    other: Option<Metrics>,
}

#[derive(Debug, Deserialize)]
struct Group {
    key: std::collections::BTreeMap<String, Option<String>>,
    #[serde(flatten)]
    metrics: Metrics,
}

#[derive(Debug, Deserialize)]
struct Metrics {
    requests: u64,
    errors: u64,
    latency_ms: Quantiles,
    cost_usd: f64,
}

impl Metrics {
    fn line(self, name: String) -> ModelLine {
        ModelLine {
            model: name,
            requests: self.requests,
            errors: self.errors,
            latency_ms: self.latency_ms,
            cost_usd: self.cost_usd,
        }
    }
}

impl Breakdown {
    /// One row per group (a missing value shows as `(none)`), then `(other)`.
    fn into_summary(self) -> Summary {
        let mut models: Vec<ModelLine> = self
            .groups
            .into_iter()
            .map(|group| {
                let name = group
                    .key
                    .into_values()
                    .next()
                    .flatten()
                    .unwrap_or_else(|| "(none)".to_string());
                group.metrics.line(name)
            })
            .collect();
        if let Some(other) = self.other {
            models.push(other.line("(other)".to_string()));
        }
        Summary {
            from: self.from,
            models,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Quantiles {
    p50: Option<f64>,
    p99: Option<f64>,
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        bail!("--interval must be longer than 0");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(watch(args))
}

async fn watch(args: TopArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    if args.once {
        let table = fetch_table(&client, &args).await?;
        print!("{table}");
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let mut screen = Screen::new(terminal);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let frame = match fetch_table(&client, &args).await {
            Ok(table) => table,
            Err(error) => format!("ais top: {error:#}\n(retrying every {:?})\n", args.interval),
        };
        screen.draw(&frame)?;
        tokio::select! {
            _ = &mut interrupted => break,
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
    Ok(())
}

/// Redraws in place on a terminal (alternate screen, cursor hidden, restored on drop).
struct Screen {
    terminal: bool,
}

impl Screen {
    fn new(terminal: bool) -> Self {
        if terminal {
            print!("\x1b[?1049h\x1b[?25l");
        }
        Self { terminal }
    }

    fn draw(&mut self, frame: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.terminal {
            // Home, each line cleared to its end, then everything below cleared: no flicker.
            let mut out = String::from("\x1b[H");
            for line in frame.lines() {
                let _ = write!(out, "{line}\x1b[K\r\n");
            }
            out.push_str("\x1b[J");
            stdout.write_all(out.as_bytes())?;
        } else {
            stdout.write_all(frame.as_bytes())?;
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal {
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
    }
}

async fn fetch_table(client: &reqwest::Client, args: &TopArgs) -> anyhow::Result<String> {
    let now = unix_now_ms();
    let window_minutes = (args.window.as_secs().div_ceil(60) as i64).max(1);
    let to = now.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    let from = to - window_minutes * MINUTE_MS;
    let base = args.url.trim_end_matches('/');
    let breakdown = args.by.is_some() || !args.filter.is_empty();
    let url = if breakdown {
        format!("{base}/v1/query/breakdown")
    } else {
        format!("{base}/v1/query/summary")
    };
    let mut query: Vec<(&str, String)> = vec![("from", from.to_string()), ("to", to.to_string())];
    if breakdown {
        query.push(("by", args.by.clone().unwrap_or_else(|| "model".to_string())));
        query.push(("top", BREAKDOWN_ROWS.to_string()));
        query.extend(args.filter.iter().map(|filter| ("filter", filter.clone())));
    }
    let mut request = client.get(&url).query(&query);
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let response = crate::remote::accepted(response, &url).await?;
    let (summary, label) = if breakdown {
        let answer: Breakdown = response
            .json()
            .await
            .with_context(|| format!("{url} did not answer a breakdown"))?;
        let label = args.by.as_deref().unwrap_or("model").to_uppercase();
        (answer.into_summary(), label)
    } else {
        let summary: Summary = response
            .json()
            .await
            .with_context(|| format!("{url} did not answer a summary"))?;
        (summary, "MODEL".to_string())
    };
    Ok(render(
        summary,
        now,
        window_minutes,
        &args.url,
        args.sort,
        &label,
    ))
}

/// The table as text: a title line, a header, one row per model, and a total.
fn render(
    mut summary: Summary,
    now_ms: i64,
    window_minutes: i64,
    url: &str,
    sort: SortBy,
    label: &str,
) -> String {
    // Rates cover the time that has passed: the current minute only in part.
    let seconds = ((now_ms - summary.from) as f64 / 1000.0).max(1.0);
    let key = |line: &ModelLine| -> f64 {
        match sort {
            SortBy::Cost => line.cost_usd,
            SortBy::Requests => line.requests as f64,
            SortBy::Errors => error_rate(line),
            SortBy::P99 => line.latency_ms.p99.unwrap_or(f64::NEG_INFINITY),
            SortBy::Model => 0.0,
        }
    };
    summary.models.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.model.cmp(&b.model))
    });
    let width = summary
        .models
        .iter()
        .map(|line| line.model.chars().count())
        .max()
        .unwrap_or(0)
        .max(label.chars().count());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ais top · {url} · last {window_minutes} min · {} {} · {}",
        summary.models.len(),
        if label == "MODEL" { "models" } else { "groups" },
        clock(now_ms)
    );
    let _ = writeln!(
        out,
        "{:<width$}  {:>9}  {:>8}  {:>7}  {:>9}  {:>9}  {:>10}",
        label, "REQUESTS", "REQ/S", "ERR%", "P50 ms", "P99 ms", "COST/MIN"
    );
    let mut total_requests = 0;
    let mut total_errors = 0;
    let mut total_cost = 0.0;
    for line in &summary.models {
        total_requests += line.requests;
        total_errors += line.errors;
        total_cost += line.cost_usd;
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>8.2}  {:>7}  {:>9}  {:>9}  {:>10}",
            line.model,
            line.requests,
            line.requests as f64 / seconds,
            percent(error_rate(line)),
            millis(line.latency_ms.p50),
            millis(line.latency_ms.p99),
            dollars(line.cost_usd * 60.0 / seconds),
        );
    }
    if summary.models.is_empty() {
        let _ = writeln!(out, "(no requests in the last {window_minutes} min)");
    } else {
        let total_rate = if total_requests == 0 {
            0.0
        } else {
            total_errors as f64 / total_requests as f64
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>8.2}  {:>7}  {:>9}  {:>9}  {:>10}",
            "TOTAL",
            total_requests,
            total_requests as f64 / seconds,
            percent(total_rate),
            "",
            "",
            dollars(total_cost * 60.0 / seconds),
        );
    }
    out
}

fn error_rate(line: &ModelLine) -> f64 {
    if line.requests == 0 {
        0.0
    } else {
        line.errors as f64 / line.requests as f64
    }
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |ms| format!("{ms:.0}"))
}

fn dollars(value: f64) -> String {
    if value < 0.01 {
        format!("${value:.4}")
    } else {
        format!("${value:.2}")
    }
}

/// `HH:MM:SS` UTC.
fn clock(unix_ms: i64) -> String {
    let seconds = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(model: &str, requests: u64, errors: u64, p99: Option<f64>, cost_usd: f64) -> ModelLine {
        ModelLine {
            model: model.to_string(),
            requests,
            errors,
            latency_ms: Quantiles {
                p50: p99.map(|v| v / 2.0),
                p99,
            },
            cost_usd,
        }
    }

    #[test]
    fn rows_are_sorted_and_rates_cover_the_elapsed_time() {
        let from = 1_795_339_200_000;
        let summary = Summary {
            from,
            models: vec![
                line("cheap", 600, 6, Some(900.0), 0.5),
                line("dear", 120, 0, None, 3.0),
            ],
        };
        let text = render(
            summary,
            from + 120_000,
            3,
            "http://x",
            SortBy::Cost,
            "MODEL",
        );
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert!(rows[0].starts_with("dear "), "{text}");
        assert!(rows[1].starts_with("cheap "), "{text}");
        let cheap: Vec<&str> = rows[1].split_whitespace().collect();
        // 600 requests over 120 s; 1% errors; $0.50 over 2 minutes.
        assert_eq!(
            cheap,
            ["cheap", "600", "5.00", "1.00%", "450", "900", "$0.25"]
        );
        let dear: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(dear[4..6], ["-", "-"]);
        assert!(
            rows[2].starts_with("TOTAL") && rows[2].contains(" 720 "),
            "{text}"
        );
    }

    #[test]
    fn an_empty_window_says_so() {
        let summary = Summary {
            from: 0,
            models: vec![],
        };
        assert!(
            render(summary, 60_000, 5, "http://x", SortBy::Requests, "MODEL")
                .contains("no requests")
        );
    }
}
