//! The Grafana dashboards under `deploy/grafana` against real servers. No registry here
//! ships a runnable Grafana, so the dashboards are checked the way Grafana would use
//! them: every dashboard JSON parses and names only the provisioned data sources; after
//! a replay (events through `ais ingest` → Kafka → `ais stream` → ClickHouse), every
//! panel's SQL, with the plugin's macros and the dashboard variables expanded for the
//! replay's range, tenant and models, runs on the real ClickHouse server and returns
//! rows; and every PromQL panel query returns series from a real Prometheus scraping the
//! running `ais` processes.
//!
//! Macros expanded here, exactly as grafana-clickhouse-datasource 4.x expands them (the
//! dashboards use no others, and the test fails on any `$` left over):
//! - `$__timeFilter(column)` → `column >= toDateTime(FROM) AND column <= toDateTime(TO)`
//! - `$__fromTime` → `toDateTime(FROM)`, `$__toTime` → `toDateTime(TO)`
//!
//! with FROM and TO in unix seconds. Variables: `${name:singlequote}` (`tenant`,
//! `model`, `attribute`) becomes single-quoted, comma-separated values (Grafana's
//! `singlequote` format; the model variable's "All" is every value of its query), and
//! `${name:raw}` (`dimension`, `top`) the value as it is. In PromQL, `$__rate_interval`
//! becomes `1m`.
//!
//! The breakdown dashboard is checked for every value of its `dimension` and `top`
//! variables (and an attribute key): its table holds exactly the requests, errors and
//! cost per value that the replayed events add up to, top values first and the rest as
//! one `(other)` row, and the same as `ais query`'s `GET /v1/query/breakdown` answers.
//!
//! Without the servers (`AIS_TEST_CLICKHOUSE`, `AIS_TEST_KAFKA`, a `prometheus` binary)
//! the server checks say why and pass, except under `CI=true`, where they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ais_model::dimension::Dimension;
use common::cluster::{send_all, Cluster};
use common::prometheus::{host_port, Prometheus};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const KEYS: &str = "acme:key-acme,globex:key-globex";
const EVENTS_PER_MINUTE: usize = 30;

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana")
}

/// Every dashboard under `deploy/grafana/dashboards`, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = grafana_dir().join("dashboards");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard readable");
            let dashboard: Value = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
            (
                path.file_name()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned(),
                dashboard,
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no dashboards in {}", dir.display());
    found
}

/// (uid, type) of every data source the provisioning file declares. The file is YAML;
/// each entry opens with `- name:` and carries `uid:` and `type:` keys.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let path = grafana_dir().join("provisioning/datasources/ais.yaml");
    let text = std::fs::read_to_string(&path).expect("datasource provisioning readable");
    let mut datasources = BTreeMap::new();
    let (mut uid, mut kind): (Option<String>, Option<String>) = (None, None);
    let mut flush = |uid: &mut Option<String>, kind: &mut Option<String>| {
        if let (Some(uid), Some(kind)) = (uid.take(), kind.take()) {
            datasources.insert(uid, kind);
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("- name:") {
            flush(&mut uid, &mut kind);
        } else if let Some(value) = line.strip_prefix("uid:") {
            uid = Some(value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("type:") {
            kind = Some(value.trim().to_string());
        }
    }
    flush(&mut uid, &mut kind);
    datasources
}

/// Panels, flattened out of rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        for inner in panel["panels"].as_array().into_iter().flatten() {
            all.push(inner);
        }
    }
    all
}

/// The SQL or PromQL of a target or variable.
fn query_text(target: &Value) -> Option<&str> {
    target["rawSql"]
        .as_str()
        .or_else(|| target["expr"].as_str())
        .or_else(|| target["query"].as_str())
        .or_else(|| target["query"]["rawSql"].as_str())
}

#[test]
fn every_dashboard_parses_and_uses_only_the_provisioned_datasources() {
    let provisioned = provisioned_datasources();
    assert_eq!(
        provisioned.get("ais-clickhouse").map(String::as_str),
        Some("grafana-clickhouse-datasource"),
        "{provisioned:?}"
    );
    assert_eq!(
        provisioned.get("ais-prometheus").map(String::as_str),
        Some("prometheus"),
        "{provisioned:?}"
    );
    let offline_scope = Scope {
        from_s: 0,
        to_s: 60,
        variables: BTreeMap::from([
            ("tenant", vec!["t".to_string()]),
            ("model", vec!["m".to_string()]),
            ("dimension", vec!["model".to_string()]),
            ("attribute", vec!["k".to_string()]),
            ("top", vec!["10".to_string()]),
        ]),
    };
    let mut uids = BTreeSet::new();
    for (name, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().unwrap_or_default().to_string();
        assert!(!uid.is_empty(), "{name}: a dashboard uid");
        assert!(uids.insert(uid), "{name}: uid used twice");
        let check = |what: &str, datasource: &Value| {
            let uid = datasource["uid"].as_str().unwrap_or_default();
            let kind = datasource["type"].as_str().unwrap_or_default();
            assert_eq!(
                provisioned.get(uid).map(String::as_str),
                Some(kind),
                "{name}: {what} names data source {datasource}, not a provisioned one"
            );
        };
        let all = panels(&dashboard);
        assert!(!all.is_empty(), "{name}: no panels");
        for panel in all {
            let title = panel["title"].as_str().unwrap_or_default();
            if panel["type"] == "row" || panel["type"] == "text" {
                continue;
            }
            check(&format!("panel {title}"), &panel["datasource"]);
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}: panel {title} has no query");
            for target in &targets {
                check(&format!("a query of {title}"), &target["datasource"]);
                assert!(
                    query_text(target).is_some_and(|text| !text.trim().is_empty()),
                    "{name}: panel {title} has an empty query"
                );
                // Only the macros and variables the server check expands.
                if let Some(sql) = target["rawSql"].as_str() {
                    expand_sql(sql, &offline_scope);
                }
                if let Some(expr) = target["expr"].as_str() {
                    expand_promql(expr);
                }
            }
        }
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if variable["type"] == "query" {
                check(
                    &format!("variable {}", variable["name"]),
                    &variable["datasource"],
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Expansion of macros and variables.

/// The replay's range (unix seconds) and variable values.
struct Scope {
    from_s: i64,
    to_s: i64,
    variables: BTreeMap<&'static str, Vec<String>>,
}

fn single_quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|value| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(",")
}

/// `$__timeFilter(column)`, with the column up to its matching parenthesis.
fn expand_time_filter(sql: &str, scope: &Scope) -> String {
    const MACRO: &str = "$__timeFilter(";
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find(MACRO) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MACRO.len()..];
        let mut depth = 1;
        let end = after
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(index, _)| index)
            .unwrap_or_else(|| panic!("unclosed $__timeFilter( in {sql}"));
        let column = after[..end].trim();
        out.push_str(&format!(
            "{column} >= toDateTime({from}) AND {column} <= toDateTime({to})",
            from = scope.from_s,
            to = scope.to_s
        ));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn expand_sql(sql: &str, scope: &Scope) -> String {
    let mut expanded = expand_time_filter(sql, scope)
        .replace("$__fromTime", &format!("toDateTime({})", scope.from_s))
        .replace("$__toTime", &format!("toDateTime({})", scope.to_s));
    for (name, values) in &scope.variables {
        expanded = expanded
            .replace(&format!("${{{name}:singlequote}}"), &single_quoted(values))
            .replace(&format!("${{{name}:raw}}"), &values.join(","));
    }
    assert!(
        !expanded.contains('$'),
        "a macro or variable the check does not expand: {expanded}"
    );
    expanded
}

fn expand_promql(expr: &str) -> String {
    let expanded = expr.replace("$__rate_interval", "1m");
    assert!(
        !expanded.contains('$'),
        "a variable the check does not expand: {expanded}"
    );
    expanded
}

#[test]
fn macros_expand_as_the_plugin_does() {
    let scope = Scope {
        from_s: 100,
        to_s: 200,
        variables: BTreeMap::from([
            ("model", vec!["a".to_string(), "o'b".to_string()]),
            ("dimension", vec!["region".to_string()]),
            ("top", vec!["20".to_string()]),
        ]),
    };
    assert_eq!(
        expand_sql(
            "WHERE $__timeFilter(toStartOfMinute(t)) AND x < $__toTime AND model IN (${model:singlequote})",
            &scope
        ),
        "WHERE toStartOfMinute(t) >= toDateTime(100) AND toStartOfMinute(t) <= toDateTime(200) \
         AND x < toDateTime(200) AND model IN ('a','o\\'b')"
    );
    assert_eq!(
        expand_sql("SELECT ${dimension:raw} AS d LIMIT ${top:raw}", &scope),
        "SELECT region AS d LIMIT 20"
    );
}

// ---------------------------------------------------------------------------------
// The replay and the servers.

/// Events of one tenant from `first_minute` to `last_minute`, `EVENTS_PER_MINUTE` per
/// model and minute, oldest first; `stepped` answers ×5 slower from `step_minute` on.
/// Every breakdown dimension has values of different counts, and some events lack each
/// optional one (so the breakdowns have a `(none)` group): these come from the event's
/// place, not the random numbers, so the latencies and costs stay those of the seed.
#[allow(clippy::too_many_arguments)]
fn replay_events(
    rng: &mut SmallRng,
    tenant: &str,
    models: &[&str],
    stepped: Option<&str>,
    first_minute: i64,
    step_minute: i64,
    last_minute: i64,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut minute = first_minute;
    while minute <= last_minute {
        for model in models {
            let factor = if Some(*model) == stepped && minute >= step_minute {
                5.0
            } else {
                1.0
            };
            for i in 0..EVENTS_PER_MINUTE {
                let failed = rng.random_bool(0.03);
                let mut event = json!({
                    "event_id": format!("{tenant}-{model}-{minute}-{i}"),
                    "timestamp": minute + (i as i64 * 60_000 / EVENTS_PER_MINUTE as i64),
                    "model": model,
                    "latency_ms": factor * rng.random_range(720.0..880.0),
                    "ttft_ms": rng.random_range(90.0..110.0),
                    "input_tokens": rng.random_range(100..2_000u64),
                    "output_tokens": rng.random_range(10..800u64),
                    "cost_usd": rng.random_range(0..20_000u64) as f64 / 1e6,
                    "user_id": format!("user-{}", rng.random_range(0..25)),
                    "status": if failed { "error" } else { "ok" },
                });
                if failed {
                    event["error_type"] = json!("server_error");
                }
                let place = (minute / 60_000) as usize + i;
                event["provider"] = json!(match *model {
                    "alpha" => "openai",
                    "beta" => "anthropic",
                    _ => "vllm",
                });
                event["operation"] = json!(if i % 10 == 9 { "embeddings" } else { "chat" });
                if i % 2 == 0 {
                    event["response_model"] = json!(format!("{model}-2026-01"));
                }
                if let Some(endpoint) = [
                    None,
                    Some("/v1/chat/completions"),
                    Some("/v1/chat/completions"),
                    Some("/v1/responses"),
                    Some("/v1/embeddings"),
                ][i % 5]
                {
                    event["endpoint"] = json!(endpoint);
                }
                if i % 7 != 0 {
                    let region = ["eu-west", "us-east", "ap-south"][place % 3];
                    event["region"] = json!(region);
                }
                event["session_id"] = json!(format!("session-{}", place % 40));
                if i % 4 != 0 {
                    let team = ["search", "ads", "infra", "o'brien"][place % 4];
                    event["attributes"] = json!({
                        "team": team,
                        "tier": if i % 3 == 0 { "free" } else { "paid" },
                    });
                }
                events.push(event);
            }
        }
        minute += 60_000;
    }
    events
}

/// Runs SQL on the cluster's database; ClickHouse's JSON answer (`meta`, `data`).
fn clickhouse_json(cluster: &Cluster, client: &reqwest::blocking::Client, sql: &str) -> Value {
    let response = client
        .post(&cluster.clickhouse)
        .body(format!("{sql} FORMAT JSON"))
        .send()
        .expect("ClickHouse answers");
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert!(status.is_success(), "ClickHouse refused {sql}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

fn first_number(rows: &[Vec<String>]) -> u64 {
    rows.first()
        .and_then(|row| row.first())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Polls `sql` until its single number reaches `want` or `seconds` pass.
fn wait_for_number(
    cluster: &Cluster,
    client: &reqwest::blocking::Client,
    sql: &str,
    want: u64,
    seconds: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let got = first_number(&cluster.clickhouse_rows(client, sql));
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {got}, not {want}, after {seconds} s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn every_panel_query_answers_after_a_replay() {
    let Some(cluster) = Cluster::create("grafana", 2) else {
        return;
    };
    // The test Redis as the overflow, so the breaker and overflow panels have series.
    let Some(redis) = test_redis() else {
        return;
    };
    let env = [("AIS_API_KEYS", KEYS), ("AIS_REDIS", redis.as_str())];
    let ingest = cluster.ingest(&env);
    let stream = cluster.stream(None);
    let query = cluster.query(&[("AIS_API_KEYS", KEYS)]);
    let client = client();

    // 45 minutes of steady traffic; acme's alpha turns ×5 slower 14 minutes ago, which
    // the latency detector flags once it has its 30 windows of baseline.
    let now = now_ms();
    let first_minute = minute_floor(now) - 48 * 60_000;
    let step_minute = minute_floor(now) - 14 * 60_000;
    let last_minute = minute_floor(now) - 3 * 60_000;
    let mut rng = SmallRng::seed_from_u64(8);
    let acme = replay_events(
        &mut rng,
        "acme",
        &["alpha", "beta"],
        Some("alpha"),
        first_minute,
        step_minute,
        last_minute,
    );
    let globex = replay_events(
        &mut rng,
        "globex",
        &["gamma"],
        None,
        first_minute,
        step_minute,
        last_minute,
    );
    send_all(&client, &ingest, Some("key-acme"), &acme, 500);
    send_all(&client, &ingest, Some("key-globex"), &globex, 500);
    // Rejections, for the pipeline-health panels: a wrong key, a body that is not
    // JSON, and an event without its model in an otherwise good batch.
    let (status, _) = post_json(&client, &ingest, Some("key-nobody"), &json!([]));
    assert_eq!(status, 401);
    let (status, _) = post_raw(
        &client,
        &ingest,
        Some("key-acme"),
        "application/json",
        None,
        b"{not json".to_vec(),
    );
    assert_eq!(status, 400);
    let (status, body) = post_json(
        &client,
        &ingest,
        Some("key-acme"),
        &json!([{"timestamp": now, "latency_ms": 5.0}]),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 0, "{body}");

    let sent = (acme.len() + globex.len()) as u64;
    wait_for_number(
        &cluster,
        &client,
        "SELECT sum(requests) FROM rollups FINAL WHERE tenant != ''",
        sent,
        120,
    );
    wait_for_number(
        &cluster,
        &client,
        "SELECT count() FROM events FINAL",
        sent,
        60,
    );
    wait_for_number(
        &cluster,
        &client,
        "SELECT count() FROM anomalies FINAL WHERE tenant = 'acme' AND model = 'alpha'",
        1,
        90,
    );

    // The variables, as Grafana would fill them in.
    let to_s = (minute_floor(now_ms()) + 60_000) / 1000;
    let from_s = to_s - 3_600;
    let mut scope = Scope {
        from_s,
        to_s,
        variables: BTreeMap::new(),
    };
    let (models_name, models) = dashboards()
        .into_iter()
        .find(|(_, dashboard)| {
            dashboard["templating"]["list"]
                .as_array()
                .is_some_and(|list| list.iter().any(|variable| variable["name"] == "model"))
        })
        .expect("a dashboard with the model variable");
    let variable_query = |name: &str| -> String {
        models["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|variable| variable["name"] == name)
            .and_then(query_text)
            .unwrap_or_else(|| panic!("{models_name}: no {name} variable"))
            .to_string()
    };
    let values = |rows: Vec<Vec<String>>| -> Vec<String> {
        rows.into_iter().map(|row| row[0].clone()).collect()
    };
    let tenants =
        values(cluster.clickhouse_rows(&client, &expand_sql(&variable_query("tenant"), &scope)));
    assert_eq!(tenants, ["acme", "globex"], "the tenant variable");
    scope.variables.insert("tenant", vec!["acme".to_string()]);
    let all_models =
        values(cluster.clickhouse_rows(&client, &expand_sql(&variable_query("model"), &scope)));
    assert_eq!(all_models, ["alpha", "beta"], "the model variable for acme");

    // Every ClickHouse panel, for all of acme's models and for the stepped one alone:
    // rows come back, time-series panels have a `time` column inside the range, and a
    // `model` column holds only the selected models.
    let bounds = cluster.clickhouse_rows(
        &client,
        &format!("SELECT toString(toDateTime({from_s})), toString(toDateTime({to_s}))"),
    );
    let (first_time, last_time) = (bounds[0][0].clone(), bounds[0][1].clone());
    // The breakdown dashboard's variables at their defaults here; every value below.
    scope
        .variables
        .insert("dimension", vec!["endpoint".to_string()]);
    scope
        .variables
        .insert("attribute", vec!["team".to_string()]);
    scope.variables.insert("top", vec!["10".to_string()]);
    let mut checked = 0;
    for models_value in [all_models.clone(), vec!["alpha".to_string()]] {
        scope.variables.insert("model", models_value.clone());
        for (name, dashboard) in dashboards() {
            for panel in panels(&dashboard) {
                for target in panel["targets"].as_array().into_iter().flatten() {
                    let Some(sql) = target["rawSql"].as_str() else {
                        continue;
                    };
                    let title = panel["title"].as_str().unwrap_or_default();
                    let answer = clickhouse_json(&cluster, &client, &expand_sql(sql, &scope));
                    let rows = answer["data"].as_array().cloned().unwrap_or_default();
                    assert!(
                        !rows.is_empty(),
                        "{name}: panel {title} returned no rows for models {models_value:?}"
                    );
                    if target["queryType"] == "timeseries" {
                        for row in &rows {
                            let time = row["time"].as_str().unwrap_or_else(|| {
                                panic!("{name}: panel {title} has no time column: {row}")
                            });
                            assert!(
                                (first_time.as_str()..=last_time.as_str()).contains(&time),
                                "{name}: panel {title}: {time} outside {first_time}…{last_time}"
                            );
                        }
                    }
                    for row in &rows {
                        if let Some(model) = row.get("model") {
                            assert!(
                                models_value.iter().any(|value| model == value),
                                "{name}: panel {title}: model {model} not in {models_value:?}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0, "no SQL panels were checked");

    // One answer checked against what was sent, per tenant: the Requests stat counts
    // exactly the tenant's events.
    let requests_sql = panels(&models)
        .into_iter()
        .find(|panel| panel["title"] == "Requests")
        .and_then(|panel| panel["targets"][0]["rawSql"].as_str())
        .expect("a Requests panel")
        .to_string();
    for (tenant, events) in [("acme", &acme), ("globex", &globex)] {
        scope.variables.insert("tenant", vec![tenant.to_string()]);
        let models =
            values(cluster.clickhouse_rows(&client, &expand_sql(&variable_query("model"), &scope)));
        scope.variables.insert("model", models);
        assert_eq!(
            first_number(&cluster.clickhouse_rows(&client, &expand_sql(&requests_sql, &scope))),
            events.len() as u64,
            "the Requests panel counts {tenant}'s events"
        );
    }

    scope.variables.insert("tenant", vec!["acme".to_string()]);
    check_breakdowns(&cluster, &client, &query, &mut scope, &acme);

    // Every PromQL panel against a Prometheus scraping the running processes.
    let Some(prometheus) = Prometheus::start(&[
        ("ais-ingest", vec![host_port(&ingest)]),
        ("ais-stream", vec![host_port(&stream)]),
    ]) else {
        return;
    };
    // Both processes are scraped, and the rejections sent above are there by code.
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    loop {
        let up = prometheus.query(&client, "up{job=~\"ais-.*\"} == 1");
        let rejected = prometheus.query(
            &client,
            "sum by (code) (ais_ingest_requests_total{code=~\"400|401\"})",
        );
        if up.len() == 2 && rejected.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scrapes {up:?}; rejections by code {rejected:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (name, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let title = panel["title"].as_str().unwrap_or_default();
                let expanded = expand_promql(expr);
                loop {
                    let series = prometheus.query(&client, &expanded);
                    if !series.is_empty() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{name}: panel {title}: no series for {expanded}"
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    drop(stream);
}

// ---------------------------------------------------------------------------------
// The breakdown dashboard.

/// The group of events without the dimension, and of every value past the top ones.
const NONE: &str = "(none)";
const OTHER: &str = "(other)";

/// The attribute key the checks break down by; the replay's events carry it.
const ATTRIBUTE: &str = "team";

/// Per value: requests, errors, cost in micro-dollars.
type Sums = [u64; 3];

fn micros(cost_usd: f64) -> u64 {
    (cost_usd * 1e6).round() as u64
}

/// A number of ClickHouse's JSON answer (64-bit integers come quoted).
fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The group an event falls in, broken down by `dimension` (`attr`: by `attribute`).
fn group_of(event: &Value, dimension: &str, attribute: &str) -> String {
    let value = match dimension {
        "attr" => &event["attributes"][attribute],
        "status" if event["status"].is_null() => return "ok".to_string(),
        _ => &event[dimension],
    };
    value.as_str().unwrap_or(NONE).to_string()
}

/// The breakdown by brute force, in the table's order: the `top` values by requests
/// (ties by value), then every other value merged as `(other)`.
fn expected_breakdown(
    events: &[Value],
    dimension: &str,
    attribute: &str,
    top: usize,
) -> Vec<(String, Sums)> {
    let mut groups: BTreeMap<String, Sums> = BTreeMap::new();
    for event in events {
        let sums = groups
            .entry(group_of(event, dimension, attribute))
            .or_default();
        sums[0] += 1;
        sums[1] += u64::from(event["status"] == "error");
        sums[2] += micros(event["cost_usd"].as_f64().unwrap_or(0.0));
    }
    let mut ranked: Vec<(String, Sums)> = groups.into_iter().collect();
    ranked.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    let rest = ranked.split_off(top.min(ranked.len()));
    if !rest.is_empty() {
        let mut other = [0; 3];
        for (_, sums) in rest {
            for (total, part) in other.iter_mut().zip(sums) {
                *total += part;
            }
        }
        ranked.push((OTHER.to_string(), other));
    }
    ranked
}

/// The table panel's rows as (value, sums), in its order.
fn table_sums(rows: &[Value]) -> Vec<(String, Sums)> {
    rows.iter()
        .map(|row| {
            let value = row["value"]
                .as_str()
                .unwrap_or_else(|| panic!("a value column: {row}"));
            (
                value.to_string(),
                [
                    number(&row["requests"]) as u64,
                    number(&row["errors"]) as u64,
                    micros(number(&row["cost_usd"])),
                ],
            )
        })
        .collect()
}

/// Per value of a time-series panel's rows, the sum of its one metric column.
fn series_sums(rows: &[Value]) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for row in rows {
        let value = row["value"]
            .as_str()
            .unwrap_or_else(|| panic!("a value column: {row}"));
        let metric = row
            .as_object()
            .into_iter()
            .flatten()
            .find(|(column, _)| *column != "time" && *column != "value")
            .map(|(_, metric)| metric)
            .unwrap_or_else(|| panic!("a metric column: {row}"));
        *sums.entry(value.to_string()).or_insert(0.0) += number(metric);
    }
    sums
}

/// Every panel of the breakdown dashboard for every dimension and `top`, on `tenant`'s
/// `events` (all inside `scope`'s range): the table holds exactly what the events add
/// up to, the time series split the same values the same way, and for three dimensions
/// the table equals what `ais query` answers.
fn check_breakdowns(
    cluster: &Cluster,
    client: &reqwest::blocking::Client,
    query: &Server,
    scope: &mut Scope,
    events: &[Value],
) {
    let (name, dashboard) = dashboards()
        .into_iter()
        .find(|(_, dashboard)| dashboard["uid"] == "ais-breakdowns")
        .expect("the breakdown dashboard");
    let variable = |wanted: &str| -> Value {
        dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|variable| variable["name"] == wanted)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no {wanted} variable"))
    };
    // A custom variable's options, as Grafana reads them from its query: values
    // separated by commas, each `text : value` or a value alone.
    let options = |wanted: &str| -> Vec<String> {
        let custom = variable(wanted);
        assert_eq!(custom["type"], "custom", "{name}: {wanted}");
        let from_query: Vec<String> = custom["query"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .map(|option| {
                option
                    .rsplit_once(" : ")
                    .map_or(option, |(_, value)| value)
                    .trim()
                    .to_string()
            })
            .collect();
        let listed: Vec<String> = custom["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|option| option["value"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(from_query, listed, "{name}: {wanted}'s query and options");
        listed
    };
    let dimensions = options("dimension");
    // The `dimension` variable offers every field dimension of `GET /v1/query/breakdown`
    // under its own name, then `attr` (one attribute key).
    let mut wanted_dimensions: Vec<String> =
        Dimension::FIELDS.iter().map(Dimension::name).collect();
    wanted_dimensions.push("attr".to_string());
    assert_eq!(dimensions, wanted_dimensions, "{name}: the dimensions");
    assert_eq!(
        variable("attribute")["type"],
        "textbox",
        "{name}: attribute"
    );
    let tops = options("top");
    assert_eq!(tops, ["10", "20", "50"], "{name}: top");

    let all = panels(&dashboard);
    let sql_of = |panel: &Value| -> String {
        panel["targets"][0]["rawSql"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: panel {} has no SQL", panel["title"]))
            .to_string()
    };
    let table_sql = all
        .iter()
        .find(|panel| panel["type"] == "table")
        .map(|panel| sql_of(panel))
        .unwrap_or_else(|| panic!("{name}: no table panel"));
    let series: Vec<(String, String)> = all
        .iter()
        .filter(|panel| panel["type"] == "timeseries")
        .map(|panel| {
            (
                panel["title"].as_str().unwrap_or_default().to_string(),
                sql_of(panel),
            )
        })
        .collect();
    assert_eq!(
        series.len(),
        3,
        "{name}: requests, latency and cost over time"
    );
    let run = |sql: &str, scope: &Scope| -> Vec<Value> {
        clickhouse_json(cluster, client, &expand_sql(sql, scope))["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };

    // Every dimension and top, and an attribute key no event has (all `(none)`).
    let mut cases: Vec<(String, String, String)> = Vec::new();
    for dimension in &dimensions {
        for top in &tops {
            cases.push((dimension.clone(), ATTRIBUTE.to_string(), top.clone()));
        }
    }
    cases.push((
        "attr".to_string(),
        "no-such-key".to_string(),
        "10".to_string(),
    ));
    for (dimension, attribute, top) in cases {
        scope.variables.insert("dimension", vec![dimension.clone()]);
        scope.variables.insert("attribute", vec![attribute.clone()]);
        scope.variables.insert("top", vec![top.clone()]);
        let case = format!("{name}: by {dimension} (attribute {attribute}), top {top}");
        let want = expected_breakdown(events, &dimension, &attribute, top.parse().expect("top"));
        let table = table_sums(&run(&table_sql, scope));
        assert_eq!(table, want, "{case}: the table");
        for (title, sql) in &series {
            let rows = run(sql, scope);
            assert!(!rows.is_empty(), "{case}: panel {title} returned no rows");
            let sums = series_sums(&rows);
            assert_eq!(
                sums.keys().collect::<BTreeSet<_>>(),
                table
                    .iter()
                    .map(|(value, _)| value)
                    .collect::<BTreeSet<_>>(),
                "{case}: panel {title} splits as the table does"
            );
            for (value, table_sums) in &table {
                let sum = sums[value];
                if title.starts_with("Requests") {
                    assert_eq!(
                        (sum * 60.0).round() as u64,
                        table_sums[0],
                        "{case}: panel {title}, {value}"
                    );
                } else if title.starts_with("Cost") {
                    assert_eq!(micros(sum), table_sums[2], "{case}: panel {title}, {value}");
                }
            }
        }
    }

    // The same numbers as the API's breakdown, for the same tenant and range.
    for (dimension, by) in [
        ("endpoint", "endpoint".to_string()),
        ("attr", format!("attr.{ATTRIBUTE}")),
        ("user_id", "user_id".to_string()),
    ] {
        scope
            .variables
            .insert("dimension", vec![dimension.to_string()]);
        scope
            .variables
            .insert("attribute", vec![ATTRIBUTE.to_string()]);
        scope.variables.insert("top", vec!["10".to_string()]);
        let table: BTreeMap<String, Sums> =
            table_sums(&run(&table_sql, scope)).into_iter().collect();
        let (status, body) = get_json(
            client,
            query,
            Some("key-acme"),
            &format!(
                "/v1/query/breakdown?by={by}&from={}&to={}&top=10",
                scope.from_s * 1000,
                scope.to_s * 1000
            ),
        );
        assert_eq!(status, 200, "breakdown by {by}: {body}");
        let block = |block: &Value| -> Sums {
            [
                block["requests"].as_u64().expect("requests"),
                block["errors"].as_u64().expect("errors"),
                micros(block["cost_usd"].as_f64().expect("cost_usd")),
            ]
        };
        let mut api: BTreeMap<String, Sums> = body["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|group| {
                let key = group["key"]
                    .as_object()
                    .and_then(|key| key.values().next())
                    .unwrap_or_else(|| panic!("a key: {group}"));
                (key.as_str().unwrap_or(NONE).to_string(), block(group))
            })
            .collect();
        if !body["other"].is_null() {
            api.insert(OTHER.to_string(), block(&body["other"]));
        }
        assert!(api.len() > 2, "breakdown by {by}: {body}");
        assert_eq!(
            table, api,
            "{name}: the table by {dimension} and the API's breakdown by {by}"
        );
    }
}
