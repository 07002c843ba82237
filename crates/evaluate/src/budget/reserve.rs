//! Check and reserve: whether a call may spend, and holds that stop concurrent calls
//! from passing a budget together. No I/O.
//!
//! [`Reservations`] knows each budget's spend in its current periods, from the usage
//! ledger (`ais_rollup::usage`): loaded from the store once, then added to as each
//! batch's commit lands ([`Reservations::observe`]), so a check reads memory only. Its
//! entries of scope `tenant` feed the budgets of a whole tenant, those of scope `model`
//! the budgets of one (tenant, model), those of `user_id`, `key` and `attr.<key>` the
//! budgets of one value or of each value of those scopes (a budget of each user keeps
//! one spend per user seen this month, up to `max_values` across budgets; past that, a
//! call of a value not yet seen is refused, saying so); spend is counted in the UTC day
//! and month of the events' time, as the budgets' alerts count it.
//!
//! A reservation holds an estimate against every budget that applies, in one step under
//! the caller's lock: it is granted only while spent + held + estimate ≤ limit for every
//! limit of every such budget, so concurrent reservations can never together pass a
//! limit. A hold lasts until the call's event settles it (the event carries the hold's
//! `reservation_id`: when its batch lands, [`Reservations::settle`] releases the hold in
//! the same step that [`Reservations::observe`] adds the event's real spend) or until it
//! expires. A call whose event does not name its hold is counted twice until the hold
//! expires: the book errs towards refusing, never towards overspending. Holds are bounded
//! ([`Reservations::new`]'s `max_holds`); past it a reservation is refused and says so.

use std::collections::{BTreeSet, HashMap, HashSet};

use ais_rollup::usage::{Settlement, UsageCounts, UsageKey, UsageScope};
use serde::Serialize;

use super::{BudgetConfig, BudgetScope, Period, Spend, Unit};

/// What a caller asks about: a call of `model` by `tenant`, for a user, with a key and
/// attributes when it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub user_id: Option<&'a str>,
    /// The key's name (or `k-…` id) the call's event will be counted under.
    pub key: Option<&'a str>,
    pub attributes: &'a [(&'a str, &'a str)],
}

impl<'a> CallScope<'a> {
    /// A call of `model` by `tenant` with nothing else known.
    pub fn of(tenant: &'a str, model: &'a str) -> Self {
        Self {
            tenant,
            model,
            user_id: None,
            key: None,
            attributes: &[],
        }
    }

    /// The call's value of `scope`, as its event will be counted.
    fn value_of(&self, scope: &UsageScope) -> Option<&'a str> {
        match scope {
            UsageScope::Tenant => Some(self.tenant),
            UsageScope::Model => Some(self.model),
            UsageScope::UserId => self.user_id,
            UsageScope::Key => self.key,
            UsageScope::Attribute(key) => self
                .attributes
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| *value),
        }
    }
}

/// One limited spend: a budget, and for a budget of each value of a scope, the value.
type Slot = (usize, Option<String>);

/// How one budget stands for a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetRoom {
    /// The budget's name ("acme", "acme/gpt-4o", "acme/user_id=u-17" or its `name`).
    pub name: String,
    /// `tenant` (every model of the tenant), `model`, or the usage scope it limits
    /// (`user_id`, `key`, `attr.customer`).
    pub scope: String,
    /// The value of that scope the call is limited as (the user, key or attribute
    /// value); `None` for a tenant's or a model's budget.
    pub scope_value: Option<String>,
    /// What the tightest dollar limit leaves (`null` without a dollar limit), after the
    /// spend and the holds of its current period; never below 0.
    pub remaining_usd: Option<f64>,
    /// The same for tokens (input + output).
    pub remaining_tokens: Option<u64>,
    /// When the tightest limit's period ends (unix ms), so its room comes back.
    pub resets_at_ms: i64,
}

/// The answer to a check or a reservation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub budgets: Vec<BudgetRoom>,
    /// Why not, or why there is nothing to check.
    pub reason: Option<String>,
    /// A granted reservation: its id and when it expires (unix ms).
    pub reservation: Option<(String, i64)>,
}

impl Decision {
    /// A call no budget applies to: allowed, and told so.
    fn no_budget(call: &CallScope<'_>) -> Self {
        Self {
            allowed: true,
            budgets: Vec::new(),
            reason: Some(format!(
                "no budget applies to {}/{}",
                call.tenant, call.model
            )),
            reservation: None,
        }
    }
}

/// A reservation that cannot be taken at all (not a budget saying no).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error("{0} reservations are held, the most this server keeps; retry when some expire")]
    Full(usize),
}

#[derive(Debug, Clone)]
struct Hold {
    /// The tenant that made it: only its own events settle it.
    tenant: String,
    budgets: Vec<Slot>,
    amount: Spend,
    expires_ms: i64,
}

/// The spend of every budget and the holds against them.
#[derive(Debug)]
pub struct Reservations {
    budgets: Vec<BudgetConfig>,
    /// The usage scopes some budget is fed by (`tenant`, `model`, `user_id`, …): a
    /// batch's entries of other scopes are passed over at once.
    fed_by: HashSet<String>,
    /// Each budget's usage scope name, as ledger entries name it.
    scope_names: Vec<String>,
    /// Spend per (slot, period, period start).
    spent: HashMap<(Slot, Period, i64), Spend>,
    holds: HashMap<String, Hold>,
    /// The live holds by expiry, so expiring them reads only those that are due.
    expiries: BTreeSet<(i64, String)>,
    /// What the live holds hold, per slot.
    held: HashMap<Slot, Spend>,
    max_holds: usize,
    /// Values of budgets of each value (users, keys…) whose spend is kept, and the
    /// most kept: a value past it is not tracked, and its calls are refused.
    values: HashSet<Slot>,
    max_values: usize,
    /// Ids are a random prefix and a counter: unique, and not guessable from another.
    id_prefix: u64,
    next_id: u64,
}

impl Reservations {
    pub fn new(budgets: Vec<BudgetConfig>, max_holds: usize, max_values: usize) -> Self {
        let scope_names: Vec<String> = budgets
            .iter()
            .map(|budget| match (budget.scope.usage_scope(), &budget.model) {
                (Some(scope), _) => scope.name(),
                (None, Some(_)) => UsageScope::Model.name(),
                (None, None) => UsageScope::Tenant.name(),
            })
            .collect();
        Self {
            fed_by: scope_names.iter().cloned().collect(),
            scope_names,
            budgets,
            spent: HashMap::new(),
            holds: HashMap::new(),
            expiries: BTreeSet::new(),
            held: HashMap::new(),
            max_holds,
            values: HashSet::new(),
            max_values,
            id_prefix: rand::random(),
            next_id: 0,
        }
    }

    pub fn budgets(&self) -> &[BudgetConfig] {
        &self.budgets
    }

    /// Adds committed usage (one batch's ledger entries, or what the store held at
    /// start) to the budgets it counts for.
    pub fn observe(&mut self, entries: &[(UsageKey, UsageCounts)]) {
        for (key, counts) in entries {
            // Most of a batch's entries are of scopes no budget is fed by.
            if !self.fed_by.contains(&*key.scope) {
                continue;
            }
            let spend = Spend {
                micros: counts.cost_micros,
                tokens: counts.input_tokens.saturating_add(counts.output_tokens),
            };
            for index in 0..self.budgets.len() {
                let Some(slot) = self.slot_of(index, key) else {
                    continue;
                };
                if slot.1.is_some() && !self.values.contains(&slot) {
                    if self.values.len() >= self.max_values {
                        continue;
                    }
                    self.values.insert(slot.clone());
                }
                for period in [Period::Day, Period::Month] {
                    self.spent
                        .entry((slot.clone(), period, period.start_of(key.day_ms)))
                        .or_default()
                        .add(spend);
                }
            }
        }
    }

    /// The slot of budget `index` a ledger entry counts in, if any.
    fn slot_of(&self, index: usize, key: &UsageKey) -> Option<Slot> {
        let budget = &self.budgets[index];
        if *budget.tenant != *key.tenant || self.scope_names[index] != *key.scope {
            return None;
        }
        let value = key.value.as_deref();
        match (&budget.scope, &budget.model) {
            (BudgetScope::Tenant, None) => Some((index, None)),
            (BudgetScope::Tenant, Some(model)) => (value == Some(model)).then_some((index, None)),
            (BudgetScope::One { value: only, .. }, _) => {
                (value == Some(only.as_str())).then_some((index, None))
            }
            // Events without the scope's value are no user's (key's, …) spend.
            (BudgetScope::Each(_), _) => value.map(|value| (index, Some(value.to_string()))),
        }
    }

    /// Releases the holds a landed batch's events settle (their real spend comes with
    /// the batch's usage, which the caller passes to [`Self::observe`] in the same
    /// step). Returns (settled, unknown): an id that names no live hold of the event's
    /// tenant (expired, released, made by another server or made up) changes nothing.
    pub fn settle(&mut self, settled: &[Settlement]) -> (u64, u64) {
        let mut found = 0;
        for settlement in settled {
            let owned = self
                .holds
                .get(&settlement.reservation_id)
                .is_some_and(|hold| hold.tenant == settlement.tenant);
            if owned && self.release(&settlement.reservation_id) {
                found += 1;
            }
        }
        (found, settled.len() as u64 - found)
    }

    /// Forgets spend of periods that ended before the month holding `now_ms`.
    pub fn forget_before(&mut self, now_ms: i64) {
        let month = Period::Month.start_of(now_ms);
        let before = self.spent.len();
        self.spent.retain(|(_, _, start), _| *start >= month);
        if self.spent.len() < before {
            // Values seen only in earlier months are not kept against the bound.
            let spent = &self.spent;
            self.values
                .retain(|slot| spent.contains_key(&(slot.clone(), Period::Month, month)));
        }
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((expires_ms, id)) = self.expiries.first().cloned() {
            if expires_ms > now_ms {
                break;
            }
            self.release(&id);
        }
    }

    /// Releases a hold; `false` when there is none by that id (unknown or expired).
    pub fn release(&mut self, id: &str) -> bool {
        let Some(hold) = self.holds.remove(id) else {
            return false;
        };
        self.expiries.remove(&(hold.expires_ms, id.to_string()));
        for slot in hold.budgets {
            if let Some(held) = self.held.get_mut(&slot) {
                held.micros = held.micros.saturating_sub(hold.amount.micros);
                held.tokens = held.tokens.saturating_sub(hold.amount.tokens);
                if *held == Spend::default() {
                    self.held.remove(&slot);
                }
            }
        }
        true
    }

    /// A call is over and its real spend known before its event commits: the hold
    /// holds `actual` instead of its estimate, until its event settles it
    /// ([`Self::settle`]) or `expires_ms`. `false` when there is no hold by that id
    /// (unknown, settled or expired).
    pub fn hold_actual(&mut self, id: &str, actual: Spend, expires_ms: i64) -> bool {
        let Some(hold) = self.holds.get_mut(id) else {
            return false;
        };
        for slot in &hold.budgets {
            if let Some(held) = self.held.get_mut(slot) {
                held.micros = held
                    .micros
                    .saturating_sub(hold.amount.micros)
                    .saturating_add(actual.micros);
                held.tokens = held
                    .tokens
                    .saturating_sub(hold.amount.tokens)
                    .saturating_add(actual.tokens);
            }
        }
        hold.amount = actual;
        let previous = std::mem::replace(&mut hold.expires_ms, expires_ms);
        self.expiries.remove(&(previous, id.to_string()));
        self.expiries.insert((expires_ms, id.to_string()));
        true
    }

    /// Live holds.
    pub fn holds(&self) -> usize {
        self.holds.len()
    }

    /// The slots a call is limited by: every budget of its tenant whose model and
    /// scope value are the call's.
    fn applicable(&self, call: &CallScope<'_>) -> Vec<Slot> {
        self.budgets
            .iter()
            .enumerate()
            .filter(|(_, budget)| {
                budget.tenant == call.tenant
                    && budget
                        .model
                        .as_deref()
                        .is_none_or(|only| only == call.model)
            })
            .filter_map(|(index, budget)| match &budget.scope {
                BudgetScope::Tenant => Some((index, None)),
                BudgetScope::One { scope, value } => {
                    (call.value_of(scope) == Some(value.as_str())).then_some((index, None))
                }
                BudgetScope::Each(scope) => call
                    .value_of(scope)
                    .map(|value| (index, Some(value.to_string()))),
            })
            .collect()
    }

    /// A slot of a value whose spend is not kept (past `max_values`): its calls are
    /// refused rather than let through unmeasured.
    fn untracked<'s>(&self, applicable: &'s [Slot]) -> Option<&'s Slot> {
        if self.values.len() < self.max_values {
            return None;
        }
        applicable
            .iter()
            .find(|slot| slot.1.is_some() && !self.values.contains(*slot))
    }

    /// What this book's live holds hold against `slot`.
    fn held_here(&self, slot: &Slot) -> Spend {
        self.held.get(slot).copied().unwrap_or_default()
    }

    /// Per limit of `slot`: (period, unit, limit, spent + held) now.
    fn limits(&self, slot: &Slot, held: Spend, now_ms: i64) -> Vec<(Period, Unit, u64, u64)> {
        let Some(budget) = self.budgets.get(slot.0) else {
            return Vec::new();
        };
        budget
            .limits()
            .filter_map(|(period, unit, limit)| {
                let limit = limit?;
                let spent = self
                    .spent
                    .get(&(slot.clone(), period, period.start_of(now_ms)))
                    .copied()
                    .unwrap_or_default();
                Some((
                    period,
                    unit,
                    limit,
                    spent.of(unit).saturating_add(held.of(unit)),
                ))
            })
            .collect()
    }

    fn room(&self, slot: &Slot, held: Spend, now_ms: i64) -> BudgetRoom {
        let limits = self.limits(slot, held, now_ms);
        let tightest = |unit: Unit| {
            limits
                .iter()
                .filter(|(_, of, _, _)| *of == unit)
                .map(|(period, _, limit, used)| (limit.saturating_sub(*used), *period))
                .min()
        };
        let usd = tightest(Unit::Usd);
        let tokens = tightest(Unit::Tokens);
        // The period whose end brings room back: the tightest limit's, the day's when
        // both units are as tight.
        let binding = [usd, tokens]
            .into_iter()
            .flatten()
            .min_by_key(|(left, period)| (*left, *period))
            .map_or(Period::Day, |(_, period)| period);
        let budget = &self.budgets[slot.0];
        BudgetRoom {
            name: budget.name(),
            scope: budget.scope_name(),
            scope_value: match &budget.scope {
                BudgetScope::Tenant => None,
                BudgetScope::One { value, .. } => Some(value.clone()),
                BudgetScope::Each(_) => slot.1.clone(),
            },
            remaining_usd: usd.map(|(left, _)| left as f64 / 1_000_000.0),
            remaining_tokens: tokens.map(|(left, _)| left),
            resets_at_ms: binding.next_start(binding.start_of(now_ms)),
        }
    }

    /// Whether a call may spend now: allowed while every limit of every budget that
    /// applies has room left.
    pub fn check(&mut self, call: &CallScope<'_>, now_ms: i64) -> Decision {
        self.expire(now_ms);
        let applicable = self.applicable(call);
        if applicable.is_empty() {
            return Decision::no_budget(call);
        }
        let refusal = self.refusal(
            &applicable,
            Spend::default(),
            now_ms,
            |slot| self.held_here(slot),
            |used, limit| used >= limit,
        );
        self.decide(
            &applicable,
            |slot| self.held_here(slot),
            refusal,
            now_ms,
            None,
        )
    }

    /// Holds `estimate` against every budget that applies, if each has room for it,
    /// until `now_ms + ttl_ms`.
    pub fn reserve(
        &mut self,
        call: &CallScope<'_>,
        estimate: Spend,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Decision, ReserveError> {
        self.expire(now_ms);
        let applicable = self.applicable(call);
        if applicable.is_empty() {
            return Ok(self.check(call, now_ms));
        }
        let refusal = self.refusal(
            &applicable,
            estimate,
            now_ms,
            |slot| self.held_here(slot),
            |used, limit| used > limit,
        );
        if refusal.is_some() {
            return Ok(self.decide(
                &applicable,
                |slot| self.held_here(slot),
                refusal,
                now_ms,
                None,
            ));
        }
        if self.holds.len() >= self.max_holds {
            return Err(ReserveError::Full(self.max_holds));
        }
        self.next_id += 1;
        let id = format!("res-{:016x}{:08x}", self.id_prefix, self.next_id);
        let expires_ms = now_ms.saturating_add(ttl_ms);
        for slot in &applicable {
            self.held.entry(slot.clone()).or_default().add(estimate);
        }
        self.expiries.insert((expires_ms, id.clone()));
        self.holds.insert(
            id.clone(),
            Hold {
                tenant: call.tenant.to_string(),
                budgets: applicable.clone(),
                amount: estimate,
                expires_ms,
            },
        );
        Ok(self.decide(
            &applicable,
            |slot| self.held_here(slot),
            None,
            now_ms,
            Some((id, expires_ms)),
        ))
    }

    /// Why a call adding `extra` may not spend, if it may not: a value whose spend is
    /// not kept, or the first limit where `over(spent + held + extra, limit)`.
    fn refusal(
        &self,
        applicable: &[Slot],
        extra: Spend,
        now_ms: i64,
        held: impl Fn(&Slot) -> Spend,
        over: impl Fn(u64, u64) -> bool,
    ) -> Option<String> {
        if let Some((index, value)) = self.untracked(applicable) {
            let budget = &self.budgets[*index];
            return Some(format!(
                "budget {} keeps the spend of at most {} values, and {} {:?} is not one of them",
                budget.name(),
                self.max_values,
                budget.scope_name(),
                value.as_deref().unwrap_or_default()
            ));
        }
        applicable.iter().find_map(|slot| {
            let (period, unit, _, _) = self.limits(slot, held(slot), now_ms).into_iter().find(
                |(_, unit, limit, used)| over(used.saturating_add(extra.of(*unit)), *limit),
            )?;
            let budget = &self.budgets[slot.0];
            let whose = slot
                .1
                .as_ref()
                .map(|value| format!(" for {} {value:?}", budget.scope_name()))
                .unwrap_or_default();
            Some(format!(
                "budget {}{whose} has no room left in its {} {} limit",
                budget.name(),
                match period {
                    Period::Day => "daily",
                    Period::Month => "monthly",
                },
                match unit {
                    Unit::Usd => "USD",
                    Unit::Tokens => "token",
                }
            ))
        })
    }

    fn decide(
        &self,
        applicable: &[Slot],
        held: impl Fn(&Slot) -> Spend,
        refusal: Option<String>,
        now_ms: i64,
        reservation: Option<(String, i64)>,
    ) -> Decision {
        Decision {
            allowed: refusal.is_none(),
            budgets: applicable
                .iter()
                .map(|slot| self.room(slot, held(slot), now_ms))
                .collect(),
            reason: refusal,
            reservation,
        }
    }
}

/// A call as a book that keeps its holds elsewhere sees it (several servers sharing
/// one store of holds): the slots that limit it, each named for that store with the
/// room its limits leave before any hold, from this book's spend.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    slots: Vec<Slot>,
    /// One per slot, in order.
    pub rooms: Vec<SlotRoom>,
}

/// One slot of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRoom {
    /// The slot's name in the shared store: tenant, budget name and scope value.
    pub key: String,
    /// Per unit, the least its limits leave after the spend (negative: already past);
    /// `None` when the budget has no limit of that unit.
    pub micros: Option<i64>,
    pub tokens: Option<i64>,
}

impl Reservations {
    /// The slots a call is limited by, for a book whose holds are kept elsewhere.
    pub fn plan(&self, call: &CallScope<'_>, now_ms: i64) -> Plan {
        let slots = self.applicable(call);
        let rooms = slots
            .iter()
            .map(|slot| {
                let budget = &self.budgets[slot.0];
                let limits = self.limits(slot, Spend::default(), now_ms);
                let least = |unit: Unit| {
                    limits
                        .iter()
                        .filter(|(_, of, _, _)| *of == unit)
                        .map(|(_, _, limit, spent)| {
                            i64::try_from(*limit)
                                .unwrap_or(i64::MAX)
                                .saturating_sub(i64::try_from(*spent).unwrap_or(i64::MAX))
                        })
                        .min()
                };
                SlotRoom {
                    key: format!(
                        "{}\u{1f}{}\u{1f}{}",
                        budget.tenant,
                        budget.name(),
                        slot.1.as_deref().unwrap_or_default()
                    ),
                    micros: least(Unit::Usd),
                    tokens: least(Unit::Tokens),
                }
            })
            .collect();
        Plan { slots, rooms }
    }

    /// A value of the plan whose spend this book does not keep (past `max_values`):
    /// the call is refused, and this says why.
    pub fn untracked_reason(&self, plan: &Plan) -> Option<String> {
        self.refusal(
            &plan.slots,
            Spend::default(),
            0,
            |_| Spend::default(),
            |_, _| false,
        )
    }

    /// The answer of a book whose holds are kept elsewhere, given what that store
    /// held against each slot of `plan` when it decided (`held`, in the plan's order;
    /// with a granted `reservation`, the new hold included). `estimate` is `None` for
    /// a check.
    pub fn decide_held(
        &self,
        call: &CallScope<'_>,
        plan: &Plan,
        held: &[Spend],
        estimate: Option<Spend>,
        reservation: Option<(String, i64)>,
        now_ms: i64,
    ) -> Decision {
        if plan.slots.is_empty() {
            return Decision::no_budget(call);
        }
        let held_of = |slot: &Slot| {
            plan.slots
                .iter()
                .position(|planned| planned == slot)
                .and_then(|index| held.get(index).copied())
                .unwrap_or_default()
        };
        let refusal = match (&reservation, estimate) {
            (Some(_), _) => None,
            (None, Some(estimate)) => self
                .refusal(&plan.slots, estimate, now_ms, held_of, |used, limit| {
                    used > limit
                })
                .or_else(|| Some("a budget has no room left".to_string())),
            (None, None) => self.refusal(&plan.slots, Spend::default(), now_ms, held_of, {
                |used, limit| used >= limit
            }),
        };
        self.decide(&plan.slots, held_of, refusal, now_ms, reservation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetScope;

    const NOW: i64 = 1_796_637_600_000; // 2026-12-07T10:00Z
    const DAY: i64 = 86_400_000;

    fn budget(
        model: Option<&str>,
        daily_usd: Option<f64>,
        daily_tokens: Option<u64>,
    ) -> BudgetConfig {
        BudgetConfig {
            tenant: "acme".to_string(),
            scope: crate::budget::BudgetScope::Tenant,
            label: None,
            model: model.map(str::to_string),
            daily_usd_micros: daily_usd.and_then(super::super::usd_to_micros),
            monthly_usd_micros: None,
            daily_tokens,
            monthly_tokens: None,
            thresholds: BudgetConfig::default_thresholds(),
            forecast: None,
        }
    }

    fn usage(
        scope: &str,
        value: &str,
        day_ms: i64,
        micros: u64,
        tokens: u64,
    ) -> (UsageKey, UsageCounts) {
        (
            UsageKey {
                tenant: "acme".into(),
                scope: scope.into(),
                day_ms: day_ms - day_ms.rem_euclid(DAY),
                value: Some(value.to_string()),
            },
            UsageCounts {
                requests: 1,
                cost_micros: micros,
                input_tokens: tokens,
                ..UsageCounts::default()
            },
        )
    }

    const CALL: CallScope<'static> = CallScope {
        tenant: "acme",
        model: "gpt-4o",
        user_id: None,
        key: None,
        attributes: &[],
    };

    fn cents(cents: u64) -> Spend {
        Spend {
            micros: cents * 10_000,
            tokens: 0,
        }
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit_together() {
        let mut book = Reservations::new(vec![budget(None, Some(1.0), None)], 1_000, 1_000);
        let granted = (0..64)
            .filter(|_| {
                book.reserve(&CALL, cents(10), 60_000, NOW)
                    .expect("room for holds")
                    .allowed
            })
            .count();
        assert_eq!(granted, 10, "ten $0.10 holds fill a $1.00 budget");
        let refused = book.check(&CALL, NOW);
        assert!(!refused.allowed);
        assert!(refused
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("daily USD"));
        assert_eq!(refused.budgets[0].remaining_usd, Some(0.0));
        assert_eq!(
            refused.budgets[0].resets_at_ms,
            NOW - NOW.rem_euclid(DAY) + DAY
        );
    }

    #[test]
    fn spend_and_holds_share_the_limit_and_an_expired_hold_returns() {
        let mut book = Reservations::new(
            vec![
                budget(None, Some(1.0), None),
                budget(Some("gpt-4o"), None, Some(1_000)),
            ],
            1_000,
            1_000,
        );
        // 60 cents spent today by the tenant, 900 tokens by the model; yesterday's
        // spend and another model's tokens count for nothing here.
        book.observe(&[
            usage("tenant", "acme", NOW, 600_000, 900),
            usage("model", "gpt-4o", NOW, 600_000, 900),
            usage("tenant", "acme", NOW - DAY, 900_000, 0),
            usage("model", "other", NOW, 1, 5_000),
        ]);
        let room = book.check(&CALL, NOW);
        assert!(room.allowed);
        assert_eq!(room.budgets[0].remaining_usd, Some(0.4));
        assert_eq!(room.budgets[1].remaining_tokens, Some(100));
        let held = book
            .reserve(
                &CALL,
                Spend {
                    micros: 300_000,
                    tokens: 100,
                },
                30_000,
                NOW,
            )
            .expect("room");
        assert!(held.allowed, "{held:?}");
        let (id, expires) = held.reservation.expect("an id");
        assert_eq!(expires, NOW + 30_000);
        // Nothing left of the tokens: another token is refused, by the model budget.
        let refused = book
            .reserve(
                &CALL,
                Spend {
                    micros: 0,
                    tokens: 1,
                },
                30_000,
                NOW,
            )
            .expect("room");
        assert!(!refused.allowed);
        assert!(refused
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("acme/gpt-4o"));
        // Expired, the hold returns what it held.
        let later = book.check(&CALL, NOW + 30_000);
        assert_eq!(later.budgets[0].remaining_usd, Some(0.4));
        assert!(!book.release(&id), "the expired hold is gone");
    }

    fn scoped(scope: BudgetScope, daily_usd: f64) -> BudgetConfig {
        BudgetConfig {
            scope,
            ..budget(None, Some(daily_usd), None)
        }
    }

    #[test]
    fn budgets_of_a_user_a_key_an_attribute_and_each_user_limit_only_their_calls() {
        let mut book = Reservations::new(
            vec![
                scoped(
                    BudgetScope::One {
                        scope: UsageScope::UserId,
                        value: "u-17".to_string(),
                    },
                    1.0,
                ),
                scoped(
                    BudgetScope::One {
                        scope: UsageScope::Key,
                        value: "ci".to_string(),
                    },
                    2.0,
                ),
                scoped(
                    BudgetScope::One {
                        scope: UsageScope::Attribute("customer".to_string()),
                        value: "acme-corp".to_string(),
                    },
                    3.0,
                ),
                scoped(BudgetScope::Each(UsageScope::UserId), 0.5),
            ],
            1_000,
            2,
        );
        book.observe(&[
            usage("user_id", "u-17", NOW, 400_000, 0),
            usage("user_id", "u-2", NOW, 450_000, 0),
            usage("key", "ci", NOW, 1_500_000, 0),
            usage("attr.customer", "acme-corp", NOW, 100_000, 0),
            usage("attr.customer", "other-corp", NOW, 9_000_000, 0),
        ]);
        let attributes = [("customer", "acme-corp")];
        let u17 = CallScope {
            user_id: Some("u-17"),
            key: Some("ci"),
            attributes: &attributes,
            ..CALL
        };
        let room = book.check(&u17, NOW);
        let rooms: Vec<(&str, Option<&str>, Option<f64>)> = room
            .budgets
            .iter()
            .map(|room| {
                (
                    room.scope.as_str(),
                    room.scope_value.as_deref(),
                    room.remaining_usd,
                )
            })
            .collect();
        assert_eq!(
            rooms,
            [
                ("user_id", Some("u-17"), Some(0.6)),
                ("key", Some("ci"), Some(0.5)),
                ("attr.customer", Some("acme-corp"), Some(2.9)),
                // Each user on their own: u-17 has spent 40 of its 50 cents.
                ("user_id", Some("u-17"), Some(0.1)),
            ]
        );
        // u-2 is over nothing but its own per-user limit: 5 cents left.
        let u2 = CallScope {
            user_id: Some("u-2"),
            ..CALL
        };
        let refused = book
            .reserve(&u2, cents(6), 60_000, NOW)
            .expect("no bound hit");
        assert!(!refused.allowed);
        assert!(
            refused
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("for user_id \"u-2\""),
            "{refused:?}"
        );
        assert!(
            book.reserve(&u2, cents(5), 60_000, NOW)
                .expect("room")
                .allowed
        );
        // A call of nobody in particular: only the budgets without a value apply, none.
        assert!(book.check(&CALL, NOW).budgets.is_empty());
        // Two users' spend is the most kept: a third user is refused, saying why.
        let stranger = CallScope {
            user_id: Some("u-3"),
            ..CALL
        };
        let refused = book.check(&stranger, NOW);
        assert!(!refused.allowed);
        assert!(
            refused
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("at most 2 values"),
            "{refused:?}"
        );
    }

    #[test]
    fn an_event_settles_its_hold_and_its_real_cost_counts_instead() {
        let mut book = Reservations::new(vec![budget(None, Some(1.0), None)], 1_000, 1_000);
        let estimate = Spend {
            micros: 400_000,
            tokens: 0,
        };
        let hold = |book: &mut Reservations| {
            book.reserve(&CALL, estimate, 60_000, NOW)
                .expect("room")
                .reservation
                .expect("a hold")
                .0
        };
        let id = hold(&mut book);
        let other = hold(&mut book);
        assert_eq!(book.check(&CALL, NOW).budgets[0].remaining_usd, Some(0.2));
        // The call cost 10 cents: its batch lands with its usage and its settlement.
        let settlement = |tenant: &str, id: &str| Settlement {
            tenant: tenant.to_string(),
            reservation_id: id.to_string(),
        };
        book.observe(&[usage("tenant", "acme", NOW, 100_000, 0)]);
        let outcome = book.settle(&[
            settlement("acme", &id),
            // Another tenant's event naming acme's hold, and an id nobody made.
            settlement("globex", &other),
            settlement("acme", "res-unknown"),
        ]);
        assert_eq!(outcome, (1, 2));
        // 10 cents spent and the other 40 still held: 50 left.
        assert_eq!(book.check(&CALL, NOW).budgets[0].remaining_usd, Some(0.5));
        assert_eq!(book.holds(), 1);
        // Settled once: the same id again finds nothing.
        assert_eq!(book.settle(&[settlement("acme", &id)]), (0, 1));
    }

    #[test]
    fn without_a_budget_a_call_is_allowed_and_told_why() {
        let mut book =
            Reservations::new(vec![budget(Some("other"), Some(1.0), None)], 1_000, 1_000);
        let answer = book
            .reserve(&CALL, cents(1_000), 60_000, NOW)
            .expect("no hold needed");
        assert!(answer.allowed);
        assert!(answer.reservation.is_none());
        assert!(answer.budgets.is_empty());
        assert!(answer
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("no budget applies"));
    }

    #[test]
    fn holds_are_bounded() {
        let mut book = Reservations::new(vec![budget(None, Some(1_000.0), None)], 3, 1_000);
        for _ in 0..3 {
            book.reserve(&CALL, cents(1), 60_000, NOW).expect("room");
        }
        assert_eq!(
            book.reserve(&CALL, cents(1), 60_000, NOW),
            Err(ReserveError::Full(3))
        );
        assert_eq!(book.holds(), 3);
    }

    #[test]
    fn a_hold_of_the_real_spend_lasts_until_its_new_expiry() {
        let mut book = Reservations::new(vec![budget(None, None, Some(1000))], 10, 10);
        let call = CallScope::of("acme", "gpt-4o");
        let estimate = Spend {
            micros: 0,
            tokens: 900,
        };
        let granted = book.reserve(&call, estimate, 60_000, NOW).expect("room");
        let (id, _) = granted.reservation.expect("a hold");
        let refused = book.reserve(&call, estimate, 60_000, NOW).expect("answers");
        assert!(!refused.allowed, "900 held of 1000");
        assert!(book.hold_actual(
            &id,
            Spend {
                micros: 0,
                tokens: 100
            },
            NOW + 5_000
        ));
        let room = book.check(&call, NOW);
        assert_eq!(
            room.budgets[0].remaining_tokens,
            Some(900),
            "the real 100 held"
        );
        let check = book.reserve(&call, estimate, 60_000, NOW).expect("answers");
        assert!(check.allowed, "room for another estimate once settled");
        let later = book.check(&call, NOW + 5_000);
        assert_eq!(
            later.budgets[0].remaining_tokens,
            Some(100),
            "the settled hold expired at its new time, the second still holds 900"
        );
        assert!(!book.hold_actual("res-unknown", Spend::default(), NOW));
    }
}
