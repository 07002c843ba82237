//! The dashboard in a real browser: `ais serve --demo` on port 0, then headless
//! Chromium (Debian's, driven by playwright-core from the dashboard's npm packages)
//! runs `crates/serve/dashboard/test/browser.mjs` against it. Screenshots go to
//! `AIS_ARTIFACTS_DIR`, else `<target dir>/ais-artifacts`.
//!
//! Without node, Chromium or playwright-core the test says why and passes, except
//! under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const DEMO_READ_KEY: &str = "dashboard-test-demo-read";
const OTHER_KEY: &str = "dashboard-test-other";

fn dashboard_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../serve/dashboard")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AIS_ARTIFACTS_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/ais → target/ais-artifacts
    let binary = Path::new(env!("CARGO_BIN_EXE_ais"));
    binary
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("ais-artifacts"))
        .unwrap_or_else(|| std::env::temp_dir().join("ais-artifacts"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !matches!(node, Ok(ref output) if output.status.success()) {
        return Some("node is not installed".to_string());
    }
    if !chromium().is_file() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    if !dashboard_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return Some(format!(
            "playwright-core is not installed in {} (npm ci there)",
            dashboard_dir().display()
        ));
    }
    None
}

/// `true` when the test may run; panics under CI=true when it cannot.
fn tools_present() -> bool {
    match missing_tools() {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|value| value == "true") => {
            panic!("the browser test cannot run under CI=true: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping the browser test: {reason}");
            false
        }
    }
}

/// Waits until the tenant's summary lists models, the stream has caught up and
/// nothing new appears; returns the models.
fn demo_models(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
) -> Vec<String> {
    let deadline = Instant::now() + ais_testkit::PATIENCE;
    let mut previous: Vec<String> = Vec::new();
    loop {
        server.wait_caught_up(client);
        let (status, summary) = get_json(client, server, key, "/v1/query/summary");
        assert_eq!(status, 200, "{summary}");
        let models: Vec<String> = summary["models"]
            .as_array()
            .map(|models| {
                models
                    .iter()
                    .filter_map(|entry| entry["model"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !models.is_empty() && models == previous {
            return models;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's models did not show up: {summary}"
        );
        previous = models;
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn run_browser(args: &[&str]) {
    let script = dashboard_dir().join("test/browser.mjs");
    let output = Command::new("node")
        .arg(&script)
        .args(args)
        .env("CHROMIUM", chromium())
        .current_dir(dashboard_dir())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "browser checks failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[test]
fn the_dashboard_shows_the_demo_to_its_tenant_only_and_asks_for_no_key_when_there_are_none() {
    if !tools_present() {
        return;
    }
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts directory");
    println!("screenshots: {}", artifacts.display());
    let client = client();

    // Keys configured: the demo writes tenant `demo`; a read key of `demo` sees it and
    // a key of `other` sees nothing of it.
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = format!("demo:{DEMO_READ_KEY}:read,other:{OTHER_KEY}");
    let server = Server::start_with(
        dir.path(),
        &[("AIS_API_KEYS", keys.as_str())],
        &[
            "--demo",
            "--demo-rate",
            "5",
            "--evaluate-interval-ms",
            "500",
        ],
        None,
    );
    let models = demo_models(&client, &server, Some(DEMO_READ_KEY));
    assert!(
        models.len() >= 3,
        "the demo runs several models: {models:?}"
    );
    let (status, other): (u16, Value) =
        get_json(&client, &server, Some(OTHER_KEY), "/v1/query/summary");
    assert_eq!(status, 200);
    assert_eq!(other["models"], Value::Array(vec![]), "{other}");
    let artifacts_arg = artifacts.display().to_string();
    let models_arg = models.join(",");
    run_browser(&[
        "--url",
        &server.base,
        "--artifacts",
        &artifacts_arg,
        "--expect-models",
        &models_arg,
        "--key",
        DEMO_READ_KEY,
        "--other-key",
        OTHER_KEY,
        "--label",
        "keys",
    ]);
    assert!(server.stop().success());

    // No keys: the demo writes tenant `default` and the page never asks for a key.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &[], &["--demo", "--demo-rate", "5"], None);
    let models = demo_models(&client, &server, None);
    let models_arg = models.join(",");
    run_browser(&[
        "--url",
        &server.base,
        "--artifacts",
        &artifacts_arg,
        "--expect-models",
        &models_arg,
        "--no-prompt",
        "--label",
        "open",
    ]);
    assert!(server.stop().success());
    println!("screenshots saved in {}", artifacts.display());
}
