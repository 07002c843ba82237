//! The Prometheus rules of `deploy/prometheus`: `promtool check rules` and `promtool
//! test rules` pass, every alert has a unit test that fires it and one that keeps it
//! quiet, and — against a real Prometheus (Debian's `prometheus`) scraping a running
//! `ais ingest` and `ais stream` and evaluating the rules — every metric a rule or the
//! chart's lag HPA uses is exported by the process that should export it, every rule
//! evaluates without error, and every recording rule yields series.
//!
//! Rule groups are named after the job whose targets export their metrics (`ais-ingest`,
//! `ais-stream`), so the test scrapes `ais ingest` as job `ais-ingest` and `ais stream`
//! as `ais-stream` and looks for each group's metrics on its own job. The processes
//! run with the config file the Helm chart renders (its hashed key, an objective and an
//! alert webhook), so that file is proved against the real binary too.
//!
//! Without promtool, Prometheus, the test broker and ClickHouse, or `AIS_HELM_PYTHON`,
//! the tests say why and pass, except under `CI=true`, where they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{send_all, Cluster};
use common::prometheus::{host_port, Prometheus};
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn rules_dir() -> PathBuf {
    repository_root().join("deploy/prometheus")
}

fn rules_file() -> PathBuf {
    rules_dir().join("ais.rules.yml")
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    if !tool_installed("promtool", "the rules' checks") {
        return;
    }
    promtool(&["check", "rules", "ais.rules.yml"]);
    promtool(&["test", "rules", "tests/ais.rules.test.yml"]);
}

/// Alert names the rules define.
fn alerts_in_rules() -> BTreeSet<String> {
    let text = std::fs::read_to_string(rules_file()).expect("the rules");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() {
    let text = std::fs::read_to_string(rules_dir().join("tests/ais.rules.test.yml"))
        .expect("the rules' unit tests");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for (index, line) in lines.iter().enumerate() {
        let Some(alert) = line.strip_prefix("alertname: ") else {
            continue;
        };
        match lines.get(index + 1) {
            Some(&"exp_alerts: []") => quiet.insert(alert.to_string()),
            Some(&"exp_alerts:") => fired.insert(alert.to_string()),
            other => panic!("{alert}: alertname not followed by exp_alerts but {other:?}"),
        };
    }
    let alerts = alerts_in_rules();
    assert!(!alerts.is_empty(), "no alerts in the rules");
    for alert in &alerts {
        assert!(fired.contains(alert), "no unit test fires {alert}");
        assert!(quiet.contains(alert), "no unit test keeps {alert} quiet");
    }
    let unknown: Vec<&String> = fired
        .union(&quiet)
        .filter(|name| !alerts.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "unit tests of alerts the rules lack: {unknown:?}"
    );
}

/// Raw metric names in a PromQL expression: identifiers starting with `ais_` outside
/// string literals (recording rules' outputs, `level:metric:operation`, have colons).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_string = false;
    let mut word = String::new();
    let mut flush = |word: &mut String| {
        if word.starts_with("ais_") && !word.contains(':') {
            names.insert(word.clone());
        }
        word.clear();
    };
    for c in expr.chars() {
        if c == '"' {
            in_string = !in_string;
            flush(&mut word);
        } else if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
        } else {
            flush(&mut word);
        }
    }
    flush(&mut word);
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            r#"sum by (namespace) (rate(ais_a_total{code="ais_not_a_metric"}[5m])) / namespace:ais_b:sum > ais_c"#
        ),
        BTreeSet::from(["ais_a_total".to_string(), "ais_c".to_string()])
    );
}

/// The job a rule group's metrics come from: its name without `-recording`/`-alerts`.
fn group_job(group: &str) -> &str {
    group
        .strip_suffix("-recording")
        .or_else(|| group.strip_suffix("-alerts"))
        .unwrap_or_else(|| panic!("rule group {group} is not named JOB-recording or JOB-alerts"))
}

/// The chart's config file and lag HPA for a test tenant's key and an alert webhook
/// at `webhook`, rendered by Helm; `None` without `AIS_HELM_PYTHON` (outside CI).
fn chart_render(key: &str, webhook: &str) -> Option<helm::Rendered> {
    let python = helm::python()?;
    let sha256: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut values = json!({
        "apiKeys": [{"tenant": "acme", "sha256": sha256, "kind": "all"}],
        "config": format!(
            "[[slos]]\nname = \"chat\"\nmodel = \"gpt-4o\"\nobjective = \"availability\"\ntarget = 0.99\n\n[alerts.webhook]\nurl = \"{webhook}\"\n"
        ),
        "alerts": {"webhookSecret": "hmac-key"},
        "autoscaling": {"stream": {"mode": "hpa"}},
    });
    // The overflow buffer, when the test servers include a Redis: ingest exports the
    // overflow's gauges only with one.
    if let Some(redis) = test_redis() {
        values["redis"] = json!({ "url": redis });
    }
    let rendered = helm::render(&python, &[("presence".to_string(), values)]);
    let rendered = rendered.into_iter().next().expect("one render");
    assert_eq!(rendered.error, None, "the chart renders");
    Some(rendered)
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// The variables the chart sets in `component`'s container: the ConfigMap's and those
/// taken from the chart's Secret.
fn chart_environment(rendered: &helm::Rendered, component: &str) -> Vec<(String, String)> {
    let deployment = rendered
        .component("Deployment", component)
        .unwrap_or_else(|| panic!("no {component} Deployment"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"].as_str().unwrap_or_default();
        let configmap = rendered.named("ConfigMap", name).expect("the ConfigMap");
        for (key, value) in configmap["data"].as_object().into_iter().flatten() {
            env.push((key.clone(), value.as_str().unwrap_or_default().to_string()));
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or_default().to_string();
        let reference = &variable["valueFrom"]["secretKeyRef"];
        // The pod's own name (the downward API): a name such a pod could have.
        let pod_name = format!("ais-{component}-0");
        let value = match reference["name"].as_str() {
            Some(secret) => rendered.named("Secret", secret).and_then(|secret| {
                secret["stringData"][reference["key"].as_str().unwrap_or_default()].as_str()
            }),
            None if variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" => {
                Some(pod_name.as_str())
            }
            None => variable["value"].as_str(),
        };
        match value {
            Some(value) => env.push((name, value.to_string())),
            None => assert_eq!(
                reference["optional"], true,
                "{component}: {name} has no value"
            ),
        }
    }
    env
}

/// Metrics the chart's autoscalers read from Prometheus, with the job of the
/// Deployment each scales.
fn hpa_metrics(rendered: &helm::Rendered) -> Vec<(String, String)> {
    rendered
        .of_kind("HorizontalPodAutoscaler")
        .into_iter()
        .flat_map(|hpa| {
            let target = hpa["spec"]["scaleTargetRef"]["name"]
                .as_str()
                .unwrap_or_default();
            let component = rendered
                .named("Deployment", target)
                .and_then(|deployment| {
                    deployment["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
                })
                .unwrap_or_else(|| {
                    panic!("the HPA scales {target}, not a Deployment of the chart")
                });
            let job = format!("ais-{component}");
            hpa["spec"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|metric| metric["type"] == "External")
                .filter_map(|metric| metric["external"]["metric"]["name"].as_str())
                .map(|name| (job.clone(), name.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

#[test]
fn every_metric_the_rules_and_the_hpa_use_is_exported() {
    let Some(cluster) = Cluster::create("rules", 2) else {
        return;
    };
    const KEY: &str = "key-for-the-rules-test";
    // Nothing listens there: deliveries fail, which is fine; the sink is configured.
    let webhook = format!("http://127.0.0.1:{}/hook", free_port());
    let rendered = chart_render(KEY, &webhook);
    let config_text = match &rendered {
        Some(rendered) => helm::config_toml(rendered),
        None => format!(
            "[[keys]]\ntenant = \"acme\"\nsha256 = \"{}\"\n\n[alerts.webhook]\nurl = \"{webhook}\"\n",
            Sha256::digest(KEY.as_bytes())
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        ),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &config_text).expect("config written");
    let config = config.display().to_string();
    // The environment the chart gives each Deployment; the test's addresses come as
    // flags, which win over it.
    let environment = |component: &str| -> Vec<(String, String)> {
        let mut env = match &rendered {
            Some(rendered) => chart_environment(rendered, component),
            None => vec![("AIS_WEBHOOK_SECRET".to_string(), "hmac-key".to_string())],
        };
        env.retain(|(name, _)| name != "RUST_LOG");
        env.push(("AIS_CONFIG".to_string(), config.clone()));
        env
    };
    let ingest_env = environment("ingest");
    let stream_env = environment("stream");
    let ingest = cluster.ingest(&borrowed(&ingest_env));
    let stream = cluster.stream_with(&borrowed(&stream_env), None);
    let client = client();

    // Traffic: accepted events, an invalid one, a request without a key.
    let now = now_ms();
    let events: Vec<Value> = (0..200)
        .map(|i| {
            json!({"event_id": format!("e-{i}"), "timestamp": now - 60_000 + i * 100,
                   "model": "gpt-4o", "latency_ms": 100.0 + i as f64})
        })
        .collect();
    send_all(&client, &ingest, Some(KEY), &events, 50);
    let (status, body) = post_json(
        &client,
        &ingest,
        Some(KEY),
        &json!([{"timestamp": now, "latency_ms": 1.0}]),
    );
    assert_eq!(
        (status, body["accepted"].clone()),
        (202, json!(0)),
        "{body}"
    );
    let (status, _) = post_json(&client, &ingest, None, &json!([]));
    assert_eq!(status, 401);

    let servers: BTreeMap<&str, &Server> =
        BTreeMap::from([("ingest", &ingest), ("stream", &stream)]);
    let groups_text = std::fs::read_to_string(rules_file()).expect("the rules");
    let jobs: BTreeSet<String> = groups_text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- name: "))
        .map(|group| group_job(group.trim()).to_string())
        .collect();
    let targets: Vec<(&str, Vec<String>)> = jobs
        .iter()
        .map(|job| {
            let command = job.strip_prefix("ais-").unwrap_or(job);
            let server = servers
                .get(command)
                .unwrap_or_else(|| panic!("rule group job {job}: no `ais {command}` to scrape"));
            (job.as_str(), vec![host_port(server)])
        })
        .collect();
    let Some(prometheus) = Prometheus::start_with_rules(&targets, &[rules_file()]) else {
        return;
    };

    // Every rule evaluated, none in error.
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    let groups = loop {
        let groups = prometheus.api(&client, "/api/v1/rules")["groups"].clone();
        let rules: Vec<&Value> = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        for rule in &rules {
            assert_ne!(
                rule["health"], "err",
                "rule {} fails: {}",
                rule["name"], rule["lastError"]
            );
        }
        if !rules.is_empty() && rules.iter().all(|rule| rule["health"] == "ok") {
            break groups;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all evaluated: {groups}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // (job, metric) pairs the rules and the HPA read.
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut recording: Vec<String> = Vec::new();
    for group in groups.as_array().into_iter().flatten() {
        let job = group_job(group["name"].as_str().unwrap_or_default()).to_string();
        for rule in group["rules"].as_array().into_iter().flatten() {
            let metrics = metric_names(rule["query"].as_str().unwrap_or_default());
            assert!(!metrics.is_empty() || rule["type"] == "alerting", "{rule}");
            for metric in &metrics {
                wanted.insert((job.clone(), metric.clone()));
            }
            if rule["type"] == "recording" {
                recording.push(rule["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    match &rendered {
        Some(rendered) => {
            let from_hpa = hpa_metrics(rendered);
            assert!(
                !from_hpa.is_empty(),
                "the chart's stream HPA reads an external metric"
            );
            wanted.extend(from_hpa);
        }
        None => eprintln!("AIS_HELM_PYTHON is not set: the HPA's metric is not checked"),
    }
    let per_job: BTreeSet<&String> = wanted.iter().map(|(job, _)| job).collect();
    assert_eq!(
        per_job.len(),
        jobs.len(),
        "metrics for every job: {wanted:?}"
    );

    let mut missing: Vec<String> = Vec::new();
    let mut checked: Vec<String> = Vec::new();
    for (job, metric) in &wanted {
        let query = format!("count({{__name__=\"{metric}\", job=\"{job}\"}})");
        loop {
            if !prometheus.query(&client, &query).is_empty() {
                checked.push(format!("{metric} on {job}"));
                break;
            }
            if Instant::now() >= deadline {
                missing.push(format!("{metric} on {job}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the rules or the HPA use but the processes do not export: {missing:?}"
    );
    eprintln!("exported where the rules and the HPA expect them: {checked:?}");

    // Every recording rule yields series on this real data.
    for name in recording {
        loop {
            if !prometheus.query(&client, &name).is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "recording rule {name} yields nothing"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(stream);
}
