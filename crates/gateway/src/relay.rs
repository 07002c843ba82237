//! The body of a streamed answer: the upstream's chunks relayed to the caller as they
//! arrive, read on the way by [`SseScan`] (time to first token, usage, the model that
//! answered), and the call's event finished when the stream ends.
//!
//! The upstream's body lives inside this one: when the caller goes away, the server
//! drops it, which drops the upstream response and closes its connection, so the
//! upstream stops generating; the [`CallGuard`] inside records the call as cancelled.
//! The whole call's deadline keeps running while the answer streams. With the cache on,
//! the answer is kept as it passes and stored once it ended cleanly; a cached answer
//! is replayed through the same relay.
//!
//! A stream cut short (the caller gone, the upstream's stream failed, the call's
//! timeout) was still paid for: its event and its budget hold keep what it is known to
//! have spent, by the rule every call cut short follows ([`CallGuard::count_cut_short`]).
//! Tokens the upstream reported are kept as they are; when it reported none, the input
//! is taken as the whole request body at one token per
//! [`crate::budget::BYTES_PER_TOKEN`] bytes (over the prompt's true count, the safe side
//! for a budget) and the output as one token per content chunk relayed, and the event
//! says so with `attributes.usage = "estimated"`. The hold holds that figure until the
//! event, which names it, settles it, as a finished call's does.
//!
//! **Chunks ready together go out together.** Before writing, the relay takes every
//! chunk the upstream's body has ready and sends them as one frame (at most
//! [`MAX_FRAME_BYTES`]); it never waits for a chunk not yet there, so an event
//! arriving alone goes out at once. The upstream's connection hands its body over one
//! chunk per wakeup, so a stream from upstream mostly goes out an event a frame;
//! letting the runtime run a turn before each write, so that connection could hand
//! over what it already held, cost more than it saved where events arrive one per
//! read (measured in `bench/RESULTS.md`, 2026-12-08).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ais_model::time::Clock;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::sync::Arc;
use tokio::time::Sleep;

use crate::cache::{Cached, ResponseCache};
use crate::record::CallGuard;
use crate::semantic::{SemanticCache, SemanticKey};
use crate::sse::{Seen, SseScan};

/// The most bytes gathered into one frame for the caller; a longer run of events
/// already received goes out in several.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Why a relayed stream ended early; the caller's connection is cut.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the upstream stream failed: {0}")]
    Upstream(String),
    #[error("the call took longer than its timeout")]
    Timeout,
}

pub struct Relay {
    upstream: Pin<Box<reqwest::Body>>,
    /// The first chunk, read before the answer was committed to.
    first: Option<Bytes>,
    scan: SseScan,
    call: CallGuard,
    deadline: Pin<Box<Sleep>>,
    clock: Arc<dyn Clock>,
    done: bool,
    /// The call's place among those in flight, given back when the relay is dropped.
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// The answer being kept for the cache, as the upstream sent it.
    fill: Option<Fill>,
    /// Content chunks passed on so far: the output of a stream cut before its usage.
    content_chunks: u64,
    /// With payload capture on, how much of the answer's text the event keeps.
    payload_cap: Option<usize>,
    /// What goes to the caller next: the events received since the last frame.
    held: BytesMut,
    /// How the stream ended, told the caller once what was held before it is sent.
    failure: Option<RelayError>,
}

/// What a relay carries besides the upstream's body: the call, what the caller asked
/// for, its deadline and its place among the calls in flight.
pub struct RelayParts {
    /// The call, with its budget hold (settled when the stream ends) and, for an
    /// answer from upstream, the request's size (what a stream cut short read).
    pub call: CallGuard,
    /// How the stream is read (and, for OpenAI's, whether the usage chunk the caller
    /// did not ask for is taken out).
    pub scan: SseScan,
    pub deadline: tokio::time::Instant,
    pub clock: Arc<dyn Clock>,
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub fill: Option<Fill>,
    /// With payload capture on, how much of the answer's text its event keeps.
    pub payload_cap: Option<usize>,
}

/// A streamed answer on its way into the caches (the exact one, the semantic one or
/// both): kept only if it ends cleanly within the caches' entry bound.
pub struct Fill {
    pub exact: Option<(Arc<ResponseCache>, u128)>,
    pub semantic: Option<(Arc<SemanticCache>, SemanticKey)>,
    pub bytes: BytesMut,
}

impl Fill {
    /// Adds a chunk; `false` once the answer is too large to keep.
    fn add(&mut self, chunk: &[u8]) -> bool {
        let exact_bound = self
            .exact
            .as_ref()
            .map_or(usize::MAX, |(cache, _)| cache.max_entry_bytes());
        let semantic_bound = self
            .semantic
            .as_ref()
            .map_or(usize::MAX, |(cache, _)| cache.config().max_entry_bytes);
        if self.bytes.len() + chunk.len() > exact_bound.min(semantic_bound) {
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }

    fn put(self, cached: Cached) {
        if let Some((cache, key)) = self.semantic {
            cache.put(key, cached.clone());
        }
        if let Some((cache, key)) = self.exact {
            cache.put(key, cached);
        }
    }
}

impl Relay {
    pub fn new(upstream: Pin<Box<reqwest::Body>>, first: Bytes, parts: RelayParts) -> Self {
        Self {
            upstream,
            first: Some(first),
            scan: parts.scan,
            call: parts.call,
            deadline: Box::pin(tokio::time::sleep_until(parts.deadline)),
            clock: parts.clock,
            done: false,
            _permit: parts.permit,
            fill: parts.fill,
            content_chunks: 0,
            payload_cap: parts.payload_cap,
            held: BytesMut::new(),
            failure: None,
        }
    }

    /// Passes a chunk through the scanner, noting what it says in the call's record;
    /// what goes to the caller is added to what is held.
    fn pass(&mut self, chunk: &[u8]) {
        if let Some(fill) = &mut self.fill {
            if !fill.add(chunk) {
                self.fill = None;
            }
        }
        let now = self.clock.now();
        let call = &mut self.call;
        let content_chunks = &mut self.content_chunks;
        let cap = self.payload_cap;
        self.scan.push(chunk, &mut self.held, &mut |seen| {
            *content_chunks += u64::from(seen.content);
            note(call, seen, now, cap);
        });
    }

    /// What is held, as the next frame for the caller.
    fn frame(&mut self) -> Frame<Bytes> {
        Frame::data(self.held.split().freeze())
    }

    /// The stream is over (`failure` says why when it was cut): what is held goes out
    /// first, then the end.
    fn close(
        &mut self,
        failure: Option<RelayError>,
    ) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        if self.held.is_empty() {
            return Poll::Ready(failure.map(Err));
        }
        self.failure = failure;
        Poll::Ready(Some(Ok(self.frame())))
    }

    fn end(&mut self, error_type: Option<&str>) {
        let now = self.clock.now();
        let call = &mut self.call;
        let content_chunks = &mut self.content_chunks;
        let cap = self.payload_cap;
        self.scan.finish(&mut self.held, &mut |seen| {
            *content_chunks += u64::from(seen.content);
            note(call, seen, now, cap);
        });
        self.done = true;
        if error_type.is_some() {
            self.call.count_cut_short(self.content_chunks);
        }
        if let (None, Some(mut fill), Some(record)) =
            (error_type, self.fill.take(), self.call.record())
        {
            let cached = Cached {
                body: std::mem::take(&mut fill.bytes).freeze(),
                usage: record.usage,
                response_model: record.response_model.clone(),
                provider: record.provider,
            };
            fill.put(cached);
        }
        // Settles the call's budget hold with the usage now known.
        self.call.finish(error_type);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Dropped before its end: the caller went away and the upstream request with it.
        if !self.done {
            self.end(Some("cancelled"));
        }
    }
}

fn note(call: &mut CallGuard, seen: Seen, now: std::time::Instant, payload_cap: Option<usize>) {
    let Some(record) = call.record() else {
        return;
    };
    if seen.content && record.ttft.is_none() {
        record.ttft = Some(now.saturating_duration_since(record.started));
    }
    if let (Some(cap), Some(text)) = (payload_cap, &seen.text) {
        record.push_output(text, cap);
    }
    if let Some(usage) = seen.usage {
        match &mut record.usage {
            Some(known) => known.merge(usage),
            None => record.usage = Some(usage),
        }
    }
    if let Some(model) = seen.model {
        if record.response_model.as_deref() != Some(model.as_str()) {
            record.response_model = Some(model);
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = RelayError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let this = &mut *self;
        if let Some(failure) = this.failure.take() {
            return Poll::Ready(Some(Err(failure)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            this.pass(&first);
        }
        loop {
            if this.held.len() >= MAX_FRAME_BYTES {
                return Poll::Ready(Some(Ok(this.frame())));
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                this.end(Some("timeout"));
                return this.close(Some(RelayError::Timeout));
            }
            match this.upstream.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    if this.held.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(this.frame())));
                }
                Poll::Ready(None) => {
                    this.end(None);
                    return this.close(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.end(Some("upstream_reset"));
                    return this.close(Some(RelayError::Upstream(error.to_string())));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers: nothing to relay in an SSE answer.
                    if let Ok(data) = frame.into_data() {
                        this.pass(&data);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.held.is_empty() && self.failure.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
