//! Where budget holds are kept, behind one interface for `/v1/budgets/check`,
//! `/v1/budgets/reserve` and the gateway.
//!
//! - [`Book::Local`] (`ais serve`): spend and holds in this process
//!   (`ais_evaluate::budget::reserve::Reservations`), spend added as each batch commits.
//! - [`Book::Shared`] (the distributed pipeline, with `--redis`): holds in Redis, shared
//!   by every query server and gateway, spend read from the store's usage ledger
//!   ([`shared`] says why that is correct).
//!
//! [`load_spend`] reads what the ledger holds for the budgets' current months, for both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use ais_evaluate::budget::reserve::{CallScope, Decision, Reservations};
use ais_evaluate::budget::{BudgetConfig, BudgetScope, Period, Spend};
use ais_model::dimension::{Dimension, Filter};
use ais_model::time::unix_now_ms;
use ais_rollup::usage::{UsageCounts, UsageKey, UsageScope};
use ais_store::usage::{day_of, UsageQuery, DAY_MS};
use ais_store::{QueryStore, StoreError};

#[cfg(feature = "redis")]
pub mod shared;

/// Why a book could not decide (not a budget saying no).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Every hold the book may keep is taken.
    #[error("{0}")]
    Full(String),
    /// The book cannot see the spend or the holds now; nothing was held.
    #[error("{0}")]
    Unavailable(String),
}

/// The budgets' spend and holds.
#[derive(Clone)]
pub enum Book {
    /// One node: both in this process.
    Local(Arc<Mutex<Reservations>>),
    /// Several servers: holds in Redis, spend from the store.
    #[cfg(feature = "redis")]
    Shared(Arc<shared::SharedBook>),
}

fn lock(book: &Mutex<Reservations>) -> std::sync::MutexGuard<'_, Reservations> {
    // A panic while holding the book leaves it as consistent as any single step left it.
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Book {
    /// Whether a call may spend now.
    pub async fn check(&self, call: &CallScope<'_>) -> Result<Decision, BookError> {
        match self {
            Self::Local(book) => Ok(lock(book).check(call, unix_now_ms())),
            #[cfg(feature = "redis")]
            Self::Shared(book) => book.decide(call, None, 0).await,
        }
    }

    /// Holds `estimate` for `ttl_ms` against every budget that applies, if each has
    /// room for it.
    pub async fn reserve(
        &self,
        call: &CallScope<'_>,
        estimate: Spend,
        ttl_ms: i64,
    ) -> Result<Decision, BookError> {
        match self {
            Self::Local(book) => lock(book)
                .reserve(call, estimate, ttl_ms, unix_now_ms())
                .map_err(|full| BookError::Full(full.to_string())),
            #[cfg(feature = "redis")]
            Self::Shared(book) => book.decide(call, Some(estimate), ttl_ms).await,
        }
    }

    /// A call is over: its hold keeps `actual` for `ttl_ms` more, until its event
    /// settles it. `false` when there is no such hold.
    pub async fn hold_actual(
        &self,
        id: &str,
        actual: Spend,
        ttl_ms: i64,
    ) -> Result<bool, BookError> {
        match self {
            Self::Local(book) => {
                let now = unix_now_ms();
                Ok(lock(book).hold_actual(id, actual, now.saturating_add(ttl_ms)))
            }
            #[cfg(feature = "redis")]
            Self::Shared(book) => book.holds().hold_actual(id, actual, ttl_ms).await,
        }
    }
}

/// Feeds `observe` what the store's usage ledger holds for each budget's current month
/// (its days to today). Each (tenant, scope) is read once, whole when a budget limits
/// each of its values, else only the values budgets name: an entry read twice would
/// count twice.
pub async fn load_spend(
    store: &dyn QueryStore,
    budgets: &[BudgetConfig],
    mut observe: impl FnMut(&[(UsageKey, UsageCounts)]),
) -> Result<(), StoreError> {
    let now = unix_now_ms();
    // (tenant, scope) → the values to read; `None`: all of them.
    let mut reads: BTreeMap<(String, UsageScope), Option<BTreeSet<String>>> = BTreeMap::new();
    for budget in budgets {
        let (scope, value) = match (&budget.scope, &budget.model) {
            (BudgetScope::Tenant, None) => (UsageScope::Tenant, Some(budget.tenant.clone())),
            (BudgetScope::Tenant, Some(model)) => (UsageScope::Model, Some(model.clone())),
            (BudgetScope::One { scope, value }, _) => (scope.clone(), Some(value.clone())),
            (BudgetScope::Each(scope), _) => (scope.clone(), None),
        };
        let read = reads
            .entry((budget.tenant.clone(), scope))
            .or_insert_with(|| Some(BTreeSet::new()));
        match (read.as_mut(), value) {
            (Some(values), Some(value)) => {
                values.insert(value);
            }
            (_, None) => *read = None,
            (None, Some(_)) => {}
        }
    }
    for ((tenant, scope), values) in reads {
        let dimension = match &scope {
            UsageScope::Tenant => Some(Dimension::Tenant),
            UsageScope::Model => Some(Dimension::Model),
            UsageScope::UserId => Some(Dimension::UserId),
            UsageScope::Attribute(key) => Some(Dimension::Attribute(key.clone())),
            // Not an event dimension: a tenant's keys are few, read them all.
            UsageScope::Key => None,
        };
        let filter = dimension.zip(values).map(|(dimension, values)| Filter {
            dimension,
            negated: false,
            values: values.into_iter().map(Some).collect(),
        });
        let mut rows = store
            .usage_export(UsageQuery {
                tenant: Some(tenant),
                scope: scope.name(),
                from_day_ms: Period::Month.start_of(now),
                to_day_ms: day_of(now) + DAY_MS,
                filter,
            })
            .await?;
        while let Some(chunk) = rows.recv().await {
            let entries: Vec<_> = chunk?
                .into_iter()
                .map(|row| {
                    (
                        UsageKey {
                            tenant: row.tenant.into(),
                            scope: scope.name().into(),
                            day_ms: row.day_ms,
                            value: row.value,
                        },
                        row.counts,
                    )
                })
                .collect();
            observe(&entries);
        }
    }
    Ok(())
}
