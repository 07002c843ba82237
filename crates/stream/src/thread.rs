//! The processor on a thread of its own ([`spawn`]): its batches are CPU-bound and
//! synchronous inside, so it runs on a single-threaded runtime of its own and never
//! occupies the workers that answer HTTP. The binary watches it while it runs
//! ([`ProcessorThread::wait_while_running`]) and, at shutdown, cancels its token and
//! waits a bounded time for it to drain ([`ProcessorThread::join`]); what it did not
//! commit is still in the log, for the next start.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ais_log::Log;
use ais_store::BatchSink;
use tokio_util::sync::CancellationToken;

use crate::processor::{Processor, ProcessorError};

/// How often a wait on the thread looks whether it has ended: a std thread cannot be
/// awaited, and the waits are of seconds.
const JOIN_POLL: Duration = Duration::from_millis(20);
/// How often [`ProcessorThread::wait_while_running`] looks at the thread and the token.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// Why the processor's thread did not start or end well.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    #[error("cannot start the stream processor thread")]
    Spawn(#[source] std::io::Error),
    #[error("cannot start the stream runtime")]
    Runtime(#[source] std::io::Error),
    #[error("stream processor failed")]
    Processor(#[source] ProcessorError),
    #[error(
        "stream processor did not drain within {0:?}; the log keeps the rest for the next start"
    )]
    Undrained(Duration),
    #[error("stream processor panicked")]
    Panicked,
}

/// The thread `ais-stream`, running one processor.
#[derive(Debug)]
pub struct ProcessorThread {
    handle: JoinHandle<Result<(), ThreadError>>,
}

/// Starts `processor` on the thread `ais-stream`: it reads `log` into `store` until
/// `stop`, then drains what is durable ([`Processor::run`]).
pub fn spawn(
    processor: Processor,
    log: Arc<dyn Log>,
    store: Arc<dyn BatchSink>,
    stop: CancellationToken,
) -> Result<ProcessorThread, ThreadError> {
    let handle = std::thread::Builder::new()
        .name("ais-stream".to_string())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ThreadError::Runtime)?;
            runtime
                .block_on(processor.run(log, store, stop))
                .map_err(ThreadError::Processor)
        })
        .map_err(ThreadError::Spawn)?;
    Ok(ProcessorThread { handle })
}

impl ProcessorThread {
    /// Whether the processor has returned (drained after its stop, or failed).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Blocks while the processor runs and `stop` is not cancelled: returns once either
    /// ends (the processor stops by itself only on an error).
    pub fn wait_while_running(&self, stop: &CancellationToken) {
        while !self.is_finished() && !stop.is_cancelled() {
            std::thread::sleep(WATCH_POLL);
        }
    }

    /// Waits at most `patience` for the processor to return, and gives its outcome.
    pub fn join(self, patience: Duration) -> Result<(), ThreadError> {
        let deadline = Instant::now() + patience;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return Err(ThreadError::Undrained(patience));
            }
            std::thread::sleep(JOIN_POLL);
        }
        self.handle.join().map_err(|_| ThreadError::Panicked)?
    }
}

#[cfg(test)]
mod tests {
    use ais_log::wal::{Wal, WalConfig};
    use ais_store::sqlite::SqliteStore;
    use ais_testkit::PATIENCE;

    use super::*;
    use crate::ProcessorConfig;

    /// The processor on an empty WAL and store in `dir`, started.
    fn started(dir: &std::path::Path, stop: &CancellationToken) -> ProcessorThread {
        let log = Arc::new(Wal::open(WalConfig::new(dir.join("wal"))).expect("wal"));
        let store = Arc::new(SqliteStore::open(&dir.join("s.sqlite")).expect("store"));
        spawn(
            Processor::new(ProcessorConfig::default()),
            log,
            store,
            stop.clone(),
        )
        .expect("spawned")
    }

    #[test]
    fn a_stopped_processor_ends_the_watch_and_joins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stop = CancellationToken::new();
        let thread = started(dir.path(), &stop);
        assert!(!thread.is_finished());
        stop.cancel();
        thread.wait_while_running(&stop);
        thread.join(PATIENCE).expect("drained");
    }

    #[test]
    fn a_join_past_its_patience_says_the_log_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stop = CancellationToken::new();
        let thread = started(dir.path(), &stop);
        let error = thread
            .join(Duration::from_millis(1))
            .expect_err("still running");
        assert_eq!(
            error.to_string(),
            "stream processor did not drain within 1ms; the log keeps the rest for the next start"
        );
        stop.cancel();
    }
}
