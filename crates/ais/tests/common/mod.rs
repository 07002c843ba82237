//! Test harness: starts the real `ais` binary on port 0 with its own data directory and
//! talks to it over HTTP, as a user would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub mod certs;
pub mod cli;
pub mod cluster;
pub mod helm;
pub mod load;
pub mod private;
pub mod prometheus;

// Not every test binary waits for something.
#[allow(unused_imports)]
pub use ais_testkit::{eventually, PATIENCE};

/// The admin key the harness adds to `AIS_API_KEYS` when a test configures keys: with
/// keys, `/readyz` shows counts (`lag_records`, `raw_events`) only to admin keys, and the
/// harness reads them as an operator would. Its tenant holds no data.
pub const HARNESS_ADMIN_KEY: &str = "ais-test-harness-admin-key";
const HARNESS_ADMIN: &str = "ais-test-harness:ais-test-harness-admin-key:admin";

pub struct Server {
    pub child: Child,
    pub base: String,
    /// `http://ADDR` of OTLP/gRPC, when it listens.
    pub otlp_grpc: Option<String>,
    /// `http://ADDR` of the gateway, when it listens.
    pub gateway: Option<String>,
    pub data_dir: PathBuf,
    /// The key that reads `/readyz` whole: the harness's admin key when the test
    /// configured keys, none on an open server.
    pub admin_key: Option<&'static str>,
}

impl Server {
    /// Starts `ais serve` on a free port with the given extra environment.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(data_dir, env, &[], None)
    }

    /// Starts `ais serve` with extra arguments, its log (stderr) written to `log` if given.
    pub fn start_with(
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        log: Option<&Path>,
    ) -> Server {
        let mut all: Vec<String> = vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into()];
        all.push("--data-dir".into());
        all.push(data_dir.display().to_string());
        // Tests never take the default OTLP/gRPC port (a developer's server may hold it).
        if !args.contains(&"--otlp-grpc-listen") {
            all.extend(["--otlp-grpc-listen".into(), "127.0.0.1:0".into()]);
        }
        all.extend(args.iter().map(|arg| arg.to_string()));
        let mut server = Self::start_command(&all, env, log);
        server.data_dir = data_dir.to_path_buf();
        server
    }

    /// Starts any `ais` command (its stderr written to `log` if given) and waits for
    /// its ready line.
    pub fn start_command(args: &[String], env: &[(&str, &str)], log: Option<&Path>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ais"));
        command
            .args(args)
            .env_remove("AIS_API_KEYS")
            .env_remove("AIS_OTLP_GRPC_LISTEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
                None => Stdio::inherit(),
            });
        let mut admin_key = None;
        for (key, value) in env {
            if *key == "AIS_API_KEYS" && !value.trim().is_empty() {
                command.env(key, format!("{value},{HARNESS_ADMIN}"));
                admin_key = Some(HARNESS_ADMIN_KEY);
            } else {
                command.env(key, value);
            }
        }
        let mut server = Self::spawn(command, Path::new(""), log);
        server.admin_key = admin_key;
        server
    }

    fn spawn(mut command: Command, data_dir: &Path, log: Option<&Path>) -> Server {
        let mut child = command.spawn().expect("ais binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(error) => {
                let said = log
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default();
                panic!(
                    "ais printed no ready line within {:?} ({error}); its log:\n{said}",
                    PATIENCE
                );
            }
        };
        let ready: Value = serde_json::from_str(&line).expect("ready line is JSON");
        assert_eq!(ready["ready"], true, "ready line: {line}");
        let http = ready["http"].as_str().unwrap_or("");
        Server {
            child,
            base: format!("http://{http}"),
            otlp_grpc: ready["otlp_grpc"]
                .as_str()
                .map(|address| format!("http://{address}")),
            gateway: ready["gateway"]
                .as_str()
                .map(|address| format!("http://{address}")),
            data_dir: data_dir.to_path_buf(),
            admin_key: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait works") {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "ais did not exit within {:?} of SIGTERM",
                PATIENCE
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/readyz` as an operator reads it (with the admin key when keys are configured).
    pub fn readiness(&self, client: &reqwest::blocking::Client) -> Value {
        let mut request = client.get(self.url("/readyz"));
        if let Some(key) = self.admin_key {
            request = request.bearer_auth(key);
        }
        request
            .send()
            .and_then(|response| response.json())
            .unwrap_or(Value::Null)
    }

    /// The facts (counts included) of one component of [`Server::readiness`], or `Null`.
    pub fn readiness_facts(&self, client: &reqwest::blocking::Client, component: &str) -> Value {
        readiness_component(&self.readiness(client), component)["facts"].clone()
    }

    /// Waits until the stream processor has committed everything durable in the log.
    pub fn wait_caught_up(&self, client: &reqwest::blocking::Client) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let body = self.readiness(client);
            let stream = readiness_component(&body, "stream");
            if stream["facts"]["lag_records"] == 0 {
                return;
            }
            // Keys only in a config file: the harness has no admin key to read counts.
            assert!(
                stream.is_null() || stream["facts"].get("lag_records").is_some(),
                "/readyz shows no lag_records without an admin key: configure keys through AIS_API_KEYS so the harness adds its own: {body}"
            );
            assert!(Instant::now() < deadline, "stream did not catch up: {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The component named `component` of a `/readyz` body, or `Null`.
pub fn readiness_component<'a>(readiness: &'a Value, component: &str) -> &'a Value {
    readiness["components"]
        .as_array()
        .and_then(|components| components.iter().find(|c| c["component"] == component))
        .unwrap_or(&Value::Null)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `binary` is on PATH. When it is not, says so (and why the checks that need
/// it are skipped), except under `CI=true`, where a missing tool is a failure.
pub fn tool_installed(binary: &str, skipped: &str) -> bool {
    let installed = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()));
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{binary} is not installed under CI=true ({skipped} must run)"
        );
        eprintln!("{binary} is not installed: skipping {skipped}");
    }
    installed
}

/// Runs the repository's `script` (a path under the root) with `python`, `input` on its
/// stdin; its output, whatever its exit status.
pub fn run_script(python: &str, script: &str, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(python)
        .arg(repository_root().join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{python} {script} starts: {error}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .unwrap_or_else(|error| panic!("{script}: input written: {error}"));
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{script} finishes: {error}"))
}

/// The last `lines` lines of the log at `path` (empty when there is none), for a
/// failure message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Stops a server the way an orchestrator does (SIGTERM) and waits for its exit.
pub fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The shared test Redis (`AIS_TEST_REDIS`, started by `scripts/test.sh`). Without it
/// the caller is skipped, after saying so, except under `CI=true`, where it is a failure.
pub fn test_redis() -> Option<String> {
    let redis = std::env::var("AIS_TEST_REDIS").ok();
    if redis.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AIS_TEST_REDIS must name a Redis under CI=true"
        );
        eprintln!("AIS_TEST_REDIS is not set: skipping");
    }
    redis
}

/// The strings of a JSON array (others and non-arrays: none).
pub fn json_strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_str().map(str::to_string))
        .collect()
}

/// The repository's root, for files outside the crate (`deploy/`, `scripts/`).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Makes `ring` the process's rustls provider: reqwest is built without one of its own,
/// so a client built before this panics. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::blocking::Client {
    install_tls_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

pub fn minute_floor(ms: i64) -> i64 {
    ms.div_euclid(60_000) * 60_000
}

/// POSTs a JSON body; returns status and parsed body.
pub fn post_json(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    post_raw(
        client,
        server,
        key,
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
}

pub fn post_raw(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    content_type: &str,
    content_encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let answer = send_request(
        client,
        server,
        ApiRequest {
            key,
            content_type: Some(content_type),
            content_encoding,
            ..ApiRequest::post("/v1/events", body)
        },
    );
    (answer.status, answer.json())
}

pub fn get_json(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    path_and_query: &str,
) -> (u16, Value) {
    let answer = send_request(
        client,
        server,
        ApiRequest {
            key,
            ..ApiRequest::get(path_and_query)
        },
    );
    (answer.status, answer.json())
}

/// One request to the API, as a table of cases spells it.
#[derive(Debug, Clone)]
pub struct ApiRequest<'a> {
    pub method: reqwest::Method,
    pub path_and_query: &'a str,
    /// Sent as `Authorization: Bearer KEY`.
    pub key: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// `None`: no body at all (a GET).
    pub body: Option<Vec<u8>>,
}

impl<'a> ApiRequest<'a> {
    /// A GET without a key.
    pub fn get(path_and_query: &'a str) -> Self {
        Self {
            method: reqwest::Method::GET,
            path_and_query,
            key: None,
            content_type: None,
            content_encoding: None,
            body: None,
        }
    }

    /// A POST of `body` without a key or headers.
    pub fn post(path_and_query: &'a str, body: Vec<u8>) -> Self {
        Self {
            method: reqwest::Method::POST,
            body: Some(body),
            ..Self::get(path_and_query)
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl ApiAnswer {
    /// The body as JSON; `Value::Null` when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `POST path` with a JSON `body` as `key`: the status and the JSON answer.
pub fn post_api(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let answer = send_request(
        client,
        server,
        ApiRequest {
            key: Some(key),
            content_type: Some("application/json"),
            ..ApiRequest::post(path, body.to_string().into_bytes())
        },
    );
    (answer.status, answer.json())
}

/// What `key`'s tenant has left in dollars under its first budget, by
/// `POST /v1/budgets/check` of a call to model `m`.
pub fn remaining_usd(client: &reqwest::blocking::Client, server: &Server, key: &str) -> f64 {
    let (status, body) = post_api(
        client,
        server,
        key,
        "/v1/budgets/check",
        &json!({"model": "m"}),
    );
    assert_eq!(status, 200, "{body}");
    body["budgets"][0]["remaining_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("a dollar budget: {body}"))
}

/// Sends `request` and reads the whole answer.
pub fn send_request(
    client: &reqwest::blocking::Client,
    server: &Server,
    request: ApiRequest<'_>,
) -> ApiAnswer {
    let mut builder = client.request(request.method, server.url(request.path_and_query));
    if let Some(content_type) = request.content_type {
        builder = builder.header("content-type", content_type);
    }
    if let Some(encoding) = request.content_encoding {
        builder = builder.header("content-encoding", encoding);
    }
    if let Some(key) = request.key {
        builder = builder.bearer_auth(key);
    }
    if let Some(body) = request.body {
        builder = builder.body(body);
    }
    let response = builder.send().expect("request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A body cut short reads as none (JSON `Null`): the status is what such a test checks.
    let body = response
        .bytes()
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default();
    ApiAnswer {
        status,
        headers,
        body,
    }
}

/// The summary's entry for `model`, or `Value::Null`.
pub fn model_entry<'a>(summary: &'a Value, model: &str) -> &'a Value {
    summary["models"]
        .as_array()
        .and_then(|models| models.iter().find(|entry| entry["model"] == model))
        .unwrap_or(&Value::Null)
}

/// `/v1/ledger` of `key`'s tenant (or the open server's) over `[from, to)`, summed over
/// its hours, after checking that every hour says it balances.
pub fn ledger_totals(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    (from, to): (i64, i64),
) -> LedgerTotals {
    let (status, body) = get_json(
        client,
        server,
        key,
        &format!("/v1/ledger?from={from}&to={to}"),
    );
    assert_eq!(status, 200, "{body}");
    let mut totals = LedgerTotals::default();
    for hour in body["hours"].as_array().expect("hours") {
        assert_eq!(
            hour["balanced"], true,
            "an hour that does not balance: {hour}"
        );
        let count = |name: &str| hour[name].as_u64().expect("a count");
        totals.accepted += count("accepted");
        totals.committed += count("committed");
        totals.duplicates += count("duplicates");
        totals.late += count("late");
        totals.dead_lettered += count("dead_lettered");
    }
    totals
}

/// A ledger's counts, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTotals {
    pub accepted: u64,
    pub committed: u64,
    pub duplicates: u64,
    pub late: u64,
    pub dead_lettered: u64,
}

/// Usage per value of one scope as counted from what was sent: (requests, input
/// tokens, micro-dollars), `None` for events without the scope's field.
pub type UsageTally = std::collections::BTreeMap<Option<String>, (u64, u64, u64)>;

/// `/v1/usage?by=SCOPE&from=DAY&to=DAY` (the range covering `(from_ms, to_ms)`) read
/// two ways, ranked JSON with every group and the CSV export summed per value; each
/// must equal `want`, and the JSON's total their sum.
pub fn assert_usage(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    scope: &str,
    (from_ms, to_ms): (i64, i64),
    want: &UsageTally,
) {
    let day = |ms: i64| {
        let date = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1_000))
            .expect("a time")
            .date();
        format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        )
    };
    let path = format!(
        "/v1/usage?by={scope}&from={}&to={}&top=1000",
        day(from_ms),
        day(to_ms)
    );
    let (status, body) = get_json(client, server, key, &path);
    assert_eq!(status, 200, "{path}: {body}");
    let micros = |usd: &Value| (usd.as_f64().expect("cost_usd") * 1e6).round() as u64;
    let count = |block: &Value, name: &str| block[name].as_u64().expect("a count");
    let got: UsageTally = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            let value = group["key"][scope].as_str().map(str::to_string);
            (
                value,
                (
                    count(group, "requests"),
                    count(group, "input_tokens"),
                    micros(&group["cost_usd"]),
                ),
            )
        })
        .collect();
    assert_eq!(&got, want, "{path}: every group exact");
    assert_eq!(body["other"], Value::Null, "{path}: {body}");
    let sum = want.values().fold((0, 0, 0), |sum, counts| {
        (sum.0 + counts.0, sum.1 + counts.1, sum.2 + counts.2)
    });
    let total = &body["total"];
    assert_eq!(
        (
            count(total, "requests"),
            count(total, "input_tokens"),
            micros(&total["cost_usd"])
        ),
        sum,
        "{path}: total"
    );
    // The export: one row per (day, value), money to the micro-dollar.
    let mut request = client.get(server.url(&path)).header("accept", "text/csv");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().expect("the export is answered");
    assert_eq!(response.status().as_u16(), 200, "{path} as CSV");
    let text = response.text().expect("the whole export");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("day,scope,value,requests,errors,input_tokens,output_tokens,cache_read_input_tokens,cost_usd")
    );
    let mut exported = UsageTally::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 9, "{line}");
        assert_eq!(fields[1], scope, "{line}");
        let value = (!fields[2].is_empty()).then(|| fields[2].to_string());
        let number = |text: &str| text.parse::<u64>().expect("a count");
        let (dollars, fraction) = fields[8].split_once('.').expect("cost with decimals");
        let entry = exported.entry(value).or_default();
        entry.0 += number(fields[3]);
        entry.1 += number(fields[5]);
        entry.2 += number(dollars) * 1_000_000 + number(fraction);
    }
    assert_eq!(&exported, want, "{path}: the export adds up per value");
}
