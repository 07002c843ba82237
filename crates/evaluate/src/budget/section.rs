//! The config file's budgets, as a file spells them: `[[budgets]]`, in dollars where
//! [`BudgetConfig`] keeps micro-dollars, with its default thresholds for an entry that
//! gives none. Turning them into [`BudgetConfig`]s checks what serde cannot (amounts,
//! [`BudgetConfig::validate`], one budget per name, the scope) and names the entry in
//! each refusal.
//!
//! An entry's scope is one of: nothing (the tenant's, or with `model` that model's),
//! `user_id = "u-17"`, `key = "ci"`, `attr.customer = "acme-corp"` (one value), or
//! `scope = "user_id"` (each user against the limits separately; also `key` and
//! `attr.<key>`). A user's, key's or attribute's budget with a `model` would need usage
//! per (value, model), which the ledger does not keep: refused, saying so.
//!
//! Any budget may have a forecast (`forecast_hours`, `forecast_lookback_minutes`); a
//! budget of each value also `forecast_from_percent`, the share of a limit from which
//! its values are read for their burn. That key on any other budget, or without
//! `forecast_hours`, is refused by name: it would change nothing.

use std::collections::BTreeMap;

use ais_rollup::usage::{UsageScope, UsageScopeError};
use serde::Deserialize;

use crate::budget::{usd_to_micros, BudgetConfig, BudgetConfigError, BudgetScope, Forecast};

/// One `[[budgets]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    pub tenant: String,
    /// Absent: every model of the tenant together.
    pub model: Option<String>,
    /// One user's budget.
    pub user_id: Option<String>,
    /// One key's budget (the key's name, or its `k-…` id).
    pub key: Option<String>,
    /// One attribute value's budget: `attr.customer = "acme-corp"` (a TOML table).
    pub attr: Option<BTreeMap<String, String>>,
    /// Each value of this usage scope against the limits separately.
    pub scope: Option<String>,
    /// How alerts and answers name it (default: the tenant, model and scope).
    pub name: Option<String>,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    /// Percentages of each limit, in any order; default 50, 80, 100.
    #[serde(default = "BudgetConfig::default_thresholds")]
    pub thresholds: Vec<u32>,
    /// Alert when the current burn would run a limit out within this many hours.
    pub forecast_hours: Option<u32>,
    /// The minutes whose spend is the current burn (default 60).
    pub forecast_lookback_minutes: Option<u32>,
    /// A budget of each value with a forecast: the share of a limit (percent) from which
    /// a value's spend is read and sampled for its burn (default 10).
    pub forecast_from_percent: Option<u32>,
}

/// A budget that cannot be tracked as written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetSectionError {
    #[error("[[budgets]] of {tenant:?}: {key} must be a non-negative amount")]
    Amount { tenant: String, key: &'static str },
    #[error(transparent)]
    Invalid(#[from] BudgetConfigError),
    #[error("[[budgets]]: two budgets for {0}")]
    Duplicate(String),
    #[error("[[budgets]] of {tenant:?}: set at most one of user_id, key, attr.<key> and scope")]
    TwoScopes { tenant: String },
    #[error(
        "[[budgets]] of {tenant:?}: attr names one attribute, as attr.customer = \"acme-corp\""
    )]
    Attribute { tenant: String },
    #[error("[[budgets]] of {tenant:?}: scope: {error}")]
    Scope {
        tenant: String,
        error: UsageScopeError,
    },
    #[error("[[budgets]] of {tenant:?}: scope {scope:?} is not one a budget can have; use user_id, key or attr.<key>")]
    NotAScope { tenant: String, scope: String },
    #[error("[[budgets]] of {tenant:?}: a budget of a {scope} and a model needs usage per ({scope}, model), which the usage ledger does not keep; drop model, or budget the model on its own")]
    ScopeWithModel { tenant: String, scope: String },
    #[error("[[budgets]] of {tenant:?}: name must be 1 to 128 bytes")]
    Name { tenant: String },
    #[error("[[budgets]] of {tenant:?}: forecast_hours must be 1 to 744 (a month), and forecast_lookback_minutes 1 to 10080 (a week)")]
    Forecast { tenant: String },
    #[error("[[budgets]] of {tenant:?}: forecast_from_percent is of a budget of each value with forecast_hours (scope = \"…\"): a budget of one value reads it whatever it spent, and a tenant's or a model's budget is fed its windows; drop forecast_from_percent")]
    ForecastFrom { tenant: String },
    #[error("[[budgets]] of {tenant:?}: forecast_from_percent must be 0 to 100")]
    ForecastFromRange { tenant: String },
}

impl BudgetSection {
    /// The budget, checked; its thresholds ascending, each once.
    pub fn config(&self) -> Result<BudgetConfig, BudgetSectionError> {
        let micros = |usd: Option<f64>, key: &'static str| {
            usd.map(|usd| {
                usd_to_micros(usd).ok_or_else(|| BudgetSectionError::Amount {
                    tenant: self.tenant.clone(),
                    key,
                })
            })
            .transpose()
        };
        let mut thresholds = self.thresholds.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        if self
            .name
            .as_ref()
            .is_some_and(|name| name.is_empty() || name.len() > 128)
        {
            return Err(BudgetSectionError::Name {
                tenant: self.tenant.clone(),
            });
        }
        let scope = self.scope()?;
        if let (Some(usage), Some(_)) = (scope.usage_scope(), &self.model) {
            return Err(BudgetSectionError::ScopeWithModel {
                tenant: self.tenant.clone(),
                scope: usage.name(),
            });
        }
        let config = BudgetConfig {
            tenant: self.tenant.clone(),
            scope,
            label: self.name.clone(),
            model: self.model.clone(),
            daily_usd_micros: micros(self.daily_usd, "daily_usd")?,
            monthly_usd_micros: micros(self.monthly_usd, "monthly_usd")?,
            daily_tokens: self.daily_tokens,
            monthly_tokens: self.monthly_tokens,
            thresholds,
            forecast: self.forecast()?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl BudgetSection {
    /// The forecast the entry asks for, checked.
    fn forecast(&self) -> Result<Option<Forecast>, BudgetSectionError> {
        let lookback = self
            .forecast_lookback_minutes
            .unwrap_or(Forecast::DEFAULT_LOOKBACK_MINUTES);
        let Some(hours) = self.forecast_hours else {
            if self.forecast_from_percent.is_some() {
                return Err(BudgetSectionError::ForecastFrom {
                    tenant: self.tenant.clone(),
                });
            }
            if self.forecast_lookback_minutes.is_some() {
                return Err(BudgetSectionError::Forecast {
                    tenant: self.tenant.clone(),
                });
            }
            return Ok(None);
        };
        if !(1..=744).contains(&hours) || !(1..=10_080).contains(&lookback) {
            return Err(BudgetSectionError::Forecast {
                tenant: self.tenant.clone(),
            });
        }
        let from_percent = match self.forecast_from_percent {
            None => Forecast::DEFAULT_FROM_PERCENT,
            Some(_) if self.scope.is_none() => {
                return Err(BudgetSectionError::ForecastFrom {
                    tenant: self.tenant.clone(),
                })
            }
            Some(percent) if percent > 100 => {
                return Err(BudgetSectionError::ForecastFromRange {
                    tenant: self.tenant.clone(),
                })
            }
            Some(percent) => percent,
        };
        Ok(Some(Forecast {
            hours,
            lookback_minutes: lookback,
            from_percent,
        }))
    }

    /// Whose spend the entry limits.
    fn scope(&self) -> Result<BudgetScope, BudgetSectionError> {
        let tenant = || self.tenant.clone();
        let set = [
            self.user_id.is_some(),
            self.key.is_some(),
            self.attr.is_some(),
            self.scope.is_some(),
        ];
        if set.iter().filter(|set| **set).count() > 1 {
            return Err(BudgetSectionError::TwoScopes { tenant: tenant() });
        }
        if let Some(user) = &self.user_id {
            return Ok(BudgetScope::One {
                scope: UsageScope::UserId,
                value: user.clone(),
            });
        }
        if let Some(key) = &self.key {
            return Ok(BudgetScope::One {
                scope: UsageScope::Key,
                value: key.clone(),
            });
        }
        if let Some(attr) = &self.attr {
            let mut entries = attr.iter();
            let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                return Err(BudgetSectionError::Attribute { tenant: tenant() });
            };
            let scope = UsageScope::parse(&format!("attr.{key}")).map_err(|error| {
                BudgetSectionError::Scope {
                    tenant: tenant(),
                    error,
                }
            })?;
            return Ok(BudgetScope::One {
                scope,
                value: value.clone(),
            });
        }
        if let Some(name) = &self.scope {
            let scope = UsageScope::parse(name).map_err(|error| BudgetSectionError::Scope {
                tenant: tenant(),
                error,
            })?;
            return match scope {
                UsageScope::Tenant | UsageScope::Model => Err(BudgetSectionError::NotAScope {
                    tenant: tenant(),
                    scope: name.clone(),
                }),
                scope => Ok(BudgetScope::Each(scope)),
            };
        }
        Ok(BudgetScope::Tenant)
    }
}

/// Every `[[budgets]]` entry, checked in the file's order: each valid, at most one per
/// name (by default: per tenant, model and scope).
pub fn budgets(sections: &[BudgetSection]) -> Result<Vec<BudgetConfig>, BudgetSectionError> {
    let mut budgets: Vec<BudgetConfig> = Vec::with_capacity(sections.len());
    for section in sections {
        let budget = section.config()?;
        if budgets.iter().any(|other| other.name() == budget.name()) {
            return Err(BudgetSectionError::Duplicate(budget.name()));
        }
        budgets.push(budget);
    }
    Ok(budgets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetScope;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        budgets: Vec<BudgetSection>,
    }

    fn sections(text: &str) -> Vec<BudgetSection> {
        toml::from_str::<File>(text).expect("parses").budgets
    }

    fn error_of(text: &str) -> String {
        budgets(&sections(text)).expect_err("refused").to_string()
    }

    #[test]
    fn amounts_become_micro_dollars_and_thresholds_default_sorted_once() {
        let budgets = budgets(&sections(
            "[[budgets]]\ntenant = \"acme\"\ndaily_usd = 0.1\nmonthly_usd = 2\n\
             [[budgets]]\ntenant = \"acme\"\nmodel = \"m\"\ndaily_tokens = 10\n\
             thresholds = [100, 50, 100]\n",
        ))
        .expect("valid");
        assert_eq!(budgets[0].daily_usd_micros, Some(100_000));
        assert_eq!(budgets[0].monthly_usd_micros, Some(2_000_000));
        assert_eq!(budgets[0].thresholds, BudgetConfig::default_thresholds());
        assert_eq!(budgets[1].name(), "acme/m");
        assert_eq!(budgets[1].thresholds, vec![50, 100]);
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let error = toml::from_str::<File>("[[budgets]]\ntenant = \"acme\"\ndaily_usdd = 1.0\n")
            .expect_err("unknown key");
        assert!(
            error.to_string().contains("unknown field `daily_usdd`"),
            "{error}"
        );
    }

    #[test]
    fn a_negative_amount_names_the_entry_and_key() {
        assert_eq!(
            error_of("[[budgets]]\ntenant = \"acme\"\ndaily_usd = -1.0\n"),
            "[[budgets]] of \"acme\": daily_usd must be a non-negative amount"
        );
        assert_eq!(
            error_of("[[budgets]]\ntenant = \"acme\"\ndaily_tokens = 1\nmonthly_usd = -0.5\n"),
            "[[budgets]] of \"acme\": monthly_usd must be a non-negative amount"
        );
    }

    #[test]
    fn an_invalid_budget_is_refused_with_its_name() {
        assert_eq!(
            error_of("[[budgets]]\ntenant = \"acme\"\nmodel = \"m\"\n"),
            "budget of acme/m: set at least one of daily_usd, monthly_usd, daily_tokens, monthly_tokens"
        );
        assert_eq!(
            error_of("[[budgets]]\ntenant = \"acme\"\ndaily_tokens = 1\nthresholds = []\n"),
            "budget of acme: thresholds must be percentages between 1 and 1000"
        );
        assert_eq!(
            error_of("[[budgets]]\ntenant = \"acme\"\ndaily_tokens = 1\nthresholds = [0, 50]\n"),
            "budget of acme: thresholds must be percentages between 1 and 1000"
        );
    }

    #[test]
    fn a_budget_limits_one_value_or_each_value_of_a_scope() {
        let budgets = budgets(&sections(
            "[[budgets]]\ntenant = \"acme\"\nuser_id = \"u-17\"\ndaily_usd = 1\n\
             [[budgets]]\ntenant = \"acme\"\nkey = \"ci\"\ndaily_usd = 1\n\
             [[budgets]]\ntenant = \"acme\"\nattr.customer = \"acme-corp\"\ndaily_usd = 1\n\
             [[budgets]]\ntenant = \"acme\"\nscope = \"attr.customer\"\ndaily_usd = 1\n\
             [[budgets]]\ntenant = \"acme\"\nscope = \"user_id\"\nname = \"per user\"\ndaily_usd = 1\n",
        ))
        .expect("valid");
        let names: Vec<String> = budgets.iter().map(BudgetConfig::name).collect();
        assert_eq!(
            names,
            [
                "acme/user_id=u-17",
                "acme/key=ci",
                "acme/attr.customer=acme-corp",
                "acme/each attr.customer",
                "per user"
            ]
        );
        assert_eq!(
            budgets[2].scope,
            BudgetScope::One {
                scope: UsageScope::Attribute("customer".to_string()),
                value: "acme-corp".to_string()
            }
        );
        assert_eq!(budgets[4].scope, BudgetScope::Each(UsageScope::UserId));
        assert_eq!(budgets[4].scope_name(), "user_id");
        assert!(budgets.iter().all(|budget| !budget.is_windowed()));
        assert!(!budgets[0].applies_to("acme", "m"), "not fed by windows");
    }

    #[test]
    fn a_scope_is_refused_by_name_when_it_cannot_be_budgeted() {
        assert_eq!(
            error_of(
                "[[budgets]]\ntenant = \"acme\"\nuser_id = \"u\"\nkey = \"k\"\ndaily_usd = 1\n"
            ),
            "[[budgets]] of \"acme\": set at most one of user_id, key, attr.<key> and scope"
        );
        assert_eq!(
            error_of("[[budgets]]\ntenant = \"acme\"\nscope = \"model\"\ndaily_usd = 1\n"),
            "[[budgets]] of \"acme\": scope \"model\" is not one a budget can have; use user_id, key or attr.<key>"
        );
        assert!(
            error_of("[[budgets]]\ntenant = \"acme\"\nscope = \"colour\"\ndaily_usd = 1\n")
                .contains("unknown usage scope \"colour\"")
        );
        assert!(error_of(
            "[[budgets]]\ntenant = \"acme\"\nmodel = \"m\"\nuser_id = \"u\"\ndaily_usd = 1\n"
        )
        .contains("needs usage per (user_id, model)"));
        assert!(error_of(
            "[[budgets]]\ntenant = \"acme\"\nattr = { a = \"1\", b = \"2\" }\ndaily_usd = 1\n"
        )
        .contains("attr names one attribute"));
    }

    #[test]
    fn a_forecast_takes_hours_and_a_lookback_in_range() {
        let budgets = budgets(&sections(
            "[[budgets]]\ntenant = \"acme\"\ndaily_usd = 1\nforecast_hours = 6\n\
             [[budgets]]\ntenant = \"acme\"\nmodel = \"m\"\ndaily_usd = 1\n\
             forecast_hours = 2\nforecast_lookback_minutes = 15\n",
        ))
        .expect("valid");
        assert_eq!(
            budgets[0].forecast,
            Some(Forecast {
                hours: 6,
                lookback_minutes: 60,
                from_percent: Forecast::DEFAULT_FROM_PERCENT,
            })
        );
        assert_eq!(budgets[1].forecast.map(|f| f.lookback_minutes), Some(15));
        for entry in [
            "forecast_hours = 0\n",
            "forecast_hours = 745\n",
            "forecast_hours = 1\nforecast_lookback_minutes = 0\n",
            "forecast_lookback_minutes = 30\n",
        ] {
            assert!(
                error_of(&format!(
                    "[[budgets]]\ntenant = \"acme\"\ndaily_usd = 1\n{entry}"
                ))
                .contains("forecast_hours must be 1 to 744"),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_budget_of_a_value_takes_a_forecast_and_each_value_a_floor_for_it() {
        let budgets = budgets(&sections(
            "[[budgets]]\ntenant = \"acme\"\nuser_id = \"u-1\"\ndaily_usd = 1\nforecast_hours = 2\n\
             [[budgets]]\ntenant = \"acme\"\nscope = \"user_id\"\ndaily_usd = 1\nforecast_hours = 1\n\
             forecast_lookback_minutes = 30\n\
             [[budgets]]\ntenant = \"acme\"\nscope = \"key\"\ndaily_usd = 1\nforecast_hours = 1\n\
             forecast_from_percent = 0\n",
        ))
        .expect("valid");
        assert_eq!(
            budgets[0].forecast,
            Some(Forecast {
                hours: 2,
                lookback_minutes: 60,
                from_percent: Forecast::DEFAULT_FROM_PERCENT,
            })
        );
        assert_eq!(budgets[1].forecast.map(|f| f.lookback_minutes), Some(30));
        // Each value is read from the floor (or the lowest threshold, if lower).
        assert_eq!(
            budgets[1].read_floor_percent(),
            Forecast::DEFAULT_FROM_PERCENT
        );
        assert_eq!(budgets[2].read_floor_percent(), 0);
        assert_eq!(
            budgets[0].read_floor_percent(),
            50,
            "one value: its threshold"
        );
        for (entry, refusal) in [
            (
                "user_id = \"u-1\"\nforecast_hours = 1\nforecast_from_percent = 5\n",
                "forecast_from_percent is of a budget of each value",
            ),
            (
                "forecast_hours = 1\nforecast_from_percent = 5\n",
                "forecast_from_percent is of a budget of each value",
            ),
            (
                "scope = \"user_id\"\nforecast_from_percent = 5\n",
                "forecast_from_percent is of a budget of each value",
            ),
            (
                "scope = \"user_id\"\nforecast_hours = 1\nforecast_from_percent = 101\n",
                "forecast_from_percent must be 0 to 100",
            ),
            (
                "scope = \"user_id\"\nforecast_hours = 0\n",
                "forecast_hours must be 1 to 744",
            ),
        ] {
            let error = error_of(&format!(
                "[[budgets]]\ntenant = \"acme\"\ndaily_usd = 1\n{entry}"
            ));
            assert!(error.contains(refusal), "{entry}: {error}");
        }
    }

    #[test]
    fn two_budgets_for_one_tenant_and_model_are_refused() {
        let entry = "[[budgets]]\ntenant = \"acme\"\nmodel = \"m\"\ndaily_tokens = 1\n";
        assert_eq!(
            error_of(&format!("{entry}{entry}")),
            "[[budgets]]: two budgets for acme/m"
        );
        let whole_tenant = "[[budgets]]\ntenant = \"acme\"\ndaily_tokens = 1\n";
        budgets(&sections(&format!("{entry}{whole_tenant}")))
            .expect("the tenant's models together are another budget");
    }
}
