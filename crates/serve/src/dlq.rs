//! `GET /v1/dlq` and `POST /v1/dlq/replay`: the dead-letter queue, read and re-driven.
//!
//! Letters come from a [`DeadLetterSource`] (`ais_model::dead_letter`), whatever engine
//! the binary chose: the embedded store on one node, the dead-letter topic in the
//! distributed mode; this module names none. A replay appends the
//! original bytes of the chosen letters to the log again, oldest first, through the
//! [`Log`] the server writes to (the WAL; for `ais query`, the events topic); a record
//! that still cannot be processed becomes a new letter under its new offset.
//!
//! Visibility: an `admin` key sees every letter (or one tenant's with `?tenant=`); any
//! other key sees only letters whose record names its tenant; without keys (loopback
//! development) every letter is visible. Replaying needs a key that may also ingest
//! (`all`) or an `admin` key.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ais_log::{Log, LogError, RecordBatch};
use ais_model::auth::{KeyKind, Keyring, Principal};
use ais_model::dead_letter::{DeadLetter, DeadLetterQuery, DeadLetterSource, LetterId};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::QueryError;

/// Letters one listing returns when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;
/// Most letters one listing returns, and most one replay re-appends: bounds the answer
/// (each letter carries its record) and the appends of one request.
pub const MAX_LIMIT: usize = 1_000;
/// Bytes of records appended to the log per append: well under any log's batch limit.
const REPLAY_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// State of the dead-letter routes.
#[derive(Clone)]
pub struct DlqState {
    /// `None`: this server cannot read the dead-letter queue; the routes answer 501
    /// with `unavailable`.
    pub letters: Option<Arc<dyn DeadLetterSource>>,
    /// Where replays append; `None`: replays answer 501 with `unavailable`.
    pub log: Option<Arc<dyn Log>>,
    pub keyring: Arc<Keyring>,
    /// What the operator should do when `letters` or `log` is missing.
    pub unavailable: String,
}

/// `/v1/dlq` and `/v1/dlq/replay`. Registers `ais_dlq_replayed_total` at 0, so the
/// series exists before the first replay.
pub fn dlq_router(state: DlqState) -> Router {
    metrics::counter!("ais_dlq_replayed_total").increment(0);
    Router::new()
        .route("/v1/dlq", get(list))
        .route("/v1/dlq/replay", post(replay))
        .with_state(state)
}

/// One letter as the API shows it.
#[derive(Debug, Serialize)]
pub struct LetterBody {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: &'static str,
    pub detail: String,
    pub tenant: Option<String>,
    /// When the stream dead-lettered it, unix ms.
    pub dead_lettered_at: i64,
    /// The original record, base64 (standard alphabet, padded).
    pub record: String,
    pub record_bytes: usize,
}

impl From<DeadLetter> for LetterBody {
    fn from(letter: DeadLetter) -> Self {
        Self {
            id: letter.id.to_string(),
            partition: letter.id.partition,
            offset: letter.id.offset,
            reason: letter.reason.as_str(),
            detail: letter.detail,
            tenant: letter.tenant,
            dead_lettered_at: letter.dead_at_ms,
            record: base64::engine::general_purpose::STANDARD.encode(&letter.record),
            record_bytes: letter.record.len(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ListResponse {
    pub letters: Vec<LetterBody>,
    pub more: bool,
}

/// `POST /v1/dlq/replay`: ids, or a range of dead-lettering times.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub ids: Option<Vec<String>>,
    pub from: Option<serde_json::Value>,
    pub to: Option<serde_json::Value>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct ReplayResponse {
    /// Letters whose record was appended to the log again, in append order.
    pub replayed: Vec<String>,
    /// Ids asked for that name no letter this key may see.
    pub not_found: Vec<String>,
    /// A range matched more letters than one replay takes: ask again.
    pub more: bool,
}

/// Whose letters a request sees: `None` for every letter.
fn scope(
    keyring: &Keyring,
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<Option<String>, QueryError> {
    let sees_all = keyring.is_open() || principal.kind == KeyKind::Admin;
    match params.get("tenant") {
        Some(tenant) if sees_all || *tenant == principal.tenant => Ok(Some(tenant.clone())),
        Some(_) => Err(QueryError::ForeignTenant),
        None if sees_all => Ok(None),
        None => Ok(Some(principal.tenant.clone())),
    }
}

fn visible(scope: &Option<String>, letter: &DeadLetter) -> bool {
    scope
        .as_ref()
        .is_none_or(|tenant| letter.tenant.as_ref() == Some(tenant))
}

/// An instant (RFC 3339 or unix ms, as text or a JSON number), or `default`.
fn instant(value: Option<&str>, name: &str, default: i64) -> Result<i64, QueryError> {
    match value {
        None => Ok(default),
        Some(text) => crate::params::instant(text, name),
    }
}

/// `[from, to)` of dead-lettering times, to the millisecond; default every letter.
fn time_range(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), QueryError> {
    let from_ms = instant(from, "from", i64::MIN)?;
    let to_ms = instant(to, "to", i64::MAX)?;
    if from_ms >= to_ms {
        return Err(QueryError::BadParameter(format!(
            "from ({from_ms}) must be before to ({to_ms})"
        )));
    }
    Ok((from_ms, to_ms))
}

fn limit(value: Option<usize>) -> Result<usize, QueryError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        Some(limit) => Err(QueryError::BadParameter(format!(
            "limit must be an integer from 1 to {MAX_LIMIT}, found {limit}"
        ))),
    }
}

fn source(state: &DlqState) -> Result<&Arc<dyn DeadLetterSource>, QueryError> {
    state
        .letters
        .as_ref()
        .ok_or_else(|| QueryError::NotConfigured(state.unavailable.clone()))
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
}

/// `GET /v1/dlq?from&to&limit[&tenant]`: letters newest first.
pub async fn list(
    State(state): State<DlqState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListResponse>, QueryError> {
    let principal = state.keyring.authorize_read(authorization(&headers))?;
    let tenant = scope(&state.keyring, &principal, &params)?;
    let (from_ms, to_ms) = time_range(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
    )?;
    let limit = match params.get("limit") {
        None => limit(None)?,
        Some(text) => limit(Some(text.parse().map_err(|_| {
            QueryError::BadParameter(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}, found {text:?}"
            ))
        })?))?,
    };
    let page = source(&state)?
        .list(DeadLetterQuery {
            tenant,
            from_ms,
            to_ms,
            limit,
            oldest_first: false,
        })
        .await?;
    Ok(Json(ListResponse {
        letters: page.letters.into_iter().map(LetterBody::from).collect(),
        more: page.more,
    }))
}

/// A JSON instant as text: `params::instant` reads both forms.
fn instant_text(value: &Option<serde_json::Value>) -> Option<String> {
    match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// The replay request: an empty body replays the oldest letters of every time.
fn replay_request(body: &[u8]) -> Result<ReplayRequest, QueryError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ReplayRequest::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        QueryError::BadParameter(format!(
            "body must be {{\"ids\": [\"PARTITION:OFFSET\", …]}} or {{\"from\", \"to\", \"limit\"}}: {error}"
        ))
    })
}

/// `POST /v1/dlq/replay`: appends the records of the chosen letters to the log again.
pub async fn replay(
    State(state): State<DlqState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<ReplayResponse>, QueryError> {
    let principal = state.keyring.authenticate(authorization(&headers))?;
    if !(state.keyring.is_open()
        || principal.kind == KeyKind::Admin
        || (principal.kind.can_ingest() && principal.kind.can_read()))
    {
        return Err(QueryError::Auth(ais_model::auth::AuthError::WrongKind {
            action: "replay dead letters",
            needed: "all or admin",
        }));
    }
    let tenant = scope(&state.keyring, &principal, &params)?;
    let request = replay_request(&body)?;
    let letters = source(&state)?;
    let log = state
        .log
        .as_ref()
        .ok_or_else(|| QueryError::NotConfigured(state.unavailable.clone()))?;
    let (chosen, not_found, more) = match &request.ids {
        Some(ids) => {
            if request.from.is_some() || request.to.is_some() || request.limit.is_some() {
                return Err(QueryError::BadParameter(
                    "give either ids or a range (from, to, limit), not both".to_string(),
                ));
            }
            let (chosen, not_found) = by_ids(letters.as_ref(), ids, &tenant).await?;
            (chosen, not_found, false)
        }
        None => {
            let (from_ms, to_ms) = time_range(
                instant_text(&request.from).as_deref(),
                instant_text(&request.to).as_deref(),
            )?;
            let page = letters
                .list(DeadLetterQuery {
                    tenant,
                    from_ms,
                    to_ms,
                    limit: limit(request.limit)?,
                    oldest_first: true,
                })
                .await?;
            (page.letters, Vec::new(), page.more)
        }
    };
    append_records(log.as_ref(), &chosen).await?;
    metrics::counter!("ais_dlq_replayed_total").increment(chosen.len() as u64);
    tracing::info!(
        letters = chosen.len(),
        tenant = %principal.tenant,
        "dead letters replayed into the log"
    );
    Ok(Json(ReplayResponse {
        replayed: chosen.iter().map(|letter| letter.id.to_string()).collect(),
        not_found,
        more,
    }))
}

/// The letters named by `ids` that `tenant` may see, in log order, and the ids found
/// for none.
async fn by_ids(
    letters: &dyn DeadLetterSource,
    ids: &[String],
    tenant: &Option<String>,
) -> Result<(Vec<DeadLetter>, Vec<String>), QueryError> {
    if ids.is_empty() || ids.len() > MAX_LIMIT {
        return Err(QueryError::BadParameter(format!(
            "ids must name 1 to {MAX_LIMIT} dead letters, found {}",
            ids.len()
        )));
    }
    let mut wanted = BTreeSet::new();
    for id in ids {
        let parsed: LetterId =
            id.parse()
                .map_err(|error: ais_model::dead_letter::LetterIdError| {
                    QueryError::BadParameter(error.to_string())
                })?;
        wanted.insert(parsed);
    }
    let found: Vec<DeadLetter> = letters
        .by_id(wanted.iter().copied().collect())
        .await?
        .into_iter()
        .filter(|letter| visible(tenant, letter))
        .collect();
    let found_ids: BTreeSet<LetterId> = found.iter().map(|letter| letter.id).collect();
    let not_found = wanted
        .difference(&found_ids)
        .map(LetterId::to_string)
        .collect();
    let mut chosen = found;
    chosen.sort_by_key(|letter| letter.id);
    chosen.dedup_by_key(|letter| letter.id);
    Ok((chosen, not_found))
}

/// Appends the letters' records in order, in appends of at most
/// [`REPLAY_CHUNK_BYTES`]; each append is durable before the next starts.
async fn append_records(log: &dyn Log, letters: &[DeadLetter]) -> Result<(), QueryError> {
    let mut batch = RecordBatch::default();
    for letter in letters {
        if !batch.is_empty() && batch.byte_len() + letter.record.len() > REPLAY_CHUNK_BYTES {
            log.append(std::mem::take(&mut batch)).await?;
        }
        batch.push(&letter.record);
    }
    if !batch.is_empty() {
        log.append(batch).await?;
    }
    Ok(())
}

impl From<LogError> for QueryError {
    fn from(error: LogError) -> Self {
        Self::Log(error.to_string())
    }
}

#[cfg(test)]
mod tests;
