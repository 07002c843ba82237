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
        Self::create_with(name, partitions, std::env::var("AIS_TEST_CLICKHOUSE").ok())
    }

    /// Like [`Cluster::create`], on the ClickHouse server at `clickhouse`.
    pub fn create_with(name: &str, partitions: u32, clickhouse: Option<String>) -> Option<Cluster> {
        Self::create_on(
            name,
            partitions,
            std::env::var("AIS_TEST_KAFKA").ok(),
            clickhouse,
        )
    }

    /// Like [`Cluster::create`], on the broker at `kafka` and the ClickHouse server at
    /// `clickhouse`.
    pub fn create_on(
        name: &str,
        partitions: u32,
        kafka: Option<String>,
        clickhouse: Option<String>,
    ) -> Option<Cluster> {
        let (Some(kafka), Some(clickhouse)) = (kafka, clickhouse) else {
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

    /// The same topic and database, read by the consumer group `group` instead.
    pub fn in_group(&self, group: &str) -> Cluster {
        Cluster {
            kafka: self.kafka.clone(),
            topic: self.topic.clone(),
            group: group.to_string(),
            clickhouse: self.clickhouse.clone(),
        }
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
        self.stream_with(&[], log)
    }

    /// Like [`Cluster::stream`], with extra environment (`AIS_CONFIG`, …).
    pub fn stream_with(&self, env: &[(&str, &str)], log: Option<&Path>) -> Server {
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
        // AIS_TEST_STREAM_LOG=info (or debug) makes the stream processes talk.
        let level = std::env::var("AIS_TEST_STREAM_LOG").unwrap_or_else(|_| "warn".into());
        let mut all_env = vec![("RUST_LOG", level.as_str())];
        all_env.extend_from_slice(env);
        Server::start_command(&args, &all_env, log)
    }

    /// `ais query` with `--kafka` too, so `/v1/dlq` reads the dead-letter topic and
    /// replays into the events topic.
    pub fn query_with_kafka(&self, env: &[(&str, &str)]) -> Server {
        let mut args = vec![
            "query".to_string(),
            "--clickhouse".into(),
            self.clickhouse.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(self.kafka_args());
        Server::start_command(&args, env, None)
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

impl Cluster {
    /// Runs SQL on the cluster's ClickHouse database; the answer as tab-separated rows.
    pub fn clickhouse_rows(
        &self,
        client: &reqwest::blocking::Client,
        sql: &str,
    ) -> Vec<Vec<String>> {
        let response = client
            .post(&self.clickhouse)
            .body(format!("{sql} FORMAT TabSeparated"))
            .send()
            .expect("ClickHouse answers");
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert!(status.is_success(), "ClickHouse refused {sql}: {text}");
        text.lines()
            .map(|line| line.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// Records in the log, summed over the topic's partitions (their end offsets).
    pub fn log_end_records(&self) -> Result<u64, String> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let timeout = std::time::Duration::from_secs(5);
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.kafka)
            .create()
            .map_err(|error| error.to_string())?;
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|error| error.to_string())?;
        let mut records = 0;
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(&self.topic, partition.id(), timeout)
                    .map_err(|error| error.to_string())?;
                records += u64::try_from(high).unwrap_or(0);
            }
        }
        Ok(records)
    }

    /// Offsets the store has committed, summed over partitions.
    pub fn committed_records(&self, client: &reqwest::blocking::Client) -> u64 {
        self.clickhouse_rows(
            client,
            &format!(
                "SELECT sum(next) FROM (SELECT max(next_offset) AS next FROM ({STANDING_BATCHES}) GROUP BY log_partition)"
            ),
        )
        .first()
        .and_then(|row| row.first())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
    }

    /// Per (tenant, model, minute): requests, errors, input and output tokens, cost in
    /// micro-dollars, as the store's deduplicated rollups hold them.
    pub fn stored_rollups(&self, client: &reqwest::blocking::Client) -> Rollups {
        self.clickhouse_rows(
            client,
            &format!(
                "SELECT tenant, model, toInt64(toUnixTimestamp(minute)) * 1000, sum(requests), sum(errors),
                        sum(input_tokens), sum(output_tokens), sum(cost_micros)
                 FROM rollups FINAL
                 WHERE tenant != ''
                   AND (log_partition, first_offset, next_offset, written_ms) IN ({STANDING_BATCHES})
                 GROUP BY tenant, model, minute"
            ),
        )
        .into_iter()
        .map(|row| {
            let number = |index: usize| row[index].parse::<u64>().expect("a number");
            (
                (row[0].clone(), row[1].clone(), row[2].parse::<i64>().expect("a minute")),
                [number(3), number(4), number(5), number(6), number(7)],
            )
        })
        .collect()
    }

    /// The ledger summed over every tenant and hour: [accepted, committed, duplicates,
    /// dead_lettered], counting only the rows of standing batches.
    pub fn stored_ledger(&self, client: &reqwest::blocking::Client) -> [u64; 4] {
        let rows = self.clickhouse_rows(
            client,
            &format!(
                "SELECT sum(accepted), sum(committed), sum(duplicates), sum(dead_lettered)
                 FROM ledger FINAL
                 WHERE (log_partition, first_offset, next_offset, written_ms) IN ({STANDING_BATCHES})"
            ),
        );
        let number = |index: usize| rows[0][index].parse::<u64>().expect("a number");
        [number(0), number(1), number(2), number(3)]
    }

    /// Checks the ledger once the stream has committed everything: every record read
    /// accepted once (as many as the positions passed), `events` committed, the rest
    /// dropped as duplicates, nothing dead-lettered; the usage ledger holds the same
    /// `events` once in each scope; and `ais verify --clickhouse` finds every hour
    /// balanced.
    pub fn assert_ledger_accounts(&self, client: &reqwest::blocking::Client, events: u64) {
        let records = self.committed_records(client);
        assert_eq!(
            self.stored_ledger(client),
            [records, events, records.saturating_sub(events), 0],
            "ledger: accepted, committed, duplicates, dead-lettered"
        );
        // The usage ledger: each of its default scopes holds every committed event once,
        // so each sums to the same requests and money.
        let usage = self.clickhouse_rows(
            client,
            &format!(
                "SELECT scope, sum(requests), sum(cost_micros)
                 FROM usage FINAL
                 WHERE (log_partition, first_offset, next_offset, written_ms) IN ({STANDING_BATCHES})
                 GROUP BY scope ORDER BY scope"
            ),
        );
        let scopes: Vec<&str> = usage.iter().map(|row| row[0].as_str()).collect();
        assert_eq!(
            scopes,
            ["key", "model", "tenant", "user_id"],
            "usage scopes"
        );
        for row in &usage {
            assert_eq!(
                row[1],
                events.to_string(),
                "usage of scope {}: requests",
                row[0]
            );
            assert_eq!(row[2], usage[0][2], "usage of scope {}: cost", row[0]);
        }
        let verified = std::process::Command::new(env!("CARGO_BIN_EXE_ais"))
            .args(["verify", "--clickhouse", &self.clickhouse])
            .output()
            .expect("ais verify runs");
        assert!(verified.status.success(), "{verified:?}");
    }

    /// Raw events the store holds, each counted once.
    pub fn stored_events(&self, client: &reqwest::blocking::Client) -> u64 {
        self.clickhouse_rows(client, "SELECT count() FROM events FINAL")[0][0]
            .parse()
            .expect("a count")
    }
}

/// The batches of `rollups` that count, as (partition, first offset, next offset,
/// claim): those whose marker row exists (its commit INSERT landed whole) and that no
/// newer claim starting at or before the batch's first offset voids. The store's rules,
/// restated here so the harness does not take the store's word for it.
const STANDING_BATCHES: &str = "SELECT log_partition, first_offset, next_offset, written_ms
     FROM rollups WHERE tenant = '' AND model = ''
       AND (log_partition, first_offset, written_ms) NOT IN
           (SELECT log_partition, first_offset, written_ms
            FROM (SELECT log_partition, first_offset, written_ms FROM rollups WHERE tenant = '' AND model = '')
            ALL INNER JOIN (SELECT log_partition, claim, start_offset FROM claims) USING log_partition
            WHERE claim > written_ms AND start_offset <= first_offset)";

/// Per (tenant, model, minute): [requests, errors, input tokens, output tokens, cost µ$].
pub type Rollups = std::collections::BTreeMap<(String, String, i64), [u64; 5]>;

/// Events of `tenant` spread over the last `span_ms`, with client ids `{tenant}-{i}`
/// and distinct timestamps; their exact rollups are added to `expected`.
pub fn events_with_rollups(
    rng: &mut rand::rngs::SmallRng,
    tenant: &str,
    models: &[&str],
    count: usize,
    now: i64,
    span_ms: i64,
    expected: &mut Rollups,
) -> Vec<serde_json::Value> {
    use rand::Rng;
    let step = (span_ms / count.max(1) as i64).max(1);
    (0..count)
        .map(|i| {
            let model = models[rng.random_range(0..models.len())];
            let timestamp = now - span_ms + i as i64 * step + rng.random_range(0..step);
            let failed = rng.random_bool(0.05);
            let input = rng.random_range(0..4_000u64);
            let output = rng.random_range(0..1_500u64);
            let cost_micros = rng.random_range(0..3_000_000u64);
            let entry = expected
                .entry((
                    tenant.to_string(),
                    model.to_string(),
                    super::minute_floor(timestamp),
                ))
                .or_default();
            entry[0] += 1;
            entry[1] += u64::from(failed);
            entry[2] += input;
            entry[3] += output;
            entry[4] += cost_micros;
            let mut event = serde_json::json!({
                "event_id": format!("{tenant}-{i}"),
                "timestamp": timestamp,
                "model": model,
                "latency_ms": rng.random_range(5.0..9_000.0),
                "ttft_ms": rng.random_range(1.0..800.0),
                "input_tokens": input,
                "output_tokens": output,
                "cost_usd": cost_micros as f64 / 1e6,
                "user_id": format!("user-{}", rng.random_range(0..40)),
                "status": if failed { "error" } else { "ok" },
            });
            if failed {
                event["error_type"] = serde_json::json!("rate_limited");
            }
            event
        })
        .collect()
}

/// POSTs `events` in requests of `per_request`; every one must be accepted whole.
pub fn send_all(
    client: &reqwest::blocking::Client,
    server: &Server,
    key: Option<&str>,
    events: &[serde_json::Value],
    per_request: usize,
) {
    for chunk in events.chunks(per_request) {
        let (status, body) = super::post_json(
            client,
            server,
            key,
            &serde_json::Value::Array(chunk.to_vec()),
        );
        assert_eq!(status, 202, "ingest answered {status}: {body}");
        assert_eq!(body["accepted"], chunk.len(), "{body}");
    }
}

/// A ClickHouse server of one test's own, for drills that stop and restart it (the
/// shared one must stay up for the other tests). Same config as `scripts/servers.sh`.
pub struct PrivateClickhouse {
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
    child: Option<std::process::Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl PrivateClickhouse {
    /// `None` (after saying why) when `clickhouse-server` is not installed, which under
    /// `CI=true` is a failure instead.
    pub fn start() -> Option<PrivateClickhouse> {
        // 18.16 has no --version: look for the binary on PATH.
        let installed = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("clickhouse-server").is_file())
        });
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "clickhouse-server is not installed under CI=true"
            );
            eprintln!("clickhouse-server is not installed: skipping a drill that restarts it");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ci");
        let config = std::fs::read_to_string(templates.join("clickhouse-config.xml"))
            .expect("config template")
            .replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(dir.path().join("config.xml"), config).expect("config");
        std::fs::copy(
            templates.join("clickhouse-users.xml"),
            dir.path().join("users.xml"),
        )
        .expect("users");
        let mut server = PrivateClickhouse {
            dir,
            http_port: free_port(),
            tcp_port: free_port(),
            child: None,
        };
        server.start_again();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again) on the same ports and data, and waits until it answers.
    pub fn start_again(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .arg("--")
            .arg(format!("--http_port={}", self.http_port))
            .arg(format!("--tcp_port={}", self.tcp_port))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("clickhouse-server starts");
        self.child = Some(child);
        let client = super::client();
        let deadline = std::time::Instant::now() + ais_testkit::PATIENCE;
        while client
            .get(format!("{}/ping", self.url()))
            .send()
            .map_or(true, |response| !response.status().is_success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "ClickHouse did not start in {:?}",
                ais_testkit::PATIENCE
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// SIGKILL and wait for the exit: the server is gone at once. (A SIGTERM lets it
    /// keep serving open connections while it shuts down, so a client that holds one
    /// would see no outage at all.)
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateClickhouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
