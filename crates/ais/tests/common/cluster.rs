//! The distributed pipeline on loopback: `ais migrate`, `ais ingest`, `ais stream` and
//! `ais query` against the shared test broker (`AIS_TEST_KAFKA`) and ClickHouse
//! (`AIS_TEST_CLICKHOUSE`), isolated by a topic, a database and a consumer group of
//! their own.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Server;

pub struct Cluster {
    pub kafka: String,
    pub topic: String,
    pub group: String,
    /// ClickHouse URL with `?database=`.
    pub clickhouse: String,
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// A fresh topic of `partitions` partitions and a fresh database, migrated. `None`
    /// (after saying why) when the servers are not configured, which under `CI=true`
    /// is a failure instead.
    pub fn create(name: &str, partitions: u32) -> Option<Cluster> {
        let (Ok(kafka), Ok(clickhouse)) = (
            std::env::var("AIS_TEST_KAFKA"),
            std::env::var("AIS_TEST_CLICKHOUSE"),
        ) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "AIS_TEST_KAFKA and AIS_TEST_CLICKHOUSE must name a broker and a ClickHouse server under CI=true"
            );
            eprintln!("AIS_TEST_KAFKA or AIS_TEST_CLICKHOUSE is not set: skipping the distributed test {name}");
            return None;
        };
        let unique = format!(
            "{name}_{}_{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let cluster = Cluster {
            kafka,
            topic: format!("ais-test-{unique}"),
            group: format!("ais-stream-{unique}"),
            clickhouse: format!("{clickhouse}/?database=ais_test_{unique}"),
        };
        let output = Command::new(env!("CARGO_BIN_EXE_ais"))
            .args([
                "migrate",
                "--kafka",
                &cluster.kafka,
                "--topic",
                &cluster.topic,
            ])
            .args(["--clickhouse", &cluster.clickhouse])
            .args(["--partitions", &partitions.to_string()])
            .env("RUST_LOG", "warn")
            .output()
            .expect("ais migrate runs");
        assert!(
            output.status.success(),
            "ais migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(cluster)
    }

    fn kafka_args(&self) -> Vec<String> {
        vec![
            "--kafka".into(),
            self.kafka.clone(),
            "--topic".into(),
            self.topic.clone(),
        ]
    }

    pub fn ingest(&self, env: &[(&str, &str)]) -> Server {
        let mut args = vec!["ingest".to_string()];
        args.extend(self.kafka_args());
        args.extend(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "off"].map(String::from));
        Server::start_command(&args, env, None)
    }

    /// A stream process with its metrics listener; its log goes to `log` if given.
    pub fn stream(&self, log: Option<&Path>) -> Server {
        let mut args = vec!["stream".to_string()];
        args.extend(self.kafka_args());
        args.extend([
            "--clickhouse".into(),
            self.clickhouse.clone(),
            "--group".into(),
            self.group.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]);
        Server::start_command(&args, &[], log)
    }

    pub fn query(&self, env: &[(&str, &str)]) -> Server {
        let args = [
            "query".to_string(),
            "--clickhouse".into(),
            self.clickhouse.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        Server::start_command(&args, env, None)
    }
}
