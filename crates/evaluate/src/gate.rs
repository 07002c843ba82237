//! From anomalous windows to alerts: k-of-n hysteresis and a cooldown.
//!
//! Each scored window is anomalous or not. The alert fires when at least `k` of the
//! last `n` windows were anomalous (one noisy window does not page), and resolves once
//! none of the last `n` is. After resolving, it may not fire again for `cooldown`
//! windows, so a flapping metric pages once, not every few minutes.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateConfig {
    pub k: usize,
    pub n: usize,
    /// Windows after a resolve during which the alert cannot fire again.
    pub cooldown: u32,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            k: 2,
            n: 3,
            cooldown: 10,
        }
    }
}

/// What one window did to the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Fire,
    Resolve,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    config: GateConfig,
    recent: VecDeque<bool>,
    firing: bool,
    cooldown_left: u32,
}

impl Gate {
    pub fn new(config: GateConfig) -> Self {
        let n = config.n.max(1);
        Self {
            config: GateConfig {
                k: config.k.clamp(1, n),
                n,
                cooldown: config.cooldown,
            },
            recent: VecDeque::with_capacity(n),
            firing: false,
            cooldown_left: 0,
        }
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    pub fn step(&mut self, anomalous: bool) -> Transition {
        if self.recent.len() == self.config.n {
            self.recent.pop_front();
        }
        self.recent.push_back(anomalous);
        let anomalous_count = self.recent.iter().filter(|flag| **flag).count();
        if self.firing {
            if anomalous_count == 0 {
                self.firing = false;
                self.cooldown_left = self.config.cooldown;
                return Transition::Resolve;
            }
            return Transition::None;
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            return Transition::None;
        }
        if anomalous_count >= self.config.k {
            self.firing = true;
            return Transition::Fire;
        }
        Transition::None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn two_of_three_fires_and_three_quiet_windows_resolve() {
        let mut gate = Gate::new(GateConfig {
            k: 2,
            n: 3,
            cooldown: 2,
        });
        let steps: Vec<Transition> = [
            true, false, true, true, false, false, false, true, true, true,
        ]
        .into_iter()
        .map(|flag| gate.step(flag))
        .collect();
        use Transition::*;
        assert_eq!(
            steps,
            vec![None, None, Fire, None, None, None, Resolve, None, None, Fire],
            "fires on the second anomaly within 3, resolves after 3 quiet, cooldown of 2 holds it"
        );
    }

    proptest! {
        #[test]
        fn fires_and_resolves_alternate_and_never_repeat(flags in proptest::collection::vec(any::<bool>(), 0..300), k in 1usize..5, n in 1usize..6, cooldown in 0u32..5) {
            let mut gate = Gate::new(GateConfig { k, n, cooldown });
            let mut firing = false;
            let mut since_resolve = u32::MAX;
            for flag in flags {
                match gate.step(flag) {
                    Transition::Fire => {
                        prop_assert!(!firing, "fired twice");
                        prop_assert!(since_resolve >= cooldown, "fired inside the cooldown");
                        firing = true;
                    }
                    Transition::Resolve => {
                        prop_assert!(firing, "resolved without firing");
                        firing = false;
                        since_resolve = 0;
                        continue;
                    }
                    Transition::None => {}
                }
                since_resolve = since_resolve.saturating_add(1);
                prop_assert_eq!(gate.firing(), firing);
            }
        }

        #[test]
        fn a_single_anomalous_window_never_fires_with_k_two(position in 0usize..50, len in 50usize..100) {
            let mut gate = Gate::new(GateConfig { k: 2, n: 3, cooldown: 0 });
            for index in 0..len {
                prop_assert_ne!(gate.step(index == position), Transition::Fire);
            }
        }
    }
}
