//! The gateway's budgets: its calls reserve against the same [`Book`] as
//! `/v1/budgets/reserve` (this process's reservations in `ais serve`, the shared holds
//! in Redis in `ais gateway`).

use std::time::Duration;

use ais_evaluate::budget::reserve::CallScope;
use ais_gateway::budget::{BudgetGate, Caller, Reserved, Spend};
use ais_serve::book::{Book, BookError};

/// How long a settled hold keeps the call's real spend: until its event has surely
/// committed and counts on its own (the stream commits within seconds).
pub(crate) const SETTLED_HOLD: Duration = Duration::from_secs(60);

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A call's estimate is held for as long as the call may take (`hold_ttl`), then its
/// real spend for [`SETTLED_HOLD`].
pub(crate) struct BookGate {
    pub(crate) book: Book,
    pub(crate) hold_ttl: Duration,
}

#[async_trait::async_trait]
impl BudgetGate for BookGate {
    async fn reserve(&self, caller: &Caller<'_>, estimate: Spend) -> Reserved {
        let attributes: Vec<(&str, &str)> = caller
            .attributes
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let call = CallScope {
            tenant: caller.tenant,
            model: caller.model,
            user_id: caller.user_id,
            key: caller.key,
            attributes: &attributes,
        };
        let estimate = ais_evaluate::budget::Spend {
            micros: estimate.micros,
            tokens: estimate.tokens,
        };
        let (outcome, reserved) = match self
            .book
            .reserve(&call, estimate, millis(self.hold_ttl))
            .await
        {
            Ok(decision) if decision.allowed => (
                if decision.reservation.is_some() {
                    "granted"
                } else {
                    "no_budget"
                },
                Reserved::Granted(decision.reservation.map(|(id, _)| id)),
            ),
            Ok(decision) => (
                "refused",
                Reserved::Refused(
                    decision
                        .reason
                        .unwrap_or_else(|| "a budget has no room left".to_string()),
                ),
            ),
            Err(BookError::Full(reason)) => ("full", Reserved::Refused(reason)),
            // Nothing can be held: the call is refused rather than let through
            // unmeasured against its budgets.
            Err(BookError::Unavailable(reason)) => ("unavailable", Reserved::Refused(reason)),
        };
        metrics::counter!("ais_budget_reservations_total", "outcome" => outcome).increment(1);
        reserved
    }

    fn settle(&self, hold: &str, actual: Spend) {
        let book = self.book.clone();
        let id = hold.to_string();
        let actual = ais_evaluate::budget::Spend {
            micros: actual.micros,
            tokens: actual.tokens,
        };
        // Called as a call ends, on its task; the shared book's step is a Redis round
        // trip that the call's answer does not wait for. A failure leaves the estimate
        // held until it expires: towards refusing, never overspending.
        let settle = async move {
            if let Err(error) = book.hold_actual(&id, actual, millis(SETTLED_HOLD)).await {
                tracing::warn!(%error, hold = id, "cannot keep a finished call's real spend");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(settle);
            }
            Err(_) => tracing::warn!(hold, "no runtime to settle a finished call's hold on"),
        }
    }
}
