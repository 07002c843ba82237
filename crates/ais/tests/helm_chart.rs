//! The Helm chart `deploy/helm/infra-ai-streaming`, rendered offline by Helm's own
//! engine with its default values and several others (`common::helm`), then checked:
//! `helm lint --strict` is clean; every object validates against the Kubernetes schemas
//! of the chart's oldest and the newest supported release (kubernetes-validate, strict);
//! the objects of CRDs (KEDA's `ScaledObject`, prometheus-operator's `ServiceMonitor`
//! and `PrometheusRule`), which have no schema there, are checked field by field against
//! their documented specs, the rules by promtool; the workloads run `ais` with flags and variables the binary declares; selectors,
//! ports and references resolve; stream replicas stay between 1 and the partition count;
//! values that break an invariant are refused with a message that says which.
//!
//! Without `AIS_HELM_PYTHON` the tests say why and pass, except under `CI=true`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use common::helm::{self, Rendered};
use serde_json::{json, Value};

/// Kinds whose API is a CRD: kubernetes-validate has no schema for them.
const CRD_KINDS: &[&str] = &["ScaledObject", "ServiceMonitor", "PrometheusRule"];

/// A scenario that must render: its values and the partition count they imply.
struct Good {
    name: &'static str,
    values: Value,
    partitions: u64,
}

/// A CA bundle as values carry it (the chart does not read it).
const RECEIVER_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fn good_scenarios() -> Vec<Good> {
    let key = json!([
        {"tenant": "acme", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "kind": "write"},
        {"tenant": "acme", "sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"},
    ]);
    vec![
        Good {
            name: "defaults",
            values: json!({}),
            partitions: 6,
        },
        Good {
            name: "keda, monitoring, network policy",
            values: json!({
                "kafka": {"brokers": "kafka-0.kafka:9092,kafka-1.kafka:9092", "partitions": 12, "topic": "inference.events", "group": "ais-rollups"},
                "clickhouse": {"url": "http://ais:secret@clickhouse.db:8123/?database=ais"},
                "redis": {"url": "redis://redis.db:6379"},
                "apiKeys": key,
                "config": "[[slos]]\nname = \"chat\"\nmodel = \"gpt-4o\"\nobjective = \"availability\"\ntarget = 0.99\n\n[alerts.webhook]\nurl = \"https://alerts.internal/ais\"\nca_file = \"/etc/ais-receiver-ca/ca.pem\"\n",
                "alerts": {"webhookSecret": "hmac-key", "receiverCa": RECEIVER_CA},
                "autoscaling": {"stream": {"mode": "keda", "maxReplicas": 8, "lagThreshold": 20000, "keda": {"fallbackReplicas": 4}}},
                "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
                "prometheusRule": {"enabled": true},
                "networkPolicy": {
                    "enabled": true,
                    "ingestFrom": [{"namespaceSelector": {"matchLabels": {"ais-client": "true"}}}],
                    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]
                },
                "ingest": {"env": [{"name": "AIS_RATE_LIMIT_EPS", "value": "50000"}], "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "ingest"}}}]},
            }),
            partitions: 12,
        },
        Good {
            name: "external metric hpa",
            values: json!({
                "kafka": {"partitions": 3},
                "apiKeys": key,
                "autoscaling": {"stream": {"mode": "hpa", "hpa": {"metricSelector": {"matchLabels": {"job": "ais-stream"}}}}},
            }),
            partitions: 3,
        },
        Good {
            name: "fixed replicas, own secret",
            values: json!({
                "kafka": {"partitions": 4},
                "secrets": {"existingSecret": "ais-managed"},
                "autoscaling": {"ingest": {"enabled": false}, "stream": {"enabled": false}},
                "ingest": {"replicas": 3, "otlpGrpc": {"enabled": false}},
                "stream": {"replicas": 4},
                "migrate": {"enabled": false},
                "preStopSleepSeconds": 0,
                "serviceAccount": {"create": false},
            }),
            partitions: 4,
        },
    ]
}

/// Values that must be refused, and a piece of the message that says why.
fn bad_scenarios() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "stream maximum above the partitions",
            json!({"kafka": {"partitions": 4}, "autoscaling": {"stream": {"maxReplicas": 5}}}),
            "above kafka.partitions",
        ),
        (
            "fixed stream replicas above the partitions",
            json!({"kafka": {"partitions": 2}, "autoscaling": {"stream": {"enabled": false}}, "stream": {"replicas": 3}}),
            "stream.replicas (3) must be between 1",
        ),
        (
            "stream minimum of zero",
            json!({"autoscaling": {"stream": {"minReplicas": 0}}}),
            "minReplicas",
        ),
        (
            "stream minimum above its maximum",
            json!({"kafka": {"partitions": 2}, "autoscaling": {"stream": {"minReplicas": 3}}}),
            "is above its maximum",
        ),
        (
            "ingest minimum above its maximum",
            json!({"autoscaling": {"ingest": {"minReplicas": 5, "maxReplicas": 3}}}),
            "autoscaling.ingest.minReplicas",
        ),
        (
            "a misspelt key",
            json!({"kafka": {"partitons": 3}}),
            "partitons",
        ),
        (
            "a plain key where its hash belongs",
            json!({"apiKeys": [{"tenant": "acme", "sha256": "my-secret-key"}]}),
            "sha256",
        ),
        (
            "an unknown autoscaler",
            json!({"autoscaling": {"stream": {"mode": "vpa"}}}),
            "mode",
        ),
    ]
}

struct Renders {
    good: Vec<(Good, Rendered)>,
    bad: Vec<(&'static str, &'static str, Rendered)>,
}

/// Every scenario rendered once for all the tests of this file.
fn renders() -> Option<&'static Renders> {
    static RENDERS: OnceLock<Option<Renders>> = OnceLock::new();
    RENDERS
        .get_or_init(|| {
            let python = helm::python()?;
            let good = good_scenarios();
            let bad = bad_scenarios();
            let mut scenarios: Vec<(String, Value)> = good
                .iter()
                .map(|scenario| (scenario.name.to_string(), scenario.values.clone()))
                .collect();
            scenarios.extend(
                bad.iter()
                    .map(|(name, values, _)| (name.to_string(), values.clone())),
            );
            let mut rendered = helm::render(&python, &scenarios).into_iter();
            Some(Renders {
                good: good
                    .into_iter()
                    .map(|scenario| (scenario, rendered.next().expect("a render")))
                    .collect(),
                bad: bad
                    .into_iter()
                    .map(|(name, _, message)| (name, message, rendered.next().expect("a render")))
                    .collect(),
            })
        })
        .as_ref()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn component(object: &Value) -> &str {
    object["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or_default()
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Whether every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|selector| {
        !selector.is_empty() && selector.iter().all(|(key, value)| &labels[key] == value)
    })
}

fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_keys_within(what: &str, object: &Value, allowed: &[&str]) {
    let allowed: BTreeSet<String> = allowed.iter().map(|key| key.to_string()).collect();
    let unknown: Vec<String> = keys(object).difference(&allowed).cloned().collect();
    assert!(
        unknown.is_empty(),
        "{what}: {unknown:?} are not in the documented spec {allowed:?}"
    );
}

#[test]
fn every_scenario_renders_lints_clean_and_validates() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let name = scenario.name;
        assert_eq!(rendered.error, None, "{name}: the render failed");
        assert_eq!(rendered.lint["errors"], json!([]), "{name}: lint errors");
        for message in rendered.lint["messages"].as_array().into_iter().flatten() {
            // Severity 1 is information ("icon is recommended"); 2 and 3 are
            // warnings and errors.
            assert!(
                message["severity"].as_i64().unwrap_or(3) < 2,
                "{name}: lint says {message}"
            );
        }
        let mut validated = 0;
        for verdict in &rendered.validation {
            match verdict["outcome"].as_str() {
                Some("valid") => validated += 1,
                Some("no-schema") => assert!(
                    CRD_KINDS.contains(&verdict["kind"].as_str().unwrap_or_default()),
                    "{name}: no schema for {verdict}"
                ),
                _ => panic!("{name}: invalid manifest: {verdict}"),
            }
        }
        let deployments = rendered.of_kind("Deployment");
        assert_eq!(
            validated,
            (rendered.documents.len()
                - rendered
                    .documents
                    .iter()
                    .filter(|document| CRD_KINDS
                        .contains(&document["kind"].as_str().unwrap_or_default()))
                    .count())
                * helm::KUBE_VERSIONS.len(),
            "{name}: every core object validated on every version"
        );
        let components: BTreeSet<&str> = deployments.iter().map(|d| component(d)).collect();
        assert_eq!(
            components,
            BTreeSet::from(["ingest", "query", "stream"]),
            "{name}: the three Deployments"
        );
        for kind in ["Service", "PodDisruptionBudget"] {
            let covered: BTreeSet<&str> = rendered
                .of_kind(kind)
                .iter()
                .map(|o| component(o))
                .collect();
            assert_eq!(covered, components, "{name}: a {kind} per component");
        }
    }
}

#[test]
fn values_that_break_an_invariant_are_refused() {
    let Some(renders) = renders() else { return };
    for (name, message, rendered) in &renders.bad {
        let error = rendered
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: rendered although it should be refused"));
        assert!(
            error.contains(message),
            "{name}: the refusal should say {message:?}: {error}"
        );
        assert!(
            rendered.documents.is_empty(),
            "{name}: objects despite the error"
        );
    }
}

#[test]
fn workloads_run_ais_with_flags_and_variables_it_knows() {
    let Some(renders) = renders() else { return };
    let mut flags = BTreeMap::new();
    let mut variables = BTreeMap::new();
    for command in common::cli::COMMANDS {
        flags.insert(*command, common::cli::flags(command));
        variables.insert(*command, common::cli::variables(command));
    }
    for (scenario, rendered) in &renders.good {
        let scenario_name = scenario.name;
        // The settings' ConfigMap, not the receivers' CA bundle.
        let configmap = rendered
            .of_kind("ConfigMap")
            .into_iter()
            .find(|configmap| configmap["data"]["AIS_CONFIG"].is_string())
            .expect("the settings ConfigMap");
        let mut pods: Vec<(&str, &Value)> = rendered
            .of_kind("Deployment")
            .into_iter()
            .map(|deployment| (name(deployment), &deployment["spec"]["template"]["spec"]))
            .collect();
        pods.extend(
            rendered
                .of_kind("Job")
                .into_iter()
                .map(|job| (name(job), &job["spec"]["template"]["spec"])),
        );
        let mut configmap_readers: BTreeSet<&str> = BTreeSet::new();
        for (object, pod) in pods {
            let container = &pod["containers"][0];
            let args = common::json_strings(&container["args"]);
            let command: &str = common::cli::COMMANDS
                .iter()
                .copied()
                .find(|command| args.first().map(String::as_str) == Some(*command))
                .unwrap_or_else(|| panic!("{scenario_name}: {object} runs {args:?}"));
            for flag in args.iter().filter(|arg| arg.starts_with("--")) {
                assert!(
                    flags[command].contains(flag),
                    "{scenario_name}: {object}: `ais {command}` has no {flag}"
                );
            }
            for variable in container["env"].as_array().into_iter().flatten() {
                let variable = variable["name"].as_str().unwrap_or_default();
                if variable.starts_with("AIS_") {
                    assert!(
                        variables[command].contains(variable),
                        "{scenario_name}: {object}: `ais {command}` reads no {variable}"
                    );
                }
            }
            if container["envFrom"].as_array().is_some_and(|from| {
                from.iter()
                    .any(|source| source["configMapRef"]["name"] == configmap["metadata"]["name"])
            }) {
                configmap_readers.insert(command);
            }
        }
        // A shared ConfigMap goes to every command; each of its variables must be read
        // by at least one of them.
        for variable in keys(&configmap["data"]) {
            if variable.starts_with("AIS_") {
                assert!(
                    configmap_readers
                        .iter()
                        .any(|command| variables[command].contains(&variable)),
                    "{scenario_name}: no command that reads the ConfigMap ({configmap_readers:?}) reads {variable}"
                );
            }
        }
    }
}

#[test]
fn every_stream_pod_joins_the_consumer_group_under_its_own_name() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let stream = rendered
            .of_kind("Deployment")
            .into_iter()
            .find(|deployment| component(deployment) == "stream")
            .unwrap_or_else(|| panic!("{}: no stream Deployment", scenario.name));
        let instance_id = container(stream)["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|variable| variable["name"] == "AIS_INSTANCE_ID")
            .unwrap_or_else(|| panic!("{}: the stream pods get no AIS_INSTANCE_ID", scenario.name));
        // The pod's name: unique among live pods, and kept when a crashed container
        // restarts in its pod, so the restarted process takes its partitions back.
        assert_eq!(
            instance_id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
            "{}: {instance_id}",
            scenario.name
        );
    }
}

#[test]
fn probes_resources_and_security_of_every_workload() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let scenario_name = scenario.name;
        for deployment in rendered.of_kind("Deployment") {
            let object = name(deployment);
            let pod = &deployment["spec"]["template"]["spec"];
            let container = container(deployment);
            let ports: BTreeMap<String, i64> = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|port| {
                    (
                        port["name"].as_str().unwrap_or_default().to_string(),
                        port["containerPort"].as_i64().unwrap_or_default(),
                    )
                })
                .collect();
            // The listener the process binds is the port the probes and Service use.
            let args = common::json_strings(&container["args"]);
            let listen = args
                .iter()
                .position(|arg| arg == "--listen")
                .and_then(|at| args.get(at + 1))
                .unwrap_or_else(|| panic!("{scenario_name}: {object} has no --listen"));
            let (host, port) = listen.rsplit_once(':').expect("HOST:PORT");
            assert_eq!(
                host, "0.0.0.0",
                "{scenario_name}: {object} listens beyond the pod"
            );
            assert_eq!(
                Some(&port.parse::<i64>().expect("a port")),
                ports.get("http"),
                "{scenario_name}: {object}: --listen and the http port"
            );
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{scenario_name}: {object}: {probe}");
                let port = get["port"].as_str().unwrap_or_default();
                assert!(
                    ports.contains_key(port),
                    "{scenario_name}: {object}: {probe} on port {port}, not one of {ports:?}"
                );
            }
            if let Some(startup) = container["startupProbe"].as_object() {
                assert_eq!(
                    startup["httpGet"]["path"], "/healthz",
                    "{scenario_name}: {object}"
                );
            }
            let resources = &container["resources"];
            for (section, resource) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    resources[section][resource].is_string(),
                    "{scenario_name}: {object}: no {section}.{resource}"
                );
            }
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{scenario_name}: {object}"
            );
            assert!(
                pod["securityContext"]["runAsUser"].as_i64().unwrap_or(0) > 0,
                "{scenario_name}: {object} runs as root"
            );
            let security = &container["securityContext"];
            assert_eq!(
                security["allowPrivilegeEscalation"], false,
                "{scenario_name}: {object}"
            );
            assert_eq!(
                security["readOnlyRootFilesystem"], true,
                "{scenario_name}: {object}"
            );
            assert_eq!(
                security["capabilities"]["drop"],
                json!(["ALL"]),
                "{scenario_name}: {object}"
            );
            assert_eq!(
                pod["automountServiceAccountToken"], false,
                "{scenario_name}: {object}"
            );
            let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
            for checksum in ["checksum/config", "checksum/secret"] {
                assert!(
                    annotations[checksum]
                        .as_str()
                        .is_some_and(|sum| sum.len() == 64),
                    "{scenario_name}: {object}: no {checksum} to roll the pods on a change"
                );
            }
        }
    }
}

#[test]
fn selectors_ports_and_references_resolve() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let scenario_name = scenario.name;
        let deployments = rendered.of_kind("Deployment");
        let pod_labels =
            |deployment: &Value| deployment["spec"]["template"]["metadata"]["labels"].clone();
        for deployment in &deployments {
            assert!(
                selects(
                    &deployment["spec"]["selector"]["matchLabels"],
                    &pod_labels(deployment)
                ),
                "{scenario_name}: {} does not select its own pods",
                name(deployment)
            );
        }
        // Each Service, PodDisruptionBudget and NetworkPolicy selects exactly one
        // Deployment's pods, and names only ports those pods have.
        let selected = |selector: &Value| -> Vec<&Value> {
            deployments
                .iter()
                .copied()
                .filter(|deployment| selects(selector, &pod_labels(deployment)))
                .collect()
        };
        let port_names = |deployment: &Value| -> BTreeSet<String> {
            container(deployment)["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|port| port["name"].as_str().map(str::to_string))
                .collect()
        };
        for service in rendered.of_kind("Service") {
            let targets = selected(&service["spec"]["selector"]);
            assert_eq!(
                targets.len(),
                1,
                "{scenario_name}: Service {}",
                name(service)
            );
            for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                let target = port["targetPort"].as_str().unwrap_or_default();
                assert!(
                    port_names(targets[0]).contains(target),
                    "{scenario_name}: Service {} targets port {target}",
                    name(service)
                );
            }
        }
        for budget in rendered.of_kind("PodDisruptionBudget") {
            assert_eq!(
                selected(&budget["spec"]["selector"]["matchLabels"]).len(),
                1,
                "{scenario_name}: PodDisruptionBudget {}",
                name(budget)
            );
        }
        for policy in rendered.of_kind("NetworkPolicy") {
            let targets = selected(&policy["spec"]["podSelector"]["matchLabels"]);
            assert_eq!(
                targets.len(),
                1,
                "{scenario_name}: NetworkPolicy {}",
                name(policy)
            );
            for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
                for port in rule["ports"].as_array().into_iter().flatten() {
                    let port = port["port"].as_str().unwrap_or_default();
                    assert!(
                        port_names(targets[0]).contains(port),
                        "{scenario_name}: NetworkPolicy {} opens port {port}",
                        name(policy)
                    );
                }
            }
        }

        // ConfigMap and Secret references: the chart's own objects, or the Secret the
        // user manages.
        let existing = scenario.values["secrets"]["existingSecret"].as_str();
        let configmaps: BTreeSet<&str> = rendered
            .of_kind("ConfigMap")
            .into_iter()
            .map(name)
            .collect();
        let secret_keys = |secret_name: &str| -> Option<BTreeSet<String>> {
            rendered
                .named("Secret", secret_name)
                .map(|secret| keys(&secret["stringData"]))
        };
        let mut pods: Vec<&Value> = deployments
            .iter()
            .map(|deployment| &deployment["spec"]["template"]["spec"])
            .collect();
        pods.extend(
            rendered
                .of_kind("Job")
                .into_iter()
                .map(|job| &job["spec"]["template"]["spec"]),
        );
        for pod in pods {
            let container = &pod["containers"][0];
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let configmap = source["configMapRef"]["name"].as_str().unwrap_or_default();
                assert!(
                    configmaps.contains(configmap),
                    "{scenario_name}: ConfigMap {configmap}"
                );
            }
            for variable in container["env"].as_array().into_iter().flatten() {
                let reference = &variable["valueFrom"]["secretKeyRef"];
                let Some(secret) = reference["name"].as_str() else {
                    continue;
                };
                if Some(secret) == existing {
                    continue;
                }
                let key = reference["key"].as_str().unwrap_or_default();
                let held = secret_keys(secret)
                    .unwrap_or_else(|| panic!("{scenario_name}: no Secret {secret}"));
                assert!(
                    held.contains(key) || reference["optional"] == true,
                    "{scenario_name}: Secret {secret} has no {key}"
                );
            }
            for volume in pod["volumes"].as_array().into_iter().flatten() {
                if let Some(configmap) = volume["configMap"]["name"].as_str() {
                    let held = rendered
                        .named("ConfigMap", configmap)
                        .unwrap_or_else(|| panic!("{scenario_name}: no ConfigMap {configmap}"));
                    assert_eq!(
                        held["data"]["ca.pem"].as_str(),
                        scenario.values["alerts"]["receiverCa"].as_str(),
                        "{scenario_name}: the receivers' CA bundle, as given"
                    );
                    let mounted = container["volumeMounts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|mount| {
                            mount["name"] == volume["name"]
                                && mount["mountPath"] == "/etc/ais-receiver-ca"
                        });
                    assert!(
                        mounted,
                        "{scenario_name}: {configmap} mounted where ca_file says"
                    );
                }
                if let Some(secret) = volume["secret"]["secretName"].as_str() {
                    if Some(secret) != existing {
                        assert!(
                            secret_keys(secret).is_some_and(|held| held.contains("config.toml")),
                            "{scenario_name}: volume from Secret {secret} without config.toml"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn migrate_runs_as_a_hook_before_the_pods() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let scenario_name = scenario.name;
        let jobs = rendered.of_kind("Job");
        if scenario.values["migrate"]["enabled"] == false {
            assert!(jobs.is_empty(), "{scenario_name}: migrate is off");
            continue;
        }
        assert_eq!(jobs.len(), 1, "{scenario_name}: one migrate Job");
        let job = jobs[0];
        let hook = |object: &Value| object["metadata"]["annotations"]["helm.sh/hook"].clone();
        let weight = |object: &Value| {
            object["metadata"]["annotations"]["helm.sh/hook-weight"]
                .as_str()
                .and_then(|weight| weight.parse::<i64>().ok())
                .unwrap_or(0)
        };
        assert_eq!(hook(job), "pre-install,pre-upgrade", "{scenario_name}");
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            common::json_strings(&container["args"]),
            ["migrate"],
            "{scenario_name}"
        );
        let env: BTreeMap<&str, &Value> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|variable| (variable["name"].as_str().unwrap_or_default(), variable))
            .collect();
        assert_eq!(
            env["AIS_PARTITIONS"]["value"],
            scenario.partitions.to_string(),
            "{scenario_name}: the topic gets the partitions the autoscaler is bounded by"
        );
        let configmap = rendered.of_kind("ConfigMap")[0];
        for shared in ["AIS_KAFKA", "AIS_TOPIC"] {
            assert_eq!(
                env[shared]["value"], configmap["data"][shared],
                "{scenario_name}: migrate and the pods agree on {shared}"
            );
        }
        // Hooks run before the release's objects exist: whatever the Job reads must be
        // a hook of a lower weight, or the user's own Secret.
        let secret = env["AIS_CLICKHOUSE"]["valueFrom"]["secretKeyRef"]["name"]
            .as_str()
            .expect("the ClickHouse URL from a Secret");
        if scenario.values["secrets"]["existingSecret"].as_str() != Some(secret) {
            let secret = rendered
                .named("Secret", secret)
                .unwrap_or_else(|| panic!("{scenario_name}: no Secret {secret}"));
            assert_eq!(
                hook(secret),
                hook(job),
                "{scenario_name}: the Job's Secret is a hook"
            );
            assert!(
                weight(secret) < weight(job),
                "{scenario_name}: the Secret comes first"
            );
        }
        assert!(
            job["spec"]["template"]["spec"].get("envFrom").is_none()
                && container.get("envFrom").is_none(),
            "{scenario_name}: the Job reads no ConfigMap (it does not exist yet)"
        );
    }
}

/// Replicas of the stream Deployment: its scaler's bounds, or its fixed count.
fn stream_bounds(rendered: &Rendered) -> (u64, u64) {
    let deployment = rendered
        .component("Deployment", "stream")
        .expect("stream Deployment");
    let target = name(deployment);
    let scalers: Vec<&Value> = rendered
        .of_kind("ScaledObject")
        .into_iter()
        .chain(rendered.of_kind("HorizontalPodAutoscaler"))
        .filter(|scaler| scaler["spec"]["scaleTargetRef"]["name"] == target)
        .collect();
    match scalers.as_slice() {
        [] => {
            let replicas = deployment["spec"]["replicas"]
                .as_u64()
                .expect("fixed replicas");
            (replicas, replicas)
        }
        [scaler] => {
            assert!(
                deployment["spec"].get("replicas").is_none(),
                "{}: an autoscaled Deployment must not set replicas (an upgrade would reset them)",
                rendered.name
            );
            let spec = &scaler["spec"];
            let min = spec["minReplicaCount"]
                .as_u64()
                .or(spec["minReplicas"].as_u64());
            let max = spec["maxReplicaCount"]
                .as_u64()
                .or(spec["maxReplicas"].as_u64());
            (min.expect("a minimum"), max.expect("a maximum"))
        }
        _ => panic!("{}: two scalers on {target}", rendered.name),
    }
}

#[test]
fn stream_replicas_stay_between_one_and_the_partitions() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let (min, max) = stream_bounds(rendered);
        assert!(
            min >= 1,
            "{}: the evaluator needs a stream process",
            scenario.name
        );
        assert!(
            max <= scenario.partitions && min <= max,
            "{}: {min}..={max} replicas for {} partitions",
            scenario.name,
            scenario.partitions
        );
        // The ingest HPA scales on CPU, which only works with CPU requests.
        let ingest = rendered.component("Deployment", "ingest").expect("ingest");
        match rendered.component("HorizontalPodAutoscaler", "ingest") {
            Some(hpa) => {
                assert_eq!(
                    hpa["spec"]["scaleTargetRef"]["name"],
                    ingest["metadata"]["name"]
                );
                let metric = &hpa["spec"]["metrics"][0];
                assert_eq!(metric["type"], "Resource", "{}", scenario.name);
                assert_eq!(metric["resource"]["name"], "cpu", "{}", scenario.name);
                assert_eq!(
                    metric["resource"]["target"]["type"], "Utilization",
                    "{}",
                    scenario.name
                );
                assert!(
                    ingest["spec"].get("replicas").is_none(),
                    "{}",
                    scenario.name
                );
                assert!(container(ingest)["resources"]["requests"]["cpu"].is_string());
            }
            None => assert!(
                ingest["spec"]["replicas"].as_u64().is_some(),
                "{}",
                scenario.name
            ),
        }
    }
    // Offline there is no KEDA API, so `auto` picks the HPA.
    let defaults = &renders.good[0].1;
    assert!(defaults.of_kind("ScaledObject").is_empty());
    assert!(defaults
        .component("HorizontalPodAutoscaler", "stream")
        .is_some());
}

/// KEDA's documented ScaledObject spec (keda.sh/docs, "ScaledObject specification",
/// v2.18) and the Kafka scaler's parameters ("Apache Kafka" scaler page).
mod keda_spec {
    pub const SPEC: &[&str] = &[
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    ];
    pub const SCALE_TARGET_REF: &[&str] = &["apiVersion", "kind", "name", "envSourceContainerName"];
    pub const FALLBACK: &[&str] = &["failureThreshold", "replicas", "behavior"];
    pub const FALLBACK_BEHAVIORS: &[&str] = &[
        "static",
        "currentReplicas",
        "currentReplicasIfHigher",
        "currentReplicasIfLower",
    ];
    pub const ADVANCED: &[&str] = &[
        "restoreToOriginalReplicaCount",
        "horizontalPodAutoscalerConfig",
        "scalingModifiers",
    ];
    pub const HPA_CONFIG: &[&str] = &["name", "behavior"];
    pub const TRIGGER: &[&str] = &[
        "type",
        "name",
        "metadata",
        "authenticationRef",
        "metricType",
        "useCachedMetrics",
    ];
    pub const METRIC_TYPES: &[&str] = &["AverageValue", "Value", "Utilization"];
    pub const KAFKA_METADATA: &[&str] = &[
        "bootstrapServers",
        "consumerGroup",
        "topic",
        "lagThreshold",
        "activationLagThreshold",
        "offsetResetPolicy",
        "allowIdleConsumers",
        "scaleToZeroOnInvalidOffset",
        "excludePersistentLag",
        "limitToPartitionsWithLag",
        "ensureEvenDistributionOfPartitions",
        "version",
        "partitionLimitation",
        "sasl",
        "saslTokenProvider",
        "tls",
        "unsafeSsl",
        "awsRegion",
    ];
}

#[test]
fn the_scaled_object_follows_kedas_documented_spec() {
    let Some(renders) = renders() else { return };
    let (scenario, rendered) = renders
        .good
        .iter()
        .find(|(_, rendered)| !rendered.of_kind("ScaledObject").is_empty())
        .expect("a scenario with KEDA");
    let what = scenario.name;
    let scaled = rendered.of_kind("ScaledObject");
    assert_eq!(scaled.len(), 1, "{what}");
    let scaled = scaled[0];
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1", "{what}");
    assert!(
        rendered
            .component("HorizontalPodAutoscaler", "stream")
            .is_none(),
        "{what}: KEDA makes the stream's HPA itself"
    );
    let spec = &scaled["spec"];
    assert_keys_within("spec", spec, keda_spec::SPEC);

    let target = &spec["scaleTargetRef"];
    assert_keys_within("scaleTargetRef", target, keda_spec::SCALE_TARGET_REF);
    let stream = rendered.component("Deployment", "stream").expect("stream");
    assert_eq!(
        target["name"], stream["metadata"]["name"],
        "{what}: scaleTargetRef.name"
    );
    assert_eq!(target["kind"], "Deployment", "{what}");
    assert_eq!(target["apiVersion"], "apps/v1", "{what}");

    let positive = |key: &str| spec[key].as_u64().filter(|value| *value >= 1);
    assert!(
        positive("pollingInterval").is_some(),
        "{what}: pollingInterval"
    );
    let min = positive("minReplicaCount").expect("minReplicaCount ≥ 1: the evaluator");
    let max = positive("maxReplicaCount").expect("maxReplicaCount");
    assert!(
        min <= max && max <= scenario.partitions,
        "{what}: {min}..={max}"
    );
    assert_eq!(
        max, scenario.values["autoscaling"]["stream"]["maxReplicas"],
        "{what}"
    );
    // idleReplicaCount (only 0 works) would scale the evaluator away.
    assert!(
        spec.get("idleReplicaCount").is_none(),
        "{what}: idleReplicaCount"
    );

    if let Some(fallback) = spec.get("fallback") {
        assert_keys_within("fallback", fallback, keda_spec::FALLBACK);
        assert!(fallback["failureThreshold"]
            .as_u64()
            .is_some_and(|n| n >= 1));
        let replicas = fallback["replicas"]
            .as_u64()
            .expect("fallback.replicas is mandatory");
        assert!(
            (min..=max).contains(&replicas),
            "{what}: fallback.replicas {replicas}"
        );
        if let Some(behavior) = fallback["behavior"].as_str() {
            assert!(keda_spec::FALLBACK_BEHAVIORS.contains(&behavior));
        }
    }
    if let Some(advanced) = spec.get("advanced") {
        assert_keys_within("advanced", advanced, keda_spec::ADVANCED);
        let config = &advanced["horizontalPodAutoscalerConfig"];
        assert_keys_within(
            "horizontalPodAutoscalerConfig",
            config,
            keda_spec::HPA_CONFIG,
        );
        let behavior = &config["behavior"];
        assert_keys_within("behavior", behavior, &["scaleUp", "scaleDown"]);
        for direction in ["scaleUp", "scaleDown"] {
            for policy in behavior[direction]["policies"]
                .as_array()
                .into_iter()
                .flatten()
            {
                assert_keys_within("policy", policy, &["type", "value", "periodSeconds"]);
                assert!(["Pods", "Percent"].contains(&policy["type"].as_str().unwrap_or_default()));
                assert!(policy["value"].as_u64().is_some_and(|value| value >= 1));
                assert!(policy["periodSeconds"]
                    .as_u64()
                    .is_some_and(|s| (1..=1800).contains(&s)));
            }
        }
    }

    let triggers = spec["triggers"].as_array().expect("triggers");
    assert_eq!(triggers.len(), 1, "{what}: one trigger");
    let trigger = &triggers[0];
    assert_keys_within("trigger", trigger, keda_spec::TRIGGER);
    assert_eq!(trigger["type"], "kafka", "{what}");
    if let Some(metric_type) = trigger["metricType"].as_str() {
        assert!(keda_spec::METRIC_TYPES.contains(&metric_type));
    }
    let metadata = &trigger["metadata"];
    assert_keys_within(
        "kafka trigger metadata",
        metadata,
        keda_spec::KAFKA_METADATA,
    );
    // The CRD types metadata as a map of strings: a YAML boolean or number is refused.
    for (key, value) in metadata.as_object().expect("metadata") {
        assert!(
            value.is_string(),
            "{what}: metadata.{key} is {value}, not a string"
        );
    }
    let configmap = rendered.of_kind("ConfigMap")[0];
    for (parameter, variable) in [
        ("bootstrapServers", "AIS_KAFKA"),
        ("consumerGroup", "AIS_GROUP"),
        ("topic", "AIS_TOPIC"),
    ] {
        assert_eq!(
            metadata[parameter], configmap["data"][variable],
            "{what}: the trigger watches the group the stream pods join ({parameter} vs {variable})"
        );
    }
    let lag_threshold: u64 = metadata["lagThreshold"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("lagThreshold is an integer");
    assert_eq!(
        lag_threshold,
        scenario.values["autoscaling"]["stream"]["lagThreshold"]
    );
    // The stream's consumers start a new group at the earliest offset (and read their
    // positions from the store), so an uncommitted group's lag is all of the topic.
    assert_eq!(metadata["offsetResetPolicy"], "earliest", "{what}");
    // Replicas beyond the partitions would own nothing: the documented default
    // (allowIdleConsumers false) caps them, and the chart says so explicitly.
    assert_eq!(metadata["allowIdleConsumers"], "false", "{what}");
    assert_ne!(
        metadata["limitToPartitionsWithLag"], "true",
        "{what}: would starve partition 0"
    );
    for (parameter, values) in [
        (
            "sasl",
            &[
                "plaintext",
                "scram_sha256",
                "scram_sha512",
                "gssapi",
                "oauthbearer",
                "none",
            ][..],
        ),
        ("tls", &["enable", "disable"][..]),
    ] {
        if let Some(value) = metadata[parameter].as_str() {
            assert!(values.contains(&value), "{what}: {parameter} = {value}");
        }
    }
}

#[test]
fn without_keda_an_hpa_scales_stream_on_the_external_lag_metric() {
    let Some(renders) = renders() else { return };
    let mut checked = 0;
    for (scenario, rendered) in &renders.good {
        let Some(hpa) = rendered.component("HorizontalPodAutoscaler", "stream") else {
            continue;
        };
        let what = scenario.name;
        let stream = rendered.component("Deployment", "stream").expect("stream");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["name"],
            stream["metadata"]["name"]
        );
        let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
        assert_eq!(metrics.len(), 1, "{what}");
        let external = &metrics[0];
        assert_eq!(external["type"], "External", "{what}");
        let values = &scenario.values["autoscaling"]["stream"];
        let metric_name = values["hpa"]["metricName"]
            .as_str()
            .unwrap_or("ais_stream_lag_records");
        assert_eq!(
            external["external"]["metric"]["name"], metric_name,
            "{what}"
        );
        if let Some(selector) = values["hpa"].get("metricSelector") {
            assert_eq!(
                &external["external"]["metric"]["selector"], selector,
                "{what}"
            );
        }
        // Desired replicas = total lag / averageValue, as KEDA's lagThreshold.
        let target = &external["external"]["target"];
        assert_eq!(target["type"], "AverageValue", "{what}");
        assert_eq!(
            target["averageValue"],
            values["lagThreshold"]
                .as_u64()
                .unwrap_or(50_000)
                .to_string(),
            "{what}"
        );
        let scale_down = &hpa["spec"]["behavior"]["scaleDown"];
        assert!(
            scale_down["stabilizationWindowSeconds"]
                .as_u64()
                .unwrap_or(0)
                >= 60,
            "{what}: each step rebalances the group; scale down slowly"
        );
        checked += 1;
    }
    assert!(checked >= 2, "the default and the explicit hpa scenarios");
}

#[test]
fn the_config_file_holds_key_hashes_and_the_given_settings() {
    let Some(renders) = renders() else { return };
    for (scenario, rendered) in &renders.good {
        let what = scenario.name;
        let all_text = serde_json::to_string(&rendered.documents).expect("JSON");
        assert!(
            !all_text.contains("AIS_API_KEYS"),
            "{what}: plain keys in a manifest"
        );
        if scenario.values["secrets"]["existingSecret"].is_string() {
            assert!(
                rendered.of_kind("Secret").is_empty(),
                "{what}: the user's Secret replaces the chart's"
            );
            continue;
        }
        let text = helm::config_toml(rendered);
        let config: toml::Table =
            toml::from_str(&text).unwrap_or_else(|error| panic!("{what}: {error}\n{text}"));
        let entries = config
            .get("keys")
            .and_then(|keys| keys.as_array())
            .cloned()
            .unwrap_or_default();
        let given = scenario.values["apiKeys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            entries.len(),
            given.len(),
            "{what}: one [[keys]] per API key"
        );
        for (entry, key) in entries.iter().zip(&given) {
            assert_eq!(
                entry.get("sha256").and_then(|v| v.as_str()),
                key["sha256"].as_str()
            );
            assert_eq!(
                entry.get("tenant").and_then(|v| v.as_str()),
                key["tenant"].as_str()
            );
            assert_eq!(
                entry.get("kind").and_then(|v| v.as_str()),
                Some(key["kind"].as_str().unwrap_or("all"))
            );
        }
        if given.is_empty() {
            assert!(
                rendered.notes.contains("no API keys"),
                "{what}: NOTES warn about keys"
            );
        }
        if let Some(extra) = scenario.values["config"].as_str() {
            let extra: toml::Table = toml::from_str(extra).expect("the scenario's TOML");
            for (key, value) in extra {
                assert_eq!(config.get(&key), Some(&value), "{what}: config key {key}");
            }
        }
    }
    // A change of config rolls the pods: the checksums differ between scenarios.
    let sums: BTreeSet<String> = renders
        .good
        .iter()
        .filter(|(scenario, _)| !scenario.values["secrets"]["existingSecret"].is_string())
        .map(|(_, rendered)| {
            rendered.component("Deployment", "ingest").expect("ingest")["spec"]["template"]
                ["metadata"]["annotations"]["checksum/secret"]
                .to_string()
        })
        .collect();
    assert!(sums.len() >= 2, "the Secret's checksum follows its content");
}

/// Job names the rules expect: their group names, without the -recording/-alerts suffix.
fn rule_jobs() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(common::repository_root().join("deploy/prometheus/ais.rules.yml"))
            .expect("the rules");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("- name: "))
        .filter_map(|group| {
            group
                .strip_suffix("-recording")
                .or_else(|| group.strip_suffix("-alerts"))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn the_service_monitor_scrapes_every_component_under_the_rules_job_names() {
    let Some(renders) = renders() else { return };
    let (scenario, rendered) = renders
        .good
        .iter()
        .find(|(_, rendered)| !rendered.of_kind("ServiceMonitor").is_empty())
        .expect("a scenario with a ServiceMonitor");
    let what = scenario.name;
    let monitor = rendered.of_kind("ServiceMonitor")[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let spec = &monitor["spec"];
    assert_keys_within(
        "ServiceMonitor spec",
        spec,
        &["jobLabel", "selector", "namespaceSelector", "endpoints"],
    );
    assert_eq!(
        spec["namespaceSelector"]["matchNames"],
        json!([helm::NAMESPACE])
    );
    let job_label = spec["jobLabel"].as_str().expect("jobLabel");
    let selected: Vec<&Value> = rendered
        .of_kind("Service")
        .into_iter()
        .filter(|service| {
            selects(
                &spec["selector"]["matchLabels"],
                &service["metadata"]["labels"],
            ) && service["metadata"]["labels"].get(job_label).is_some()
        })
        .collect();
    assert_eq!(selected.len(), 3, "{what}: every component's Service");
    let jobs: BTreeSet<String> = selected
        .iter()
        .map(|service| {
            service["metadata"]["labels"][job_label]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let expected = rule_jobs();
    assert!(
        expected.is_subset(&jobs),
        "{what}: the rules expect jobs {expected:?}, the ServiceMonitor makes {jobs:?}"
    );
    for endpoint in spec["endpoints"].as_array().expect("endpoints") {
        assert_keys_within("endpoint", endpoint, &["port", "path", "interval"]);
        assert_eq!(endpoint["path"], "/metrics");
        let port = endpoint["port"].as_str().unwrap_or_default();
        for service in &selected {
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|service_port| service_port["name"] == port),
                "{what}: Service {} has no port {port}",
                name(service)
            );
        }
    }
}

/// `- alert: NAME` and `- record: NAME` entries of a rules file.
fn rule_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            line.strip_prefix("- alert: ")
                .or_else(|| line.strip_prefix("- record: "))
        })
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn the_prometheus_rule_carries_the_rules_of_deploy_prometheus() {
    let Some(renders) = renders() else { return };
    let (scenario, rendered) = renders
        .good
        .iter()
        .find(|(_, rendered)| !rendered.of_kind("PrometheusRule").is_empty())
        .expect("a scenario with a PrometheusRule");
    let rule = rendered.of_kind("PrometheusRule")[0];
    assert_eq!(
        rule["apiVersion"], "monitoring.coreos.com/v1",
        "{}",
        scenario.name
    );
    assert_keys_within("PrometheusRule spec", &rule["spec"], &["groups"]);
    let groups = &rule["spec"]["groups"];
    let rendered_names: BTreeSet<String> = groups
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter_map(|rule| rule["alert"].as_str().or(rule["record"].as_str()))
        .map(str::to_string)
        .collect();
    let file =
        std::fs::read_to_string(common::repository_root().join("deploy/prometheus/ais.rules.yml"))
            .expect("the rules");
    assert_eq!(
        rendered_names,
        rule_names(&file),
        "the chart carries every rule"
    );
    // And promtool reads them as rules (JSON is YAML).
    if !common::tool_installed("promtool", "the PrometheusRule's check") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.json");
    std::fs::write(&path, json!({ "groups": groups }).to_string()).expect("written");
    let output = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool refuses the PrometheusRule's groups: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
