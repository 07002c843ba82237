//! The dead-letter routes on the real embedded store, through the router.

use std::sync::Mutex;

use ais_log::{Appended, LogConsumer, LogStatus, StartPosition};
use ais_model::dead_letter::{DeadLetterError, LetterPage, Reason};
use ais_model::{wire, Event, EventId};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::BatchCommit;
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

/// A log that keeps what is appended.
#[derive(Default)]
struct Appends(Mutex<Vec<Vec<u8>>>);

impl Appends {
    fn records(&self) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .map(|records| records.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Log for Appends {
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
        let count = batch.len();
        if let Ok(mut records) = self.0.lock() {
            records.extend(batch.iter().map(<[u8]>::to_vec));
        }
        Ok(Appended {
            partition: 0,
            first_offset: 0,
            count,
        })
    }
    fn partitions(&self) -> u32 {
        1
    }
    fn status(&self) -> LogStatus {
        LogStatus {
            writable: true,
            detail: String::new(),
            end_offsets: Vec::new(),
            counts: Default::default(),
        }
    }
    async fn consumer(
        &self,
        _positions: &[StartPosition],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        Err(LogError::Unavailable("not read here".to_string()))
    }
    async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    router: Router,
    log: Arc<Appends>,
    /// The letters committed, oldest first.
    letters: Vec<DeadLetter>,
}

/// Letters at offsets 1 (acme), 2 (no tenant), 4 (other), 6 (acme), dead-lettered at
/// 1, 2, 3 and 4 seconds.
async fn fixture(keys: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let specs: [(u64, Option<&str>); 4] = [
        (1, Some("acme")),
        (2, None),
        (4, Some("other")),
        (6, Some("acme")),
    ];
    let letters: Vec<DeadLetter> = specs
        .iter()
        .enumerate()
        .map(|(index, (offset, tenant))| {
            let record = match tenant {
                Some(tenant) => {
                    let mut bytes = Vec::new();
                    let event = Event::new("", EventId::Generated(u128::from(*offset)), 1, 1.0);
                    wire::encode_into(tenant, &event, &mut bytes);
                    bytes
                }
                None => b"\x01\xff\xff".to_vec(),
            };
            DeadLetter::new(
                LetterId {
                    partition: 0,
                    offset: *offset,
                },
                if tenant.is_some() {
                    Reason::Invalid
                } else {
                    Reason::Undecodable
                },
                "broken",
                &record,
                (index as i64 + 1) * 1000,
            )
        })
        .collect();
    store
        .commit(BatchCommit {
            partition: 0,
            first_offset: 0,
            next_offset: 8,
            watermark_ms: 0,
            partials: Vec::new(),
            dedup: Vec::new(),
            events: Vec::new(),
            dead_letters: letters.clone(),
            dimensions: Default::default(),
            ledger: Vec::new(),
            usage: Vec::new(),
        })
        .await
        .expect("commit");
    let log = Arc::new(Appends::default());
    let source: Arc<dyn DeadLetterSource> = Arc::new(store);
    let log_dyn: Arc<dyn Log> = log.clone();
    let router = dlq_router(DlqState {
        letters: Some(source),
        log: Some(log_dyn),
        keyring: Arc::new(Keyring::parse_plain(keys).expect("keys")),
        unavailable: "start it with --kafka".to_string(),
    });
    Fixture {
        _dir: dir,
        router,
        log,
        letters,
    }
}

const KEYS: &str = "acme:acme-key,acme:acme-reader:read,acme:acme-writer:write,other:other-key,ops:admin-key:admin";

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(router: &Router, key: Option<&str>, path: &str) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    call(router, request.body(Body::empty()).expect("request")).await
}

async fn post(router: &Router, key: Option<&str>, path: &str, body: Value) -> (StatusCode, Value) {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    call(
        router,
        request.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

fn ids(body: &Value) -> Vec<String> {
    body["letters"]
        .as_array()
        .map(|letters| {
            letters
                .iter()
                .map(|letter| letter["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn admins_see_every_letter_and_tenants_only_their_own() {
    let fixture = fixture(KEYS).await;
    let router = &fixture.router;
    let (status, body) = get(router, Some("admin-key"), "/v1/dlq").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["0:6", "0:4", "0:2", "0:1"], "newest first");
    assert_eq!(body["more"], false);
    let newest = &body["letters"][0];
    assert_eq!(newest["reason"], "invalid");
    assert_eq!(newest["tenant"], "acme");
    assert_eq!(newest["partition"], 0);
    assert_eq!(newest["offset"], 6);
    assert_eq!(newest["dead_lettered_at"], 4000);
    let record = base64::engine::general_purpose::STANDARD
        .decode(newest["record"].as_str().expect("base64"))
        .expect("decodes");
    assert_eq!(record, fixture.letters[3].record);
    assert_eq!(newest["record_bytes"], record.len());
    assert_eq!(body["letters"][2]["tenant"], Value::Null);

    let (_, acme) = get(router, Some("acme-reader"), "/v1/dlq").await;
    assert_eq!(ids(&acme), ["0:6", "0:1"], "read keys see their tenant's");
    let (_, other) = get(router, Some("other-key"), "/v1/dlq").await;
    assert_eq!(ids(&other), ["0:4"]);
    let (status, _) = get(router, Some("other-key"), "/v1/dlq?tenant=acme").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, scoped) = get(router, Some("admin-key"), "/v1/dlq?tenant=other").await;
    assert_eq!(ids(&scoped), ["0:4"]);
    let (status, _) = get(router, Some("acme-writer"), "/v1/dlq").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "write keys cannot read");
    let (status, _) = get(router, None, "/v1/dlq").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ranges_and_limits_page_through_the_letters() {
    let fixture = fixture(KEYS).await;
    let router = &fixture.router;
    let (_, page) = get(router, Some("admin-key"), "/v1/dlq?limit=2").await;
    assert_eq!(ids(&page), ["0:6", "0:4"]);
    assert_eq!(page["more"], true);
    let (_, range) = get(router, Some("admin-key"), "/v1/dlq?from=2000&to=4000").await;
    assert_eq!(ids(&range), ["0:4", "0:2"], "[from, to) to the millisecond");
    let (_, rfc) = get(router, Some("admin-key"), "/v1/dlq?to=1970-01-01T00:00:02Z").await;
    assert_eq!(ids(&rfc), ["0:1"]);
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "from=yesterday",
        "from=5&to=5",
    ] {
        let (status, body) = get(router, Some("admin-key"), &format!("/v1/dlq?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn open_servers_show_every_letter() {
    let fixture = fixture("").await;
    let (_, body) = get(&fixture.router, None, "/v1/dlq").await;
    assert_eq!(ids(&body).len(), 4);
}

#[tokio::test]
async fn a_replay_appends_the_original_bytes_of_visible_letters_only() {
    let fixture = fixture(KEYS).await;
    let router = &fixture.router;
    let (status, body) = post(
        router,
        Some("acme-key"),
        "/v1/dlq/replay",
        json!({"ids": ["0:6", "0:4", "0:1", "7:7"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], json!(["0:1", "0:6"]), "log order");
    assert_eq!(
        body["not_found"],
        json!(["0:4", "7:7"]),
        "another tenant's is not found"
    );
    assert_eq!(
        fixture.log.records(),
        vec![
            fixture.letters[0].record.clone(),
            fixture.letters[3].record.clone()
        ]
    );

    // A range, oldest first, a limit at a time.
    let (status, body) = post(
        router,
        Some("admin-key"),
        "/v1/dlq/replay",
        json!({"from": 1500, "limit": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], json!(["0:2", "0:4"]));
    assert_eq!(body["more"], true);
    assert_eq!(fixture.log.records().len(), 4);
}

#[tokio::test]
async fn replays_need_a_key_that_may_write_and_a_well_formed_body() {
    let fixture = fixture(KEYS).await;
    let router = &fixture.router;
    for key in ["acme-reader", "acme-writer"] {
        let (status, body) =
            post(router, Some(key), "/v1/dlq/replay", json!({"ids": ["0:1"]})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{key}: {body}");
    }
    for bad in [
        json!({"ids": []}),
        json!({"ids": ["one"]}),
        json!({"ids": ["0:1"], "limit": 3}),
        json!({"since": 1}),
        json!({"limit": 0}),
        json!([1, 2]),
    ] {
        let (status, body) = post(router, Some("admin-key"), "/v1/dlq/replay", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert!(fixture.log.records().is_empty(), "nothing appended");
}

#[tokio::test]
async fn without_a_source_the_routes_say_how_to_get_one() {
    let router = dlq_router(DlqState {
        letters: None,
        log: None,
        keyring: Arc::new(Keyring::default()),
        unavailable: "start ais query with --kafka".to_string(),
    });
    let (status, body) = get(&router, None, "/v1/dlq").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(body["error"], "start ais query with --kafka");
    let (status, _) = post(&router, None, "/v1/dlq/replay", json!({"ids": ["0:1"]})).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
}

/// A source whose engine is down, failing every read with `error`.
struct Down(DeadLetterError);

#[async_trait]
impl DeadLetterSource for Down {
    async fn list(&self, _query: DeadLetterQuery) -> Result<LetterPage, DeadLetterError> {
        Err(self.0.clone())
    }
    async fn by_id(&self, _ids: Vec<LetterId>) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Err(self.0.clone())
    }
}

#[tokio::test]
async fn a_source_that_is_down_answers_503_saying_which_part() {
    for (error, text) in [
        (
            DeadLetterError::Store("database is locked".to_string()),
            "store unavailable: database is locked",
        ),
        (
            DeadLetterError::Unavailable("reader task failed".to_string()),
            "dead-letter queue unavailable: reader task failed",
        ),
    ] {
        let router = dlq_router(DlqState {
            letters: Some(Arc::new(Down(error))),
            log: Some(Arc::new(Appends::default())),
            keyring: Arc::new(Keyring::default()),
            unavailable: String::new(),
        });
        let (status, body) = get(&router, None, "/v1/dlq").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], text);
        let (status, body) = post(&router, None, "/v1/dlq/replay", json!({"ids": ["0:1"]})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], text);
    }
}
