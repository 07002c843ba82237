//! Budgets stop spend before it happens: `ais serve`'s gateway holds each call's
//! estimate against the tenant's `[[budgets]]` before it goes upstream, settles the
//! hold with the call's real tokens until the call's event (which names the hold)
//! commits and settles it, and answers 429 in OpenAI's format, naming the
//! budget, once the next call would pass the limit. The calls answered never add up to
//! more than the limit.

mod common;

use ais_testkit::upstream::{usage_of, Upstream};
use common::*;
use serde_json::{json, Value};

const KEY: &str = "gateway-budget-key";
const DAILY_TOKENS: u64 = 300;

#[test]
fn a_tenant_budget_refuses_the_call_that_would_pass_it_and_names_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = Upstream::start(runtime.handle());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [gateway]
            listen = "127.0.0.1:0"
            [[gateway.upstreams]]
            model = "gpt-4o"
            provider = "openai"
            urls = ["{}"]

            [[budgets]]
            tenant = "acme"
            daily_tokens = {DAILY_TOKENS}
            "#,
            upstream.base
        ),
    )
    .expect("config file");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("AIS_API_KEYS", &format!("acme:{KEY}"))],
        &["--config", &config.display().to_string()],
        None,
    );
    let gateway = server
        .gateway
        .clone()
        .expect("the ready line names the gateway");
    let client = client();
    let prompt = "hi";
    let (input, output) = usage_of(prompt);
    let mut answered = 0u64;
    let refusal = (0..100)
        .find_map(|_| {
            let response = client
                .post(format!("{gateway}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-4o", "max_tokens": 20,
                    "messages": [{"role": "user", "content": prompt}]}))
                .send()
                .expect("the gateway answers");
            let status = response.status().as_u16();
            let body: Value = response.json().expect("JSON");
            match status {
                200 => {
                    answered += 1;
                    None
                }
                other => Some((other, body)),
            }
        })
        .expect("the budget refuses a call within 100");
    let (status, body) = refusal;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "over_budget", "{body}");
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("budget acme")),
        "{body}"
    );
    assert!(answered >= 1, "the budget had room for the first calls");
    assert!(
        answered * (input + output) <= DAILY_TOKENS,
        "{answered} calls of {} tokens answered against a limit of {DAILY_TOKENS}",
        input + output
    );
    assert_eq!(
        upstream.hits(),
        answered,
        "the refused call never went upstream"
    );
    // Each answered call's event names its hold: once the events are written and
    // committed (the gateway writes them after answering), every hold is settled by
    // its event, and the refused call made none.
    let settled = || {
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .and_then(|response| response.text())
            .map_err(|error| error.to_string())?;
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("ais_budget_settlements_total{outcome=\"settled\"} ")
            })
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| "no settlement counted".to_string())
    };
    eventually(
        "every answered call's event to settle its hold",
        || match settled()? {
            count if count >= answered => Ok(()),
            count => Err(format!("{count} of {answered} settled")),
        },
    );
    assert_eq!(settled(), Ok(answered), "no more holds than calls answered");
    drop(runtime);
}
