//! Dimension filters as SQL, so ClickHouse sends only the events that pass them.
//!
//! Each [`Filter`] becomes one condition with the semantics of [`Filter::matches`]: the
//! value is one of the listed values, where `null` lists the missing field; a negated
//! filter is the condition's negation, so events without the field pass it unless
//! `null` is listed. Both halves are kept two-valued (a missing field is tested with
//! `isNull`/`has`, never compared), so `NOT` never meets SQL's `NULL`. Values travel as
//! bound parameters.

use ais_model::dimension::{Dimension, Filter, Filters};

/// `AND (…)` per filter, and the values to bind in order.
#[derive(Debug, Default, PartialEq)]
pub struct SqlFilters {
    pub sql: String,
    pub binds: Vec<String>,
}

impl SqlFilters {
    pub fn of(filters: &Filters) -> Self {
        let mut out = Self::default();
        for filter in &filters.0 {
            out.push(filter);
        }
        out
    }

    /// Binds the values to `query`, in the order the conditions use them.
    pub fn bind(&self, mut query: clickhouse::query::Query) -> clickhouse::query::Query {
        for value in &self.binds {
            query = query.bind(value.as_str());
        }
        query
    }

    fn push(&mut self, filter: &Filter) {
        let listed: Vec<&str> = filter.values.iter().flatten().map(String::as_str).collect();
        let null_listed = filter.values.iter().any(Option::is_none);
        let mut terms = Vec::new();
        if !listed.is_empty() {
            let marks = vec!["?"; listed.len()].join(", ");
            let (present, value) = self.column(&filter.dimension);
            let mut term = format!("{value} IN ({marks})");
            if let Some(present) = present {
                term = format!("({present} AND {term})");
            }
            terms.push(term);
            self.binds
                .extend(listed.iter().map(|value| value.to_string()));
        }
        if null_listed {
            // A field every event has is never missing.
            let missing = match self.presence(&filter.dimension) {
                Some(present) => format!("NOT {present}"),
                None => "0".to_string(),
            };
            terms.push(missing);
        }
        let any = format!("({})", terms.join(" OR "));
        let condition = if filter.negated {
            format!("NOT {any}")
        } else {
            any
        };
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition);
    }

    /// (whether the event has the field, when it can lack it; its value as a String
    /// expression), binding the attribute key where the expressions name it.
    fn column(&mut self, dimension: &Dimension) -> (Option<String>, String) {
        let present = self.presence(dimension);
        let value = match dimension {
            Dimension::Attribute(key) => {
                self.binds.push(key.clone());
                "attribute_values[indexOf(attribute_keys, ?)]".to_string()
            }
            other if Self::always_present(other) => other.field_name().to_string(),
            other => format!("assumeNotNull({})", other.field_name()),
        };
        (present, value)
    }

    /// Whether the event has the field, when it can lack it.
    fn presence(&mut self, dimension: &Dimension) -> Option<String> {
        match dimension {
            Dimension::Attribute(key) => {
                self.binds.push(key.clone());
                Some("has(attribute_keys, ?)".to_string())
            }
            other if Self::always_present(other) => None,
            other => Some(format!("isNotNull({})", other.field_name())),
        }
    }

    /// Columns every event has: the tenant, the model and the status.
    fn always_present(dimension: &Dimension) -> bool {
        matches!(
            dimension,
            Dimension::Tenant | Dimension::Model | Dimension::Status
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(texts: &[&str]) -> SqlFilters {
        SqlFilters::of(&Filters(
            texts
                .iter()
                .map(|text| Filter::parse(text).expect("filter"))
                .collect(),
        ))
    }

    #[test]
    fn each_filter_is_one_two_valued_condition_with_bound_values() {
        assert_eq!(
            sql(&["endpoint:/a|/b"]),
            SqlFilters {
                sql: " AND ((isNotNull(endpoint) AND assumeNotNull(endpoint) IN (?, ?)))"
                    .to_string(),
                binds: vec!["/a".to_string(), "/b".to_string()],
            }
        );
        assert_eq!(
            sql(&["region:!eu|null"]).sql,
            " AND NOT ((isNotNull(region) AND assumeNotNull(region) IN (?)) OR NOT isNotNull(region))"
        );
        assert_eq!(sql(&["model:null"]).sql, " AND (0)");
        assert_eq!(sql(&["status:!error"]).sql, " AND NOT (status IN (?))");
        let attribute = sql(&["attr.feature:x|null", "tenant:a"]);
        assert_eq!(
            attribute.sql,
            " AND ((has(attribute_keys, ?) AND attribute_values[indexOf(attribute_keys, ?)] IN (?)) OR NOT has(attribute_keys, ?)) AND (tenant IN (?))"
        );
        assert_eq!(
            attribute.binds,
            ["feature", "feature", "x", "feature", "a"].map(str::to_string)
        );
        assert_eq!(SqlFilters::of(&Filters::default()), SqlFilters::default());
    }
}
