//! Reading an upstream's server-sent events (OpenAI's or Anthropic's, [`Dialect`]) as
//! they pass: the first content chunk
//! (time to first token), the `usage` block and the model that answered, and, when the
//! caller did not ask for usage, the usage-only chunk taken out of what it receives.
//!
//! Events end at a blank line. When nothing is taken out, every chunk goes to the
//! caller as it arrived and only a copy of the event in progress is kept for reading;
//! when the usage chunk may have to be taken out, whole events are passed on as soon
//! as they are complete. Either way the bytes held are bounded: an event larger than
//! [`MAX_EVENT_BYTES`] is passed on unread.

use bytes::BytesMut;
use serde::Deserialize;

use crate::record::{AnthropicUsage, Usage};

/// The largest event read; a larger one is relayed without being looked into.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What one event said.
#[derive(Debug, Default, PartialEq)]
pub struct Seen {
    /// The event carries content (a token of text, a tool call).
    pub content: bool,
    /// The text it carries, if any (the answer's next piece).
    pub text: Option<String>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// Legacy completions stream text, not deltas.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

/// Which API's events a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `chat.completion.chunk` / `text_completion` chunks, usage in a last chunk.
    OpenAi,
    /// Anthropic's `message_start`, `content_block_delta`, `message_delta`: input
    /// tokens in the first, output tokens in the last; nothing is taken out.
    Anthropic,
}

#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<AnthropicMessage>,
    #[serde(default)]
    delta: Option<AnthropicDelta>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicDelta {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
}

/// The scanner of one stream.
#[derive(Debug)]
pub struct SseScan {
    dialect: Dialect,
    /// Take the usage-only chunk out (the caller did not ask for it).
    strip_usage: bool,
    /// The event in progress (and, when stripping, the complete events not yet passed on).
    pending: BytesMut,
    /// Looking into the event in progress was given up: it is too large.
    oversize: bool,
}

impl SseScan {
    pub fn new(strip_usage: bool) -> Self {
        Self {
            dialect: Dialect::OpenAi,
            strip_usage,
            pending: BytesMut::new(),
            oversize: false,
        }
    }

    /// A scanner of Anthropic's events (which pass whole).
    pub fn anthropic() -> Self {
        Self {
            dialect: Dialect::Anthropic,
            ..Self::new(false)
        }
    }

    /// Takes a chunk from upstream, adds what goes to the caller now to `out`, and
    /// tells `seen` about each complete event.
    pub fn push(&mut self, chunk: &[u8], out: &mut BytesMut, seen: &mut impl FnMut(Seen)) {
        if !self.strip_usage {
            out.extend_from_slice(chunk);
        }
        let mut rest: &[u8] = chunk;
        while !rest.is_empty() {
            let (part, complete, after) = match event_end(&self.pending, rest) {
                Some(end) => (&rest[..end], true, &rest[end..]),
                None => (rest, false, &[][..]),
            };
            rest = after;
            if !self.oversize && self.pending.len() + part.len() > MAX_EVENT_BYTES {
                // Too large to read: what is held goes on as it is.
                self.oversize = true;
                if self.strip_usage {
                    out.extend_from_slice(&self.pending);
                }
                self.pending.clear();
            }
            if self.oversize {
                if self.strip_usage {
                    out.extend_from_slice(part);
                }
            } else {
                self.pending.extend_from_slice(part);
            }
            if complete {
                if self.oversize {
                    self.oversize = false;
                } else {
                    // Read in place: the event is copied once, to `out`, if it goes on.
                    let (said, keep) = self.read(&self.pending);
                    seen(said);
                    if self.strip_usage && keep {
                        out.extend_from_slice(&self.pending);
                    }
                    self.pending.clear();
                }
            }
        }
    }

    /// Adds to `out` what is left at the end of the stream (an event without its
    /// blank line) when it goes to the caller.
    pub fn finish(&mut self, out: &mut BytesMut, seen: &mut impl FnMut(Seen)) {
        if self.pending.is_empty() || self.oversize {
            self.pending.clear();
            return;
        }
        let (said, keep) = self.read(&self.pending);
        seen(said);
        if self.strip_usage && keep {
            out.extend_from_slice(&self.pending);
        }
        self.pending.clear();
    }

    /// What one event says, and whether it goes to the caller.
    fn read(&self, event: &[u8]) -> (Seen, bool) {
        let mut values = event.split(|byte| *byte == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let value = line.strip_prefix(b"data:")?;
            Some(value.strip_prefix(b" ").unwrap_or(value))
        });
        let first = values.next().unwrap_or_default();
        // One `data:` line (every chunk OpenAI and Anthropic send) is read where it
        // lies; several are joined by newlines, as the format says.
        let joined: Vec<u8>;
        let data: &[u8] = match values.next() {
            None => first,
            Some(second) => {
                let mut all = [first, b"\n", second].concat();
                for value in values {
                    all.push(b'\n');
                    all.extend_from_slice(value);
                }
                joined = all;
                &joined
            }
        };
        if self.dialect == Dialect::Anthropic {
            return (read_anthropic(data), true);
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            // `[DONE]`, a comment, a keep-alive, or something we do not read.
            return (Seen::default(), true);
        };
        let content = chunk.choices.iter().any(|choice| {
            choice.text.as_deref().is_some_and(|text| !text.is_empty())
                || choice.delta.as_ref().is_some_and(|delta| {
                    delta
                        .content
                        .as_deref()
                        .is_some_and(|text| !text.is_empty())
                        || delta.tool_calls.is_some()
                })
        });
        let usage_only = chunk.usage.is_some() && chunk.choices.is_empty();
        let keep = !(self.strip_usage && usage_only);
        let text = chunk
            .choices
            .into_iter()
            .filter_map(|choice| choice.text.or(choice.delta.and_then(|delta| delta.content)))
            .reduce(|mut all, piece| {
                all.push_str(&piece);
                all
            });
        (
            Seen {
                content,
                text,
                usage: chunk.usage,
                model: chunk.model,
            },
            keep,
        )
    }
}

/// What one of Anthropic's events says.
fn read_anthropic(data: &[u8]) -> Seen {
    let Ok(event) = serde_json::from_slice::<AnthropicEvent>(data) else {
        return Seen::default();
    };
    match event.kind.as_str() {
        "message_start" => {
            let message = event.message;
            Seen {
                content: false,
                text: None,
                usage: message
                    .as_ref()
                    .and_then(|message| message.usage)
                    .map(AnthropicUsage::to_usage),
                model: message.and_then(|message| message.model),
            }
        }
        "content_block_delta" => {
            let Some(delta) = event.delta else {
                return Seen::default();
            };
            match delta.kind.as_str() {
                "text_delta" => Seen {
                    content: delta.text.as_deref().is_some_and(|text| !text.is_empty()),
                    text: delta.text,
                    ..Seen::default()
                },
                "input_json_delta" => Seen {
                    content: delta.partial_json.is_some(),
                    ..Seen::default()
                },
                _ => Seen::default(),
            }
        }
        // Its counts are cumulative: output tokens, and input ones when it has them.
        "message_delta" => Seen {
            usage: event.usage.map(|usage| {
                let mut counted = usage.to_usage();
                if usage.input_tokens.is_none() {
                    counted.prompt_tokens = None;
                }
                counted
            }),
            ..Seen::default()
        },
        _ => Seen::default(),
    }
}

/// Where the first event ending in `rest` ends (just after its blank line), given the
/// bytes of the event already held.
fn event_end(held: &[u8], rest: &[u8]) -> Option<usize> {
    // A blank line is "\n\n" or "\n\r\n"; its first "\n" may be the last byte held.
    let mut previous: [u8; 2] = match held {
        [.., a, b] => [*a, *b],
        [b] => [0, *b],
        [] => [0, 0],
    };
    for (at, byte) in rest.iter().enumerate() {
        if *byte == b'\n' && (previous[1] == b'\n' || previous == [b'\n', b'\r']) {
            return Some(at + 1);
        }
        previous = [previous[1], *byte];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "data: {\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    const TOKEN: &str =
        "data: {\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"}}]}\n\n";
    const USAGE: &str = "data: {\"model\":\"m-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(strip: bool, pieces: &[&[u8]]) -> (Vec<u8>, Vec<Seen>) {
        let mut scan = SseScan::new(strip);
        let mut seen = Vec::new();
        let mut out = BytesMut::new();
        for piece in pieces {
            scan.push(piece, &mut out, &mut |s| seen.push(s));
        }
        scan.finish(&mut out, &mut |s| seen.push(s));
        (out.to_vec(), seen)
    }

    fn stream() -> String {
        [ROLE, TOKEN, USAGE, DONE].concat()
    }

    #[test]
    fn usage_is_taken_out_when_the_caller_did_not_ask_wherever_the_chunks_split() {
        let whole = stream();
        let bytes = whole.as_bytes();
        for split in 0..bytes.len() {
            let (out, seen) = run(true, &[&bytes[..split], &bytes[split..]]);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                [ROLE, TOKEN, DONE].concat(),
                "split at {split}"
            );
            assert_eq!(seen.len(), 4, "split at {split}");
            assert!(!seen[0].content, "the role chunk carries no content");
            assert!(seen[1].content);
            assert_eq!(seen[2].usage.and_then(|u| u.prompt_tokens), Some(7));
            assert_eq!(seen[2].model.as_deref(), Some("m-1"));
        }
    }

    #[test]
    fn without_stripping_every_byte_passes_as_it_came() {
        let whole = stream();
        let bytes = whole.as_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(5).collect();
        let (out, seen) = run(false, &pieces);
        assert_eq!(out, bytes);
        assert_eq!(seen.iter().filter(|s| s.usage.is_some()).count(), 1);
    }

    #[test]
    fn crlf_events_and_an_unterminated_last_event_are_read() {
        let text = "data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}";
        let (out, seen) = run(true, &[text.as_bytes()]);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\n"
        );
        assert!(seen[0].content);
        assert_eq!(seen[1].usage.and_then(|u| u.prompt_tokens), Some(1));
    }

    #[test]
    fn an_oversized_event_passes_unread_and_bounded() {
        let big = format!("data: {}\n\n", "x".repeat(MAX_EVENT_BYTES + 10));
        let text = format!("{big}{TOKEN}");
        let pieces: Vec<&[u8]> = text.as_bytes().chunks(4096).collect();
        let (out, seen) = run(true, &pieces);
        assert_eq!(out, text.as_bytes());
        assert_eq!(seen.len(), 1, "only the normal event is read");
        assert!(seen[0].content);
    }

    #[test]
    fn anthropic_events_give_content_and_usage_from_first_and_last() {
        let text = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":7}}\n\n",
        );
        let mut scan = SseScan::anthropic();
        let mut seen = Vec::new();
        let mut out = BytesMut::new();
        scan.push(text.as_bytes(), &mut out, &mut |s| seen.push(s));
        assert_eq!(out, text.as_bytes(), "Anthropic's events pass whole");
        assert_eq!(seen[0].model.as_deref(), Some("claude-x"));
        let mut usage = seen[0].usage.expect("input from message_start");
        assert!(seen[1].content);
        usage.merge(seen[2].usage.expect("output from message_delta"));
        assert_eq!(
            usage.prompt_tokens,
            Some(15),
            "cache reads are part of the input"
        );
        assert_eq!(usage.completion_tokens, Some(7));
        assert_eq!(
            usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
            Some(10)
        );
    }
}
