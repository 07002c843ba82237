//! The `dead_letters` table: records the stream could not process, inserted by the
//! commit that moves the position past them, so a letter exists exactly when its
//! record no longer will be read; read back by `GET /v1/dlq` and replays, through the
//! store's [`DeadLetterSource`] (the one-node engine of the dead-letter queue).

use ais_model::dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterQuery, DeadLetterSource, LetterId, LetterPage, Reason,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, Row, Transaction};

use super::{backend, offset_from_sql, offset_to_sql, SqliteStore};
use crate::StoreError;

const COLUMNS: &str = "log_partition, log_offset, reason, detail, tenant, dead_at_ms, record";

/// Adds the letters of a batch (once per source record).
pub(super) fn insert(
    transaction: &Transaction<'_>,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut statement = transaction
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO dead_letters ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))
        .map_err(backend("preparing the dead-letter write"))?;
    for letter in letters {
        statement
            .execute(params![
                letter.id.partition,
                offset_to_sql(letter.id.offset)?,
                letter.reason.as_str(),
                letter.detail,
                letter.tenant,
                letter.dead_at_ms,
                letter.record,
            ])
            .map_err(backend("writing a dead letter"))?;
    }
    Ok(())
}

/// Deletes letters dead-lettered before `before_ms`; returns how many.
pub(super) fn delete_before(
    transaction: &Transaction<'_>,
    before_ms: i64,
) -> Result<usize, StoreError> {
    transaction
        .execute(
            "DELETE FROM dead_letters WHERE dead_at_ms < ?1",
            [before_ms],
        )
        .map_err(backend("deleting old dead letters"))
}

type RawLetter = (u32, i64, String, String, Option<String>, i64, Vec<u8>);

fn raw_letter(row: &Row<'_>) -> rusqlite::Result<RawLetter> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn letter_of(raw: RawLetter) -> Result<DeadLetter, StoreError> {
    let (partition, offset, reason, detail, tenant, dead_at_ms, record) = raw;
    let reason = Reason::parse(&reason).ok_or_else(|| {
        StoreError::Malformed(format!(
            "dead letter {partition}:{offset} has an unknown reason {reason:?}"
        ))
    })?;
    Ok(DeadLetter {
        id: LetterId {
            partition,
            offset: offset_from_sql(partition, offset)?,
        },
        reason,
        detail,
        tenant,
        dead_at_ms,
        record,
    })
}

fn list(connection: &Connection, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>, StoreError> {
    let order = if query.oldest_first { "ASC" } else { "DESC" };
    let tenant_filter = if query.tenant.is_some() {
        "AND tenant = ?4"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE dead_at_ms >= ?1 AND dead_at_ms < ?2 {tenant_filter}
         ORDER BY dead_at_ms {order}, log_partition {order}, log_offset {order}
         LIMIT ?3"
    );
    let mut statement = connection
        .prepare_cached(&sql)
        .map_err(backend("reading dead letters"))?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let rows = match &query.tenant {
        Some(tenant) => statement.query_map(
            params![query.from_ms, query.to_ms, limit, tenant],
            raw_letter,
        ),
        None => statement.query_map(params![query.from_ms, query.to_ms, limit], raw_letter),
    }
    .map_err(backend("reading dead letters"))?;
    let mut letters = Vec::new();
    for row in rows {
        letters.push(letter_of(row.map_err(backend("reading dead letters"))?)?);
    }
    Ok(letters)
}

fn by_ids(connection: &Connection, ids: &[LetterId]) -> Result<Vec<DeadLetter>, StoreError> {
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM dead_letters WHERE log_partition = ?1 AND log_offset = ?2"
        ))
        .map_err(backend("reading dead letters"))?;
    let mut letters = Vec::with_capacity(ids.len());
    for id in ids {
        let rows = statement
            .query_map(params![id.partition, offset_to_sql(id.offset)?], raw_letter)
            .map_err(backend("reading dead letters"))?;
        for row in rows {
            letters.push(letter_of(row.map_err(backend("reading dead letters"))?)?);
        }
    }
    Ok(letters)
}

impl SqliteStore {
    /// Letters matching `query`, newest first (or oldest first), at most `query.limit`.
    pub async fn dead_letters(
        &self,
        query: DeadLetterQuery,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.with_reader(move |connection| list(connection, &query))
            .await
    }

    /// The letters with these ids, in the order asked; ids without a letter are left out.
    pub async fn dead_letters_by_id(
        &self,
        ids: Vec<LetterId>,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.with_reader(move |connection| by_ids(connection, &ids))
            .await
    }
}

#[async_trait]
impl DeadLetterSource for SqliteStore {
    async fn list(&self, query: DeadLetterQuery) -> Result<LetterPage, DeadLetterError> {
        let limit = query.limit;
        // One more than asked says whether there are more.
        let mut letters = self
            .dead_letters(DeadLetterQuery {
                limit: limit.saturating_add(1),
                ..query
            })
            .await?;
        let more = letters.len() > limit;
        letters.truncate(limit);
        Ok(LetterPage { letters, more })
    }

    async fn by_id(&self, ids: Vec<LetterId>) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Ok(self.dead_letters_by_id(ids).await?)
    }
}
