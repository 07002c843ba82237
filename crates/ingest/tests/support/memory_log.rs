//! An in-memory [`Log`] whose appends succeed or fail as a test says.

use std::sync::Mutex;
use std::time::Duration;

use ais_log::{Appended, Log, LogConsumer, LogError, LogStatus, RecordBatch, StartPosition};
use async_trait::async_trait;

/// What the in-memory log does with an append.
#[derive(Debug, Clone, Copy)]
pub enum LogMode {
    /// Keeps the records and says they are durable.
    Durable,
    /// `LogError::Full`, as the WAL or the producer's buffer when full.
    Full,
    /// `LogError::OverflowFull`: the broker is down and the overflow is full too.
    OverflowFull,
    /// `LogError::Unavailable`: the broker is down.
    Unavailable,
    /// `LogError::Closed`: the process is shutting down.
    Closed,
}

/// `Retry-After` the log asks for when full, and when its overflow is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
const OVERFLOW_RETRY_AFTER: Duration = Duration::from_secs(7);

/// A [`Log`] that keeps appended records in memory, or fails every append as its mode
/// says. Ingest only appends, so it has no consumer.
pub struct MemoryLog {
    mode: LogMode,
    records: Mutex<Vec<Vec<u8>>>,
}

impl MemoryLog {
    pub fn new(mode: LogMode) -> Self {
        Self {
            mode,
            records: Mutex::new(Vec::new()),
        }
    }

    /// (tenant, model) of every record appended, in order.
    pub fn keys(&self) -> Vec<(String, String)> {
        let records = self.records.lock().expect("records");
        records
            .iter()
            .map(|record| match ais_model::wire::peek_key(record) {
                Ok((tenant, model)) => (tenant.to_string(), model.to_string()),
                Err(error) => (format!("undecodable record: {error}"), String::new()),
            })
            .collect()
    }
}

#[async_trait]
impl Log for MemoryLog {
    async fn append(&self, batch: RecordBatch) -> Result<Appended, LogError> {
        match self.mode {
            LogMode::Durable => {}
            LogMode::Full => {
                return Err(LogError::Full {
                    detail: "wal holds 1024 MiB of 1024 MiB".to_string(),
                    retry_after: FULL_RETRY_AFTER,
                })
            }
            LogMode::OverflowFull => {
                return Err(LogError::OverflowFull {
                    detail: "redis holds 512 MiB of 512 MiB".to_string(),
                    retry_after: OVERFLOW_RETRY_AFTER,
                })
            }
            LogMode::Unavailable => {
                return Err(LogError::Unavailable("broker unreachable".to_string()))
            }
            LogMode::Closed => return Err(LogError::Closed),
        }
        let mut records = self.records.lock().expect("records");
        let first_offset = records.len() as u64;
        records.extend(batch.iter().map(<[u8]>::to_vec));
        Ok(Appended {
            partition: 0,
            first_offset,
            count: batch.len(),
        })
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn status(&self) -> LogStatus {
        let records = self.records.lock().expect("records").len() as u64;
        LogStatus {
            writable: matches!(self.mode, LogMode::Durable),
            detail: format!("memory log, {:?}", self.mode),
            end_offsets: vec![(0, records)],
            counts: Default::default(),
        }
    }

    async fn consumer(
        &self,
        _positions: &[StartPosition],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        Err(LogError::Unavailable(
            "the in-memory log of the router tests is never read".to_string(),
        ))
    }

    async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}
