//! Servers of one drill's own, stopped and started again by the drill while the
//! shared ones (`scripts/servers.sh`) stay up for the other tests: a Tansu broker
//! with SQLite storage (so what it held survives its restart) and a Redis with the
//! overflow's durability (AOF, fsync on every write).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateServer {
    name: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    program: &'static str,
    args: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

impl PrivateServer {
    /// `None` (after saying why) when `program` is not installed, which under
    /// `CI=true` is a failure instead.
    fn start(
        name: &'static str,
        program: &'static str,
        args: impl Fn(u16) -> Vec<String>,
    ) -> Option<Self> {
        if !installed(program) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{program} is not installed under CI=true"
            );
            eprintln!("{program} is not installed: skipping a drill that restarts {name}");
            return None;
        }
        let port = free_port();
        let mut server = PrivateServer {
            name,
            dir: tempfile::tempdir().expect("temp dir"),
            port,
            program,
            args: args(port),
            child: None,
        };
        server.start_again();
        Some(server)
    }

    /// Tansu on SQLite storage in its own directory.
    pub fn tansu() -> Option<Self> {
        Self::start("tansu", "tansu", |port| {
            let url = format!("tcp://127.0.0.1:{port}");
            vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                "--storage-engine".into(),
                "sqlite://tansu.db".into(),
            ]
        })
    }

    /// Redis as the overflow needs it: AOF with `appendfsync always`.
    pub fn redis() -> Option<Self> {
        Self::start("redis", "redis-server", |port| {
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                ".",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ]
            .map(String::from)
            .to_vec()
        })
    }

    /// `HOST:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    pub fn start_again(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log");
        let child = Command::new(self.program)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("{} starts: {error}", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + ais_testkit::PATIENCE;
        while std::net::TcpStream::connect(self.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not accept connections in {:?}: {}",
                self.name,
                ais_testkit::PATIENCE,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }

    pub fn log_tail(&self) -> String {
        super::log_tail(&self.dir.path().join("server.log"), 60)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
