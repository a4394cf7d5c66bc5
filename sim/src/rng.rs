//! Seeded randomness. Every random choice in a run comes from a ChaCha generator derived
//! from the run's seed, one stream per purpose, so adding a draw in one place never shifts
//! the draws of another.

use crate::ids::RequestId;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a random stream is for: one independent stream per purpose, so adding a draw to
/// one never shifts another. The names are hashed into the seed: changing one changes every
/// trace (the golden pins say so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Latency, drop and duplicate draws.
    Network,
    /// Random faults, drawn before the run.
    Faults,
    /// Each node's clock skew and drift.
    Clocks,
    /// Which fault kinds a swarm run switches on.
    Swarm,
    /// The workload's arrivals and operations.
    Workload,
    /// A node's own generator, per node and incarnation.
    Node,
    /// A request's draws (see [`StepRng`]).
    Request,
    /// A fuzz case's seed from the master seed.
    FuzzCase,
    /// A fuzz case's decider.
    Decider,
    /// `retrace cluster`'s closed-loop workers.
    ClusterLoad,
    /// A stateful client's own stream (`Model::client`), per client; also its think times.
    Client,
    /// A simulated service's latency and fault draws, per service.
    Services,
    /// A fork's seed when none is given, and `inevitable`'s samples: per moment and sample.
    Fork,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Network => "network",
            Purpose::Faults => "faults",
            Purpose::Clocks => "clocks",
            Purpose::Swarm => "swarm",
            Purpose::Workload => "workload",
            Purpose::Node => "node",
            Purpose::Request => "request",
            Purpose::FuzzCase => "fuzz-case",
            Purpose::Decider => "decider",
            Purpose::ClusterLoad => "cluster-load",
            Purpose::Client => "client",
            Purpose::Services => "services",
            Purpose::Fork => "fork",
        }
    }
}

/// Mixes a seed with a purpose and two numbers into an independent seed (SplitMix64 rounds).
pub fn derive_seed(seed: u64, purpose: Purpose, a: u64, b: u64) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for &byte in purpose.name().as_bytes() {
        h = splitmix(h ^ u64::from(byte));
    }
    splitmix(splitmix(h ^ a) ^ b)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic random generator: a node's (through [`crate::Ctx::rng`]) or one of the
/// simulator's own streams. It implements `rand_core::RngCore`, so `rand`'s distributions
/// work with it too.
#[derive(Clone, Debug)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in `0..n`; `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift with rejection: unbiased and usually one draw.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `lo..=hi` (`hi < lo` gives `lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (no draw at all when `p <= 0`, so disabled faults cost
    /// nothing and do not shift other draws).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// An exponentially distributed wait with the given mean, for Poisson arrivals.
    pub fn exponential_ns(&mut self, mean_ns: f64) -> u64 {
        let u = 1.0 - self.unit(); // (0, 1]
        let x = -u.ln() * mean_ns;
        if x.is_finite() && x < u64::MAX as f64 {
            x as u64
        } else {
            u64::MAX
        }
    }

    /// A uniformly chosen element, `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }
}

impl SimRng {
    /// How many 32-bit words of its stream the generator has used: with the seed, all it
    /// takes to resume it ([`SimRng::resume`]).
    pub fn position(&self) -> u128 {
        self.inner.get_word_pos()
    }

    /// The generator seeded with `seed`, `position` words into its stream.
    pub fn resume(seed: u64, position: u128) -> Self {
        let mut rng = SimRng::new(seed);
        rng.inner.set_word_pos(position);
        rng
    }
}

impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst)
    }
}

/// How many requests a [`StepRng`] keeps draw counts for at once: a direct-mapped table by
/// request id, so the cost is constant and memory bounded over any run length. Two requests
/// whose ids differ by a multiple of this and that both draw while the other is still
/// drawing reset each other's count (their later steps then reuse numbers); in practice
/// requests that far apart are not alive together.
pub const STEP_RNG_SLOTS: usize = 1024;

/// Randomness drawn step by step: a node's in one incarnation (as every runtime hands it to
/// node code through `Ctx::rng`), or the simulated network's.
///
/// A step that belongs to a request draws from a stream of its own, derived from the seed,
/// the request id and how many earlier steps of that request drew; steps that belong to no
/// request share one background stream seeded by the seed. So leaving a request out of a run
/// (as the minimiser does) moves no other request's draws: the participant that votes no on
/// one transaction still does, and its messages take as long, when the transactions before
/// it are gone. The simulator, replay, the recorder and `verify` all draw node randomness
/// through this type, so a recording replays with the same numbers.
#[derive(Clone, Debug)]
pub struct StepRng {
    seed: u64,
    background: SimRng,
    /// The request the current step belongs to (its first id), if any.
    step_request: Option<u64>,
    /// The current step's own stream, made at its first draw.
    step_stream: Option<SimRng>,
    /// Per request slot: the request and how many of its steps have drawn (empty until a
    /// request's step first draws).
    draws_by_request: Vec<(u64, u32)>,
}

impl StepRng {
    /// The randomness of an incarnation booted with `seed` (the seed its Start or Restart
    /// record carries).
    pub fn new(seed: u64) -> Self {
        StepRng {
            seed,
            background: SimRng::new(seed),
            step_request: None,
            step_stream: None,
            draws_by_request: Vec::new(),
        }
    }

    /// A new step begins; `request_ids` are its input's (the first one keys the stream).
    pub fn begin_step(&mut self, request_ids: &[RequestId]) {
        self.step_request = request_ids.first().map(|r| r.0);
        self.step_stream = None;
    }

    /// The generator the current step draws from.
    pub fn rng(&mut self) -> &mut SimRng {
        let Some(request) = self.step_request else {
            return &mut self.background;
        };
        let (seed, draws) = (self.seed, &mut self.draws_by_request);
        self.step_stream.get_or_insert_with(|| {
            if draws.is_empty() {
                draws.resize(STEP_RNG_SLOTS, (0, 0));
            }
            let slot = &mut draws[(request % STEP_RNG_SLOTS as u64) as usize];
            if slot.0 != request {
                *slot = (request, 0);
            }
            let n = slot.1;
            slot.1 = n.saturating_add(1);
            SimRng::new(derive_seed(seed, Purpose::Request, request, u64::from(n)))
        })
    }
}

/// Where a [`StepRng`] is between steps: enough to resume it exactly (a node snapshot
/// holds one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRngState {
    pub seed: u64,
    /// Words of the background stream used.
    pub background_position: u128,
    /// Per request that has drawn: (request, steps of it that drew), by slot, the empty
    /// slots left out.
    pub draws_by_request: Vec<(u32, u64, u32)>,
}

impl StepRng {
    /// The generator's state between steps.
    pub fn state(&self) -> StepRngState {
        StepRngState {
            seed: self.seed,
            background_position: self.background.position(),
            draws_by_request: self
                .draws_by_request
                .iter()
                .enumerate()
                .filter(|(_, &(request, n))| request != 0 || n != 0)
                .map(|(slot, &(request, n))| (slot as u32, request, n))
                .collect(),
        }
    }

    /// The generator `state` describes. A state naming a slot past the table (a corrupt
    /// snapshot) is refused.
    pub fn resume(state: &StepRngState) -> Result<Self, String> {
        let mut rng = StepRng::new(state.seed);
        rng.background = SimRng::resume(state.seed, state.background_position);
        if !state.draws_by_request.is_empty() {
            rng.draws_by_request.resize(STEP_RNG_SLOTS, (0, 0));
        }
        for &(slot, request, n) in &state.draws_by_request {
            let cell = rng.draws_by_request.get_mut(slot as usize).ok_or_else(|| {
                format!("request slot {slot} past the {STEP_RNG_SLOTS} a generator has")
            })?;
            *cell = (request, n);
        }
        Ok(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_purpose_and_index() {
        let a = derive_seed(7, Purpose::Node, 0, 0);
        assert_ne!(a, derive_seed(7, Purpose::Node, 1, 0));
        assert_ne!(a, derive_seed(7, Purpose::Network, 0, 0));
        assert_ne!(a, derive_seed(8, Purpose::Node, 0, 0));
        assert_eq!(a, derive_seed(7, Purpose::Node, 0, 0));
    }

    #[test]
    fn a_request_draws_the_same_numbers_whatever_other_requests_drew_before_it() {
        let draw = |rng: &mut StepRng, request: Option<u64>| {
            rng.begin_step(request.map(RequestId).as_slice());
            rng.rng().next_u64()
        };
        let mut busy = StepRng::new(9);
        draw(&mut busy, Some(1));
        draw(&mut busy, None);
        draw(&mut busy, Some(2));
        let (busy_5, busy_bg) = (draw(&mut busy, Some(5)), draw(&mut busy, None));
        let mut quiet = StepRng::new(9);
        draw(&mut quiet, None);
        assert_eq!(draw(&mut quiet, Some(5)), busy_5);
        assert_eq!(draw(&mut quiet, None), busy_bg);
        // A request's second step gets fresh numbers, and one step draws one stream.
        let second = draw(&mut quiet, Some(5));
        assert_ne!(second, busy_5);
        assert_ne!(quiet.rng().next_u64(), second);
    }

    #[test]
    fn a_resumed_step_rng_draws_what_the_original_would_have() {
        let mut a = StepRng::new(3);
        for step in 0..40u64 {
            let ids = if step % 3 == 0 {
                vec![]
            } else {
                vec![RequestId(step % 7)]
            };
            a.begin_step(&ids);
            a.rng().next_u64();
        }
        let mut b = StepRng::resume(&a.state()).unwrap();
        assert_eq!(b.state(), a.state());
        for step in 0..40u64 {
            let ids = if step % 2 == 0 {
                vec![]
            } else {
                vec![RequestId(step % 5)]
            };
            a.begin_step(&ids);
            b.begin_step(&ids);
            assert_eq!(a.rng().next_u64(), b.rng().next_u64(), "step {step}");
        }
    }

    #[test]
    fn between_stays_in_bounds() {
        let mut rng = SimRng::new(1);
        for _ in 0..1000 {
            let v = rng.between(10, 20);
            assert!((10..=20).contains(&v));
        }
        assert_eq!(rng.between(5, 5), 5);
        let _ = rng.between(0, u64::MAX);
    }
}
