//! Payloads through `GET /v1/events` over the real embedded store: `q=` against brute
//! force over the events committed, `include=payloads` as stored and nothing without
//! it, the 503 of a search past its scan bound, and `[payloads] readers`.

mod support;

use std::borrow::Cow;

use ais_model::auth::KeyKind;
use ais_model::Event;
use ais_serve::breakdown::QueryLimits;
use ais_serve::events::PayloadReaders;
use ais_testkit::payload_holds;
use axum::http::StatusCode;
use serde_json::Value;
use support::{get_path, get_with_readers, Fixture, Rollups};

/// The range of every request: it covers the events.
const RANGE: &str = "from=1795341600000&to=1795348800000";

/// Event `n`: its input names it, so an answer's inputs say which events it holds.
fn event(n: u64) -> Event<'static> {
    let topic = ["Refund request", "shipping DELAY", "refund?", "Größe Über"][(n % 4) as usize];
    Event {
        input: (!n.is_multiple_of(5)).then(|| Cow::Owned(format!("question {n}: {topic}"))),
        output: (!n.is_multiple_of(3)).then(|| {
            Cow::Borrowed(["We REFUNDED it", "über-schnell", "delay noted"][(n % 3) as usize])
        }),
        ..support::bare_event(n)
    }
}

async fn fixture() -> Fixture {
    support::fixture(400, event, Rollups::Omitted).await
}

/// The inputs (`null` for none) of acme's events whose payloads hold `text`, ignoring
/// case, newest first: the model of a search.
fn brute_force(fixture: &Fixture, text: &str) -> Vec<Value> {
    let mut matching: Vec<&Event<'static>> = fixture
        .events
        .iter()
        .filter(|(tenant, event)| {
            *tenant == "acme"
                && payload_holds([event.input.as_deref(), event.output.as_deref()], text)
        })
        .map(|(_, event)| event)
        .collect();
    matching.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));
    matching
        .into_iter()
        .map(|event| event.input.as_deref().map_or(Value::Null, Value::from))
        .collect()
}

fn inputs(body: &Value) -> Vec<Value> {
    body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| event.get("input").cloned().unwrap_or(Value::Null))
        .collect()
}

#[tokio::test]
async fn a_search_answers_as_brute_force_and_payloads_show_only_when_asked() {
    let fixture = fixture().await;
    // Texts taken from the events themselves, in other cases, and one no event holds.
    let (_, sample) = &fixture.events[7];
    let from_an_input = sample
        .input
        .as_deref()
        .and_then(|input| input.split(": ").nth(1))
        .expect("event 7 has an input")
        .to_uppercase();
    for text in [
        from_an_input.as_str(),
        "refund",
        "ÜBER",
        "question 12",
        "delay",
        "not in any payload",
    ] {
        let want = brute_force(&fixture, text);
        let path = format!(
            "/v1/events?{RANGE}&include=payloads&limit=1000&q={}",
            url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
        );
        let (status, body) = get_path(&fixture, QueryLimits::default(), "acme-key", &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(inputs(&body), want, "q={text}");
    }
    assert!(
        !brute_force(&fixture, "refund").is_empty(),
        "the searches are not all empty"
    );
    // A search returns no payload unless asked, and neither does a plain list.
    for path in [
        format!("/v1/events?{RANGE}&q=refund"),
        format!("/v1/events?{RANGE}"),
    ] {
        let (status, body) = get_path(&fixture, QueryLimits::default(), "acme-key", &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = body["events"].as_array().cloned().unwrap_or_default();
        assert!(!events.is_empty(), "{path}: {body}");
        assert!(
            events
                .iter()
                .all(|event| event.get("input").is_none() && event.get("output").is_none()),
            "{path}: {body}"
        );
    }
    // With include=payloads, each event's payloads as they were committed.
    let (_, body) = get_path(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        &format!("/v1/events?{RANGE}&include=payloads&limit=1000"),
    )
    .await;
    let mut committed: Vec<&Event<'static>> = fixture
        .events
        .iter()
        .filter(|(tenant, _)| *tenant == "acme")
        .map(|(_, event)| event)
        .collect();
    committed.sort_by_key(|event| std::cmp::Reverse(event.timestamp_ms));
    let shown: Vec<(Value, Value)> = body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|event| {
            let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
            (field("input"), field("output"))
        })
        .collect();
    let want: Vec<(Value, Value)> = committed
        .iter()
        .map(|event| {
            let field = |payload: &Option<Cow<'static, str>>| {
                payload.as_deref().map_or(Value::Null, Value::from)
            };
            (field(&event.input), field(&event.output))
        })
        .collect();
    assert_eq!(shown, want);
}

#[tokio::test]
async fn a_search_past_its_scan_bound_answers_503_naming_it() {
    let fixture = fixture().await;
    let in_range = fixture
        .events
        .iter()
        .filter(|(tenant, _)| *tenant == "acme")
        .count() as u64;
    let path = format!("/v1/events?{RANGE}&q=not%20in%20any%20payload");
    let bounded = |max_search_rows| QueryLimits {
        max_search_rows,
        ..QueryLimits::default()
    };
    let (status, body) = get_path(&fixture, bounded(in_range), "acme-key", &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get_path(&fixture, bounded(in_range - 1), "acme-key", &path).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["error"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("more than {} events", in_range - 1))
            && message.contains("narrow the range"),
        "{body}"
    );
    // A bad search is the caller's error, named.
    let (status, body) = get_path(
        &fixture,
        QueryLimits::default(),
        "acme-key",
        &format!("/v1/events?{RANGE}&include=everything"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap_or("").starts_with("include"));
}

#[tokio::test]
async fn readers_narrow_who_reads_payloads() {
    let fixture = fixture().await;
    let search = format!("/v1/events?{RANGE}&q=refund&include=payloads");
    // By default every kind that reads reads payloads.
    for key in ["acme-key", "acme-reader"] {
        let (status, body) = get_path(&fixture, QueryLimits::default(), key, &search).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
        assert!(!inputs(&body).is_empty(), "{key}: {body}");
    }
    let admins = PayloadReaders::only(&[KeyKind::Admin]).expect("admins");
    for key in ["acme-key", "acme-reader"] {
        for path in [
            search.clone(),
            format!("/v1/events?{RANGE}&include=payloads"),
            format!("/v1/events?{RANGE}&q=refund"),
        ] {
            let (status, body) =
                get_with_readers(&fixture, QueryLimits::default(), admins, key, &path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{key} {path}: {body}");
            let message = body["error"].as_str().unwrap_or("");
            assert!(
                message.contains("may not read payloads")
                    && message.contains("readers allows admin"),
                "{body}"
            );
        }
        // Events without payloads stay open to them.
        let (status, body) = get_with_readers(
            &fixture,
            QueryLimits::default(),
            admins,
            key,
            &format!("/v1/events?{RANGE}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
    }
    let (status, body) = get_with_readers(
        &fixture,
        QueryLimits::default(),
        admins,
        "root-key",
        &format!("{search}&tenant=acme"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        inputs(&body),
        brute_force(&fixture, "refund")[..inputs(&body).len()]
    );
}
