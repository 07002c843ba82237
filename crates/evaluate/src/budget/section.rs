//! The config file's budgets, as a file spells them: `[[budgets]]`, in dollars where
//! [`BudgetConfig`] keeps micro-dollars, with its default thresholds for an entry that
//! gives none. Turning them into [`BudgetConfig`]s checks what serde cannot (amounts,
//! [`BudgetConfig::validate`], one budget per tenant and model) and names the entry in
//! each refusal.

use serde::Deserialize;

use crate::budget::{usd_to_micros, BudgetConfig, BudgetConfigError};

/// One `[[budgets]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    pub tenant: String,
    /// Absent: every model of the tenant together.
    pub model: Option<String>,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    /// Percentages of each limit, in any order; default 50, 80, 100.
    #[serde(default = "BudgetConfig::default_thresholds")]
    pub thresholds: Vec<u32>,
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
        let config = BudgetConfig {
            tenant: self.tenant.clone(),
            model: self.model.clone(),
            daily_usd_micros: micros(self.daily_usd, "daily_usd")?,
            monthly_usd_micros: micros(self.monthly_usd, "monthly_usd")?,
            daily_tokens: self.daily_tokens,
            monthly_tokens: self.monthly_tokens,
            thresholds,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Every `[[budgets]]` entry, checked in the file's order: each valid, at most one per
/// tenant and model (or per tenant for its models together).
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
