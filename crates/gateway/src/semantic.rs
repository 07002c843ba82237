//! The semantic response cache: a call whose prompt means nearly the same as an
//! earlier call's (the cosine similarity of their embeddings at least `similarity`),
//! with everything else in the request the same, is answered with that call's answer.
//!
//! Off unless `[gateway.semantic_cache]` is configured. The prompt is the last user
//! message of a chat (its text parts) or a completion's `prompt`; everything else in
//! the request (the model, the earlier messages, the system prompt, the parameters,
//! whether it streams; the caller's `user` and `stream_options` aside) must be the
//! same, so it is hashed into a context key and only entries of the same context are
//! compared. The embedding comes from a model of the gateway's own config
//! (`embedding_model`, an `openai` upstream), asked through `/embeddings` with one
//! attempt; when it fails the call goes upstream as if the cache were off. That
//! attempt spends the tenant's money, so it is an event of the caller's tenant
//! (`attributes.purpose = "semantic_cache"`, failed or not) written by the same
//! recorder as the calls; it reserves nothing, its spend counted when its event lands.
//!
//! Requests whose answer is not meant to repeat are never answered from it, nor kept:
//! a `temperature` above `max_temperature` (absent counts as 1.0, the APIs' default),
//! and requests with `tools` or `functions` unless `cache_tools` is set. A caller
//! sending `Cache-Control: no-cache` (or `no-store`) neither reads nor fills it.
//!
//! The index is an exact cosine scan over the entries of one context: exact (no
//! approximate index misses a neighbour or needs rebuilding after deletions) and
//! cheap at the bound, [`MAX_ENTRIES_LIMIT`] entries at most (a lookup scans only its
//! context's). Entries live `ttl`; at `max_entries` or `max_bytes` the oldest is
//! evicted first. Vectors are kept normalised, so a similarity is a dot product. Time
//! comes from a [`Clock`], so tests control it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ais_model::time::Clock;
use serde_json::{Map, Value};

use crate::cache::Cached;

/// Entries a config may ask for at most. A lookup scans its context's entries under
/// the cache's lock, and every entry may share one context (one system prompt): at
/// 10,000 vectors of 1,536 dimensions that is 15 M multiply-adds over 61 MB, measured
/// at 4–6 ms (P50) on a 2-vCPU machine (`examples/semantic_lookup.rs`), the most a
/// call should wait for a lookup.
pub const MAX_ENTRIES_LIMIT: usize = 10_000;
/// Entries kept when the config does not say.
pub const DEFAULT_MAX_ENTRIES: usize = MAX_ENTRIES_LIMIT;
/// The temperature of a request that sets none (OpenAI's and Anthropic's default).
pub const DEFAULT_TEMPERATURE: f64 = 1.0;
/// The longest prompt embedded, in bytes; a longer one bypasses the cache (an
/// embedding model's input limit is a few thousand tokens).
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;

/// `[gateway.semantic_cache]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    /// The canonical name of the model that embeds prompts.
    pub embedding_model: String,
    pub similarity: f32,
    pub ttl: Duration,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub max_entry_bytes: usize,
    pub max_temperature: f64,
    pub cache_tools: bool,
}

/// Where a request's answer would go in the cache: its context and its prompt's
/// embedding (normalised).
#[derive(Debug, Clone)]
pub struct SemanticKey {
    pub context: u128,
    pub vector: Arc<[f32]>,
}

struct Entry {
    context: u128,
    vector: Arc<[f32]>,
    cached: Cached,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Each context's entries.
    by_context: HashMap<u128, Vec<u64>>,
    /// Ids oldest first; every entry's TTL is the same, so the first to expire too.
    order: VecDeque<u64>,
    bytes: usize,
    next_id: u64,
}

impl Inner {
    fn remove(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.bytes -= entry_bytes(&entry.cached, &entry.vector);
        if let Some(ids) = self.by_context.get_mut(&entry.context) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_context.remove(&entry.context);
            }
        }
    }

    /// Drops expired entries from the front of the order.
    fn expire(&mut self, now: Instant) {
        while let Some(&oldest) = self.order.front() {
            match self.entries.get(&oldest) {
                Some(entry) if entry.expires > now => break,
                _ => {
                    self.order.pop_front();
                    self.remove(oldest);
                }
            }
        }
    }
}

fn entry_bytes(cached: &Cached, vector: &[f32]) -> usize {
    cached.body.len() + std::mem::size_of_val(vector)
}

/// The cache: bounded entries, looked up by nearest prompt within a context.
pub struct SemanticCache {
    config: SemanticConfig,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    entries_gauge: metrics::Gauge,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SemanticCache")
            .field("config", &self.config)
            .finish()
    }
}

/// What the cache said of one request, as counted in
/// `ais_gateway_semantic_cache_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// The request may not be answered from it (temperature, tools, no prompt).
    Bypass,
    /// The prompt could not be embedded: the call went upstream.
    EmbeddingFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Bypass,
        Outcome::EmbeddingFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::EmbeddingFailed => "embedding_failed",
        }
    }

    pub fn count(self) {
        metrics::counter!("ais_gateway_semantic_cache_total", "outcome" => self.label())
            .increment(1);
    }
}

impl SemanticCache {
    pub fn new(config: SemanticConfig, clock: Arc<dyn Clock>) -> Self {
        for outcome in Outcome::ALL {
            metrics::counter!("ais_gateway_semantic_cache_total", "outcome" => outcome.label())
                .increment(0);
        }
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            clock,
            entries_gauge: metrics::gauge!("ais_gateway_semantic_cache_entries"),
        }
    }

    pub fn config(&self) -> &SemanticConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live answer of the most similar prompt in `key`'s context, with its
    /// similarity, if that is at least the configured one.
    pub fn get(&self, key: &SemanticKey) -> Option<(Cached, f32)> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.expire(now);
        let ids = inner.by_context.get(&key.context)?;
        let best = ids
            .iter()
            .filter_map(|id| inner.entries.get(id))
            .map(|entry| (dot(&entry.vector, &key.vector), entry))
            .filter(|(similarity, _)| *similarity >= self.config.similarity)
            .max_by(|(left, _), (right, _)| left.total_cmp(right))
            .map(|(similarity, entry)| (entry.cached.clone(), similarity));
        self.entries_gauge.set(inner.entries.len() as f64);
        best
    }

    /// Keeps an answer under `key`, evicting the oldest entries past the bounds; an
    /// answer over `max_entry_bytes` is not kept.
    pub fn put(&self, key: SemanticKey, cached: Cached) {
        let size = entry_bytes(&cached, &key.vector);
        if cached.body.len() > self.config.max_entry_bytes || size > self.config.max_bytes {
            return;
        }
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.expire(now);
        while inner.entries.len() >= self.config.max_entries
            || inner.bytes + size > self.config.max_bytes
        {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.remove(oldest);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_context.entry(key.context).or_default().push(id);
        inner.order.push_back(id);
        inner.bytes += size;
        inner.entries.insert(
            id,
            Entry {
                context: key.context,
                vector: key.vector,
                cached,
                expires: now + self.config.ttl,
            },
        );
        self.entries_gauge.set(inner.entries.len() as f64);
    }

    /// Whether a request may be answered from the cache (and fill it): `None` when not.
    pub fn prompt_of<'a>(&self, body: &'a Map<String, Value>) -> Option<Prompt<'a>> {
        let temperature = body
            .get("temperature")
            .and_then(Value::as_f64)
            .unwrap_or(DEFAULT_TEMPERATURE);
        if temperature > self.config.max_temperature {
            return None;
        }
        let has_tools = ["tools", "functions"].iter().any(|field| {
            body.get(*field).is_some_and(|value| {
                !value.is_null() && value.as_array().is_none_or(|list| !list.is_empty())
            })
        });
        if has_tools && !self.config.cache_tools {
            return None;
        }
        let prompt = prompt(body)?;
        (!prompt.text.is_empty() && prompt.text.len() <= MAX_PROMPT_BYTES).then_some(prompt)
    }
}

/// The prompt of a request: its text, and where it sits so the context leaves it out.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt<'a> {
    pub text: String,
    /// The index of the prompt's message in `messages`; `None` for a completion's
    /// `prompt`.
    message: Option<usize>,
    body: &'a Map<String, Value>,
}

/// The last user message's text (chat, Anthropic's messages), or the `prompt` string.
fn prompt(body: &Map<String, Value>) -> Option<Prompt<'_>> {
    if let Some(Value::Array(messages)) = body.get("messages") {
        let index = messages
            .iter()
            .rposition(|message| message.get("role").and_then(Value::as_str) == Some("user"))?;
        let text = match messages[index].get("content")? {
            Value::String(text) => text.clone(),
            Value::Array(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .map(|part| part.get("text").and_then(Value::as_str))
                    .collect::<Option<Vec<&str>>>()?;
                texts.join("\n")
            }
            _ => return None,
        };
        return Some(Prompt {
            text,
            message: Some(index),
            body,
        });
    }
    let text = body.get("prompt")?.as_str()?.to_string();
    Some(Prompt {
        text,
        message: None,
        body,
    })
}

impl Prompt<'_> {
    /// The hash of everything in the request but the prompt's text (and the fields
    /// that do not change the answer), under the tenant, the route and the model.
    pub fn context(&self, tenant: &str, operation: &str, model: &str) -> u128 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in [tenant, operation, model] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        for (name, value) in self.body {
            if matches!(name.as_str(), "model" | "user" | "stream_options") {
                continue;
            }
            if self.message.is_none() && name == "prompt" {
                continue;
            }
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
            match (name.as_str(), value, self.message) {
                ("messages", Value::Array(messages), Some(prompt_index)) => {
                    for (index, message) in messages.iter().enumerate() {
                        if index == prompt_index {
                            // The prompt's message counts by its other fields only.
                            if let Value::Object(fields) = message {
                                for (field, field_value) in fields {
                                    if field != "content" {
                                        hasher.update(field.as_bytes());
                                        hasher.update(field_value.to_string().as_bytes());
                                    }
                                }
                            }
                        } else {
                            hasher.update(message.to_string().as_bytes());
                        }
                        hasher.update(&[1]);
                    }
                }
                _ => hasher.update(value.to_string().as_bytes()),
            }
            hasher.update(&[0]);
        }
        hasher.digest128()
    }
}

/// A vector scaled to length 1; `None` for an empty or zero vector, which has no
/// direction to compare.
pub fn normalised(vector: Vec<f32>) -> Option<Arc<[f32]>> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if vector.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(vector.into_iter().map(|x| x / norm).collect())
}

/// Independent partial sums of [`dot`]: floating-point addition is not associative,
/// so one running sum makes every multiply-add wait for the last; eight lanes let the
/// compiler use vector instructions.
const DOT_LANES: usize = 8;

/// The dot product; vectors of different lengths (another embedding model) are not
/// similar at all.
fn dot(left: &[f32], right: &[f32]) -> f32 {
    if left.len() != right.len() {
        return f32::NEG_INFINITY;
    }
    let mut lanes = [0.0f32; DOT_LANES];
    let left_chunks = left.chunks_exact(DOT_LANES);
    let right_chunks = right.chunks_exact(DOT_LANES);
    let tail: f32 = left_chunks
        .remainder()
        .iter()
        .zip(right_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in left_chunks.zip(right_chunks) {
        for lane in 0..DOT_LANES {
            lanes[lane] += a[lane] * b[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The first vector of an `/embeddings` answer.
pub fn embedding_of_answer(body: &[u8]) -> Option<Vec<f32>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Datum>,
    }
    #[derive(serde::Deserialize)]
    struct Datum {
        embedding: Vec<f32>,
    }
    serde_json::from_slice::<Answer>(body)
        .ok()?
        .data
        .into_iter()
        .next()
        .map(|datum| datum.embedding)
}

#[cfg(test)]
mod tests {
    use ais_model::time::ManualClock;
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn config(max_entries: usize) -> SemanticConfig {
        SemanticConfig {
            embedding_model: "embed".into(),
            similarity: 0.9,
            ttl: Duration::from_secs(60),
            max_entries,
            max_bytes: 1 << 20,
            max_entry_bytes: 1 << 16,
            max_temperature: 0.0,
            cache_tools: false,
        }
    }

    fn cached(text: &str) -> Cached {
        Cached {
            body: Bytes::from(text.to_string()),
            usage: None,
            response_model: None,
            provider: None,
        }
    }

    fn key(context: u128, vector: &[f32]) -> SemanticKey {
        SemanticKey {
            context,
            vector: normalised(vector.to_vec()).expect("non-zero"),
        }
    }

    #[test]
    fn the_nearest_prompt_of_the_same_context_answers_above_the_threshold() {
        let clock = Arc::new(ManualClock::at(0));
        let cache = SemanticCache::new(config(10), clock.clone());
        cache.put(key(1, &[1.0, 0.0, 0.0]), cached("x"));
        cache.put(key(1, &[0.0, 1.0, 0.0]), cached("y"));
        let (hit, similarity) = cache.get(&key(1, &[0.9, 0.1, 0.0])).expect("near x");
        assert_eq!(hit.body, "x");
        assert!(similarity > 0.9);
        assert!(cache.get(&key(1, &[0.5, 0.5, 0.0])).is_none(), "below 0.9");
        assert!(
            cache.get(&key(2, &[1.0, 0.0, 0.0])).is_none(),
            "other context"
        );
        clock.advance(Duration::from_secs(61));
        assert!(cache.get(&key(1, &[1.0, 0.0, 0.0])).is_none(), "expired");
        assert!(cache.lock().entries.is_empty(), "and deleted");
    }

    #[test]
    fn the_dot_product_of_any_length_matches_the_plain_sum() {
        for length in [0, 1, 7, 8, 9, 17, 1536] {
            let left: Vec<f32> = (0..length).map(|i| (i as f32 * 0.37).sin()).collect();
            let right: Vec<f32> = (0..length).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = left.iter().zip(&right).map(|(a, b)| a * b).sum();
            assert!((dot(&left, &right) - plain).abs() < 1e-3, "length {length}");
        }
        assert_eq!(dot(&[1.0], &[1.0, 0.0]), f32::NEG_INFINITY);
    }

    #[test]
    fn the_oldest_entry_goes_first_at_the_bound() {
        let cache = SemanticCache::new(config(2), Arc::new(ManualClock::at(0)));
        cache.put(key(1, &[1.0, 0.0]), cached("a"));
        cache.put(key(1, &[0.0, 1.0]), cached("b"));
        cache.put(key(2, &[1.0, 0.0]), cached("c"));
        assert!(cache.get(&key(1, &[1.0, 0.0])).is_none(), "a evicted");
        assert!(cache.get(&key(1, &[0.0, 1.0])).is_some());
        assert!(cache.get(&key(2, &[1.0, 0.0])).is_some());
        let inner = cache.lock();
        assert_eq!(inner.entries.len(), 2);
        assert_eq!(inner.by_context.values().map(Vec::len).sum::<usize>(), 2);
    }

    #[test]
    fn the_context_leaves_out_only_the_prompt() {
        let body = |system: &str, prompt: &str, temperature: f64| -> Map<String, Value> {
            serde_json::from_value(json!({"model": "m", "temperature": temperature,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}]}))
            .expect("object")
        };
        let cache = SemanticCache::new(config(10), Arc::new(ManualClock::at(0)));
        let first = body("be brief", "what is rust", 0.0);
        let paraphrase = body("be brief", "what's rust?", 0.0);
        let other_system = body("be verbose", "what is rust", 0.0);
        let context = |body: &Map<String, Value>| {
            cache
                .prompt_of(body)
                .expect("eligible")
                .context("acme", "chat", "m")
        };
        assert_eq!(
            cache.prompt_of(&first).expect("eligible").text,
            "what is rust"
        );
        assert_eq!(context(&first), context(&paraphrase));
        assert_ne!(context(&first), context(&other_system));
        assert!(cache.prompt_of(&body("s", "p", 0.7)).is_none(), "sampled");
        let mut tools = first.clone();
        tools.insert("tools".into(), json!([{"type": "function"}]));
        assert!(cache.prompt_of(&tools).is_none(), "tools");
        let mut unset = first.clone();
        unset.remove("temperature");
        assert!(
            cache.prompt_of(&unset).is_none(),
            "the default temperature samples"
        );
    }
}
