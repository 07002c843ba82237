//! Budgets before a call: its estimated spend is held against every budget that
//! applies to the tenant and model before it goes upstream, and its real spend settles
//! the hold once it is known.
//!
//! The gateway only asks: a [`BudgetGate`] holds the book (in `ais serve`, the same
//! reservations `POST /v1/budgets/reserve` uses). The estimate is deliberately
//! generous, since a hold that is too small lets concurrent calls pass a limit
//! together: the request's text at one token per [`BYTES_PER_TOKEN`] bytes, plus the
//! output the caller allows (`max_completion_tokens`, `max_tokens`) or
//! [`DEFAULT_OUTPUT_TOKENS`], priced from the price table. A call answered from the
//! cache spends nothing and holds nothing. A call cut short once it went upstream
//! (its caller gone while it was routed or streamed, its stream failed) settles at
//! once with what it is known to have spent ([`crate::record::CallGuard::count_cut_short`]).

use std::sync::Arc;

use ais_model::price::PriceTable;
use ais_model::{Event, EventId};
use serde_json::{Map, Value};

use crate::record::Usage;

/// Bytes of request text counted as one input token (English text averages about 4;
/// JSON punctuation makes the count a little high, which is the safe side).
pub const BYTES_PER_TOKEN: usize = 4;
/// Output assumed of a call that does not bound it.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1024;

/// Money and tokens, as budgets count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub micros: u64,
    pub tokens: u64,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Go ahead; the hold to settle, if any budget applies.
    Granted(Option<String>),
    /// A budget has no room: why, naming it.
    Refused(String),
}

/// Who a call is for, as budgets tell calls apart.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    /// The request's `user`.
    pub user_id: Option<&'a str>,
    /// The caller's key, as usage names it (its name or `k-…` id).
    pub key: Option<&'a str>,
    /// The attributes the config maps from the request's headers.
    pub attributes: &'a [(String, String)],
}

/// The book of budgets the gateway reserves against.
#[async_trait::async_trait]
pub trait BudgetGate: Send + Sync + 'static {
    /// Holds `estimate` against every budget of the caller (its tenant, model, user,
    /// key and attribute values), or refuses.
    async fn reserve(&self, caller: &Caller<'_>, estimate: Spend) -> Reserved;
    /// The call is over: `hold` now holds what it really spent, until the call's event
    /// (which names the hold) settles it.
    fn settle(&self, hold: &str, actual: Spend);
}

/// Budgets and the prices that turn tokens into money.
#[derive(Clone)]
pub struct Budgets {
    pub gate: Arc<dyn BudgetGate>,
    pub prices: Arc<PriceTable>,
}

impl Budgets {
    /// The estimated spend of a request to `model`.
    pub fn estimate(&self, model: &str, body: &Map<String, Value>) -> Spend {
        let text_bytes: usize = ["messages", "prompt", "input"]
            .iter()
            .filter_map(|field| body.get(*field))
            .map(|value| value.to_string().len())
            .sum();
        let input = text_bytes.div_ceil(BYTES_PER_TOKEN) as u64;
        let output = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|field| body.get(*field).and_then(Value::as_u64))
            .unwrap_or(if body.contains_key("input") {
                0
            } else {
                DEFAULT_OUTPUT_TOKENS
            });
        self.spend(model, input, output)
    }

    /// What a call with `usage` spent.
    pub fn actual(&self, model: &str, usage: Option<Usage>) -> Spend {
        let usage = usage.unwrap_or_default();
        self.spend(
            model,
            usage.prompt_tokens.unwrap_or(0),
            usage.completion_tokens.unwrap_or(0),
        )
    }

    fn spend(&self, model: &str, input: u64, output: u64) -> Spend {
        let event = Event {
            input_tokens: Some(input),
            output_tokens: Some(output),
            ..Event::new(model, EventId::Generated(0), 0, 0.0)
        };
        Spend {
            micros: self.prices.cost_micros(&event).unwrap_or(0),
            tokens: input.saturating_add(output),
        }
    }
}

/// A granted hold, settled with the call's real spend when it ends. The call's
/// [`crate::record::CallGuard`] owns it and settles it as the call's event is recorded,
/// however the call ends: a call its caller left is settled at once with what it is
/// known to have spent, not left holding its estimate until the hold expires.
pub struct Hold {
    pub budgets: Budgets,
    pub id: String,
    pub model: String,
}

impl Hold {
    pub fn settle(self, usage: Option<Usage>) {
        let actual = self.budgets.actual(&self.model, usage);
        self.budgets.gate.settle(&self.id, actual);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;

    #[async_trait::async_trait]
    impl BudgetGate for Never {
        async fn reserve(&self, _: &Caller<'_>, _: Spend) -> Reserved {
            Reserved::Refused("never".into())
        }
        fn settle(&self, _: &str, _: Spend) {}
    }

    fn budgets() -> Budgets {
        Budgets {
            gate: Arc::new(Never),
            prices: Arc::new(PriceTable::with_defaults()),
        }
    }

    #[test]
    fn the_estimate_counts_the_text_and_the_allowed_output() {
        let body: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "model": "gpt-4o", "max_tokens": 50,
            "messages": [{"role": "user", "content": "x".repeat(400)}],
        }))
        .expect("object");
        let estimate = budgets().estimate("gpt-4o", &body);
        assert!(estimate.tokens >= 100 + 50, "{estimate:?}");
        assert!(estimate.micros > 0, "gpt-4o is priced: {estimate:?}");
        let unbounded: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"messages": []})).expect("object");
        assert!(budgets().estimate("gpt-4o", &unbounded).tokens >= DEFAULT_OUTPUT_TOKENS);
    }

    #[test]
    fn the_actual_spend_is_the_usage_priced() {
        let usage = Usage {
            prompt_tokens: Some(1_000_000),
            completion_tokens: Some(0),
            ..Usage::default()
        };
        let spend = budgets().actual("unpriced-model", Some(usage));
        assert_eq!(
            spend,
            Spend {
                micros: 0,
                tokens: 1_000_000
            }
        );
    }
}
