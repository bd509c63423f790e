//! Calls in simulated time: two agents joined by two impairment stages and
//! driven by an injected clock, with no socket and no sleep. The
//! calibration tests run here: a known impairment in, the exact figure out.

use crate::agent::{Agent, MediaProfile};
use crate::call::{CallReport, Outcome, RatingInputs};
use crate::impair::{ImpairStage, Impairment};

/// Events handled at most per simulated call (a bound, far above any
/// plan's needs: a day of video).
const MAX_STEPS: u64 = 100_000_000;

/// A simulated call: the impairment applies to each direction with its own
/// random stream (seeds derived from `seed`). Media starts at t = 0 and
/// the simulation runs `drain_ns` past the media's end.
#[derive(Debug, Clone)]
pub struct SimCall {
    /// Media.
    pub profile: MediaProfile,
    /// Caller → callee impairment.
    pub forward: Impairment,
    /// Callee → caller impairment.
    pub backward: Impairment,
    /// Seed of the impairment stages.
    pub seed: u64,
    /// Time after the media ends for packets in flight, ns.
    pub drain_ns: u64,
    /// E-model inputs.
    pub rating: RatingInputs,
}

impl SimCall {
    /// The same impairment both ways, 1 s drain, G.711 rating.
    pub fn symmetric(profile: MediaProfile, impairment: Impairment, seed: u64) -> Self {
        SimCall {
            profile,
            forward: impairment,
            backward: impairment,
            seed,
            drain_ns: 1_000_000_000,
            rating: RatingInputs::default(),
        }
    }

    /// Runs the call and returns both agents (caller, callee).
    pub fn run_agents(&self) -> (Agent, Agent) {
        let mut a = Agent::new(self.profile.clone(), 0);
        let mut b = Agent::new(self.profile.clone(), 0);
        let mut ab: ImpairStage<Vec<u8>> = ImpairStage::new(self.forward, self.seed);
        let mut ba: ImpairStage<Vec<u8>> =
            ImpairStage::new(self.backward, self.seed ^ 0x5eed_0000_b00c_0001);
        let end = self.profile.duration_ns.saturating_add(self.drain_ns);
        let mut now = 0u64;
        for _ in 0..MAX_STEPS {
            // Everything due now, until nothing moves (an echo reply made
            // by a delivery leaves at the same instant).
            loop {
                let mut moved = false;
                while let Some(p) = a.poll_transmit(now) {
                    ab.push(now, p.len(), p);
                    moved = true;
                }
                while let Some(p) = b.poll_transmit(now) {
                    ba.push(now, p.len(), p);
                    moved = true;
                }
                while let Some(p) = ab.poll(now) {
                    let _ = b.handle_packet(now, &p);
                    moved = true;
                }
                while let Some(p) = ba.poll(now) {
                    let _ = a.handle_packet(now, &p);
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
            let next = [
                a.poll_timeout(),
                b.poll_timeout(),
                ab.next_deadline(),
                ba.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => now = t.max(now),
                _ => break,
            }
        }
        (a, b)
    }

    /// Runs the call and reports it.
    pub fn run(&self) -> CallReport {
        let (a, b) = self.run_agents();
        let setup = match (a.rx.first_arrival_ns, b.rx.first_arrival_ns) {
            (Some(x), Some(y)) => Some(x.max(y) as f64 / 1e6),
            _ => None,
        };
        let outcome = if setup.is_some() {
            Outcome::Success
        } else {
            Outcome::FailedSetup
        };
        let failure = setup.is_none().then(|| "no media arrived".to_owned());
        CallReport::from_agents(&a, &b, &self.rating, outcome, failure, setup)
    }
}
