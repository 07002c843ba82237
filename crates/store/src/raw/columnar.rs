//! The columnar path of breakdown scans: a batch's columns read as arrays, never as
//! events.
//!
//! The string columns it looks values up in (tenant, status, error type, user, the
//! dimensions grouped and filtered by) are read dictionary-coded, as the files store
//! them. What a value decides (in the tenant, passing a filter, an error, the user's
//! hash, the group's number) is found once per dictionary entry and kept in a
//! [`Memo`] while the row group's dictionary lasts; per row it is an array lookup. The
//! events then go by group number into [`NumberedGroups`], which answers as a grouper
//! fed the same events one by one would.
//!
//! Taken when every dimension grouped or filtered by is a column of its own (not an
//! attribute) and the query has no steps; other queries read events
//! ([`super::columns::EventsView::for_each_event`]). A column a page writes without its
//! dictionary (the writer falls back to plain pages past its dictionary size limit)
//! arrives as plain strings, and is looked up row by row.
//!
//! Absent values read as the event path reads them: a missing model or tenant is `""`,
//! a missing status `ok`, a missing latency 0, a missing count or cost 0.

use std::collections::BTreeSet;
use std::sync::Arc;

use ais_model::dimension::{Dimension, Filter};
use ais_model::Status;
use ais_rollup::breakdown::{NumberedGroups, ScannedEvent, TooManyGroups};
use ais_rollup::UniqueCounter;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Float64Type, Int32Type, TimestampMillisecondType, UInt64Type,
};
use arrow_array::{Array, ArrayRef, PrimitiveArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::columns::{LATENCY_MS, STATUS, TENANT, TIMESTAMP, USER_ID};
use crate::{BreakdownQuery, StoreError};

const ERROR_TYPE: &str = "error_type";

/// Whether the columnar path answers `query`: no steps, and every dimension it groups
/// or filters by is a column of its own.
pub(super) fn answers(query: &BreakdownQuery) -> bool {
    query.step_ms.is_none()
        && query.by.len() <= 2
        && query
            .by
            .iter()
            .chain(query.filters.0.iter().map(|filter| &filter.dimension))
            .all(|dimension| !matches!(dimension, Dimension::Attribute(_)))
}

/// The string columns the columnar path reads dictionary-coded for `query`.
pub(super) fn coded_columns(query: &BreakdownQuery) -> BTreeSet<&'static str> {
    let mut coded: BTreeSet<&'static str> = [TENANT, STATUS, ERROR_TYPE, USER_ID].into();
    coded.extend(
        query
            .by
            .iter()
            .chain(query.filters.0.iter().map(|filter| &filter.dimension))
            .map(Dimension::field_name),
    );
    coded
}

/// `schema` (a file's) with the string columns in `coded` read as dictionaries.
pub(super) fn coded_schema(schema: &Schema, coded: &BTreeSet<&'static str>) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if coded.contains(field.name().as_str()) && field.data_type() == &DataType::Utf8 {
                field.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                ))
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn malformed(what: String) -> StoreError {
    StoreError::Malformed(format!("raw event file: {what}"))
}

/// A string column of one batch: dictionary-coded, or plain where the file wrote
/// plain pages.
enum Coded<'a> {
    Dictionary {
        keys: &'a PrimitiveArray<Int32Type>,
        values: &'a StringArray,
        dictionary: &'a ArrayRef,
    },
    Plain(&'a StringArray),
}

impl<'a> Coded<'a> {
    fn of(batch: &'a RecordBatch, name: &str) -> Result<Self, StoreError> {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| malformed(format!("column {name} is missing")))?;
        let unexpected = || malformed(format!("column {name} has an unexpected type"));
        if let Some(plain) = column.as_string_opt::<i32>() {
            return Ok(Self::Plain(plain));
        }
        let coded = column
            .as_dictionary_opt::<Int32Type>()
            .ok_or_else(unexpected)?;
        let values = coded
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(unexpected)?;
        Ok(Self::Dictionary {
            keys: coded.keys(),
            values,
            dictionary: coded.values(),
        })
    }

    fn value(&self, row: usize) -> Result<Option<&'a str>, StoreError> {
        match self {
            Self::Plain(values) => Ok(values.is_valid(row).then(|| values.value(row))),
            Self::Dictionary { keys, values, .. } => {
                let slot = Self::slot(keys, values, row)?;
                Ok((slot < values.len() && values.is_valid(slot)).then(|| values.value(slot)))
            }
        }
    }

    /// The dictionary entry of `row`; the dictionary's length for null.
    fn slot(
        keys: &PrimitiveArray<Int32Type>,
        values: &StringArray,
        row: usize,
    ) -> Result<usize, StoreError> {
        if keys.is_null(row) {
            return Ok(values.len());
        }
        keys.values()
            .get(row)
            .and_then(|key| usize::try_from(*key).ok())
            .filter(|key| *key < values.len())
            .ok_or_else(|| malformed("a dictionary key past its dictionary".to_string()))
    }
}

/// What values of one column decide, found once per entry of the dictionary it holds
/// (the row group's); a plain column is looked up row by row.
struct Memo<T> {
    /// Held so that its address is not reused while the table describes it.
    dictionary: Option<ArrayRef>,
    /// Per dictionary entry, then one for null.
    table: Vec<Option<T>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self {
            dictionary: None,
            table: Vec::new(),
        }
    }
}

impl<T: Copy> Memo<T> {
    fn get<'a>(
        &mut self,
        column: &Coded<'a>,
        row: usize,
        decide: impl FnOnce(Option<&'a str>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Coded::Dictionary {
            keys,
            values,
            dictionary,
        } = column
        else {
            return decide(column.value(row)?);
        };
        if !self
            .dictionary
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, dictionary))
        {
            self.dictionary = Some(Arc::clone(dictionary));
            self.table.clear();
            self.table.resize(values.len() + 1, None);
        }
        let slot = Coded::slot(keys, values, row)?;
        if let Some(Some(known)) = self.table.get(slot) {
            return Ok(*known);
        }
        let value = (slot < values.len() && values.is_valid(slot)).then(|| values.value(slot));
        let decided = decide(value)?;
        if let Some(entry) = self.table.get_mut(slot) {
            *entry = Some(decided);
        }
        Ok(decided)
    }
}

/// A dimension's value as the event path reads it from the stored text.
fn dimension_value<'a>(
    dimension: &Dimension,
    stored: Option<&'a str>,
) -> Result<Option<&'a str>, StoreError> {
    Ok(match dimension {
        Dimension::Tenant | Dimension::Model => Some(stored.unwrap_or("")),
        Dimension::Status => Some(status(stored)?.as_str()),
        _ => stored,
    })
}

fn status(stored: Option<&str>) -> Result<Status, StoreError> {
    let text = stored.unwrap_or("ok");
    Status::parse(text).ok_or_else(|| malformed(format!("unknown status {text:?}")))
}

fn primitive<'a, T: arrow_array::ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a PrimitiveArray<T>, StoreError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| malformed(format!("column {name} is missing")))?
        .as_primitive_opt::<T>()
        .ok_or_else(|| malformed(format!("column {name} has an unexpected type")))
}

fn at<T: arrow_array::ArrowPrimitiveType>(
    array: &PrimitiveArray<T>,
    row: usize,
) -> Option<T::Native> {
    array.is_valid(row).then(|| array.value(row))
}

/// One thread's share of a columnar breakdown scan.
pub(super) struct ColumnarScan {
    groups: NumberedGroups,
    by: Vec<Dimension>,
    filters: Vec<Filter>,
    in_tenant: Memo<bool>,
    is_error: Memo<bool>,
    user_hash: Memo<Option<u64>>,
    passes: Vec<Memo<bool>>,
    /// The group number per value, grouped by one dimension.
    number: Memo<u32>,
    /// Grouped by two: the group number per pair of dictionary entries, while both
    /// dictionaries last.
    pairs: PairMemo,
}

#[derive(Default)]
struct PairMemo {
    /// Held so that their addresses are not reused while `numbers` describes them.
    dictionaries: Option<(ArrayRef, ArrayRef)>,
    numbers: std::collections::HashMap<(usize, usize), u32>,
}

impl ColumnarScan {
    /// `None` when the query is not one the columnar path answers.
    pub(super) fn new(query: &BreakdownQuery, max_groups: usize) -> Option<Self> {
        if !answers(query) {
            return None;
        }
        let groups = BreakdownQuery {
            max_groups,
            ..query.clone()
        }
        .grouper()
        .numbered()?;
        Some(Self {
            groups,
            by: query.by.clone(),
            filters: query.filters.0.clone(),
            in_tenant: Memo::default(),
            is_error: Memo::default(),
            user_hash: Memo::default(),
            passes: query.filters.0.iter().map(|_| Memo::default()).collect(),
            number: Memo::default(),
            pairs: PairMemo::default(),
        })
    }

    pub(super) fn into_groups(self) -> NumberedGroups {
        self.groups
    }

    /// Adds the rows of `batch` in `query`'s scope that pass its filters. A group past
    /// the bound answers `Ok(Err(TooManyGroups))`.
    pub(super) fn add_batch(
        &mut self,
        batch: &RecordBatch,
        query: &BreakdownQuery,
    ) -> Result<Result<(), TooManyGroups>, StoreError> {
        let tenant = Coded::of(batch, TENANT)?;
        let status_column = Coded::of(batch, STATUS)?;
        let error_type = Coded::of(batch, ERROR_TYPE)?;
        let user = Coded::of(batch, USER_ID)?;
        let timestamps = primitive::<TimestampMillisecondType>(batch, TIMESTAMP)?;
        let latency = primitive::<Float64Type>(batch, LATENCY_MS)?;
        let ttft = primitive::<Float64Type>(batch, "ttft_ms")?;
        let input_tokens = primitive::<UInt64Type>(batch, "input_tokens")?;
        let output_tokens = primitive::<UInt64Type>(batch, "output_tokens")?;
        let cache_read = primitive::<UInt64Type>(batch, "cache_read_input_tokens")?;
        let cost = primitive::<Decimal128Type>(batch, "cost_usd")?;
        let by_columns = self
            .by
            .iter()
            .map(|dimension| Coded::of(batch, dimension.field_name()))
            .collect::<Result<Vec<_>, _>>()?;
        let filter_columns = self
            .filters
            .iter()
            .map(|filter| Coded::of(batch, filter.dimension.field_name()))
            .collect::<Result<Vec<_>, _>>()?;
        let single_group = if self.by.is_empty() {
            match self.groups.group(&[]) {
                Ok(number) => Some(number),
                Err(too_many) => return Ok(Err(too_many)),
            }
        } else {
            None
        };

        'rows: for row in 0..batch.num_rows() {
            let timestamp_ms = at(timestamps, row).unwrap_or(0);
            if timestamp_ms < query.from_ms || timestamp_ms >= query.to_ms {
                continue;
            }
            if let Some(wanted) = query.tenant.as_deref() {
                let of_tenant = self
                    .in_tenant
                    .get(&tenant, row, |stored| Ok(stored.unwrap_or("") == wanted))?;
                if !of_tenant {
                    continue;
                }
            }
            // What makes an event in scope malformed fails the scan, filtered or not,
            // as reading it as an event does.
            let failed = self.is_error.get(&status_column, row, |stored| {
                Ok(status(stored)? == Status::Error)
            })?;
            let cost_micros = at(cost, row)
                .map(|cost| {
                    u64::try_from(cost).map_err(|_| malformed(format!("cost {cost} out of range")))
                })
                .transpose()?
                .unwrap_or(0);
            for ((filter, memo), column) in self
                .filters
                .iter()
                .zip(&mut self.passes)
                .zip(&filter_columns)
            {
                let passes = memo.get(column, row, |stored| {
                    Ok(filter.matches_value(dimension_value(&filter.dimension, stored)?))
                })?;
                if !passes {
                    continue 'rows;
                }
            }
            let number = match (single_group, by_columns.as_slice()) {
                (Some(number), _) => number,
                (None, [column]) => {
                    let dimension = &self.by[0];
                    let groups = &mut self.groups;
                    let mut too_many = None;
                    let number = self.number.get(column, row, |stored| {
                        match groups.group(&[dimension_value(dimension, stored)?]) {
                            Ok(number) => Ok(number),
                            Err(error) => {
                                too_many = Some(error);
                                Ok(u32::MAX)
                            }
                        }
                    });
                    if let Some(error) = too_many {
                        // Not kept: the memo holds a number only once it is real.
                        self.number = Memo::default();
                        return Ok(Err(error));
                    }
                    number?
                }
                (None, [first, second]) => match self.pair_number(first, second, row)? {
                    Ok(number) => number,
                    Err(too_many) => return Ok(Err(too_many)),
                },
                _ => unreachable!("the columnar path groups by at most two dimensions"),
            };
            let error = if failed {
                Some(error_type.value(row)?)
            } else {
                None
            };
            let user_hash = self
                .user_hash
                .get(&user, row, |stored| Ok(stored.map(UniqueCounter::hash)))?;
            self.groups.add(
                number,
                &ScannedEvent {
                    error,
                    latency_ms: at(latency, row).unwrap_or(0.0),
                    ttft_ms: at(ttft, row),
                    input_tokens: at(input_tokens, row).unwrap_or(0),
                    output_tokens: at(output_tokens, row).unwrap_or(0),
                    cache_read_input_tokens: at(cache_read, row).unwrap_or(0),
                    cost_micros,
                    user_hash,
                },
            );
        }
        Ok(Ok(()))
    }

    /// The group number of `row` grouped by two dimensions: found by the pair of
    /// dictionary entries where both columns are coded, else by the values.
    fn pair_number(
        &mut self,
        first: &Coded<'_>,
        second: &Coded<'_>,
        row: usize,
    ) -> Result<Result<u32, TooManyGroups>, StoreError> {
        let pair =
            match (first, second) {
                (
                    Coded::Dictionary {
                        keys: first_keys,
                        values: first_values,
                        dictionary: first_dictionary,
                    },
                    Coded::Dictionary {
                        keys: second_keys,
                        values: second_values,
                        dictionary: second_dictionary,
                    },
                ) => {
                    let held = self.pairs.dictionaries.as_ref().is_some_and(
                        |(held_first, held_second)| {
                            Arc::ptr_eq(held_first, first_dictionary)
                                && Arc::ptr_eq(held_second, second_dictionary)
                        },
                    );
                    if !held {
                        self.pairs.dictionaries =
                            Some((Arc::clone(first_dictionary), Arc::clone(second_dictionary)));
                        self.pairs.numbers.clear();
                    }
                    let pair = (
                        Coded::slot(first_keys, first_values, row)?,
                        Coded::slot(second_keys, second_values, row)?,
                    );
                    if let Some(number) = self.pairs.numbers.get(&pair) {
                        return Ok(Ok(*number));
                    }
                    Some(pair)
                }
                _ => None,
            };
        let values = [
            dimension_value(&self.by[0], first.value(row)?)?,
            dimension_value(&self.by[1], second.value(row)?)?,
        ];
        Ok(self.groups.group(&values).inspect(|number| {
            if let Some(pair) = pair {
                self.pairs.numbers.insert(pair, *number);
            }
        }))
    }
}
