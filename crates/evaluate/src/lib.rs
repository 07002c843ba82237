//! Evaluation of final windows: anomaly detectors, SLO burn rates and budgets, and the
//! delivery of the alerts they raise. The maths has no I/O:
//!
//! - [`baseline`]: what "normal" is, learnt online: an EWMA mean and variance, or a
//!   median / MAD over recent windows (robust to a single outlier window).
//! - [`gate`]: when a run of anomalous windows becomes an alert and when it resolves:
//!   a minimum baseline, k-of-n hysteresis and a cooldown.
//! - [`detector`]: the detectors themselves: a z-score of a window's value (latency p95
//!   or mean, TTFT, cost, tokens) against its baseline, and a proportion test for error
//!   rates (Wilson score bound against the baseline rate, not a z-score of a percentage
//!   over three requests).
//! - [`ttft_fit`]: time to first token against prompt length: a line of mean TTFT
//!   against mean prefill tokens learnt per key, and the detector of a window's TTFT
//!   over what that line expects (a shift in the prompt-length mix alone never fires).
//! - [`slo`]: error budgets and multi-window, multi-burn-rate alerts of objectives;
//!   [`slo::section`] is the config file's `[[slos]]`.
//! - [`budget`]: spend per UTC day and month against limits, thresholds crossed once;
//!   [`budget::section`] is the config file's `[[budgets]]`.
//! - [`incident`]: anomalies of one (tenant, model) within a gap of each other grouped
//!   into one incident, computed from the stored anomalies (`GET /v1/incidents`); the
//!   evaluator delivers incidents by the same rule.
//! - [`alert`]: one alert transition as receivers see it (an incident, a burn rate, a
//!   budget threshold), with its idempotency key.
//! - [`sections`]: the config-file sections of the detectors (`[anomaly.*]`), with
//!   their defaults.
//!
//! With I/O:
//!
//! - [`evaluator`]: the loop over final windows of the store: detectors per
//!   (tenant, model) and per model across tenants, objectives and budgets, anomalies
//!   grouped into incidents; their state (open incidents included), the anomalies and
//!   the alert transitions to deliver are committed together, so a
//!   restart neither forgets a baseline nor fires twice. What a chunk of windows
//!   changes is decided by a core without I/O; the loop around it reads and commits.
//! - [`status`]: what `GET /v1/slos` and `GET /v1/budgets` report, read from the
//!   evaluator's stored state.
//! - [`deliver`]: the task that sends queued transitions to a webhook and to
//!   Alertmanager, with retries, never blocking evaluation or the stream.
//!
//! Every state here is `serde`-serialisable so the evaluator can persist it with the
//! store.

pub mod alert;
pub mod baseline;
pub mod budget;
pub mod deliver;
pub mod detector;
pub mod evaluator;
pub mod gate;
pub mod incident;
pub mod sections;
pub mod slo;
pub mod status;
pub mod ttft_fit;
