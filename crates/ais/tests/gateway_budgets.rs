//! Budgets stop spend before it happens: `ais serve`'s gateway holds each call's
//! estimate against the tenant's `[[budgets]]` before it goes upstream, settles the
//! hold with the call's real tokens until the call's event (which names the hold)
//! commits and settles it, and answers 429 in OpenAI's format, naming the
//! budget, once the next call would pass the limit. The calls answered never add up to
//! more than the limit. A stream cut short keeps only what it is known to have spent.

mod common;

use std::io::Read;

use ais_testkit::upstream::{reply_chunks, usage_of, Mode, Upstream};
use common::*;
use serde_json::{json, Value};

const KEY: &str = "gateway-budget-key";
const DAILY_TOKENS: u64 = 300;

/// `ais serve` with its gateway in front of `upstream` (model `gpt-4o`) and a daily
/// token budget of `daily_tokens` for acme: its data dir, the server, the gateway's URL.
fn serve_with_budget(
    upstream: &Upstream,
    daily_tokens: u64,
) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n[[gateway.upstreams]]\nmodel = \"gpt-4o\"\nprovider = \"openai\"\nurls = [\"{}\"]\n\n[[budgets]]\ntenant = \"acme\"\ndaily_tokens = {daily_tokens}\n",
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
    (dir, server, gateway)
}

#[test]
fn a_tenant_budget_refuses_the_call_that_would_pass_it_and_names_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = Upstream::start(runtime.handle());
    let (_dir, server, gateway) = serve_with_budget(&upstream, DAILY_TOKENS);
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

/// The number on `/metrics` of holds settled by their call's event.
fn settled_holds(server: &Server, client: &reqwest::blocking::Client) -> Result<u64, String> {
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .and_then(|response| response.text())
        .map_err(|error| error.to_string())?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("ais_budget_settlements_total{outcome=\"settled\"} "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .ok_or_else(|| "no settlement counted".to_string())
}

#[test]
fn a_stream_the_caller_leaves_keeps_only_what_it_spent_against_the_budget() {
    const LIMIT: u64 = 100_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = Upstream::start(runtime.handle());
    upstream.set_mode(Mode::HoldAfterFirstChunk);
    let (_dir, server, gateway) = serve_with_budget(&upstream, LIMIT);
    let client = client();
    let remaining = || -> Result<u64, String> {
        let answer: Value = client
            .post(server.url("/v1/budgets/check"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-4o"}))
            .send()
            .and_then(|response| response.json())
            .map_err(|error| error.to_string())?;
        answer["budgets"][0]["remaining_tokens"]
            .as_u64()
            .ok_or_else(|| format!("no room in {answer}"))
    };
    let prompt = "leave me early";
    let body = json!({"model": "gpt-4o", "stream": true, "max_tokens": 5000,
        "messages": [{"role": "user", "content": prompt}]});
    let mut response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 200);
    let first = reply_chunks(prompt)[0].clone();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(&first) {
        let mut buffer = [0u8; 1024];
        let read = response.read(&mut buffer).expect("the stream reads");
        assert!(read > 0, "the stream is held open after its first chunk");
        seen.extend_from_slice(&buffer[..read]);
    }
    let held = remaining().expect("the budget is checked");
    assert!(
        held <= LIMIT - 5000,
        "the allowed output is held while the stream runs: {held} left"
    );
    drop(response);
    // What the stream is known to have spent (the README): the request body at one
    // token per 4 bytes, and the one content chunk relayed.
    let request_bytes = serde_json::to_vec(&body).expect("JSON").len() as u64;
    let spent = request_bytes.div_ceil(4) + 1;
    eventually("the cut stream's event to settle its hold", || {
        let settled = settled_holds(&server, &client)?;
        let left = remaining()?;
        if settled >= 1 && left == LIMIT - spent {
            Ok(())
        } else {
            Err(format!("{settled} settled, {left} tokens left of {LIMIT}"))
        }
    });
    drop(runtime);
}
