//! Evaluation of final windows: anomaly detectors (and, later, SLO burn rates and
//! budgets). The detector maths has no I/O:
//!
//! - [`baseline`]: what "normal" is, learnt online: an EWMA mean and variance, or a
//!   median / MAD over recent windows (robust to a single outlier window).
//! - [`gate`]: when a run of anomalous windows becomes an alert and when it resolves:
//!   a minimum baseline, k-of-n hysteresis and a cooldown.
//! - [`detector`]: the detectors themselves: a z-score of a window's value (latency p95
//!   or mean, TTFT, cost, tokens) against its baseline, and a proportion test for error
//!   rates (Wilson score bound against the baseline rate, not a z-score of a percentage
//!   over three requests).
//!
//! - [`evaluator`]: the loop over final windows of the store: detectors per
//!   (tenant, model) and per model across tenants, anomalies and detector state
//!   committed together, so a restart neither forgets a baseline nor fires twice.
//!
//! Every state here is `serde`-serialisable so the evaluator can persist it with the
//! store and a restart neither forgets a baseline nor fires twice.

pub mod baseline;
pub mod detector;
pub mod evaluator;
pub mod gate;
