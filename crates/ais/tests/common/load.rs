//! Load clients for the pressure drills. Bodies are encoded once before the load
//! starts, so the client spends its CPU on sending, not on JSON (on two cores the
//! server must get the rest). Two shapes: closed loop (a fixed number of requests in
//! flight, the next sent when one is answered) and open loop (requests due at a fixed
//! rate whatever the server does, up to a bound of outstanding ones). Every answer is
//! tallied by status, with its ack latency and whether a refusal said when to come
//! back. Also what a server process costs: its peak resident memory and its CPU time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::Server;

/// What the README promises: "ais ingest stays under 1 GiB RSS with default limits".
/// The overload drill checks it; change both together.
pub const INGEST_RSS_BOUND_BYTES: u64 = 1 << 30;

/// Requests with no answer within this long count as unanswered.
const ANSWER_PATIENCE: Duration = Duration::from_secs(30);

/// One request's outcome: the status (`None` when no answer came), whether it carried
/// `Retry-After`, the events a 202 accepted, and the time from when it was due.
#[derive(Debug)]
pub struct Answer {
    pub status: Option<u16>,
    pub retry_after: bool,
    pub accepted: u64,
    pub latency: Duration,
    pub error: Option<String>,
}

/// Answers of many requests.
#[derive(Debug, Clone)]
pub struct Tally {
    pub statuses: BTreeMap<u16, u64>,
    pub unanswered: u64,
    pub first_error: Option<String>,
    /// 429s and 503s without `Retry-After`.
    pub refusals_without_retry_after: u64,
    /// Events the 202s accepted, as their bodies said.
    pub accepted_events: u64,
    /// Latency of the 202s, in microseconds.
    pub ack_latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            statuses: BTreeMap::new(),
            unanswered: 0,
            first_error: None,
            refusals_without_retry_after: 0,
            accepted_events: 0,
            // Up to an hour, 3 significant digits: far past any patience here.
            ack_latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("histogram bounds"),
        }
    }
}

impl Tally {
    pub fn record(&mut self, answer: Answer) {
        let Some(status) = answer.status else {
            self.unanswered += 1;
            if self.first_error.is_none() {
                self.first_error = answer.error;
            }
            return;
        };
        *self.statuses.entry(status).or_default() += 1;
        if matches!(status, 429 | 503) && !answer.retry_after {
            self.refusals_without_retry_after += 1;
        }
        if status == 202 {
            self.accepted_events += answer.accepted;
            let micros = u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX);
            self.ack_latency_us.saturating_record(micros.max(1));
        }
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Statuses answered outside `allowed`, with their counts.
    pub fn outside(&self, allowed: &[u16]) -> BTreeMap<u16, u64> {
        self.statuses
            .iter()
            .filter(|(status, _)| !allowed.contains(status))
            .map(|(status, count)| (*status, *count))
            .collect()
    }

    /// Ack latency at `quantile` (0.5, 0.99), in milliseconds.
    pub fn ack_ms(&self, quantile: f64) -> f64 {
        self.ack_latency_us.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// One line for the test's output.
    pub fn describe(&self) -> String {
        format!(
            "statuses {:?}, unanswered {}, refusals without Retry-After {}, events accepted {}, ack p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.statuses,
            self.unanswered,
            self.refusals_without_retry_after,
            self.accepted_events,
            self.ack_ms(0.5),
            self.ack_ms(0.99),
            self.ack_latency_us.max() as f64 / 1_000.0,
        )
    }
}

/// `count` JSON arrays of `events_per_body` small valid events stamped `now_ms`, with
/// no `event_id`: ingest gives each accepted event an id of its own, so replaying a
/// body never deduplicates anything.
pub fn synthetic_bodies(count: usize, events_per_body: usize, now_ms: i64) -> Vec<Bytes> {
    (0..count)
        .map(|body| {
            let events: Vec<serde_json::Value> = (0..events_per_body)
                .map(|index| {
                    serde_json::json!({
                        "timestamp": now_ms,
                        "model": format!("model-{}", (body + index) % 4),
                        "latency_ms": 100 + index,
                        "input_tokens": 500,
                        "output_tokens": 120,
                        "user_id": format!("user-{index}"),
                    })
                })
                .collect();
            Bytes::from(serde_json::Value::Array(events).to_string())
        })
        .collect()
}

/// Where the load goes: `POST /v1/events` of a server, with a tenant's key.
#[derive(Clone)]
pub struct Target {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
}

impl Target {
    /// A client with a connection per request in flight, pooled between requests; no
    /// answer within [`ANSWER_PATIENCE`] counts as unanswered.
    pub fn new(server: &Server, key: Option<&str>) -> Target {
        super::install_tls_provider();
        Target {
            client: reqwest::Client::builder()
                .timeout(ANSWER_PATIENCE)
                .build()
                .expect("client builds"),
            url: server.url("/v1/events"),
            key: key.map(str::to_string),
        }
    }

    /// POSTs one pre-encoded JSON body; latency is counted from `due`.
    pub async fn post(&self, body: Bytes, due: Instant) -> Answer {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let unanswered = |error: reqwest::Error| Answer {
            status: None,
            retry_after: false,
            accepted: 0,
            latency: due.elapsed(),
            error: Some(error.to_string()),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return unanswered(error),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER);
        // Reading the whole body lets the connection serve the next request.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return unanswered(error),
        };
        let latency = due.elapsed();
        let accepted = if status == 202 {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|answer| answer["accepted"].as_u64())
                .unwrap_or(0)
        } else {
            0
        };
        Answer {
            status: Some(status),
            retry_after,
            accepted,
            latency,
            error: None,
        }
    }

    /// `concurrency` workers each send the next of `bodies` (in turn) as soon as their
    /// previous request is answered, until `until`. Latency is from each send.
    pub async fn closed_loop(&self, bodies: &[Bytes], concurrency: usize, until: Instant) -> Tally {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let (target, bodies, tally) = (self.clone(), bodies.to_vec(), tally.clone());
            workers.spawn(async move {
                let mut next = worker;
                while Instant::now() < until {
                    let body = bodies[next % bodies.len()].clone();
                    next += 1;
                    let answer = target.post(body, Instant::now()).await;
                    tally.lock().expect("tally lock").record(answer);
                }
            });
        }
        while let Some(joined) = workers.join_next().await {
            joined.expect("a closed-loop worker panicked");
        }
        let tally = tally.lock().expect("tally lock").clone();
        tally
    }

    /// Sends `requests` requests, request `k` due at `k / rate` seconds from the start
    /// with body `bodies[k % len]`, whether or not earlier ones were answered (a server
    /// that slows down is not offered less, so its queueing shows in the latency,
    /// which is counted from the due time). At most `max_outstanding` wait for
    /// answers; a request due beyond that is not sent and is counted as shed by the
    /// client.
    pub async fn open_loop(
        &self,
        bodies: &[Bytes],
        rate: f64,
        requests: u64,
        max_outstanding: usize,
    ) -> OpenLoopReport {
        assert!(
            rate > 0.0 && !bodies.is_empty(),
            "a rate and bodies to send"
        );
        let target = Arc::new(self.clone());
        let tally = Arc::new(Mutex::new(Tally::default()));
        let outstanding = Arc::new(tokio::sync::Semaphore::new(max_outstanding));
        let start = Instant::now();
        let mut shed_by_client = 0;
        for request in 0..requests {
            let due = start + Duration::from_secs_f64(request as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                shed_by_client += 1;
                continue;
            };
            let (target, tally) = (target.clone(), tally.clone());
            let body = bodies[request as usize % bodies.len()].clone();
            tokio::spawn(async move {
                let answer = target.post(body, due).await;
                tally.lock().expect("tally lock").record(answer);
                drop(permit);
            });
        }
        let offer_seconds = start.elapsed().as_secs_f64();
        // Every permit back means every request sent has its answer (or gave up).
        let permits = u32::try_from(max_outstanding).expect("a bound that fits u32");
        let _all = outstanding
            .acquire_many(permits)
            .await
            .expect("the semaphore stays open");
        let total_seconds = start.elapsed().as_secs_f64();
        let tally = tally.lock().expect("tally lock").clone();
        OpenLoopReport {
            tally,
            offered: requests,
            shed_by_client,
            offer_seconds,
            total_seconds,
        }
    }
}

/// What an open-loop run offered and got back.
#[derive(Debug)]
pub struct OpenLoopReport {
    pub tally: Tally,
    /// Requests that came due.
    pub offered: u64,
    /// Due requests not sent because `max_outstanding` were already waiting.
    pub shed_by_client: u64,
    /// From the first due time to the last due request dispatched.
    pub offer_seconds: f64,
    /// From the first due time to the last answer.
    pub total_seconds: f64,
}

impl OpenLoopReport {
    /// Requests per second offered (due, whether sent or shed by the client).
    pub fn offered_rate(&self) -> f64 {
        self.offered as f64 / self.offer_seconds.max(f64::MIN_POSITIVE)
    }
}

/// A runtime for a load client, on `threads` worker threads: the client's share of the
/// cores is bounded, so the rest is left to the servers under test.
pub fn client_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

impl Server {
    /// The process's peak resident set size so far (`VmHWM` in /proc), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|error| panic!("/proc/{pid}/status is readable: {error}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kibibytes| kibibytes * 1024)
            .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
    }

    /// CPU time the process has used so far, user and system, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|error| panic!("/proc/{pid}/stat is readable: {error}"));
        // The command name (field 2) may hold spaces: count fields after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> u64 {
            fields
                .get(index)
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no field {index} after the name in {stat}"))
        };
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name;
        // in clock ticks, which Linux exposes at 100 per second on every architecture.
        (ticks(11) + ticks(12)) as f64 / 100.0
    }
}
