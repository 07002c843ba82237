//! What the route tests over the real embedded store share: events committed in one
//! batch as the stream commits them (the raw events, and their rollups when a test
//! reads those), and a GET through the query router with the tests' keys.

// Each test binary uses what it needs of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ais_evaluate::incident::DEFAULT_GAP;
use ais_model::auth::Keyring;
use ais_model::dimension::Dimension;
use ais_model::time::minute_floor;
use ais_model::{wire, Event};
use ais_rollup::dimensions::{DimensionBatch, DimensionRollupConfig};
use ais_rollup::{Contribution, RollupPartial};
use ais_serve::breakdown::QueryLimits;
use ais_serve::events::PayloadReaders;
use ais_serve::{query_router, QueryState};
use ais_store::prelude::*;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, DimensionPartials, LoggedRecord, RollupKey};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Events start here (2026-11-22T10:00:00Z).
pub const T0: i64 = 1_795_341_600_000;

/// The keys requests may carry: `acme-key` (tenant `acme`), `acme-reader` (its `read`
/// key) and `root-key` (an admin).
const KEYS: &str = "acme:acme-key,acme:acme-reader:read,root:root-key:admin";

/// Whether the fixture commits the events' rollups beside the raw events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollups {
    Committed,
    Omitted,
    /// The model rollups, and dimension rollups of `endpoint` and `region` kept from
    /// before the first event (as a stream started before them keeps them).
    WithDimensions,
}

/// The dimensions [`Rollups::WithDimensions`] rolls up.
pub const ROLLED_UP: [&str; 2] = ["endpoint", "region"];

/// Event `n` of model `m`, one a second from [`T0`], `10 + n` ms slow, with only the
/// required fields: what a test's own events start from.
pub fn bare_event(n: u64) -> Event<'static> {
    Event::new(
        "m",
        ais_model::EventId::Generated(u128::from(n) + 1),
        T0 + n as i64 * 1_000,
        10.0 + n as f64,
    )
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub events: Vec<(&'static str, Event<'static>)>,
}

/// `count` events made by `event`, every sixth of the tenant `other` and the rest of
/// `acme`, committed to a fresh store in one batch with the watermark at [`T0`].
pub async fn fixture(count: u64, event: fn(u64) -> Event<'static>, rollups: Rollups) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).expect("store"));
    let events: Vec<(&'static str, Event<'static>)> = (0..count)
        .map(|n| (if n % 6 == 0 { "other" } else { "acme" }, event(n)))
        .collect();
    let dimensions = DimensionRollupConfig {
        dimensions: match rollups {
            Rollups::WithDimensions => ROLLED_UP
                .iter()
                .map(|name| Dimension::parse(name).expect("a dimension"))
                .collect(),
            Rollups::Committed | Rollups::Omitted => Vec::new(),
        },
        ..DimensionRollupConfig::default()
    };
    if rollups == Rollups::WithDimensions {
        let names = ROLLED_UP.map(str::to_string);
        store
            .keep_dimension_rollups(&names, T0 - 3_600_000)
            .await
            .expect("dimension list");
    }
    let mut dimension_partials = DimensionBatch::new(&dimensions);
    let mut partials: BTreeMap<RollupKey, RollupPartial> = BTreeMap::new();
    let mut records = Vec::new();
    for (offset, (tenant, event)) in events.iter().enumerate() {
        dimension_partials.add(tenant, event, Contribution::of(event, false));
        if rollups != Rollups::Omitted {
            let key = RollupKey {
                tenant: tenant.to_string(),
                model: event.model.to_string(),
                minute_ms: minute_floor(event.timestamp_ms),
            };
            partials.entry(key).or_default().add(event, false);
        }
        let mut bytes = Vec::new();
        wire::encode_into(tenant, event, &mut bytes);
        records.push(LoggedRecord {
            offset: offset as u64,
            bytes: Bytes::from(bytes),
        });
    }
    store
        .commit(BatchCommit {
            partition: 0,
            first_offset: 0,
            next_offset: events.len() as u64,
            watermark_ms: T0,
            partials: partials.into_iter().collect(),
            dedup: Vec::new(),
            events: records,
            dead_letters: Vec::new(),
            dimensions: DimensionPartials {
                max_values_per_minute: dimensions.max_values_per_minute,
                partials: dimension_partials.into_partials(),
            },
            ledger: Vec::new(),
            usage: Vec::new(),
        })
        .await
        .expect("commit");
    Fixture {
        _dir: dir,
        store,
        events,
    }
}

impl Fixture {
    /// The same store closed and opened again, as a restarted server opens it.
    pub fn reopened(self) -> Fixture {
        let Fixture {
            _dir: dir,
            store,
            events,
        } = self;
        drop(store);
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.sqlite")).expect("reopen"));
        Fixture {
            _dir: dir,
            store,
            events,
        }
    }
}

/// GET `path` (any query route) through the router, with `key` as the bearer: the
/// status and the JSON body (`null` when there is none).
pub async fn get_path(
    fixture: &Fixture,
    limits: QueryLimits,
    key: &str,
    path: &str,
) -> (StatusCode, Value) {
    get_with_readers(fixture, limits, PayloadReaders::default(), key, path).await
}

/// [`get_path`] on a server whose `[payloads] readers` are `readers`.
pub async fn get_with_readers(
    fixture: &Fixture,
    limits: QueryLimits,
    readers: PayloadReaders,
    key: &str,
    path: &str,
) -> (StatusCode, Value) {
    let keyring = Keyring::parse_plain(KEYS).expect("keys");
    let router = query_router(QueryState {
        store: fixture.store.clone(),
        keyring: Arc::new(keyring),
        limits,
        incident_gap: DEFAULT_GAP,
        payload_readers: readers,
    });
    let response = router
        .oneshot(
            Request::get(path)
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
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
