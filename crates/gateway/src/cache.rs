//! The exact-match response cache: a call whose request is the same as an earlier
//! one's (same tenant, route, model and body; the caller's `user` and
//! `stream_options` aside) is answered with that call's answer, streamed answers
//! replayed as a stream.
//!
//! Off unless `[gateway.cache]` is configured. Entries live `ttl`; the cache holds at
//! most `max_bytes` of answers, evicting the oldest first, and never an answer over
//! `max_entry_bytes`. Only complete, successful answers are kept. A caller sending
//! `Cache-Control: no-cache` (or `no-store`) neither reads nor fills it. Keys are
//! 128-bit hashes of the request, so the cache holds no prompt text beside the answers.
//! Time comes from a [`Clock`], so tests control it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ais_model::time::Clock;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::record::Usage;

/// `[gateway.cache]`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub max_bytes: usize,
    pub max_entry_bytes: usize,
}

/// An answer kept: the bytes as the upstream sent them (a stream's usage chunk
/// included) and what its event needs.
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub usage: Option<Usage>,
    pub response_model: Option<String>,
    pub provider: Option<&'static str>,
}

struct Entry {
    cached: Cached,
    expires: Instant,
    /// Which insertion this is, so a stale place in the eviction order is skipped.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u128, Entry>,
    /// Oldest first: (key, generation).
    order: VecDeque<(u128, u64)>,
    bytes: usize,
    generation: u64,
}

pub struct ResponseCache {
    config: CacheConfig,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    hits: metrics::Counter,
    misses: metrics::Counter,
    bytes: metrics::Gauge,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ResponseCache")
            .field("config", &self.config)
            .finish()
    }
}

/// Whether the caller opted out of the cache.
pub fn opted_out(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| {
            let directive = directive.trim();
            directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        })
}

/// The key of a request: the tenant, the route and the body with the model given by
/// its canonical name, without the fields that do not change the answer.
pub fn key(tenant: &str, operation: &str, model: &str, body: &Map<String, Value>) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(tenant.as_bytes());
    hasher.update(&[0]);
    hasher.update(operation.as_bytes());
    hasher.update(&[0]);
    hasher.update(model.as_bytes());
    hasher.update(&[0]);
    for (name, value) in body {
        if matches!(name.as_str(), "model" | "user" | "stream_options") {
            continue;
        }
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(value.to_string().as_bytes());
        hasher.update(&[0]);
    }
    hasher.digest128()
}

impl ResponseCache {
    pub fn new(config: CacheConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            clock,
            hits: metrics::counter!("ais_gateway_cache_total", "outcome" => "hit"),
            misses: metrics::counter!("ais_gateway_cache_total", "outcome" => "miss"),
            bytes: metrics::gauge!("ais_gateway_cache_bytes"),
        }
    }

    pub fn max_entry_bytes(&self) -> usize {
        self.config.max_entry_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live answer under `key`, if any.
    pub fn get(&self, key: u128) -> Option<Cached> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let live = match inner.entries.get(&key) {
            Some(entry) if entry.expires > now => Some(entry.cached.clone()),
            Some(_) => {
                if let Some(expired) = inner.entries.remove(&key) {
                    inner.bytes -= expired.cached.body.len();
                }
                None
            }
            None => None,
        };
        self.bytes.set(inner.bytes as f64);
        drop(inner);
        match live {
            Some(cached) => {
                self.hits.increment(1);
                Some(cached)
            }
            None => {
                self.misses.increment(1);
                None
            }
        }
    }

    /// Keeps an answer under `key` (replacing any), evicting the oldest answers past
    /// the byte bound; an answer over `max_entry_bytes` is not kept.
    pub fn put(&self, key: u128, cached: Cached) {
        let size = cached.body.len();
        if size > self.config.max_entry_bytes || size > self.config.max_bytes {
            return;
        }
        let expires = self.clock.now() + self.config.ttl;
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        if let Some(previous) = inner.entries.insert(
            key,
            Entry {
                cached,
                expires,
                generation,
            },
        ) {
            inner.bytes -= previous.cached.body.len();
        }
        inner.bytes += size;
        inner.order.push_back((key, generation));
        while inner.bytes > self.config.max_bytes {
            let Some((oldest, generation)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&oldest).map(|entry| entry.generation) == Some(generation) {
                if let Some(evicted) = inner.entries.remove(&oldest) {
                    inner.bytes -= evicted.cached.body.len();
                }
            }
        }
        // Replaced and expired entries leave stale places behind: drop them before the
        // order outgrows the entries.
        if inner.order.len() > 2 * inner.entries.len() + 64 {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|(key, generation)| {
                entries.get(key).map(|entry| entry.generation) == Some(*generation)
            });
        }
        self.bytes.set(inner.bytes as f64);
    }

    /// Bytes of answers held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use ais_model::time::ManualClock;
    use axum::http::HeaderValue;

    use super::*;

    fn cached(size: usize) -> Cached {
        Cached {
            body: Bytes::from(vec![b'x'; size]),
            usage: None,
            response_model: None,
            provider: None,
        }
    }

    fn cache(clock: &ManualClock) -> ResponseCache {
        ResponseCache::new(
            CacheConfig {
                ttl: Duration::from_secs(60),
                max_bytes: 100,
                max_entry_bytes: 50,
            },
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let clock = ManualClock::at(0);
        let cache = cache(&clock);
        cache.put(1, cached(10));
        clock.advance(Duration::from_secs(59));
        assert!(cache.get(1).is_some());
        clock.advance(Duration::from_secs(1));
        assert!(cache.get(1).is_none());
        assert_eq!(cache.bytes(), 0, "an expired entry's bytes are freed");
    }

    #[test]
    fn the_byte_bound_evicts_the_oldest_and_refuses_oversized_answers() {
        let clock = ManualClock::at(0);
        let cache = cache(&clock);
        for key in 0..4 {
            cache.put(key, cached(40));
        }
        assert!(cache.bytes() <= 100, "{}", cache.bytes());
        assert!(
            cache.get(0).is_none() && cache.get(1).is_none(),
            "oldest gone"
        );
        assert!(cache.get(2).is_some() && cache.get(3).is_some());
        cache.put(9, cached(51));
        assert!(cache.get(9).is_none(), "over max_entry_bytes");
        // Replacing a key many times keeps the order bounded and the count right.
        for _ in 0..1000 {
            cache.put(3, cached(40));
        }
        assert!(cache.bytes() <= 100);
        assert!(cache.get(3).is_some());
    }

    #[test]
    fn keys_ignore_the_user_and_stream_options_but_not_the_prompt() {
        let body = |user: &str, prompt: &str| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({
                "model": "alias", "user": user, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": prompt}],
            }))
            .expect("object")
        };
        let one = key("acme", "chat", "gpt-4o", &body("a", "hi"));
        assert_eq!(one, key("acme", "chat", "gpt-4o", &body("b", "hi")));
        assert_ne!(one, key("acme", "chat", "gpt-4o", &body("a", "ho")));
        assert_ne!(one, key("other", "chat", "gpt-4o", &body("a", "hi")));
        assert_ne!(
            one,
            key("acme", "text_completion", "gpt-4o", &body("a", "hi"))
        );
    }

    #[test]
    fn no_cache_and_no_store_opt_out() {
        let mut headers = HeaderMap::new();
        assert!(!opted_out(&headers));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(opted_out(&headers));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(opted_out(&headers));
    }
}
