//! The Arrow schema of raw events and the conversions to and from it.
//!
//! One row per event; the column names are the v1 field names (plus `tenant`), so a
//! user querying the files with DuckDB or Polars reads the same names the API takes.
//! Money is `decimal(18, 6)` dollars: exact, like the micro-dollars it is made from.
//! Tokens are unsigned 64-bit integers, as validation accepts them.
//!
//! Files written before a column existed lack it; the reader takes a missing optional
//! count column as all null ([`OPTIONAL_SINCE_V2`]), so old files keep reading after
//! the schema grows. Every column the writer adds from now on is one of those.
//!
//! The payloads (`input`, `output`: [`PAYLOAD_COLUMNS`]) are the last two columns, each
//! its own column chunk per row group: a read that does not ask for them projects them
//! away ([`without_payloads`]) and never reads their pages. Files written before
//! payloads were stored, and files whose payloads retention dropped, have neither
//! column; they read as events without payloads.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use ais_model::{Event, EventId, Status};
use arrow_array::builder::{
    Decimal128Builder, Float64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use arrow_array::types::{Decimal128Type, Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{
    Array, ArrayAccessor, ArrayRef, MapArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{StoreError, StoredEvent};

/// Precision and scale of `cost_usd`: up to 10^12 dollars to the micro-dollar.
const COST_PRECISION: u8 = 18;
const COST_SCALE: i8 = 6;

/// Column names, in file order.
pub const TENANT: &str = "tenant";
pub const EVENT_ID: &str = "event_id";
pub const TIMESTAMP: &str = "timestamp";
pub const MODEL: &str = "model";
pub const LATENCY_MS: &str = "latency_ms";
pub const STATUS: &str = "status";
pub const USER_ID: &str = "user_id";
pub const TRACE_ID: &str = "trace_id";

/// Count columns added after the first release of the file format: files written
/// before hold no such column, and read as if every row had none (`null`).
pub const OPTIONAL_SINCE_V2: [&str; 2] = ["reasoning_output_tokens", "cache_creation_input_tokens"];

/// What a call was sent and what it answered (`[payloads]` capture), as ingest stored
/// them (capped, redacted).
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "output";
/// The payload columns: optional in every file (see the module doc).
pub const PAYLOAD_COLUMNS: [&str; 2] = [INPUT, OUTPUT];

/// Whether a file may lack the column `name` (its rows then read as null).
pub fn is_optional(name: &str) -> bool {
    OPTIONAL_SINCE_V2.contains(&name) || PAYLOAD_COLUMNS.contains(&name)
}

/// Parquet's conventional names for a map's entries (`key_value`, `key`, `value`), so
/// every reader recognises the column as a map.
fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "key_value".to_string(),
        key: "key".to_string(),
        value: "value".to_string(),
    }
}

fn attributes_builder(capacity: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        Some(map_field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
        capacity,
    )
    .with_values_field(Field::new("value", DataType::Utf8, false))
}

/// The schema every raw-event file has.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
            let count = |name: &str| Field::new(name, DataType::UInt64, true);
            let attributes_type = attributes_builder(0).finish().data_type().clone();
            Arc::new(Schema::new(vec![
                text(TENANT, false),
                text(EVENT_ID, false),
                Field::new(
                    TIMESTAMP,
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                text(MODEL, false),
                text("response_model", true),
                text("provider", true),
                text("operation", true),
                Field::new(LATENCY_MS, DataType::Float64, false),
                Field::new("ttft_ms", DataType::Float64, true),
                count("input_tokens"),
                count("output_tokens"),
                count("reasoning_output_tokens"),
                count("cache_read_input_tokens"),
                count("cache_creation_input_tokens"),
                Field::new(
                    "cost_usd",
                    DataType::Decimal128(COST_PRECISION, COST_SCALE),
                    true,
                ),
                text(STATUS, false),
                text("error_type", true),
                text(USER_ID, true),
                text("session_id", true),
                text(TRACE_ID, true),
                text("span_id", true),
                text("endpoint", true),
                text("region", true),
                Field::new("attributes", attributes_type, false),
                text(INPUT, true),
                text(OUTPUT, true),
            ]))
        })
        .clone()
}

/// [`schema`] without the payload columns: what payload retention rewrites old files as.
pub fn schema_without_payloads() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let full = schema();
            let kept: Vec<Field> = full
                .fields()
                .iter()
                .filter(|field| !PAYLOAD_COLUMNS.contains(&field.name().as_str()))
                .map(|field| field.as_ref().clone())
                .collect();
            Arc::new(Schema::new(kept))
        })
        .clone()
}

/// Root column indices of a file's schema, all but the payload columns: the projection
/// of a read that does not ask for payloads.
pub fn without_payloads(file_schema: &Schema) -> Vec<usize> {
    file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| !PAYLOAD_COLUMNS.contains(&field.name().as_str()))
        .map(|(index, _)| index)
        .collect()
}

/// `batch` (read from any file) in the columns of `target` (one of [`schema`],
/// [`schema_without_payloads`]): an optional column the file lacks becomes all null;
/// a column `target` lacks is dropped. What compaction and payload retention write, so
/// files of every age merge into one schema.
pub fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, StoreError> {
    let columns = target
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(Arc::clone(column)),
            Some(_) => Err(malformed(format!(
                "column {} has an unexpected type",
                field.name()
            ))),
            None if is_optional(field.name()) => Ok(arrow_array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
            None => Err(malformed(format!("column {} is missing", field.name()))),
        })
        .collect::<Result<Vec<ArrayRef>, StoreError>>()?;
    RecordBatch::try_new(Arc::clone(target), columns)
        .map_err(|error| malformed(format!("conforming a batch: {error}")))
}

/// Column builders for one file's rows.
pub struct EventColumns {
    tenant: StringBuilder,
    event_id: StringBuilder,
    timestamp: TimestampMillisecondBuilder,
    model: StringBuilder,
    response_model: StringBuilder,
    provider: StringBuilder,
    operation: StringBuilder,
    latency_ms: Float64Builder,
    ttft_ms: Float64Builder,
    input_tokens: UInt64Builder,
    output_tokens: UInt64Builder,
    reasoning_output_tokens: UInt64Builder,
    cache_read_input_tokens: UInt64Builder,
    cache_creation_input_tokens: UInt64Builder,
    cost_usd: Decimal128Builder,
    status: StringBuilder,
    error_type: StringBuilder,
    user_id: StringBuilder,
    session_id: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    endpoint: StringBuilder,
    region: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    input: StringBuilder,
    output: StringBuilder,
    /// Whether any row has a payload.
    payloads: bool,
    rows: usize,
    min_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl EventColumns {
    pub fn with_capacity(rows: usize) -> Self {
        let text = || StringBuilder::with_capacity(rows, rows * 16);
        Self {
            tenant: text(),
            event_id: text(),
            timestamp: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            model: text(),
            response_model: text(),
            provider: text(),
            operation: text(),
            latency_ms: Float64Builder::with_capacity(rows),
            ttft_ms: Float64Builder::with_capacity(rows),
            input_tokens: UInt64Builder::with_capacity(rows),
            output_tokens: UInt64Builder::with_capacity(rows),
            reasoning_output_tokens: UInt64Builder::with_capacity(rows),
            cache_read_input_tokens: UInt64Builder::with_capacity(rows),
            cache_creation_input_tokens: UInt64Builder::with_capacity(rows),
            cost_usd: Decimal128Builder::with_capacity(rows)
                .with_data_type(DataType::Decimal128(COST_PRECISION, COST_SCALE)),
            status: text(),
            error_type: text(),
            user_id: text(),
            session_id: text(),
            trace_id: text(),
            span_id: text(),
            endpoint: text(),
            region: text(),
            attributes: attributes_builder(rows),
            // Most events carry no payload: no room reserved for text.
            input: StringBuilder::with_capacity(rows, 0),
            output: StringBuilder::with_capacity(rows, 0),
            payloads: false,
            rows: 0,
            min_timestamp_ms: i64::MAX,
            max_timestamp_ms: i64::MIN,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether any row so far has a payload: files of rows without any are written
    /// without the payload columns.
    pub fn has_payloads(&self) -> bool {
        self.payloads
    }

    /// Oldest and newest event time of the rows so far.
    pub fn time_span_ms(&self) -> (i64, i64) {
        (self.min_timestamp_ms, self.max_timestamp_ms)
    }

    pub fn push(&mut self, tenant: &str, event: &Event<'_>) -> Result<(), ArrowError> {
        self.tenant.append_value(tenant);
        match &event.event_id {
            EventId::Client(id) => self.event_id.append_value(id),
            EventId::Generated(id) => {
                let mut buffer = uuid::Uuid::encode_buffer();
                self.event_id.append_value(
                    uuid::Uuid::from_u128(*id)
                        .hyphenated()
                        .encode_lower(&mut buffer),
                );
            }
        }
        self.timestamp.append_value(event.timestamp_ms);
        self.model.append_value(&event.model);
        self.response_model
            .append_option(event.response_model.as_deref());
        self.provider.append_option(event.provider.as_deref());
        self.operation.append_option(event.operation.as_deref());
        self.latency_ms.append_value(event.latency_ms);
        self.ttft_ms.append_option(event.ttft_ms);
        self.input_tokens.append_option(event.input_tokens);
        self.output_tokens.append_option(event.output_tokens);
        self.reasoning_output_tokens
            .append_option(event.reasoning_output_tokens);
        self.cache_read_input_tokens
            .append_option(event.cache_read_input_tokens);
        self.cache_creation_input_tokens
            .append_option(event.cache_creation_input_tokens);
        // Micro-dollars are the decimal's unscaled value (scale 6).
        self.cost_usd
            .append_option(event.cost_micros.map(i128::from));
        self.status.append_value(event.status.as_str());
        self.error_type.append_option(event.error_type.as_deref());
        self.user_id.append_option(event.user_id.as_deref());
        self.session_id.append_option(event.session_id.as_deref());
        self.trace_id.append_option(event.trace_id.as_deref());
        self.span_id.append_option(event.span_id.as_deref());
        self.endpoint.append_option(event.endpoint.as_deref());
        self.region.append_option(event.region.as_deref());
        for (key, value) in &event.attributes {
            self.attributes.keys().append_value(key);
            self.attributes.values().append_value(value);
        }
        self.attributes.append(true)?;
        self.input.append_option(event.input.as_deref());
        self.output.append_option(event.output.as_deref());
        self.payloads |= event.input.is_some() || event.output.is_some();
        self.rows += 1;
        self.min_timestamp_ms = self.min_timestamp_ms.min(event.timestamp_ms);
        self.max_timestamp_ms = self.max_timestamp_ms.max(event.timestamp_ms);
        Ok(())
    }

    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.response_model.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.operation.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.ttft_ms.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.reasoning_output_tokens.finish()),
            Arc::new(self.cache_read_input_tokens.finish()),
            Arc::new(self.cache_creation_input_tokens.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.endpoint.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.input.finish()),
            Arc::new(self.output.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

/// Typed access to one record batch of the raw-event schema, by column name, so a
/// file whose columns differ from [`schema`] is a clear error rather than a panic.
pub struct EventsView<'a> {
    batch: &'a RecordBatch,
}

fn malformed(what: String) -> StoreError {
    StoreError::Malformed(format!("raw event file: {what}"))
}

impl<'a> EventsView<'a> {
    pub fn new(batch: &'a RecordBatch) -> Self {
        Self { batch }
    }

    fn column<T: Array + 'static>(&self, name: &str) -> Result<&'a T, StoreError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| malformed(format!("column {name} is missing")))?
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| malformed(format!("column {name} has an unexpected type")))
    }

    pub fn strings(&self, name: &str) -> Result<&'a StringArray, StoreError> {
        self.column::<StringArray>(name)
    }

    pub fn timestamps(&self) -> Result<&'a PrimitiveArray<TimestampMillisecondType>, StoreError> {
        self.column(TIMESTAMP)
    }

    pub fn floats(&self, name: &str) -> Result<&'a PrimitiveArray<Float64Type>, StoreError> {
        self.column(name)
    }

    fn counts(&self, name: &str) -> Result<&'a PrimitiveArray<UInt64Type>, StoreError> {
        self.column(name)
    }

    /// A column the batch may lack: `None` when it is not there (a projected read, or
    /// a file older than the column); an error when it is there with another type.
    fn maybe<T: Array + 'static>(&self, name: &str) -> Result<Option<&'a T>, StoreError> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(None);
        }
        self.column(name).map(Some)
    }

    /// The arrays of every column; `whole` requires each column every file has.
    fn arrays(&self, whole: bool) -> Result<Arrays<'a>, StoreError> {
        let take = |name: &str| -> Result<Option<&'a StringArray>, StoreError> {
            if whole {
                self.strings(name).map(Some)
            } else {
                self.maybe(name)
            }
        };
        let float = |name: &str| -> Result<Option<&'a PrimitiveArray<Float64Type>>, StoreError> {
            if whole {
                self.floats(name).map(Some)
            } else {
                self.maybe(name)
            }
        };
        let count = |name: &str| -> Result<Option<&'a PrimitiveArray<UInt64Type>>, StoreError> {
            if whole && !is_optional(name) {
                self.counts(name).map(Some)
            } else {
                self.maybe(name)
            }
        };
        let timestamp = if whole {
            Some(self.timestamps()?)
        } else {
            self.maybe(TIMESTAMP)?
        };
        let cost_usd = if whole {
            Some(self.column::<PrimitiveArray<Decimal128Type>>("cost_usd")?)
        } else {
            self.maybe("cost_usd")?
        };
        let attributes = if whole {
            Some(self.column::<MapArray>("attributes")?)
        } else {
            self.maybe::<MapArray>("attributes")?
        };
        let attributes = attributes
            .map(|map| -> Result<_, StoreError> {
                let strings = |array: &'a ArrayRef, what: &str| {
                    array
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| malformed(format!("attribute {what} are not strings")))
                };
                Ok((
                    map,
                    strings(map.keys(), "keys")?,
                    strings(map.values(), "values")?,
                ))
            })
            .transpose()?;
        Ok(Arrays {
            tenant: take(TENANT)?,
            event_id: take(EVENT_ID)?,
            timestamp,
            model: take(MODEL)?,
            response_model: take("response_model")?,
            provider: take("provider")?,
            operation: take("operation")?,
            latency_ms: float(LATENCY_MS)?,
            ttft_ms: float("ttft_ms")?,
            input_tokens: count("input_tokens")?,
            output_tokens: count("output_tokens")?,
            reasoning_output_tokens: count("reasoning_output_tokens")?,
            cache_read_input_tokens: count("cache_read_input_tokens")?,
            cache_creation_input_tokens: count("cache_creation_input_tokens")?,
            cost_usd,
            status: take(STATUS)?,
            error_type: take("error_type")?,
            user_id: take(USER_ID)?,
            session_id: take("session_id")?,
            trace_id: take(TRACE_ID)?,
            span_id: take("span_id")?,
            endpoint: take("endpoint")?,
            region: take("region")?,
            attributes,
            // Optional in every file, and absent from reads that project them away.
            input: self.maybe(INPUT)?,
            output: self.maybe(OUTPUT)?,
        })
    }

    /// Every row as an owned event with its tenant. Every column a file always has
    /// must be there.
    pub fn events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let arrays = self.arrays(true)?;
        (0..self.batch.num_rows())
            .map(|row| {
                let (tenant, event) = arrays.row(row, |text| Cow::Owned(text.to_string()))?;
                Ok(StoredEvent {
                    tenant: tenant.to_string(),
                    event,
                })
            })
            .collect()
    }

    /// Visits every row of `(tenant, time)` in scope as an event that borrows from the
    /// batch, with its tenant, for reads that project: a column the batch lacks reads
    /// as absent (`None`, no attributes), and a required one as empty (`""`, 0, `ok`),
    /// so a caller reads only the fields whose columns it asked for. Rows out of scope
    /// are skipped before their event is built.
    pub fn for_each_event(
        &self,
        in_scope: impl Fn(&str, i64) -> bool,
        mut visit: impl FnMut(&'a str, &Event<'a>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let arrays = self.arrays(false)?;
        for row in 0..self.batch.num_rows() {
            let tenant = arrays.tenant.map_or("", |tenant| tenant.value(row));
            let timestamp = arrays.timestamp.map_or(0, |timestamp| timestamp.value(row));
            if !in_scope(tenant, timestamp) {
                continue;
            }
            let (tenant, event) = arrays.row(row, Cow::Borrowed)?;
            visit(tenant, &event)?;
        }
        Ok(())
    }
}

/// The arrays of one batch, each `None` when the batch lacks the column.
struct Arrays<'a> {
    tenant: Option<&'a StringArray>,
    event_id: Option<&'a StringArray>,
    timestamp: Option<&'a PrimitiveArray<TimestampMillisecondType>>,
    model: Option<&'a StringArray>,
    response_model: Option<&'a StringArray>,
    provider: Option<&'a StringArray>,
    operation: Option<&'a StringArray>,
    latency_ms: Option<&'a PrimitiveArray<Float64Type>>,
    ttft_ms: Option<&'a PrimitiveArray<Float64Type>>,
    input_tokens: Option<&'a PrimitiveArray<UInt64Type>>,
    output_tokens: Option<&'a PrimitiveArray<UInt64Type>>,
    reasoning_output_tokens: Option<&'a PrimitiveArray<UInt64Type>>,
    cache_read_input_tokens: Option<&'a PrimitiveArray<UInt64Type>>,
    cache_creation_input_tokens: Option<&'a PrimitiveArray<UInt64Type>>,
    cost_usd: Option<&'a PrimitiveArray<Decimal128Type>>,
    status: Option<&'a StringArray>,
    error_type: Option<&'a StringArray>,
    user_id: Option<&'a StringArray>,
    session_id: Option<&'a StringArray>,
    trace_id: Option<&'a StringArray>,
    span_id: Option<&'a StringArray>,
    endpoint: Option<&'a StringArray>,
    region: Option<&'a StringArray>,
    /// The map, its keys and its values.
    attributes: Option<(&'a MapArray, &'a StringArray, &'a StringArray)>,
    input: Option<&'a StringArray>,
    output: Option<&'a StringArray>,
}

impl<'a> Arrays<'a> {
    /// Row `row` as (tenant, event), its strings made by `text` (borrowed from the
    /// batch, or owned).
    fn row<'e>(
        &self,
        row: usize,
        text: impl Fn(&'a str) -> Cow<'e, str>,
    ) -> Result<(&'a str, Event<'e>), StoreError> {
        fn value<A: ArrayAccessor>(array: Option<A>, row: usize) -> Option<A::Item> {
            array.and_then(|array| array.is_valid(row).then(|| array.value(row)))
        }
        let optional_text = |array: Option<&'a StringArray>| value(array, row).map(&text);
        let status_text = value(self.status, row).unwrap_or("ok");
        let status = Status::parse(status_text)
            .ok_or_else(|| malformed(format!("unknown status {status_text:?}")))?;
        let cost_micros = value(self.cost_usd, row)
            .map(|cost| {
                u64::try_from(cost).map_err(|_| malformed(format!("cost {cost} out of range")))
            })
            .transpose()?;
        let attributes = match self.attributes {
            Some((map, keys, values)) => {
                let offsets = map.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                (start..end)
                    .map(|entry| (text(keys.value(entry)), text(values.value(entry))))
                    .collect()
            }
            None => Vec::new(),
        };
        let event = Event {
            model: text(value(self.model, row).unwrap_or("")),
            event_id: EventId::Client(text(value(self.event_id, row).unwrap_or(""))),
            timestamp_ms: value(self.timestamp, row).unwrap_or(0),
            response_model: optional_text(self.response_model),
            provider: optional_text(self.provider),
            operation: optional_text(self.operation),
            latency_ms: value(self.latency_ms, row).unwrap_or(0.0),
            ttft_ms: value(self.ttft_ms, row),
            input_tokens: value(self.input_tokens, row),
            output_tokens: value(self.output_tokens, row),
            reasoning_output_tokens: value(self.reasoning_output_tokens, row),
            cache_read_input_tokens: value(self.cache_read_input_tokens, row),
            cache_creation_input_tokens: value(self.cache_creation_input_tokens, row),
            cost_micros,
            status,
            error_type: optional_text(self.error_type),
            user_id: optional_text(self.user_id),
            session_id: optional_text(self.session_id),
            trace_id: optional_text(self.trace_id),
            span_id: optional_text(self.span_id),
            endpoint: optional_text(self.endpoint),
            region: optional_text(self.region),
            attributes,
            // Raw events keep the call, not who sent it or what it settled.
            key: None,
            reservation_id: None,
            input: optional_text(self.input),
            output: optional_text(self.output),
        };
        Ok((value(self.tenant, row).unwrap_or(""), event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_columns() {
        let full = Event {
            response_model: Some("gpt-4o-2024".into()),
            provider: Some("openai".into()),
            operation: Some("chat".into()),
            ttft_ms: Some(140.5),
            input_tokens: Some(1200),
            output_tokens: Some(u64::MAX),
            reasoning_output_tokens: Some(7),
            cache_read_input_tokens: Some(0),
            cache_creation_input_tokens: Some(9),
            cost_micros: Some(4_123_456),
            status: Status::Error,
            error_type: Some("timeout".into()),
            user_id: Some("u-17".into()),
            session_id: Some("s".into()),
            trace_id: Some("t".into()),
            span_id: Some("sp".into()),
            endpoint: Some("e".into()),
            region: Some("eu".into()),
            attributes: vec![("k".into(), "v".into()), ("k2".into(), "".into())],
            input: Some("[{\"role\":\"user\",\"content\":\"Hi [EMAIL]\"}]".into()),
            output: Some("Hello".into()),
            ..Event::new(
                "gpt-4o",
                EventId::Client("id-1".into()),
                1_795_339_620_123,
                812.5,
            )
        };
        let bare = Event::new(
            "m",
            EventId::Generated(0x0190_0000_0000_7000_8000_0000_0000_0001),
            5,
            0.0,
        );
        let mut columns = EventColumns::with_capacity(2);
        columns.push("acme", &full).expect("push");
        columns.push("other", &bare).expect("push");
        assert_eq!(columns.time_span_ms(), (5, 1_795_339_620_123));
        let batch = columns.finish().expect("finish");
        let events = EventsView::new(&batch).events().expect("read back");
        assert_eq!(events[0].tenant, "acme");
        assert_eq!(events[0].event, full);
        assert_eq!(events[1].tenant, "other");
        assert_eq!(
            events[1].event.event_id,
            EventId::Client("01900000-0000-7000-8000-000000000001".into())
        );
        let bare_read = Event {
            event_id: bare.event_id.clone(),
            ..events[1].event.clone()
        };
        assert_eq!(bare_read, bare);
    }

    #[test]
    fn batches_without_the_newer_count_columns_read_them_as_absent() {
        let full = Event {
            input_tokens: Some(10),
            reasoning_output_tokens: Some(3),
            cache_creation_input_tokens: Some(4),
            ..Event::new("m", EventId::Client("id".into()), 5, 1.0)
        };
        let mut columns = EventColumns::with_capacity(1);
        columns.push("acme", &full).expect("push");
        let batch = columns.finish().expect("finish");
        // A file written before these columns existed: the same batch without them.
        let kept: Vec<usize> = (0..batch.num_columns())
            .filter(|at| !OPTIONAL_SINCE_V2.contains(&schema().field(*at).name().as_str()))
            .collect();
        let old = batch.project(&kept).expect("project");
        assert_eq!(old.num_columns() + 2, batch.num_columns());
        let events = EventsView::new(&old)
            .events()
            .expect("old files still read");
        let want = Event {
            reasoning_output_tokens: None,
            cache_creation_input_tokens: None,
            ..full
        };
        assert_eq!(events[0].event, want);
        // The columns every file has stay required: a file without one is malformed.
        let without_input: Vec<usize> = (0..batch.num_columns())
            .filter(|at| schema().field(*at).name() != "input_tokens")
            .collect();
        let broken = batch.project(&without_input).expect("project");
        assert!(EventsView::new(&broken).events().is_err());
    }

    #[test]
    fn files_without_payload_columns_read_and_conform() {
        let with_payloads = Event {
            input: Some("prompt".into()),
            output: Some("answer".into()),
            ..Event::new("m", EventId::Client("a".into()), 5, 1.0)
        };
        let mut columns = EventColumns::with_capacity(1);
        columns.push("acme", &with_payloads).expect("push");
        let batch = columns.finish().expect("finish");
        let old = batch
            .project(&without_payloads(&schema()))
            .expect("project");
        assert_eq!(old.num_columns() + 2, batch.num_columns());
        let read = EventsView::new(&old)
            .events()
            .expect("old files still read");
        let want = Event {
            input: None,
            output: None,
            ..with_payloads.clone()
        };
        assert_eq!(read[0].event, want);
        // Compaction merges it with new files: the payloads come back as null.
        let conformed = conform(&old, &schema()).expect("conform");
        assert_eq!(conformed.schema(), schema());
        assert_eq!(
            EventsView::new(&conformed).events().expect("read")[0].event,
            want
        );
        // Retention rewrites a new file without them.
        let dropped = conform(&batch, &schema_without_payloads()).expect("drop");
        assert_eq!(dropped.num_columns(), old.num_columns());
        assert_eq!(
            EventsView::new(&dropped).events().expect("read")[0].event,
            want
        );
        // A required column stays required.
        let without_model: Vec<usize> = (0..old.num_columns())
            .filter(|at| old.schema().field(*at).name() != MODEL)
            .collect();
        let broken = old.project(&without_model).expect("project");
        let error = conform(&broken, &schema()).expect_err("malformed");
        assert!(
            error.to_string().contains("column model is missing"),
            "{error}"
        );
    }
}
