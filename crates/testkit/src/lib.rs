//! What every test of the workspace shares about time: one patience, and waiting for
//! the event itself rather than for a while.
//!
//! A test never sleeps and then asserts: the thing it waits for may not have happened
//! yet on a slow or loaded machine, and then the assertion either fails for nothing or,
//! worse, passes vacuously. It polls for the event with [`eventually`] (or
//! [`eventually_async`]) and fails, naming what it waited for, only after [`PATIENCE`].
//! Speed is measured by benchmarks, never here.

use std::time::{Duration, Instant};

/// How long any test waits for anything that is expected to happen: an answer, a
/// commit, a drain, a server start. Long, because it is only ever spent on a failure.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// Between two looks at the awaited event.
const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Ok`, and returns that. Panics after [`PATIENCE`]
/// naming `what` and the probe's last `Err` (what it saw instead), so a failure says
/// what did not happen.
pub fn eventually<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "waited {} s for {what}; last seen: {last}",
                    PATIENCE.as_secs()
                );
            }
        }
        std::thread::sleep(POLL);
    }
}

/// [`eventually`] for async tests: the probe is awaited, the wait does not block the
/// runtime.
pub async fn eventually_async<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    // Tokio's clock, so that a test with paused time waits in its own time.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "waited {} s for {what}; last seen: {last}",
                    PATIENCE.as_secs()
                );
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_returns_the_first_value_the_probe_finds() {
        let mut looks = 0;
        let found = eventually("the third look", || {
            looks += 1;
            if looks == 3 {
                Ok(looks)
            } else {
                Err(format!("{looks} looks"))
            }
        });
        assert_eq!(found, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waited 300 s for a thing that never happens; last seen: nothing")]
    async fn eventually_async_names_what_never_happened() {
        eventually_async("a thing that never happens", || async {
            Err::<(), _>("nothing".to_string())
        })
        .await;
    }
}
