//! What one semantic-cache lookup costs at the cache's bound: `max_entries` answers
//! whose prompts all share one context (the worst case: every lookup scans them all),
//! vectors of DIMENSIONS (1,536 is `text-embedding-3-small`'s).
//!
//! `cargo run --release -p ais-gateway --example semantic_lookup -- [ENTRIES]
//! [DIMENSIONS] [LOOKUPS]`; prints the time per lookup (P50, P99, mean).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ais_gateway::cache::Cached;
use ais_gateway::semantic::{normalised, SemanticCache, SemanticConfig, SemanticKey};
use ais_model::time::SystemClock;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dimensions: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1_536);
    let lookups: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let cache = SemanticCache::new(
        SemanticConfig {
            embedding_model: "embed".into(),
            similarity: 0.95,
            ttl: Duration::from_secs(3600),
            max_entries: entries,
            max_bytes: usize::MAX,
            max_entry_bytes: 1 << 20,
            max_temperature: 0.0,
            cache_tools: false,
        },
        Arc::new(SystemClock),
    );
    let mut rng = rand::rng();
    let mut vector = || {
        let raw: Vec<f32> = (0..dimensions)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        normalised(raw).expect("non-zero")
    };
    for _ in 0..entries {
        cache.put(
            SemanticKey {
                context: 1,
                vector: vector(),
            },
            Cached {
                body: Bytes::from_static(b"{}"),
                usage: None,
                response_model: None,
                provider: None,
            },
        );
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let started = Instant::now();
    for _ in 0..lookups {
        let key = SemanticKey {
            context: 1,
            vector: vector(),
        };
        let begun = Instant::now();
        std::hint::black_box(cache.get(&key));
        let _ = histogram.record(begun.elapsed().as_micros().max(1) as u64);
    }
    let mean = started.elapsed() / lookups as u32;
    println!(
        "{entries} entries of {dimensions} dimensions in one context: lookup p50 {:.2} ms p99 {:.2} ms (mean with the query's generation {:.2} ms)",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        mean.as_secs_f64() * 1000.0,
    );
}
