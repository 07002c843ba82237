//! The inference event and everything that turns untrusted bytes into it, with no I/O.
//!
//! - [`event`]: the normalized v1 event ([`Event`]), borrowed from the bytes it was
//!   decoded from so a batch is parsed without per-field allocation.
//! - [`decode`]: request bodies (JSON object or array, NDJSON, gzip/zstd) into events,
//!   with per-event rejections that name the field at fault.
//! - [`otlp`]: OTLP trace export requests (protobuf, JSON) and the mapping of GenAI
//!   spans onto v1 events.
//! - [`wire`]: the versioned binary encoding of one event in the log, and its decoder.
//! - [`frame`]: the write-ahead log's frame and record framing, and their decoder.
//! - [`dead_letter`]: records the stream could not process, with the reason and their
//!   source; their encoding in the dead-letter topic, and its decoder; the queue's
//!   sink and source traits, which the engines implement.
//! - [`dimension`]: the dimensions breakdowns group by and filters select by, and
//!   their values in an event.
//! - [`price`]: the price table that fills in `cost_usd` when a producer did not send it.
//! - [`report`]: the ingest report's counters (unpriced models, missing usage,
//!   deprecated attributes) per tenant and source, in memory.
//! - [`auth`]: API keys to tenants and key kinds, compared in constant time.
//! - [`time`]: the clock, parsing of RFC 3339 / unix-ms instants and minute alignment.
//!
//! Every decoder of untrusted bytes lives here so fuzz targets build without the
//! server's dependencies.

pub mod auth;
pub mod dead_letter;
pub mod decode;
pub mod dimension;
pub mod event;
pub mod frame;
pub mod otlp;
pub mod price;
pub mod redact;
pub mod report;
pub mod time;
pub mod wire;

pub use event::{Event, EventId, Status};
