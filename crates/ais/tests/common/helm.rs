//! The Helm chart rendered by Helm's own engine: `scripts/ci/helm_chart.py`, run by the
//! interpreter in `AIS_HELM_PYTHON` (a venv with helm-python-sdk and
//! kubernetes-validate, made by `.ci/run`), renders, lints and validates each scenario
//! offline and answers with the manifests as JSON.

use std::path::PathBuf;

use serde_json::{json, Value};

pub const RELEASE: &str = "ais";
pub const NAMESPACE: &str = "observability";
/// The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
pub const KUBE_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

pub fn chart_dir() -> PathBuf {
    super::repository_root().join("deploy/helm/infra-ai-streaming")
}

/// The venv's Python; `None` (after saying why) when `AIS_HELM_PYTHON` is unset, which
/// under `CI=true` is a failure instead.
pub fn python() -> Option<String> {
    match std::env::var("AIS_HELM_PYTHON") {
        Ok(python) => Some(python),
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "AIS_HELM_PYTHON is not set under CI=true (.ci/run makes /var/tmp/ais-helm-venv)"
            );
            eprintln!("AIS_HELM_PYTHON is not set: the Helm chart is not rendered");
            None
        }
    }
}

/// A tool installed beside the venv's Python (`docker-compose`, `hadolint`).
pub fn venv_tool(python: &str, name: &str) -> PathBuf {
    PathBuf::from(python)
        .parent()
        .expect("the interpreter is in a bin directory")
        .join(name)
}

/// One scenario's render.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub name: String,
    /// Why the render failed (a template `fail`, or the values schema).
    pub error: Option<String>,
    pub lint: Value,
    pub notes: String,
    pub documents: Vec<Value>,
    /// kubernetes-validate's verdict per document and Kubernetes version.
    pub validation: Vec<Value>,
}

impl Rendered {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.documents
            .iter()
            .filter(|document| document["kind"] == kind)
            .collect()
    }

    /// The object of `kind` for one component (`app.kubernetes.io/component`).
    pub fn component(&self, kind: &str, component: &str) -> Option<&Value> {
        self.of_kind(kind).into_iter().find(|document| {
            document["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
    }

    pub fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|document| document["metadata"]["name"] == name)
    }
}

/// Renders each `(name, values)` scenario.
pub fn render(python: &str, scenarios: &[(String, Value)]) -> Vec<Rendered> {
    let request = json!({
        "chart": chart_dir(),
        "release": RELEASE,
        "namespace": NAMESPACE,
        "kube_versions": KUBE_VERSIONS,
        "scenarios": scenarios
            .iter()
            .map(|(name, values)| json!({"name": name, "values": values}))
            .collect::<Vec<_>>(),
    });
    let output = super::run_script(
        python,
        "scripts/ci/helm_chart.py",
        request.to_string().as_bytes(),
    );
    assert!(
        output.status.success(),
        "scripts/ci/helm_chart.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON from the render");
    answer["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|scenario| Rendered {
            name: scenario["name"].as_str().unwrap_or_default().to_string(),
            error: scenario["error"].as_str().map(str::to_string),
            lint: scenario["lint"].clone(),
            notes: scenario["notes"].as_str().unwrap_or_default().to_string(),
            documents: scenario["documents"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|document| document["manifest"].clone())
                .collect(),
            validation: scenario["validation"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })
        .collect()
}

/// The config file the chart's Secret carries.
pub fn config_toml(rendered: &Rendered) -> String {
    rendered
        .of_kind("Secret")
        .into_iter()
        .find_map(|secret| secret["stringData"]["config.toml"].as_str())
        .unwrap_or_else(|| panic!("{}: no Secret with config.toml", rendered.name))
        .to_string()
}
