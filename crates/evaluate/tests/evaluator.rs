//! The evaluator against the real SQLite store: each final window once, the key bound.

use std::borrow::Cow;

use ais_evaluate::evaluator::{Evaluator, EvaluatorConfig};
use ais_model::{Event, EventId};
use ais_rollup::RollupPartial;
use ais_store::sqlite::SqliteStore;
use ais_store::{BatchCommit, RollupKey, Store};

const MINUTE: i64 = 60_000;

fn partial(requests: u64) -> RollupPartial {
    let mut partial = RollupPartial::new();
    for index in 0..requests {
        let event = Event {
            output_tokens: Some(10),
            ..Event::new(
                Cow::Borrowed("m"),
                EventId::Generated(0),
                0,
                100.0 + index as f64,
            )
        };
        partial.add(&event, false);
    }
    partial
}

#[tokio::test]
async fn windows_are_evaluated_once_and_keys_stay_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("s.sqlite")).expect("store");
    let mut partials = Vec::new();
    for minute in 0..40 {
        for model in ["a", "b", "c"] {
            partials.push((
                RollupKey {
                    tenant: "t".to_string(),
                    model: model.to_string(),
                    minute_ms: minute * MINUTE,
                },
                partial(30),
            ));
        }
    }
    store
        .commit(BatchCommit {
            partition: 0,
            first_offset: 0,
            next_offset: 1,
            // Windows before minute 30 are final.
            watermark_ms: 30 * MINUTE,
            partials,
            dedup: Vec::new(),
            events: Vec::new(),
        })
        .await
        .expect("commit");
    let evaluator = Evaluator::new(EvaluatorConfig {
        max_keys: 2,
        first_lookback: std::time::Duration::from_secs(3600),
        ..EvaluatorConfig::default()
    });
    let evaluated = evaluator.pass(&store).await.expect("pass");
    assert_eq!(evaluated, 30, "the 30 final windows");
    assert_eq!(
        evaluator.pass(&store).await.expect("second pass"),
        0,
        "each window once"
    );
    let (next, state) = store
        .evaluation_state()
        .await
        .expect("state")
        .expect("committed");
    assert_eq!(next, 30 * MINUTE);
    let state: serde_json::Value = serde_json::from_slice(&state).expect("state is JSON");
    let keys = state["keys"].as_object().expect("keys").len();
    assert_eq!(keys, 2, "at most max_keys tracked");
}
