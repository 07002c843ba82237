//! A real Prometheus (Debian's `prometheus`) of one test's own, on a free loopback port,
//! scraping running `ais` processes every second and optionally evaluating rule files.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

pub struct Prometheus {
    child: Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` (after saying why) when `prometheus` is not installed, which under
    /// `CI=true` is a failure instead. `targets`: job name → `HOST:PORT` addresses.
    pub fn start(targets: &[(&str, Vec<String>)]) -> Option<Prometheus> {
        Self::start_with_rules(targets, &[])
    }

    /// Like [`Prometheus::start`], evaluating `rule_files` every second.
    pub fn start_with_rules(
        targets: &[(&str, Vec<String>)],
        rule_files: &[PathBuf],
    ) -> Option<Prometheus> {
        if !super::tool_installed("prometheus", "the checks against Prometheus") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for file in rule_files {
                config.push_str(&format!("  - \"{}\"\n", file.display()));
            }
        }
        config.push_str("scrape_configs:\n");
        for (job, addresses) in targets {
            let quoted: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                quoted.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = super::client();
        let deadline = Instant::now() + ais_testkit::PATIENCE;
        while client
            .get(format!("{}/-/ready", prometheus.base))
            .send()
            .map_or(true, |response| !response.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus was not ready in {:?}: {}",
                ais_testkit::PATIENCE,
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(prometheus)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The series an instant query returns.
    pub fn query(&self, client: &reqwest::blocking::Client, expr: &str) -> Vec<Value> {
        let body: Value = client
            .post(format!("{}/api/v1/query", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("query={}", form_encoded(expr)))
            .send()
            .and_then(|response| response.json())
            .unwrap_or(Value::Null);
        assert_ne!(body["status"], "error", "Prometheus refused {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `data` of a GET on an API path such as `/api/v1/rules`.
    pub fn api(&self, client: &reqwest::blocking::Client, path: &str) -> Value {
        let body: Value = client
            .get(format!("{}{path}", self.base))
            .send()
            .and_then(|response| response.json())
            .unwrap_or(Value::Null);
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` percent-encoded for a form body.
pub fn form_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// `HOST:PORT` of a running server, as a scrape target.
pub fn host_port(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}
