//! The container image and the compose stack, checked without a Docker engine: the
//! Dockerfile passes hadolint and builds the binary with `scripts/build-release.sh`,
//! the command CI runs (`.ci/run`); the compose file is valid for Docker Compose itself
//! (`docker compose config`, from the `docker-compose` binary the helm venv carries),
//! runs `ais` with flags and variables the binary declares, starts the pipeline after
//! its migration, and its Prometheus configuration (with the rules) passes promtool.
//!
//! The tools come from the venv of `AIS_HELM_PYTHON` (hadolint, docker-compose) and
//! Debian's `prometheus` (promtool); without them those checks say why and pass, except
//! under `CI=true`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::repository_root;
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(repository_root().join(path))
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Dockerfile instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                all.push(std::mem::take(&mut current));
            }
        }
    }
    all
}

#[test]
fn the_image_builds_with_the_ci_build_command_and_runs_as_non_root() {
    let dockerfile = instructions(&read("Dockerfile"));
    let stages: Vec<&String> = dockerfile
        .iter()
        .filter(|i| i.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    let build = dockerfile
        .iter()
        .find(|i| i.starts_with("RUN ") && i.contains("scripts/build-release.sh"))
        .expect("the build stage runs scripts/build-release.sh");
    let out_dir = build
        .split("scripts/build-release.sh release ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!("the image builds the release profile into a directory: {build}")
        });
    let copy = dockerfile
        .iter()
        .find(|i| i.starts_with("COPY --from="))
        .expect("the runtime stage copies the binary");
    assert!(
        copy.contains(&format!("{out_dir}/ais")),
        "the runtime stage copies what the build wrote: {copy}"
    );
    let runtime = &dockerfile[dockerfile
        .iter()
        .position(|i| i == stages[1])
        .expect("stage")..];
    let user = runtime
        .iter()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .expect("a numeric USER");
    assert_ne!(uid, 0, "the image runs as a non-root user");
    let entrypoint = runtime
        .iter()
        .find_map(|i| i.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let binary = copy
        .split_whitespace()
        .last()
        .expect("the COPY destination");
    assert_eq!(
        entrypoint,
        format!("[\"{binary}\"]"),
        "one image for every command"
    );

    // CI runs the same script (so it cannot rot), on the profile its tests use.
    let ci = read(".ci/run");
    assert!(
        ci.lines()
            .map(str::trim)
            .any(|line| !line.starts_with('#') && line.contains("scripts/build-release.sh")),
        ".ci/run calls scripts/build-release.sh"
    );
    let script = read("scripts/build-release.sh");
    assert!(
        script.contains("cargo build --profile \"$profile\" --locked -p ais"),
        "the script builds the ais package with the locked dependencies"
    );
    for ignored in ["target", ".git"] {
        assert!(
            read(".dockerignore")
                .lines()
                .any(|line| line.trim() == ignored),
            ".dockerignore keeps {ignored} out of the build context"
        );
    }

    let Some(python) = common::helm::python() else {
        return;
    };
    let output = Command::new(common::helm::venv_tool(&python, "hadolint"))
        .arg(repository_root().join("Dockerfile"))
        .current_dir(repository_root())
        .output()
        .expect("hadolint runs");
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `docker compose config` of the stack with every profile, as JSON.
fn compose_config(python: &str) -> Value {
    let output = Command::new(common::helm::venv_tool(python, "docker-compose"))
        .args([
            "-f",
            "deploy/compose/compose.yaml",
            "--profile",
            "loadgen",
            "config",
            "--format",
            "json",
        ])
        .current_dir(repository_root())
        .env_remove("AIS_API_KEYS")
        .output()
        .expect("docker-compose runs");
    assert!(
        output.status.success(),
        "docker compose config refuses the stack:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON config")
}

#[test]
fn the_compose_stack_is_valid_and_runs_ais_as_it_expects() {
    let Some(python) = common::helm::python() else {
        return;
    };
    let config = compose_config(&python);
    let services = config["services"].as_object().expect("services");
    for wanted in [
        "kafka",
        "clickhouse",
        "redis",
        "prometheus",
        "grafana",
        "migrate",
        "ingest",
        "stream",
        "query",
        "loadgen",
    ] {
        assert!(services.contains_key(wanted), "no {wanted} service");
    }
    // KRaft: the broker is its own controller, no ZooKeeper.
    assert!(!services.keys().any(|name| name.contains("zookeeper")));
    assert_eq!(
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "Kafka in KRaft mode"
    );

    let read_by_some_command: BTreeSet<String> = common::cli::COMMANDS
        .iter()
        .flat_map(|command| common::cli::variables(command))
        .collect();
    let image = &services["ingest"]["image"];
    let mut commands = BTreeSet::new();
    for (name, service) in services {
        let command = common::json_strings(&service["command"]);
        let Some(subcommand) = command.first() else {
            continue;
        };
        if service["image"] != *image {
            continue;
        }
        commands.insert(subcommand.clone());
        assert!(
            common::cli::COMMANDS.contains(&subcommand.as_str()),
            "{name} runs `ais {command:?}`"
        );
        let flags = common::cli::flags(subcommand);
        for flag in command.iter().filter(|arg| arg.starts_with("--")) {
            assert!(
                flags.contains(flag),
                "{name}: `ais {subcommand}` has no {flag}"
            );
        }
        for variable in service["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            // One environment is shared by every ais service: some command must read it.
            if variable.starts_with("AIS_") {
                assert!(
                    read_by_some_command.contains(variable),
                    "{name}: nothing reads {variable}"
                );
            }
        }
    }
    assert_eq!(
        commands,
        ["ingest", "loadgen", "migrate", "query", "stream"]
            .map(String::from)
            .into(),
        "one image for every ais service"
    );
    assert_eq!(
        services["stream"]["deploy"]["replicas"], 2,
        "two stream members"
    );
    assert_eq!(
        common::json_strings(&services["loadgen"]["profiles"]),
        ["loadgen"]
    );
    assert_eq!(services["migrate"]["restart"], "no", "migrate runs once");
    for dependency in ["kafka", "clickhouse"] {
        assert_eq!(
            services["migrate"]["depends_on"][dependency]["condition"], "service_healthy",
            "migrate waits for {dependency}"
        );
    }
    for service in ["ingest", "stream", "query"] {
        assert_eq!(
            services[service]["depends_on"]["migrate"]["condition"],
            "service_completed_successfully",
            "{service} starts after the migration"
        );
    }

    // Prometheus scrapes each ais service on the port it listens on, under the job
    // names the rules and dashboards expect.
    let prometheus_yml = read("deploy/compose/prometheus.yml");
    for (job, service) in [
        ("ais-ingest", "ingest"),
        ("ais-stream", "stream"),
        ("ais-query", "query"),
    ] {
        let command = common::json_strings(&services[service]["command"]);
        let listen = command
            .iter()
            .position(|arg| arg == "--listen")
            .and_then(|at| command.get(at + 1))
            .unwrap_or_else(|| panic!("{service} has no --listen"));
        let port = listen.rsplit(':').next().expect("a port");
        let section = prometheus_yml
            .split("- job_name: ")
            .find(|section| section.starts_with(job))
            .unwrap_or_else(|| panic!("no scrape job {job}"));
        assert!(
            section.contains(&format!("names: [{service}]"))
                && section.contains(&format!("port: {port}")),
            "job {job} scrapes {service}:{port}: {section}"
        );
    }

    // Mounted files exist in the repository.
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            if volume["type"] == "bind" {
                let source = volume["source"].as_str().unwrap_or_default();
                assert!(
                    std::path::Path::new(source).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            }
        }
    }
}

#[test]
fn the_compose_prometheus_config_and_its_rules_pass_promtool() {
    if !common::tool_installed("promtool", "the compose Prometheus config check") {
        return;
    }
    // The layout of the prometheus container: the config beside rules/ (the mounted
    // deploy/prometheus).
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        repository_root().join("deploy/compose/prometheus.yml"),
        dir.path().join("prometheus.yml"),
    )
    .expect("config copied");
    std::os::unix::fs::symlink(
        repository_root().join("deploy/prometheus"),
        dir.path().join("rules"),
    )
    .expect("rules linked");
    let output = Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool check config:\n{said}");
    assert!(
        said.contains("1 rule files found"),
        "the rules are loaded:\n{said}"
    );
}
