//! What the workspace's tests share: one patience and waiting for the event itself
//! rather than for a while; and an HMAC written out independently of the one the
//! alert signatures use, to check them; the model of a payload search.
//!
//! A test never sleeps and then asserts: the thing it waits for may not have happened
//! yet on a slow or loaded machine, and then the assertion either fails for nothing or,
//! worse, passes vacuously. It polls for the event with [`eventually`] (or
//! [`eventually_async`]) and fails, naming what it waited for, only after [`PATIENCE`].
//! Speed is measured by benchmarks, never here.

use std::time::{Duration, Instant};

#[cfg(feature = "upstream")]
pub mod upstream;

/// The model of a payload search (`q=`): whether any of `payloads` holds `text`,
/// ignoring case, by lowercasing both. Written apart from the engines' search, which
/// tests compare with it.
pub fn payload_holds<'a>(payloads: impl IntoIterator<Item = Option<&'a str>>, text: &str) -> bool {
    let wanted = text.to_lowercase();
    payloads
        .into_iter()
        .flatten()
        .any(|payload| payload.to_lowercase().contains(&wanted))
}

/// How long any test waits for anything that is expected to happen: an answer, a
/// commit, a drain, a server start. Long, because it is only ever spent on a failure.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// Between two looks at the awaited event (also the cadence of a test that samples a
/// state while it waits for something else).
pub const POLL: Duration = Duration::from_millis(50);

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

/// Samples `probe` every [`POLL`] while something else happens, until it finds what it
/// looks for (`Some`) or `done` is set (`None`): for a state that may or may not show
/// while a test waits for its real outcome elsewhere.
pub fn sample_until<T>(
    done: &std::sync::atomic::AtomicBool,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(found) = probe() {
            return Some(found);
        }
        std::thread::sleep(POLL);
    }
    None
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

/// HMAC-SHA256 (RFC 2104) written out from the definition, independent of the
/// server's, so a test that checks a signature with it checks the server.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0_u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let inner_digest = Sha256::digest(&inner);
    let outer: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(inner_digest.iter().copied())
        .collect();
    Sha256::digest(&outer).to_vec()
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

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
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
