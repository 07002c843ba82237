//! The upstreams: models (by name and alias) → replicas, and the choice of a replica
//! for one attempt.
//!
//! Each [`Replica`] owns its [`PeakEwma`] load estimate, its [`Breaker`] and its
//! `/metrics` gauges (labelled by model and replica URL: bounded by the config file).
//! [`Model::pick`] is power of two choices over the replicas a call may still use (not
//! yet tried by this call, circuit not open): two distinct candidates drawn at random,
//! the one with the lower cost (Peak-EWMA cost ÷ weight) wins. Two random candidates
//! rather than the global minimum keep a burst of simultaneous calls from all landing
//! on the one replica that looked best a moment ago (Mitzenmacher; `tower::balance::p2c`
//! does the same). tower's balancer itself is not used: it cannot leave out the
//! replicas a call already tried or whose circuit is open.

use std::collections::HashMap;
use std::sync::Arc;

use ais_model::time::Clock;
use rand::Rng;

use crate::breaker::{Admission, Breaker};
use crate::config::{BreakerConfig, EwmaConfig, GatewayConfig, ModelConfig, Provider};
use crate::ewma::PeakEwma;

/// One replica of one model.
#[derive(Debug)]
pub struct Replica {
    /// Base URL, e.g. `http://10.0.0.7:8000/v1` (no trailing slash).
    pub url: String,
    pub weight: f64,
    pub ewma: Arc<PeakEwma>,
    pub breaker: Breaker,
    gauges: ReplicaGauges,
}

#[derive(Debug)]
struct ReplicaGauges {
    ewma_seconds: metrics::Gauge,
    outstanding: metrics::Gauge,
    breaker_state: metrics::Gauge,
}

impl Replica {
    fn new(
        model: &str,
        url: String,
        weight: f64,
        ewma: EwmaConfig,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let labels = [("model", model.to_string()), ("upstream", url.clone())];
        let gauges = ReplicaGauges {
            ewma_seconds: metrics::gauge!("ais_gateway_upstream_ewma_seconds", &labels),
            outstanding: metrics::gauge!("ais_gateway_upstream_outstanding", &labels),
            breaker_state: metrics::gauge!("ais_gateway_upstream_breaker_state", &labels),
        };
        let replica = Self {
            url,
            weight,
            ewma: Arc::new(PeakEwma::new(ewma, clock.clone())),
            breaker: Breaker::new(breaker, clock),
            gauges,
        };
        replica.publish();
        replica
    }

    /// Cost ÷ weight: what [`Model::pick`] compares.
    pub fn weighted_cost(&self) -> f64 {
        self.ewma.cost() / self.weight
    }

    /// Sets the gauges from the estimator and the breaker (after each attempt).
    pub fn publish(&self) {
        self.gauges
            .ewma_seconds
            .set(self.ewma.estimate().as_secs_f64());
        self.gauges.outstanding.set(self.ewma.outstanding() as f64);
        self.gauges.breaker_state.set(self.breaker.state().gauge());
    }
}

/// A model and its replicas.
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub provider: Provider,
    pub credential: Option<String>,
    pub replicas: Vec<Arc<Replica>>,
    /// Canonical names of the models tried after this one, in order.
    pub fallbacks: Vec<String>,
}

impl Model {
    /// A replica for the next attempt, with the breaker's leave: power of two choices
    /// among those not in `tried` whose circuit lets a call through. `None` when no
    /// replica is left.
    pub fn pick(&self, tried: &[usize], rng: &mut impl Rng) -> Option<(usize, Admission)> {
        let mut excluded: Vec<usize> = tried.to_vec();
        loop {
            let candidates: Vec<usize> = (0..self.replicas.len())
                .filter(|index| !excluded.contains(index))
                .filter(|index| self.replicas[*index].breaker.available())
                .collect();
            let chosen = match candidates.len() {
                0 => return None,
                1 => candidates[0],
                count => {
                    let first = rng.random_range(0..count);
                    let mut second = rng.random_range(0..count - 1);
                    if second >= first {
                        second += 1;
                    }
                    let (first, second) = (candidates[first], candidates[second]);
                    if self.replicas[second].weighted_cost() < self.replicas[first].weighted_cost()
                    {
                        second
                    } else {
                        first
                    }
                }
            };
            // Another call may have taken a half-open circuit's one probe meanwhile.
            match self.replicas[chosen].breaker.admit() {
                Some(admission) => return Some((chosen, admission)),
                None => excluded.push(chosen),
            }
        }
    }
}

/// Every configured model, by name and alias.
#[derive(Debug, Default)]
pub struct Registry {
    models: HashMap<String, Arc<Model>>,
    /// Canonical names then aliases, in config order (`GET /v1/models`).
    names: Vec<String>,
}

impl Registry {
    pub fn new(config: &GatewayConfig, clock: Arc<dyn Clock>) -> Self {
        let mut registry = Self::default();
        let aliases: HashMap<&str, &str> = config
            .models
            .iter()
            .flat_map(|model| {
                model
                    .aliases
                    .iter()
                    .map(move |alias| (alias.as_str(), model.model.as_str()))
            })
            .collect();
        for model_config in &config.models {
            let model = Arc::new(Self::model(model_config, config, &aliases, &clock));
            for name in std::iter::once(&model_config.model).chain(&model_config.aliases) {
                registry.models.insert(name.clone(), model.clone());
                registry.names.push(name.clone());
            }
        }
        registry
    }

    fn model(
        model: &ModelConfig,
        config: &GatewayConfig,
        aliases: &HashMap<&str, &str>,
        clock: &Arc<dyn Clock>,
    ) -> Model {
        Model {
            name: model.model.clone(),
            provider: model.provider,
            credential: model.credential.clone(),
            replicas: model
                .replicas
                .iter()
                .map(|(url, weight)| {
                    Arc::new(Replica::new(
                        &model.model,
                        url.clone(),
                        *weight,
                        config.ewma,
                        config.breaker,
                        clock.clone(),
                    ))
                })
                .collect(),
            fallbacks: model
                .fallbacks
                .iter()
                .map(|name| {
                    aliases
                        .get(name.as_str())
                        .map_or_else(|| name.clone(), |canonical| canonical.to_string())
                })
                .collect(),
        }
    }

    /// The model a client's name (or alias) stands for.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    /// Every name a client may ask for.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Which replicas' circuits are open now, for `/readyz`: (replicas, open, a
    /// sentence naming the models with open ones).
    pub fn availability(&self) -> (usize, usize, String) {
        let mut seen = std::collections::HashSet::new();
        let (mut replicas, mut open) = (0, 0);
        let mut degraded = Vec::new();
        let mut models: Vec<&Arc<Model>> = self.models.values().collect();
        models.sort_by(|left, right| left.name.cmp(&right.name));
        for model in models {
            if !seen.insert(Arc::as_ptr(model)) {
                continue;
            }
            let model_open = model
                .replicas
                .iter()
                .filter(|replica| replica.breaker.state() == crate::breaker::BreakerState::Open)
                .count();
            replicas += model.replicas.len();
            open += model_open;
            if model_open > 0 {
                degraded.push(format!(
                    "{}: {model_open} of {} replicas open",
                    model.name,
                    model.replicas.len()
                ));
            }
        }
        let detail = if degraded.is_empty() {
            "every replica's circuit is closed or probing".to_string()
        } else {
            degraded.join("; ")
        };
        (replicas, open, detail)
    }

    /// Sets every replica's gauges from its estimator and breaker now.
    pub fn publish(&self) {
        let mut seen = std::collections::HashSet::new();
        for model in self.models.values() {
            // A model is listed once per name it answers to.
            if seen.insert(Arc::as_ptr(model)) {
                for replica in &model.replicas {
                    replica.publish();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ais_model::time::ManualClock;
    use rand::SeedableRng;

    use super::*;

    fn registry(clock: &ManualClock, breaker: BreakerConfig) -> Registry {
        let config = GatewayConfig {
            models: vec![ModelConfig {
                model: "m".to_string(),
                provider: Provider::OpenAi,
                replicas: (0..3)
                    .map(|n| (format!("http://replica-{n}/v1"), 1.0))
                    .collect(),
                credential: None,
                aliases: vec!["alias".to_string()],
                fallbacks: Vec::new(),
            }],
            breaker,
            ..GatewayConfig::default()
        };
        Registry::new(&config, Arc::new(clock.clone()))
    }

    fn sample(replica: &Replica, clock: &ManualClock, rtt: Duration) {
        let in_flight = replica.ewma.start();
        clock.advance(rtt);
        in_flight.finish();
    }

    #[test]
    fn picks_never_repeat_a_tried_replica_and_run_out() {
        let clock = ManualClock::at(0);
        let registry = registry(&clock, BreakerConfig::default());
        let model = registry.get("alias").expect("alias resolves");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut tried = Vec::new();
        while let Some((index, _)) = model.pick(&tried, &mut rng) {
            assert!(!tried.contains(&index));
            tried.push(index);
        }
        tried.sort();
        assert_eq!(tried, vec![0, 1, 2]);
    }

    #[test]
    fn the_slow_replica_loses_every_draw_it_is_in() {
        let clock = ManualClock::at(0);
        let registry = registry(&clock, BreakerConfig::default());
        let model = registry.get("m").expect("model");
        sample(&model.replicas[0], &clock, Duration::from_millis(500));
        sample(&model.replicas[1], &clock, Duration::from_millis(20));
        sample(&model.replicas[2], &clock, Duration::from_millis(20));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let slow = (0..1000)
            .filter(|_| model.pick(&[], &mut rng).map(|(index, _)| index) == Some(0))
            .count();
        assert_eq!(slow, 0, "two candidates always hold a faster one");
    }

    #[test]
    fn an_open_circuit_is_not_picked() {
        let clock = ManualClock::at(0);
        let registry = registry(
            &clock,
            BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            },
        );
        let model = registry.get("m").expect("model");
        let admission = model.replicas[1].breaker.admit().expect("closed");
        model.replicas[1].breaker.record(admission, false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let (index, _) = model.pick(&[], &mut rng).expect("two left");
            assert_ne!(index, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_gauge_refresh_ends_with_the_registry() {
        let clock = ManualClock::at(0);
        let registry = Arc::new(registry(&clock, BreakerConfig::default()));
        let refresh = crate::spawn_gauge_refresh(&registry);
        tokio::time::sleep(crate::GAUGE_REFRESH * 3).await;
        assert!(!refresh.is_finished(), "it runs while the registry lives");
        drop(registry);
        tokio::time::timeout(crate::GAUGE_REFRESH * 3, refresh)
            .await
            .expect("it ends within a tick of the registry's drop")
            .expect("no panic");
    }

    #[test]
    fn availability_names_the_models_with_open_circuits() {
        let clock = ManualClock::at(0);
        let registry = registry(
            &clock,
            BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            },
        );
        assert_eq!(registry.availability().1, 0);
        let model = registry.get("m").expect("model");
        let admission = model.replicas[2].breaker.admit().expect("closed");
        model.replicas[2].breaker.record(admission, false);
        let (replicas, open, detail) = registry.availability();
        assert_eq!(
            (replicas, open),
            (3, 1),
            "a model under two names counts once"
        );
        assert_eq!(detail, "m: 1 of 3 replicas open");
    }
}
