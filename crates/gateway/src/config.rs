//! The `[gateway]` section of the config file: what it may hold, its defaults, and its
//! checks, each refusal naming the key at fault.
//!
//! [`GatewaySection::check`] validates the shape alone (every tier reads the whole file,
//! and a tier that runs no gateway has no upstream credentials in its environment);
//! [`GatewaySection::resolve`] also reads each `api_key_env` through the lookup it is
//! given (the binary passes the process environment) and refuses a variable that is
//! not set.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderName;
use serde::Deserialize;

use crate::cache::CacheConfig;
use crate::semantic::{SemanticConfig, DEFAULT_MAX_ENTRIES, MAX_ENTRIES_LIMIT};

/// `[gateway]` as the file spells it; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// Where the gateway listens (`--gateway-listen` wins); absent: no gateway.
    pub listen: Option<SocketAddr>,
    pub upstreams: Vec<UpstreamSection>,
    /// Largest request body (1 MiB); beyond it 413.
    pub max_body_bytes: Option<usize>,
    /// Largest upstream answer read whole (a non-streamed call; 8 MiB).
    pub max_response_bytes: Option<usize>,
    /// One attempt, request sent to first byte received (30 s).
    pub attempt_timeout_ms: Option<u64>,
    /// The whole call, every attempt and the relay of the answer (600 s).
    pub timeout_ms: Option<u64>,
    /// Attempts of one call across replicas and fallbacks (3).
    pub max_attempts: Option<usize>,
    /// Calls in flight at once, streams included (4096); beyond it 503 at once.
    pub max_in_flight_calls: Option<usize>,
    /// How fast a replica's latency estimate forgets a peak (10 s).
    pub ewma_decay_ms: Option<u64>,
    /// The latency assumed of a replica not yet measured (30 ms).
    pub ewma_default_rtt_ms: Option<u64>,
    pub breaker: BreakerSection,
    /// Request headers recorded as event attributes: header name → attribute key.
    pub headers: BTreeMap<String, String>,
    /// Call events waiting for the log, at most; beyond it they are dropped (counted).
    pub max_pending_events: Option<usize>,
    /// The exact-match response cache; absent: off.
    pub cache: Option<CacheSection>,
    /// The semantic response cache; absent: off.
    pub semantic_cache: Option<SemanticCacheSection>,
}

/// `[gateway.semantic_cache]`: answers kept for requests whose prompts mean nearly
/// the same (see [`crate::semantic`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheSection {
    /// A configured `openai` model (or alias) that embeds prompts.
    pub embedding_model: String,
    /// The least cosine similarity of two prompts answered alike (0.95).
    pub similarity: Option<f32>,
    /// How long an answer is served again.
    pub ttl_secs: u64,
    /// Answers kept at most (10,000, also the most allowed); the oldest go first.
    pub max_entries: Option<usize>,
    /// Bytes of answers and vectors held at most (64 MiB); the oldest go first.
    pub max_bytes: Option<usize>,
    /// The largest answer kept (1 MiB).
    pub max_entry_bytes: Option<usize>,
    /// Requests sampled above this temperature go upstream (0; absent counts as 1).
    pub max_temperature: Option<f64>,
    /// Requests with tools or functions may be answered from it too (false).
    #[serde(default)]
    pub cache_tools: bool,
}

/// `[gateway.cache]`: answers kept for identical requests.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// How long an answer is served again.
    pub ttl_secs: u64,
    /// Bytes of answers held at most (64 MiB); the oldest go first.
    pub max_bytes: Option<usize>,
    /// The largest answer kept (1 MiB).
    pub max_entry_bytes: Option<usize>,
}

/// One `[[gateway.upstreams]]` entry: a model and the replicas that serve it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// The name clients ask for, and the name sent upstream.
    pub model: String,
    /// `openai` or `anthropic`: how the credential is sent.
    pub provider: String,
    /// Base URLs of the replicas, e.g. `http://10.0.0.7:8000/v1`.
    pub urls: Vec<String>,
    /// One weight per URL (default 1 each): a replica of weight 2 counts half as loaded.
    #[serde(default)]
    pub weights: Vec<f64>,
    /// The environment variable holding the credential sent upstream.
    pub api_key_env: Option<String>,
    /// Other names clients may ask for.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Models tried in order when every replica of this one failed before the first byte.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// `[gateway.breaker]`: when a replica stops getting calls, and for how long.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// Consecutive failures that open the circuit (5).
    pub consecutive_failures: Option<u32>,
    /// Failure rate over the last `window` calls that opens it (0.5).
    pub failure_rate: Option<f64>,
    /// Calls the failure rate is measured over, and the fewest it needs (20).
    pub window: Option<usize>,
    /// How long an open circuit refuses calls before one probe goes through (5 s).
    pub open_ms: Option<u64>,
}

/// How credentials travel upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `Authorization: Bearer <credential>`.
    OpenAi,
    /// `x-api-key: <credential>` and `anthropic-version`.
    Anthropic,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// One model, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub model: String,
    pub provider: Provider,
    /// (base URL without a trailing slash, weight).
    pub replicas: Vec<(String, f64)>,
    /// The credential, read from `api_key_env`.
    pub credential: Option<String>,
    pub aliases: Vec<String>,
    pub fallbacks: Vec<String>,
}

/// The circuit breaker of each replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub window: usize,
    pub open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            open: Duration::from_secs(5),
        }
    }
}

/// Timeouts and bounds of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallLimits {
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    pub attempt_timeout: Duration,
    pub timeout: Duration,
    pub max_attempts: usize,
    pub max_in_flight_calls: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            attempt_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
            max_attempts: 3,
            // Each call holds a request body (1 MiB at most) and, for an answer sent
            // whole, its answer: a bound on memory as much as on upstream load.
            max_in_flight_calls: 4096,
        }
    }
}

/// The Peak-EWMA estimator's two constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EwmaConfig {
    pub decay: Duration,
    pub default_rtt: Duration,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        // linkerd2-proxy's defaults: a peak is mostly forgotten after ~10 s; an unmeasured
        // replica looks like a fast one, so it is tried soon.
        Self {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        }
    }
}

/// Call events waiting for the log: enough for a burst of a few seconds at thousands
/// of calls a second, a few MiB at most.
pub const DEFAULT_MAX_PENDING_EVENTS: usize = 16_384;

/// Longest attribute key an event takes (the event's own limit).
const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;

/// `[gateway]`, checked and with its credentials read.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub listen: Option<SocketAddr>,
    pub models: Vec<ModelConfig>,
    pub limits: CallLimits,
    pub ewma: EwmaConfig,
    pub breaker: BreakerConfig,
    /// (request header, attribute key).
    pub header_attributes: Vec<(HeaderName, String)>,
    pub max_pending_events: usize,
    pub cache: Option<CacheConfig>,
    pub semantic_cache: Option<SemanticConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: None,
            models: Vec::new(),
            limits: CallLimits::default(),
            ewma: EwmaConfig::default(),
            breaker: BreakerConfig::default(),
            header_attributes: Vec::new(),
            max_pending_events: DEFAULT_MAX_PENDING_EVENTS,
            cache: None,
            semantic_cache: None,
        }
    }
}

/// A `[gateway]` the gateway cannot run with; the message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct GatewayConfigError(String);

fn refuse(message: impl Into<String>) -> GatewayConfigError {
    GatewayConfigError(message.into())
}

impl GatewaySection {
    /// Checks the shape; credentials are not read (see [`GatewaySection::resolve`]).
    pub fn check(&self) -> Result<(), GatewayConfigError> {
        self.resolve_with(&|_| Some(String::new()), false)
            .map(|_| ())
    }

    /// Checks the section and reads each `api_key_env` through `env`; a variable that
    /// is not set refuses the section, naming it.
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, GatewayConfigError> {
        self.resolve_with(env, true)
    }

    fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        read_credentials: bool,
    ) -> Result<GatewayConfig, GatewayConfigError> {
        let defaults = CallLimits::default();
        let positive = |value: Option<u64>, key: &str, default: Duration| match value {
            Some(0) => Err(refuse(format!("[gateway] {key} must be at least 1"))),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(default),
        };
        let limits = CallLimits {
            max_body_bytes: match self.max_body_bytes {
                Some(0) => return Err(refuse("[gateway] max_body_bytes must be at least 1")),
                Some(bytes) => bytes,
                None => defaults.max_body_bytes,
            },
            max_response_bytes: match self.max_response_bytes {
                Some(0) => return Err(refuse("[gateway] max_response_bytes must be at least 1")),
                Some(bytes) => bytes,
                None => defaults.max_response_bytes,
            },
            attempt_timeout: positive(
                self.attempt_timeout_ms,
                "attempt_timeout_ms",
                defaults.attempt_timeout,
            )?,
            timeout: positive(self.timeout_ms, "timeout_ms", defaults.timeout)?,
            max_attempts: match self.max_attempts {
                Some(0) => return Err(refuse("[gateway] max_attempts must be at least 1")),
                Some(attempts) => attempts,
                None => defaults.max_attempts,
            },
            max_in_flight_calls: match self.max_in_flight_calls {
                Some(0) => return Err(refuse("[gateway] max_in_flight_calls must be at least 1")),
                Some(calls) => calls,
                None => defaults.max_in_flight_calls,
            },
        };
        let ewma_defaults = EwmaConfig::default();
        let ewma = EwmaConfig {
            decay: positive(self.ewma_decay_ms, "ewma_decay_ms", ewma_defaults.decay)?,
            default_rtt: positive(
                self.ewma_default_rtt_ms,
                "ewma_default_rtt_ms",
                ewma_defaults.default_rtt,
            )?,
        };
        let breaker = self.breaker.resolve()?;
        let mut header_attributes = Vec::new();
        for (header, attribute) in &self.headers {
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                refuse(format!(
                    "[gateway.headers] {header:?} is not a valid HTTP header name"
                ))
            })?;
            if attribute.is_empty() || attribute.len() > MAX_ATTRIBUTE_KEY_BYTES {
                return Err(refuse(format!(
                    "[gateway.headers] {header:?} must map to an attribute key of 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes"
                )));
            }
            header_attributes.push((name, attribute.clone()));
        }
        let max_pending_events = match self.max_pending_events {
            Some(0) => return Err(refuse("[gateway] max_pending_events must be at least 1")),
            Some(events) => events,
            None => DEFAULT_MAX_PENDING_EVENTS,
        };

        let mut names = HashSet::new();
        let mut models = Vec::new();
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let model = upstream.resolve(index, env, read_credentials)?;
            for name in std::iter::once(&model.model).chain(&model.aliases) {
                if !names.insert(name.clone()) {
                    return Err(refuse(format!(
                        "[[gateway.upstreams]] {index} (model {:?}): the name {name:?} is already taken by another model or alias",
                        model.model
                    )));
                }
            }
            models.push(model);
        }
        for (index, model) in models.iter().enumerate() {
            for fallback in &model.fallbacks {
                if fallback == &model.model || model.aliases.contains(fallback) {
                    return Err(refuse(format!(
                        "[[gateway.upstreams]] {index} (model {:?}): fallbacks lists the model itself",
                        model.model
                    )));
                }
                if !names.contains(fallback) {
                    return Err(refuse(format!(
                        "[[gateway.upstreams]] {index} (model {:?}): fallback {fallback:?} is not a configured model or alias",
                        model.model
                    )));
                }
                let other = models
                    .iter()
                    .find(|other| &other.model == fallback || other.aliases.contains(fallback));
                if other.is_some_and(|other| other.provider != model.provider) {
                    return Err(refuse(format!(
                        "[[gateway.upstreams]] {index} (model {:?}): fallback {fallback:?} has another provider; a call can fall back only to a model of the same API",
                        model.model
                    )));
                }
            }
        }
        let cache = match &self.cache {
            None => None,
            Some(section) => Some(section.resolve()?),
        };
        let semantic_cache = match &self.semantic_cache {
            None => None,
            Some(section) => Some(section.resolve(&models)?),
        };
        Ok(GatewayConfig {
            cache,
            semantic_cache,
            listen: self.listen,
            models,
            limits,
            ewma,
            breaker,
            header_attributes,
            max_pending_events,
        })
    }
}

impl CacheSection {
    fn resolve(&self) -> Result<CacheConfig, GatewayConfigError> {
        if self.ttl_secs == 0 {
            return Err(refuse("[gateway.cache] ttl_secs must be at least 1"));
        }
        let max_bytes = self.max_bytes.unwrap_or(64 * 1024 * 1024);
        let max_entry_bytes = self.max_entry_bytes.unwrap_or(1024 * 1024);
        if max_bytes == 0 || max_entry_bytes == 0 {
            return Err(refuse(
                "[gateway.cache] max_bytes and max_entry_bytes must be at least 1",
            ));
        }
        Ok(CacheConfig {
            ttl: Duration::from_secs(self.ttl_secs),
            max_bytes,
            max_entry_bytes: max_entry_bytes.min(max_bytes),
        })
    }
}

impl SemanticCacheSection {
    fn resolve(&self, models: &[ModelConfig]) -> Result<SemanticConfig, GatewayConfigError> {
        let section = "[gateway.semantic_cache]";
        let embedding_model = models
            .iter()
            .find(|model| {
                model.model == self.embedding_model || model.aliases.contains(&self.embedding_model)
            })
            .ok_or_else(|| {
                refuse(format!(
                    "{section} embedding_model {:?} is not a configured model or alias",
                    self.embedding_model
                ))
            })?;
        if embedding_model.provider != Provider::OpenAi {
            return Err(refuse(format!(
                "{section} embedding_model {:?} must be an openai model (it is asked through /embeddings)",
                self.embedding_model
            )));
        }
        let similarity = self.similarity.unwrap_or(0.95);
        if !(similarity > 0.0 && similarity <= 1.0) {
            return Err(refuse(format!(
                "{section} similarity must be above 0 and at most 1"
            )));
        }
        if self.ttl_secs == 0 {
            return Err(refuse(format!("{section} ttl_secs must be at least 1")));
        }
        let max_entries = self.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if max_entries == 0 || max_entries > MAX_ENTRIES_LIMIT {
            return Err(refuse(format!(
                "{section} max_entries must be between 1 and {MAX_ENTRIES_LIMIT}"
            )));
        }
        let max_bytes = self.max_bytes.unwrap_or(64 * 1024 * 1024);
        let max_entry_bytes = self.max_entry_bytes.unwrap_or(1024 * 1024);
        if max_bytes == 0 || max_entry_bytes == 0 {
            return Err(refuse(format!(
                "{section} max_bytes and max_entry_bytes must be at least 1"
            )));
        }
        let max_temperature = self.max_temperature.unwrap_or(0.0);
        if max_temperature.is_nan() || max_temperature < 0.0 {
            return Err(refuse(format!(
                "{section} max_temperature must be at least 0"
            )));
        }
        Ok(SemanticConfig {
            embedding_model: embedding_model.model.clone(),
            similarity,
            ttl: Duration::from_secs(self.ttl_secs),
            max_entries,
            max_bytes,
            max_entry_bytes: max_entry_bytes.min(max_bytes),
            max_temperature,
            cache_tools: self.cache_tools,
        })
    }
}

impl BreakerSection {
    fn resolve(&self) -> Result<BreakerConfig, GatewayConfigError> {
        let defaults = BreakerConfig::default();
        let consecutive_failures = self
            .consecutive_failures
            .unwrap_or(defaults.consecutive_failures);
        if consecutive_failures == 0 {
            return Err(refuse(
                "[gateway.breaker] consecutive_failures must be at least 1",
            ));
        }
        let failure_rate = self.failure_rate.unwrap_or(defaults.failure_rate);
        if !(failure_rate > 0.0 && failure_rate <= 1.0) {
            return Err(refuse(
                "[gateway.breaker] failure_rate must be above 0 and at most 1",
            ));
        }
        let window = self.window.unwrap_or(defaults.window);
        if window == 0 {
            return Err(refuse("[gateway.breaker] window must be at least 1"));
        }
        let open = match self.open_ms {
            Some(0) => return Err(refuse("[gateway.breaker] open_ms must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
            None => defaults.open,
        };
        Ok(BreakerConfig {
            consecutive_failures,
            failure_rate,
            window,
            open,
        })
    }
}

impl UpstreamSection {
    fn resolve(
        &self,
        index: usize,
        env: &dyn Fn(&str) -> Option<String>,
        read_credentials: bool,
    ) -> Result<ModelConfig, GatewayConfigError> {
        let at = |what: String| {
            refuse(format!(
                "[[gateway.upstreams]] {index} (model {:?}): {what}",
                self.model
            ))
        };
        if self.model.is_empty() || self.model.len() > 128 {
            return Err(at("model must be 1 to 128 bytes".to_string()));
        }
        let provider = Provider::parse(&self.provider).ok_or_else(|| {
            at(format!(
                "provider {:?} is unknown; use openai or anthropic",
                self.provider
            ))
        })?;
        if self.urls.is_empty() {
            return Err(at("urls must name at least one replica".to_string()));
        }
        if !self.weights.is_empty() && self.weights.len() != self.urls.len() {
            return Err(at(format!(
                "weights has {} entries for {} urls; give one per url or none",
                self.weights.len(),
                self.urls.len()
            )));
        }
        let mut replicas = Vec::new();
        for (position, url) in self.urls.iter().enumerate() {
            let parsed = reqwest::Url::parse(url)
                .map_err(|error| at(format!("url {url:?} is not a URL ({error})")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(at(format!(
                    "url {url:?} must be an http:// or https:// base URL"
                )));
            }
            let weight = self.weights.get(position).copied().unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(at(format!("weight of {url:?} must be above 0")));
            }
            replicas.push((url.trim_end_matches('/').to_string(), weight));
        }
        let credential = match &self.api_key_env {
            None => None,
            Some(variable) if variable.is_empty() => {
                return Err(at("api_key_env is empty".to_string()))
            }
            Some(variable) if read_credentials => match env(variable) {
                Some(value) if !value.is_empty() => Some(value),
                _ => {
                    return Err(at(format!(
                        "api_key_env names {variable}, which is not set"
                    )))
                }
            },
            Some(_) => None,
        };
        if self.aliases.iter().any(String::is_empty) {
            return Err(at("aliases holds an empty name".to_string()));
        }
        Ok(ModelConfig {
            model: self.model.clone(),
            provider,
            replicas,
            credential,
            aliases: self.aliases.clone(),
            fallbacks: self.fallbacks.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> GatewaySection {
        #[derive(Deserialize)]
        struct File {
            gateway: GatewaySection,
        }
        toml::from_str::<File>(text).expect("parses").gateway
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const TWO_MODELS: &str = r#"
        [gateway]
        listen = "127.0.0.1:0"
        [[gateway.upstreams]]
        model = "gpt-4o"
        provider = "openai"
        urls = ["http://127.0.0.1:9001/v1/", "http://127.0.0.1:9002/v1"]
        api_key_env = "TEST_UPSTREAM_KEY"
        aliases = ["gpt4"]
        fallbacks = ["gpt-4o-mini"]
        [[gateway.upstreams]]
        model = "gpt-4o-mini"
        provider = "openai"
        urls = ["http://127.0.0.1:9003/v1"]
    "#;

    #[test]
    fn the_issue_shape_resolves_with_its_credential() {
        let env = |name: &str| (name == "TEST_UPSTREAM_KEY").then(|| "sk-upstream".to_string());
        let config = section(TWO_MODELS).resolve(&env).expect("resolves");
        assert_eq!(config.models.len(), 2);
        let first = &config.models[0];
        assert_eq!(first.credential.as_deref(), Some("sk-upstream"));
        assert_eq!(
            first.replicas,
            vec![
                ("http://127.0.0.1:9001/v1".to_string(), 1.0),
                ("http://127.0.0.1:9002/v1".to_string(), 1.0)
            ],
            "a trailing slash is dropped so paths join cleanly"
        );
        assert_eq!(first.fallbacks, vec!["gpt-4o-mini".to_string()]);
        assert_eq!(config.limits, CallLimits::default());
    }

    #[test]
    fn a_missing_credential_variable_is_named_but_the_shape_check_does_not_read_it() {
        let parsed = section(TWO_MODELS);
        let error = parsed.resolve(&no_env).expect_err("variable unset");
        assert!(
            error.to_string().contains("TEST_UPSTREAM_KEY") && error.to_string().contains("gpt-4o"),
            "{error}"
        );
        assert_eq!(parsed.check(), Ok(()));
    }

    #[test]
    fn each_bad_key_is_named() {
        let cases = [
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "cohere"
                   urls = ["http://a/v1"]"#,
                "provider \"cohere\"",
            ),
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "openai"
                   urls = []"#,
                "urls",
            ),
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "openai"
                   urls = ["ftp://a/v1"]"#,
                "ftp://a/v1",
            ),
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "openai"
                   urls = ["http://a/v1"]
                   fallbacks = ["nowhere"]"#,
                "fallback \"nowhere\"",
            ),
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "openai"
                   urls = ["http://a/v1"]
                   fallbacks = ["claude"]
                   [[gateway.upstreams]]
                   model = "claude"
                   provider = "anthropic"
                   urls = ["http://b/v1"]"#,
                "another provider",
            ),
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "openai"
                   urls = ["http://a/v1"]
                   [[gateway.upstreams]]
                   model = "n"
                   provider = "openai"
                   urls = ["http://b/v1"]
                   aliases = ["m"]"#,
                "already taken",
            ),
            (
                r#"[gateway]
                   [[gateway.upstreams]]
                   model = "m"
                   provider = "openai"
                   urls = ["http://a/v1", "http://b/v1"]
                   weights = [1.0]"#,
                "weights",
            ),
            (
                r#"[gateway]
                   max_attempts = 0"#,
                "max_attempts",
            ),
            (
                r#"[gateway.breaker]
                   failure_rate = 1.5"#,
                "[gateway.breaker] failure_rate",
            ),
            (
                r#"[gateway.headers]
                   "bad header" = "feature""#,
                "bad header",
            ),
            (
                r#"[gateway.semantic_cache]
                   embedding_model = "nowhere"
                   ttl_secs = 60"#,
                "embedding_model \"nowhere\" is not a configured model",
            ),
            (
                r#"[gateway.semantic_cache]
                   embedding_model = "claude"
                   ttl_secs = 60
                   [[gateway.upstreams]]
                   model = "claude"
                   provider = "anthropic"
                   urls = ["http://a/v1"]"#,
                "must be an openai model",
            ),
            (
                r#"[gateway.semantic_cache]
                   embedding_model = "e"
                   ttl_secs = 60
                   similarity = 1.5
                   [[gateway.upstreams]]
                   model = "e"
                   provider = "openai"
                   urls = ["http://a/v1"]"#,
                "[gateway.semantic_cache] similarity",
            ),
            (
                r#"[gateway.semantic_cache]
                   embedding_model = "e"
                   ttl_secs = 60
                   max_entries = 10001
                   [[gateway.upstreams]]
                   model = "e"
                   provider = "openai"
                   urls = ["http://a/v1"]"#,
                "max_entries must be between 1 and 10000",
            ),
        ];
        for (text, named) in cases {
            let error = section(text).check().expect_err(text);
            assert!(error.to_string().contains(named), "{named}: {error}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            gateway: GatewaySection,
        }
        let error =
            toml::from_str::<File>("[gateway]\nlisten_on = \"x\"\n").expect_err("unknown key");
        assert!(error.to_string().contains("listen_on"), "{error}");
    }
}
