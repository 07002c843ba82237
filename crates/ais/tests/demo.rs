//! `ais serve --demo` as the quick start runs it: its alerts go to the API and the
//! dashboard, not one WARN line each into the terminal that shows the summary.

mod common;

use common::*;

/// The sum of `ais_alerts_total` over its labels, from `/metrics`.
fn alerts_counted(client: &reqwest::blocking::Client, server: &Server) -> Result<f64, String> {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .map_err(|error| error.to_string())?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("ais_alerts_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[test]
fn the_demo_keeps_its_alerts_out_of_the_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("RUST_LOG", "info")],
        &["--demo"],
        Some(&log),
    );
    let client = client();
    // The evaluator counts each alert, then would log it, before the next one: with
    // two counted, the first has been through the place that logs.
    let counted = eventually("the demo's alerts to be counted", || {
        let counted = alerts_counted(&client, &server)?;
        if counted >= 2.0 {
            Ok(counted)
        } else {
            Err(format!("{counted} alerts"))
        }
    });
    let (status, body) = get_json(&client, &server, None, "/v1/anomalies");
    assert_eq!(status, 200, "{body}");
    let anomalies = body["anomalies"].as_array().map_or(0, Vec::len);
    assert!(anomalies > 0, "the demo's anomalies are in the API: {body}");

    let said = std::fs::read_to_string(&log).expect("the server's log");
    let alert_lines: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("ais::alert"))
        .collect();
    assert!(
        alert_lines.is_empty(),
        "{counted} alerts counted, {} logged into the terminal:\n{}",
        alert_lines.len(),
        alert_lines.join("\n")
    );
    assert!(
        said.contains("ais serve is ready"),
        "the log is the server's (info lines present): {said}"
    );
}
