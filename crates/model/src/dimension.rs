//! Dimensions: what a breakdown groups events by and a filter selects them by.
//!
//! A [`Dimension`] names one field of the event (`model`, `endpoint`, `user_id`, …),
//! one key of its attributes (`attr.<key>`), or the tenant (admin views only). Its
//! value in an event is a string, or nothing when the event lacks the field: a
//! breakdown shows that group as JSON `null`, and a filter selects it with the value
//! `null`.
//!
//! A [`Filter`] is the text of one `filter=` query parameter, `DIMENSION:V1|V2|…`
//! (events whose value is one of the values) or `DIMENSION:!V1|V2|…` (events whose
//! value is none of them, events without the field included). In a value, `\|`, `\!`
//! and `\\` stand for a literal `|`, `!` (only needed first) and `\`; the value `null`
//! means "the field is missing", and `\null` is the four letters. [`Filters`] are
//! several of them ANDed. Parsing is bounded (value count and lengths) and every
//! refusal names what is wrong, for a 400 that says so.
//!
//! No I/O: the query API parses with it, and both engines' scans and the stream's
//! dimension rollups read values with [`Dimension::value`].

use std::borrow::Cow;
use std::fmt;

use crate::event::Event;

/// Longest attribute key a dimension may name: the event's own bound.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
/// Longest value a filter may hold: the longest value an event field can have.
pub const MAX_FILTER_VALUE_BYTES: usize = 256;
/// Most values one filter may list: a URL of this size is already unusual, and every
/// value costs a comparison per scanned event.
pub const MAX_FILTER_VALUES: usize = 1_000;
/// The prefix of attribute dimensions.
pub const ATTRIBUTE_PREFIX: &str = "attr.";

/// One dimension of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The tenant: visible to admin keys only ([`Dimension::needs_admin`]).
    Tenant,
    Model,
    ResponseModel,
    Provider,
    Operation,
    Status,
    ErrorType,
    Endpoint,
    Region,
    UserId,
    SessionId,
    /// One key of the event's attributes.
    Attribute(String),
}

/// Why a dimension or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimensionError {
    #[error("unknown dimension {0:?}; use one of {known}", known = known_dimensions())]
    Unknown(String),
    #[error("attribute dimension {0:?} needs a key of 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes after \"attr.\"")]
    AttributeKey(String),
    #[error("filter {0:?} must look like DIMENSION:VALUE[|VALUE…] or DIMENSION:!VALUE[|VALUE…]")]
    FilterShape(String),
    #[error("filter on {dimension} has {count} values, more than {MAX_FILTER_VALUES}")]
    TooManyValues { dimension: String, count: usize },
    #[error(
        "filter on {dimension} has a value of {bytes} bytes, more than {MAX_FILTER_VALUE_BYTES}"
    )]
    ValueTooLong { dimension: String, bytes: usize },
    #[error("filter on {dimension} ends in a lone backslash; write \\\\ for a literal one")]
    TrailingEscape { dimension: String },
}

/// The dimensions a request may name, as written, for error messages: every field,
/// attributes, then the tenant.
fn known_dimensions() -> String {
    let fields: Vec<&str> = Dimension::FIELDS
        .iter()
        .map(Dimension::field_name)
        .collect();
    format!(
        "{}, {ATTRIBUTE_PREFIX}<key>, {}",
        fields.join(", "),
        Dimension::Tenant.field_name()
    )
}

impl Dimension {
    /// Every dimension that names one field of the event, in the order messages and
    /// dashboards list them. A request may also name an attribute (`attr.<key>`) and,
    /// with an admin key, the tenant.
    pub const FIELDS: &'static [Dimension] = &[
        Self::Model,
        Self::ResponseModel,
        Self::Provider,
        Self::Operation,
        Self::Status,
        Self::ErrorType,
        Self::Endpoint,
        Self::Region,
        Self::UserId,
        Self::SessionId,
    ];

    /// Parses a dimension as a request writes it (`endpoint`, `attr.feature`).
    pub fn parse(text: &str) -> Result<Self, DimensionError> {
        if let Some(key) = text.strip_prefix(ATTRIBUTE_PREFIX) {
            if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_BYTES {
                return Err(DimensionError::AttributeKey(text.to_string()));
            }
            return Ok(Self::Attribute(key.to_string()));
        }
        Ok(match text {
            "tenant" => Self::Tenant,
            "model" => Self::Model,
            "response_model" => Self::ResponseModel,
            "provider" => Self::Provider,
            "operation" => Self::Operation,
            "status" => Self::Status,
            "error_type" => Self::ErrorType,
            "endpoint" => Self::Endpoint,
            "region" => Self::Region,
            "user_id" => Self::UserId,
            "session_id" => Self::SessionId,
            _ => return Err(DimensionError::Unknown(text.to_string())),
        })
    }

    /// The name as a request writes it, and as a group's key names it.
    pub fn name(&self) -> String {
        match self {
            Self::Attribute(key) => format!("{ATTRIBUTE_PREFIX}{key}"),
            other => other.field_name().to_string(),
        }
    }

    /// The event field it reads, by the name the API and the raw-event columns give
    /// it (`attributes` for attribute dimensions, `tenant` for the tenant).
    pub fn field_name(&self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Model => "model",
            Self::ResponseModel => "response_model",
            Self::Provider => "provider",
            Self::Operation => "operation",
            Self::Status => "status",
            Self::ErrorType => "error_type",
            Self::Endpoint => "endpoint",
            Self::Region => "region",
            Self::UserId => "user_id",
            Self::SessionId => "session_id",
            Self::Attribute(_) => "attributes",
        }
    }

    /// Whether only an admin key may group or filter by it (it crosses tenants).
    pub fn needs_admin(&self) -> bool {
        matches!(self, Self::Tenant)
    }

    /// The value of this dimension in `event` of `tenant`; `None` when the event does
    /// not have the field (or the attribute).
    pub fn value<'e>(&self, tenant: &'e str, event: &'e Event<'_>) -> Option<&'e str> {
        match self {
            Self::Tenant => Some(tenant),
            Self::Status => Some(event.status.as_str()),
            other => other.field(event).map(|value| value.as_ref()),
        }
    }

    /// The string field this dimension reads, as the event holds it: borrowed from
    /// what the event was decoded from, so a caller can keep the value past the event
    /// (`Cow::Borrowed` copied out lives as long as the record). `None` when the event
    /// lacks it, and for the tenant and the status, which are not string fields.
    pub fn field<'e, 'r>(&self, event: &'e Event<'r>) -> Option<&'e Cow<'r, str>> {
        match self {
            Self::Tenant | Self::Status => None,
            Self::Model => Some(&event.model),
            Self::ResponseModel => event.response_model.as_ref(),
            Self::Provider => event.provider.as_ref(),
            Self::Operation => event.operation.as_ref(),
            Self::ErrorType => event.error_type.as_ref(),
            Self::Endpoint => event.endpoint.as_ref(),
            Self::Region => event.region.as_ref(),
            Self::UserId => event.user_id.as_ref(),
            Self::SessionId => event.session_id.as_ref(),
            // Attributes hold each key once (decoding keeps the last of duplicates).
            Self::Attribute(key) => event
                .attributes
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attribute(key) => write!(formatter, "{ATTRIBUTE_PREFIX}{key}"),
            other => formatter.write_str(other.field_name()),
        }
    }
}

/// One `filter=` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub dimension: Dimension,
    /// Keep events whose value is *not* listed (events without the field included,
    /// unless `null` is listed).
    pub negated: bool,
    /// The listed values; `None` is `null`, the missing field. At least one.
    pub values: Vec<Option<String>>,
}

impl Filter {
    /// Parses `DIMENSION:V1|V2` or `DIMENSION:!V1|V2` (already URL-decoded).
    pub fn parse(text: &str) -> Result<Self, DimensionError> {
        let Some((name, list)) = text.split_once(':') else {
            return Err(DimensionError::FilterShape(text.to_string()));
        };
        let dimension = Dimension::parse(name)?;
        let (negated, list) = match list.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, list),
        };
        if list.is_empty() {
            return Err(DimensionError::FilterShape(text.to_string()));
        }
        let values = split_values(list, &dimension)?;
        if values.len() > MAX_FILTER_VALUES {
            return Err(DimensionError::TooManyValues {
                dimension: dimension.name(),
                count: values.len(),
            });
        }
        Ok(Self {
            dimension,
            negated,
            values,
        })
    }

    /// Whether `event` of `tenant` passes this filter.
    pub fn matches(&self, tenant: &str, event: &Event<'_>) -> bool {
        let value = self.dimension.value(tenant, event);
        let listed = self.values.iter().any(|listed| listed.as_deref() == value);
        listed != self.negated
    }

    /// Whether a group whose value of this filter's dimension is `value` passes: what a
    /// pre-aggregated rollup of the dimension is filtered with.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let listed = self.values.iter().any(|listed| listed.as_deref() == value);
        listed != self.negated
    }
}

/// Splits a value list at unescaped `|`, undoing the escapes.
fn split_values(list: &str, dimension: &Dimension) -> Result<Vec<Option<String>>, DimensionError> {
    let mut values = Vec::new();
    let mut current = String::new();
    // `\null` is the literal text, `null` the missing field: remember whether the
    // value had any escape.
    let mut escaped = false;
    let mut chars = list.chars();
    let mut finish = |current: &mut String, escaped: &mut bool| -> Result<(), DimensionError> {
        if current.len() > MAX_FILTER_VALUE_BYTES {
            return Err(DimensionError::ValueTooLong {
                dimension: dimension.name(),
                bytes: current.len(),
            });
        }
        let value = std::mem::take(current);
        values.push(if value == "null" && !*escaped {
            None
        } else {
            Some(value)
        });
        *escaped = false;
        Ok(())
    };
    while let Some(character) = chars.next() {
        match character {
            '\\' => {
                let Some(next) = chars.next() else {
                    return Err(DimensionError::TrailingEscape {
                        dimension: dimension.name(),
                    });
                };
                // `\n` of `\null` keeps the letter: only the escape is remembered.
                current.push(next);
                escaped = true;
            }
            '|' => finish(&mut current, &mut escaped)?,
            other => current.push(other),
        }
        if current.len() > MAX_FILTER_VALUE_BYTES {
            return Err(DimensionError::ValueTooLong {
                dimension: dimension.name(),
                bytes: current.len(),
            });
        }
    }
    finish(&mut current, &mut escaped)?;
    Ok(values)
}

/// The canonical text of a filter: [`Filter::parse`] reads it back as the same filter.
impl fmt::Display for Filter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:", self.dimension)?;
        if self.negated {
            formatter.write_str("!")?;
        }
        for (index, value) in self.values.iter().enumerate() {
            if index > 0 {
                formatter.write_str("|")?;
            }
            match value {
                None => formatter.write_str("null")?,
                Some(text) => {
                    if text == "null" {
                        formatter.write_str("\\")?;
                    }
                    for (position, character) in text.chars().enumerate() {
                        let needs_escape = matches!(character, '|' | '\\')
                            || (character == '!' && position == 0 && index == 0);
                        if needs_escape {
                            formatter.write_str("\\")?;
                        }
                        write!(formatter, "{character}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Several filters, ANDed: an event passes when it passes every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub Vec<Filter>);

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, tenant: &str, event: &Event<'_>) -> bool {
        self.0.iter().all(|filter| filter.matches(tenant, event))
    }

    /// Whether any filter needs an admin key.
    pub fn needs_admin(&self) -> bool {
        self.0.iter().any(|filter| filter.dimension.needs_admin())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::event::{EventId, Status};

    fn event() -> Event<'static> {
        Event {
            endpoint: Some(Cow::Borrowed("/chat")),
            status: Status::Error,
            attributes: vec![(Cow::Borrowed("feature"), Cow::Borrowed("search"))],
            ..Event::new("gpt-4o", EventId::Generated(1), 0, 1.0)
        }
    }

    #[test]
    fn every_dimension_parses_from_its_name_and_reads_its_field() {
        let names = [
            "tenant",
            "model",
            "response_model",
            "provider",
            "operation",
            "status",
            "error_type",
            "endpoint",
            "region",
            "user_id",
            "session_id",
            "attr.feature",
        ];
        let event = event();
        for name in names {
            let dimension = Dimension::parse(name).expect(name);
            assert_eq!(dimension.name(), name);
            assert_eq!(dimension.to_string(), name);
            let expected = match name {
                "tenant" => Some("acme"),
                "model" => Some("gpt-4o"),
                "status" => Some("error"),
                "endpoint" => Some("/chat"),
                "attr.feature" => Some("search"),
                _ => None,
            };
            assert_eq!(dimension.value("acme", &event), expected, "{name}");
        }
        assert!(Dimension::parse("tenant").expect("tenant").needs_admin());
        assert!(!Dimension::parse("model").expect("model").needs_admin());
        let fields: Vec<String> = Dimension::FIELDS.iter().map(Dimension::name).collect();
        assert_eq!(fields, names[1..11], "every field, in the messages' order");
    }

    #[test]
    fn unknown_dimensions_and_bad_attribute_keys_are_named() {
        let error = Dimension::parse("colour").expect_err("unknown");
        assert!(error.to_string().contains("\"colour\""), "{error}");
        assert!(error.to_string().contains("attr.<key>"), "{error}");
        assert_eq!(
            error.to_string(),
            "unknown dimension \"colour\"; use one of model, response_model, provider, \
             operation, status, error_type, endpoint, region, user_id, session_id, \
             attr.<key>, tenant"
        );
        assert_eq!(
            Dimension::parse("attr."),
            Err(DimensionError::AttributeKey("attr.".to_string()))
        );
        let long = format!("attr.{}", "k".repeat(MAX_ATTRIBUTE_KEY_BYTES + 1));
        assert!(matches!(
            Dimension::parse(&long),
            Err(DimensionError::AttributeKey(_))
        ));
        assert!(Dimension::parse(&format!("attr.{}", "k".repeat(MAX_ATTRIBUTE_KEY_BYTES))).is_ok());
    }

    #[test]
    fn filters_select_listed_values_negations_and_missing_fields() {
        let event = event();
        let passes = |text: &str| Filter::parse(text).expect(text).matches("acme", &event);
        assert!(passes("endpoint:/chat"));
        assert!(passes("endpoint:/embed|/chat"));
        assert!(!passes("endpoint:/embed"));
        assert!(!passes("endpoint:!/chat"));
        assert!(passes("endpoint:!/embed"));
        // The event has no region.
        assert!(passes("region:null"));
        assert!(
            passes("region:!eu|us"),
            "a negation keeps events without the field"
        );
        assert!(!passes("region:!null"));
        assert!(!passes("region:eu"));
        assert!(passes("attr.feature:search"));
        assert!(passes("attr.other:null"));
        assert!(passes("status:error"));
        assert!(passes("tenant:acme"));
    }

    #[test]
    fn escapes_give_literal_bars_bangs_backslashes_and_the_word_null() {
        let filter = Filter::parse(r"attr.q:a\|b|\!x|c\\|\null|null").expect("parses");
        assert!(!filter.negated);
        assert_eq!(
            filter.values,
            vec![
                Some("a|b".to_string()),
                Some("!x".to_string()),
                Some(r"c\".to_string()),
                Some("null".to_string()),
                None,
            ]
        );
        assert_eq!(Filter::parse(&filter.to_string()), Ok(filter));
    }

    #[test]
    fn malformed_filters_are_refused_with_what_is_wrong() {
        for text in ["endpoint", "endpoint:", "endpoint:!", ":x"] {
            assert!(Filter::parse(text).is_err(), "{text}");
        }
        assert!(matches!(
            Filter::parse("endpoint:x\\"),
            Err(DimensionError::TrailingEscape { .. })
        ));
        assert!(matches!(
            Filter::parse("colour:red"),
            Err(DimensionError::Unknown(_))
        ));
        let many = format!("model:{}", vec!["m"; MAX_FILTER_VALUES + 1].join("|"));
        assert!(matches!(
            Filter::parse(&many),
            Err(DimensionError::TooManyValues { count, .. }) if count == MAX_FILTER_VALUES + 1
        ));
        let long = format!("model:{}", "m".repeat(MAX_FILTER_VALUE_BYTES + 1));
        assert!(matches!(
            Filter::parse(&long),
            Err(DimensionError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn filters_are_anded_and_say_when_they_need_an_admin() {
        let event = event();
        let both = Filters(vec![
            Filter::parse("model:gpt-4o").expect("model"),
            Filter::parse("endpoint:/chat").expect("endpoint"),
        ]);
        assert!(both.matches("acme", &event));
        let one_fails = Filters(vec![
            Filter::parse("model:gpt-4o").expect("model"),
            Filter::parse("endpoint:/embed").expect("endpoint"),
        ]);
        assert!(!one_fails.matches("acme", &event));
        assert!(Filters::default().matches("acme", &event));
        assert!(!both.needs_admin());
        assert!(Filters(vec![Filter::parse("tenant:a").expect("tenant")]).needs_admin());
    }

    fn dimension_strategy() -> impl Strategy<Value = Dimension> {
        prop_oneof![
            Just(Dimension::Model),
            Just(Dimension::Endpoint),
            Just(Dimension::UserId),
            "[a-z_.]{1,16}".prop_map(Dimension::Attribute),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("null".to_string())),
            "[a-z|!\\\\ ]{1,12}".prop_map(Some),
        ]
    }

    proptest! {
        /// The canonical text reads back as the same filter, whatever the values hold,
        /// and a value list built from a filter's own values matches the same events.
        #[test]
        fn a_filter_reads_back_from_its_canonical_text(
            dimension in dimension_strategy(),
            negated in any::<bool>(),
            values in proptest::collection::vec(value_strategy(), 1..5),
        ) {
            let filter = Filter { dimension, negated, values };
            let text = filter.to_string();
            prop_assert_eq!(Filter::parse(&text), Ok(filter.clone()), "{}", text);
            for value in &filter.values {
                prop_assert_eq!(filter.matches_value(value.as_deref()), !negated);
            }
        }
    }
}
