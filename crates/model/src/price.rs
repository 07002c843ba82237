//! Prices per million tokens, used to compute `cost_usd` when a producer did not send it.
//!
//! Defaults are list prices as published by the providers on [`DEFAULT_PRICES_AS_OF`];
//! a config file can override or add models. Matching is by exact model name first,
//! then by the longest configured prefix followed by `-`, `.`, `:`, `@` or `/` (so
//! `gpt-4o-2024-08-06` is priced as `gpt-4o` and `gpt-4o-mini-2024-07-18` as
//! `gpt-4o-mini`).
//!
//! The counts follow the OpenTelemetry GenAI convention: `input_tokens` and
//! `output_tokens` are totals, and the detailed counts are parts of them, never
//! additions.
//! - `input_tokens` counts every input token, cache reads and cache writes included (as
//!   OpenAI reports `prompt_tokens`, and as GenAI instrumentations of Anthropic report
//!   `gen_ai.usage.input_tokens`). Anthropic's own API reports `input_tokens` *without*
//!   `cache_read_input_tokens` and `cache_creation_input_tokens`: a producer relaying
//!   those numbers must send their sum as `input_tokens`.
//! - Of `input_tokens`, `cache_read_input_tokens` are billed at the cache-read price,
//!   `cache_creation_input_tokens` at the cache-write price, the rest at the input
//!   price. A model without a cache-read or cache-write price bills those tokens as
//!   plain input. Cached counts larger than the input are cut to it (reads first), so
//!   no token is billed twice.
//! - `reasoning_output_tokens` are a part of `output_tokens` (OpenAI's
//!   `completion_tokens_details.reasoning_tokens`) and are billed with them, at the
//!   output price: they add nothing to the cost.
//!
//! Costs are computed in integer micro-dollars (prices are turned into micro-dollars
//! per million tokens, rounded once at the end), so they do not depend on
//! floating-point rounding.

use serde::{Deserialize, Serialize};

use crate::Event;

pub const DEFAULT_PRICES_AS_OF: &str = "2026-11-01";

/// USD per one million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Price of cache-read input tokens; when absent, they cost as plain input.
    pub cache_read_per_mtok: Option<f64>,
    /// Price of cache-creation (cache-write) input tokens; when absent, they cost as
    /// plain input (OpenAI and Gemini charge no premium for writing their caches).
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
}

/// (model, input, output, cache read, cache write) in USD per million tokens.
type DefaultPrice = (&'static str, f64, f64, Option<f64>, Option<f64>);

/// The built-in prices, one [`DefaultPrice`] per model. Anthropic's cache write is its
/// 5-minute cache's price, 1.25 × input; the others charge nothing extra for writes.
///
/// A cheaper sibling whose name extends another entry's (`o3-mini` of `o3`,
/// `gemini-2.5-flash-lite` of `gemini-2.5-flash`, `claude-opus-4-5` of `claude-opus-4`)
/// needs its own row, or prefix matching would price it as the bigger model.
const DEFAULTS: &[DefaultPrice] = &[
    ("gpt-4o", 2.50, 10.00, Some(1.25), None),
    ("gpt-4o-mini", 0.15, 0.60, Some(0.075), None),
    ("gpt-4.1", 2.00, 8.00, Some(0.50), None),
    ("gpt-4.1-mini", 0.40, 1.60, Some(0.10), None),
    ("gpt-4.1-nano", 0.10, 0.40, Some(0.025), None),
    ("gpt-5", 1.25, 10.00, Some(0.125), None),
    ("gpt-5-mini", 0.25, 2.00, Some(0.025), None),
    ("gpt-5-nano", 0.05, 0.40, Some(0.005), None),
    ("o3", 2.00, 8.00, Some(0.50), None),
    ("o3-mini", 1.10, 4.40, Some(0.55), None),
    ("o4-mini", 1.10, 4.40, Some(0.275), None),
    ("claude-sonnet-4", 3.00, 15.00, Some(0.30), Some(3.75)),
    ("claude-opus-4", 15.00, 75.00, Some(1.50), Some(18.75)),
    ("claude-opus-4-5", 5.00, 25.00, Some(0.50), Some(6.25)),
    ("claude-haiku-4-5", 1.00, 5.00, Some(0.10), Some(1.25)),
    ("claude-3-5-haiku", 0.80, 4.00, Some(0.08), Some(1.00)),
    ("gemini-2.5-pro", 1.25, 10.00, Some(0.31), None),
    ("gemini-2.5-flash", 0.30, 2.50, Some(0.075), None),
    ("gemini-2.5-flash-lite", 0.10, 0.40, Some(0.025), None),
    ("text-embedding-3-small", 0.02, 0.0, None, None),
    ("text-embedding-3-large", 0.13, 0.0, None, None),
    ("llama-3.1-8b-instruct", 0.05, 0.08, None, None),
    ("mistral-small", 0.10, 0.30, None, None),
];

/// A price in integer micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MicroPrice {
    input: u128,
    output: u128,
    cache_read: u128,
    cache_write: u128,
}

impl MicroPrice {
    fn from_price(price: &ModelPrice) -> Self {
        let micros = |usd: f64| -> u128 {
            if usd.is_finite() && usd > 0.0 {
                (usd * 1e6).round() as u128
            } else {
                0
            }
        };
        let input = micros(price.input_per_mtok);
        Self {
            input,
            output: micros(price.output_per_mtok),
            cache_read: price.cache_read_per_mtok.map_or(input, micros),
            cache_write: price.cache_write_per_mtok.map_or(input, micros),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: Vec<(String, ModelPrice, MicroPrice)>,
}

impl PriceTable {
    /// The built-in table of common models.
    pub fn with_defaults() -> Self {
        let mut table = Self::default();
        for (model, input, output, cache_read, cache_write) in DEFAULTS {
            table.set(
                model,
                ModelPrice {
                    input_per_mtok: *input,
                    output_per_mtok: *output,
                    cache_read_per_mtok: *cache_read,
                    cache_write_per_mtok: *cache_write,
                },
            );
        }
        table
    }

    /// Adds or replaces one model's price.
    pub fn set(&mut self, model: &str, price: ModelPrice) {
        let micro = MicroPrice::from_price(&price);
        match self.entries.iter_mut().find(|(name, _, _)| name == model) {
            Some(entry) => *entry = (model.to_string(), price, micro),
            None => self.entries.push((model.to_string(), price, micro)),
        }
    }

    /// The exact entry, else the longest entry that `model` extends at a separator, in
    /// one pass over the table (it runs for every event sent without `cost_usd`).
    fn find(&self, model: &str) -> Option<&(String, ModelPrice, MicroPrice)> {
        let mut longest_prefix: Option<&(String, ModelPrice, MicroPrice)> = None;
        for entry in &self.entries {
            let name = entry.0.as_str();
            let Some(rest) = model.strip_prefix(name) else {
                continue;
            };
            if rest.is_empty() {
                return Some(entry);
            }
            let at_separator = matches!(
                rest.as_bytes().first(),
                Some(b'-' | b'.' | b':' | b'@' | b'/')
            );
            if at_separator && longest_prefix.is_none_or(|best| best.0.len() < name.len()) {
                longest_prefix = Some(entry);
            }
        }
        longest_prefix
    }

    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        self.find(model).map(|(_, price, _)| price)
    }

    /// Cost of the event's tokens in micro-dollars, or `None` for an unpriced model.
    /// The billing rule is in the module docs; `reasoning_output_tokens` are not read:
    /// they are already in `output_tokens`.
    pub fn cost_micros(&self, event: &Event<'_>) -> Option<u64> {
        let (_, _, price) = self.find(&event.model)?;
        let input = u128::from(event.input_tokens.unwrap_or(0));
        let cache_read = u128::from(event.cache_read_input_tokens.unwrap_or(0)).min(input);
        let cache_write =
            u128::from(event.cache_creation_input_tokens.unwrap_or(0)).min(input - cache_read);
        let uncached = input - cache_read - cache_write;
        let output = u128::from(event.output_tokens.unwrap_or(0));
        // Tokens are at most u64::MAX, so only an absurd configured price could overflow
        // u128; saturate rather than wrap (or panic) if one does.
        let micro_tokens = uncached
            .saturating_mul(price.input)
            .saturating_add(cache_read.saturating_mul(price.cache_read))
            .saturating_add(cache_write.saturating_mul(price.cache_write))
            .saturating_add(output.saturating_mul(price.output));
        // Round half up once, at the end.
        let micros = micro_tokens.saturating_add(500_000) / 1_000_000;
        Some(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventId;

    fn event(model: &'static str, input: u64, cache: u64, output: u64) -> Event<'static> {
        Event {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cache_read_input_tokens: Some(cache),
            ..Event::new(model, EventId::Generated(1), 0, 1.0)
        }
    }

    #[test]
    fn prefixes_pick_the_longest_match_at_a_separator() {
        let table = PriceTable::with_defaults();
        assert_eq!(
            table.lookup("gpt-4o-2024-08-06").map(|p| p.input_per_mtok),
            Some(2.50)
        );
        assert_eq!(
            table
                .lookup("gpt-4o-mini-2024-07-18")
                .map(|p| p.input_per_mtok),
            Some(0.15)
        );
        assert_eq!(
            table.lookup("gpt-4o-mini").map(|p| p.input_per_mtok),
            Some(0.15)
        );
        assert_eq!(
            table.lookup("gpt-4omega"),
            None,
            "no separator after the prefix"
        );
        assert_eq!(table.lookup("my-own-model"), None);
    }

    #[test]
    fn costs_are_exact_micro_dollars() {
        let table = PriceTable::with_defaults();
        // gpt-4o: 1,000,000 input at $2.50 = 2,500,000 µ$; 1,000 output at $10 = 10,000 µ$.
        assert_eq!(
            table.cost_micros(&event("gpt-4o", 1_000_000, 0, 1_000)),
            Some(2_510_000)
        );
        // Cache reads: 400 of 1,000 input at $1.25, 600 at $2.50, 0 output:
        // (600 × 2.5 + 400 × 1.25) = 2,000 µ$.
        assert_eq!(
            table.cost_micros(&event("gpt-4o", 1_000, 400, 0)),
            Some(2_000)
        );
        // Rounding half up: 1 token of gpt-4o-mini input = 0.15 µ$ → 0; 4 tokens = 0.6 → 1.
        assert_eq!(table.cost_micros(&event("gpt-4o-mini", 1, 0, 0)), Some(0));
        assert_eq!(table.cost_micros(&event("gpt-4o-mini", 4, 0, 0)), Some(1));
        assert_eq!(table.cost_micros(&event("unpriced", 10, 0, 10)), None);
    }

    #[test]
    fn cheaper_siblings_are_not_priced_as_their_prefix() {
        let table = PriceTable::with_defaults();
        let input = |model: &str| table.lookup(model).map(|p| p.input_per_mtok);
        assert_eq!(input("o3-mini-2025-01-31"), Some(1.10));
        assert_eq!(input("o3-2025-04-16"), Some(2.00));
        assert_eq!(input("gemini-2.5-flash-lite-preview"), Some(0.10));
        assert_eq!(input("gemini-2.5-flash-001"), Some(0.30));
        assert_eq!(input("claude-opus-4-5-20251101"), Some(5.00));
        assert_eq!(input("claude-opus-4-1-20250805"), Some(15.00));
        assert_eq!(input("claude-sonnet-4-20250514"), Some(3.00));
        assert_eq!(input("gpt-4.1-mini-2025-04-14"), Some(0.40));
        assert_eq!(input("gpt-4.1"), Some(2.00));
        assert_eq!(input("gpt-4.10"), None, "4.10 is not a 4.1 snapshot");
        assert_eq!(
            input("meta/llama-3.1-8b-instruct"),
            None,
            "prefixes anchor at the start"
        );
        assert_eq!(input("llama-3.1-8b-instruct:free"), Some(0.05));
        assert_eq!(input(""), None);
    }

    #[test]
    fn embeddings_and_missing_cache_prices() {
        let table = PriceTable::with_defaults();
        // text-embedding-3-small: $0.02/M input, no output, no cache price; 123,456 tokens
        // (any of them "cache reads") cost $0.00246912 = 2,469.12 µ$ → 2,469.
        assert_eq!(
            table.cost_micros(&event("text-embedding-3-small", 123_456, 100_000, 0)),
            Some(2_469)
        );
        assert_eq!(
            table.cost_micros(&event("text-embedding-3-large", 10_000_000, 0, 5)),
            Some(1_300_000)
        );
        // More cache reads than input tokens: never more than the input is discounted.
        assert_eq!(
            table.cost_micros(&event("gpt-4o", 1_000, 5_000, 0)),
            Some(1_250)
        );
        // claude-sonnet-4: 1M output at $15 = 15,000,000 µ$, 1M cache reads at $0.30.
        assert_eq!(
            table.cost_micros(&event(
                "claude-sonnet-4-20250514",
                1_000_000,
                1_000_000,
                1_000_000
            )),
            Some(15_300_000)
        );
    }

    #[test]
    fn absurd_inputs_saturate_instead_of_overflowing() {
        let mut table = PriceTable::with_defaults();
        assert_eq!(
            table.cost_micros(&event("gpt-4o", u64::MAX, 0, u64::MAX)),
            // (2.5e6 + 10e6) µ$/M × (2^64 − 1) tokens, rounded: exact in u128.
            Some(u64::MAX)
        );
        table.set(
            "pricey",
            ModelPrice {
                input_per_mtok: 1e300,
                output_per_mtok: f64::INFINITY,
                cache_read_per_mtok: Some(f64::NAN),
                cache_write_per_mtok: Some(f64::INFINITY),
            },
        );
        assert_eq!(
            table.cost_micros(&event("pricey", u64::MAX, 1, 0)),
            Some(u64::MAX)
        );
        assert_eq!(
            table.cost_micros(&event("pricey", 0, 0, 5)),
            Some(0),
            "infinite price is no price"
        );
    }

    #[test]
    fn configured_prices_override_defaults() {
        let mut table = PriceTable::with_defaults();
        let price = ModelPrice {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
        };
        table.set("gpt-4o", price);
        table.set("my-finetune", price);
        assert_eq!(
            table.cost_micros(&event("gpt-4o", 1_000_000, 500_000, 0)),
            Some(1_000_000)
        );
        assert_eq!(
            table.cost_micros(&event("my-finetune-v2", 0, 0, 1_000_000)),
            Some(2_000_000)
        );
    }

    #[test]
    fn reasoning_tokens_are_part_of_the_output_and_not_billed_twice() {
        let table = PriceTable::with_defaults();
        // o3: 1,000 output at $8/M = 8,000 µ$, whatever part of them was reasoning.
        let plain = event("o3", 0, 0, 1_000);
        let reasoning = Event {
            reasoning_output_tokens: Some(800),
            ..plain.clone()
        };
        assert_eq!(table.cost_micros(&plain), Some(8_000));
        assert_eq!(table.cost_micros(&reasoning), Some(8_000));
        // Reasoning counts alone, without output_tokens, bill nothing: they are a part.
        let only_reasoning = Event {
            output_tokens: None,
            reasoning_output_tokens: Some(1_000),
            ..plain
        };
        assert_eq!(table.cost_micros(&only_reasoning), Some(0));
    }

    #[test]
    fn cache_writes_are_part_of_the_input_at_the_cache_write_price() {
        let table = PriceTable::with_defaults();
        let with_writes = |model: &'static str, input, read, write, output| Event {
            cache_creation_input_tokens: Some(write),
            ..event(model, input, read, output)
        };
        // claude-sonnet-4 (Anthropic usage 1,000 uncached + 2,000 read + 4,000 written,
        // sent as input_tokens 7,000): 1,000 × $3 + 2,000 × $0.30 + 4,000 × $3.75
        // + 100 output × $15 = 3,000 + 600 + 15,000 + 1,500 µ$.
        assert_eq!(
            table.cost_micros(&with_writes(
                "claude-sonnet-4-20250514",
                7_000,
                2_000,
                4_000,
                100
            )),
            Some(20_100)
        );
        // gpt-4o has no cache-write price: written tokens cost as plain input, so the
        // cost equals that of the same input without the breakdown.
        assert_eq!(
            table.cost_micros(&with_writes("gpt-4o", 1_000, 0, 600, 0)),
            table.cost_micros(&event("gpt-4o", 1_000, 0, 0))
        );
        // Cached counts beyond the input are cut to it, reads first: 1,000 input, 800
        // read, 5,000 written → 800 × $0.30 + 200 × $3.75 = 240 + 750 µ$.
        assert_eq!(
            table.cost_micros(&with_writes("claude-sonnet-4", 1_000, 800, 5_000, 0)),
            Some(990)
        );
        // A configured cache-write price applies; absent, the input price does.
        let mut configured = PriceTable::default();
        configured.set(
            "mine",
            ModelPrice {
                input_per_mtok: 1.0,
                output_per_mtok: 0.0,
                cache_read_per_mtok: None,
                cache_write_per_mtok: Some(2.0),
            },
        );
        assert_eq!(
            configured.cost_micros(&with_writes("mine", 1_000_000, 0, 500_000, 0)),
            Some(1_500_000)
        );
    }

    #[test]
    fn price_configs_without_a_cache_write_price_still_parse() {
        let price: ModelPrice = serde_json::from_str(
            r#"{"input_per_mtok":1,"output_per_mtok":2,"cache_read_per_mtok":null}"#,
        )
        .expect("no cache_write_per_mtok");
        assert_eq!(price.cache_write_per_mtok, None);
    }
}
