//! The usage ledger over real HTTP on one node: `/v1/usage` per user, model, tenant and
//! a listed attribute, over two days, exact against what was sent (duplicates sent
//! twice count once), ranked with `other`, as a CSV export, tenant-scoped, and a 400
//! that names what is wrong.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::Digest;

const DAY_MS: i64 = 86_400_000;
const KEYS: &str = "acme:acme-key,globex:globex-key";
/// acme's second key, configured by digest with a name.
const NAMED_KEY: &str = "acme-named-key";
/// Events per request.
const CHUNK: usize = 80;

/// The key that sends request `index` of `tenant`: acme alternates its two keys.
fn sender(tenant: &str, index: usize) -> &'static str {
    match (tenant, index % 2) {
        ("acme", 0) => "acme-key",
        ("acme", _) => NAMED_KEY,
        _ => "globex-key",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Events of `tenant`, half of them yesterday: users, customers and models that
/// repeat, some events without a user or a customer.
fn events(tenant: &str, now: i64) -> Vec<Value> {
    (0..240)
        .map(|n: i64| {
            let model = ["m-one", "m-two", "m-three"][(n % 3) as usize];
            let mut event = json!({
                "event_id": format!("{tenant}-{n}"),
                "timestamp": if n % 2 == 0 { now - DAY_MS } else { now } - n,
                "model": model,
                "latency_ms": 10 + n,
                "input_tokens": 10 * n + 1,
                "output_tokens": 2,
                "cost_usd": (17 * n + 3) as f64 / 1e6,
            });
            if n % 11 != 0 {
                event["user_id"] = json!(format!("{tenant}-u{}", n % 23));
            }
            if n % 4 != 0 {
                event["attributes"] = json!({"customer": format!("c{}", n % 5)});
            }
            event
        })
        .collect()
}

/// What `events` used, per value of `scope`, from the events themselves.
fn tally(tenant: &str, events: &[Value], scope: &str) -> UsageTally {
    let mut tally = UsageTally::new();
    for event in events {
        let value = match scope {
            "tenant" => Some(tenant.to_string()),
            "model" => event["model"].as_str().map(str::to_string),
            "user_id" => event["user_id"].as_str().map(str::to_string),
            _ => event["attributes"]["customer"].as_str().map(str::to_string),
        };
        let tokens = event["input_tokens"].as_u64().expect("tokens");
        let micros = (event["cost_usd"].as_f64().expect("cost") * 1e6).round() as u64;
        let entry = tally.entry(value).or_default();
        entry.0 += 1;
        entry.1 += tokens;
        entry.2 += micros;
    }
    tally
}

#[test]
fn usage_per_scope_is_exact_ranked_exported_and_tenant_scoped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ais.toml");
    // A second key of acme, named in the file: usage per key calls it by its name, and
    // the unnamed one by an id derived from its digest.
    let named_digest = hex(&sha2::Sha256::digest(NAMED_KEY.as_bytes()));
    std::fs::write(
        &config,
        format!(
            "[usage]\nattributes = [\"customer\"]\n\n[[keys]]\ntenant = \"acme\"\nsha256 = \"{named_digest}\"\nname = \"batch-jobs\"\n"
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &[("AIS_API_KEYS", KEYS)],
        &["--config", &config.display().to_string()],
        None,
    );
    let client = client();
    let now = now_ms();
    let sent = [
        ("acme", events("acme", now)),
        ("globex", events("globex", now)),
    ];
    for (tenant, events) in &sent {
        // A client retrying today's events among the first 30: they count once, under
        // the key that sent them first (the log keeps the order requests were
        // acknowledged in). (Ids of yesterday are past the dedup window; the
        // stream merges those unchecked.)
        let retried: Vec<Value> = events[..30].iter().skip(1).step_by(2).cloned().collect();
        for (index, chunk) in events
            .chunks(CHUNK)
            .chain(std::iter::once(&retried[..]))
            .enumerate()
        {
            let key = sender(tenant, index);
            let (status, body) =
                post_json(&client, &server, Some(key), &Value::Array(chunk.to_vec()));
            assert_eq!(status, 202, "{body}");
        }
    }
    server.wait_caught_up(&client);

    let range = (now - DAY_MS - 1_000, now);
    for (tenant, events) in &sent {
        let key = format!("{tenant}-key");
        for scope in ["user_id", "model", "tenant", "attr.customer"] {
            assert_usage(
                &client,
                &server,
                Some(&key),
                scope,
                range,
                &tally(tenant, events, scope),
            );
        }
        // Per key: each event under the key of the request that carried it.
        let mut by_key = UsageTally::new();
        for (n, event) in events.iter().enumerate() {
            let label = match sender(tenant, n / CHUNK) {
                NAMED_KEY => "batch-jobs".to_string(),
                plain => format!(
                    "k-{}",
                    &hex(&sha2::Sha256::digest(sha2::Sha256::digest(
                        plain.as_bytes()
                    )))[..12]
                ),
            };
            let entry = by_key.entry(Some(label)).or_default();
            entry.0 += 1;
            entry.1 += event["input_tokens"].as_u64().expect("tokens");
            entry.2 += (event["cost_usd"].as_f64().expect("cost") * 1e6).round() as u64;
        }
        assert_eq!(by_key.len(), if *tenant == "acme" { 2 } else { 1 });
        assert_usage(&client, &server, Some(&key), "key", range, &by_key);
    }

    // Ranked: the top 3 customers by cost, the rest in `other`, adding up to the total.
    let day = |ms: i64| {
        let date = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1_000))
            .expect("a time")
            .date();
        format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        )
    };
    let path = format!(
        "/v1/usage?by=attr.customer&from={}&to={}&top=3&order=cost_usd",
        day(range.0),
        day(range.1)
    );
    let (status, body) = get_json(&client, &server, Some("acme-key"), &path);
    assert_eq!(status, 200, "{body}");
    let mut by_cost: Vec<(Option<String>, u64)> = tally("acme", &sent[0].1, "attr.customer")
        .into_iter()
        .map(|(value, (_, _, micros))| (value, micros))
        .collect();
    by_cost.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(a.0.is_none().cmp(&b.0.is_none()))
            .then(a.0.cmp(&b.0))
    });
    let micros = |block: &Value| (block["cost_usd"].as_f64().expect("cost") * 1e6).round() as u64;
    let ranked: Vec<(Option<String>, u64)> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            (
                group["key"]["attr.customer"].as_str().map(str::to_string),
                micros(group),
            )
        })
        .collect();
    assert_eq!(ranked, by_cost[..3].to_vec(), "{body}");
    let rest: u64 = by_cost[3..].iter().map(|(_, micros)| micros).sum();
    assert_eq!(micros(&body["other"]), rest, "{body}");
    assert_eq!(body["complete"], true, "{body}");
    assert_eq!(body["order"], "cost_usd");

    // Tenant isolation: a tenant reads its own usage only; an admin any tenant's.
    let foreign = "/v1/usage?by=user_id&tenant=globex";
    let (status, body) = get_json(&client, &server, Some("acme-key"), foreign);
    assert_eq!(status, 403, "{body}");
    let (status, body) = get_json(&client, &server, server.admin_key, foreign);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "globex");

    // `ais usage`: the same export, and a table whose total is the API's.
    let cli = |extra: &[&str]| {
        let mut args = vec![
            "usage",
            "--url",
            &server.base,
            "--api-key",
            "acme-key",
            "--by",
            "model",
        ];
        args.extend_from_slice(extra);
        let from = day(range.0);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ais"))
            .args(&args)
            .args(["--from", &from])
            .output()
            .expect("ais usage runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let exported = cli(&["--csv"]);
    let mut lines = exported.lines();
    assert!(lines
        .next()
        .is_some_and(|header| header.starts_with("day,scope,value")));
    let requests: u64 = lines
        .map(|line| {
            line.split(',')
                .nth(3)
                .and_then(|n| n.parse::<u64>().ok())
                .expect("requests")
        })
        .sum();
    assert_eq!(requests, sent[0].1.len() as u64, "{exported}");
    let table = cli(&[]);
    let total = table
        .lines()
        .find(|line| line.starts_with("TOTAL"))
        .expect("a total row");
    assert!(
        total.split_whitespace().nth(1) == Some(&sent[0].1.len().to_string()),
        "{table}"
    );
    for model in ["m-one", "m-two", "m-three"] {
        assert!(table.lines().any(|line| line.starts_with(model)), "{table}");
    }

    // Bad input names the parameter.
    for (query, wanted) in [
        ("by=attr.plan", "attr.plan"),
        ("by=user_id&from=2026-02-30", "from must be a UTC day"),
        ("by=endpoint", "unknown usage scope"),
    ] {
        let (status, body) = get_json(
            &client,
            &server,
            Some("acme-key"),
            &format!("/v1/usage?{query}"),
        );
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(wanted), "{query}: {error}");
    }
}
