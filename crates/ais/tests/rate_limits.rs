//! Per-tenant rate limits over HTTP: a request past the limit gets 429 before its body
//! is read, with Retry-After and RateLimit-* headers; another tenant is unaffected.

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn a_tenant_in_debt_gets_429_and_the_quiet_one_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        "[rate_limits.tenants.noisy]\nevents_per_second = 1\nburst = 200\n",
    )
    .expect("config");
    let config_arg = config.to_string_lossy().to_string();
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("AIS_API_KEYS", "noisy:noisy-key,quiet:quiet-key")],
        &["--config", &config_arg],
        None,
    );
    let client = client();
    let now = now_ms();
    let events = |count: usize| {
        Value::Array(
            (0..count)
                .map(|_| json!({"timestamp": now, "model": "m", "latency_ms": 1}))
                .collect(),
        )
    };
    // Within the burst, then one request that goes into debt: both accepted. The refill
    // is slow (1 event/s) so that the debt outlasts any pause of a loaded machine: the
    // refusal below does not depend on how fast this test runs.
    let started = std::time::Instant::now();
    let (status, _) = post_json(&client, &server, Some("noisy-key"), &events(50));
    assert_eq!(status, 202);
    let (status, body) = post_json(&client, &server, Some("noisy-key"), &events(450));
    assert_eq!(
        status, 202,
        "charged after decoding, so the bucket goes into debt: {body}"
    );

    // In debt: refused before the body is read (an unreadable body still gets 429).
    let response = client
        .post(server.url("/v1/events"))
        .bearer_auth("noisy-key")
        .header("content-type", "application/json")
        .body("this is not JSON")
        .send()
        .expect("answer");
    assert_eq!(response.status().as_u16(), 429);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{name} header missing"))
    };
    // 300 events of debt at 1 event/s, less what the time since the first request has
    // paid back: the bucket holds one event again in 301 s minus that time.
    let elapsed = started.elapsed().as_secs() + 1;
    let retry_after: u64 = header("retry-after").parse().expect("seconds");
    assert!(
        retry_after <= 301 && retry_after + elapsed >= 300,
        "300 events of debt at 1/s, {elapsed} s after the first request: Retry-After {retry_after}"
    );
    assert_eq!(header("ratelimit-limit"), "1");
    assert_eq!(header("ratelimit-remaining"), "0");
    let reset: u64 = header("ratelimit-reset").parse().expect("seconds");
    assert!(
        reset.abs_diff(retry_after) <= 1,
        "reset {reset}, retry after {retry_after}"
    );
    let body: Value = response.json().expect("json body");
    assert!(
        body["error"].as_str().unwrap_or("").contains("rate limit"),
        "{body}"
    );

    // The quiet tenant has no limit and is not slowed by the noisy one.
    for _ in 0..5 {
        let (status, body) = post_json(&client, &server, Some("quiet-key"), &events(500));
        assert_eq!(status, 202, "{body}");
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("ais_ingest_requests_total{code=\"429\"}"),
        "{metrics}"
    );
}
