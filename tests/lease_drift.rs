//! A lease bug that only a drifting clock causes, found by the fuzzer.
//!
//! A grantor hands out one lease at a time; candidates ask for it until they hold it. The
//! holder counts its lease from when it *asked* (so message delay can only shorten it), on a
//! timer — monotonic, so a clock jump cannot stretch it — and, with `margin_ppm`, shortens it
//! by the clocks' worst drift. The grantor frees the lease
//! when its own timer says the lease is over, and after a restart waits out a whole lease
//! first (it forgot whom it granted). Timers run on each node's own clock — drift applies
//! to them — so with `margin_ppm = 0` a holder whose clock runs slow keeps the lease after a
//! grantor whose clock runs fast has given it to someone else: two holders. Without drift,
//! or with the margin, the same fuzzing finds nothing.

use retrace_sim::fuzz::{case_seed, replay_case, rotating, run_case};
use retrace_sim::{
    invariant, scenario, Boot, Ctx, Invariant, Model, Node, NodeId, NodeSpec, Scenario, TimerId,
    TraceSink,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_millis(3);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Msg {
    Acquire { n: u64 },
    Granted { n: u64 },
    Busy { n: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Timer {
    /// Candidate: ask again.
    Retry,
    /// Candidate: a lease asked for with request `n` would be over now.
    Expire { n: u64 },
    /// Grantor: the lease it gave is over (or, after a restart, the wait is).
    Free,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Lease {
    Grantor {
        holder: Option<NodeId>,
        /// After a restart, until a lease has passed: whoever held one may still.
        waiting: bool,
    },
    Candidate {
        /// The request whose lease this candidate holds.
        holding: Option<u64>,
        /// The latest request.
        next: u64,
        margin_ppm: u64,
    },
}

impl Node for Lease {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        match self {
            Lease::Grantor { waiting, .. } => {
                if ctx.boot() != Boot::First {
                    *waiting = true;
                    ctx.set_timer(LEASE, Timer::Free);
                }
            }
            Lease::Candidate { .. } => {
                ctx.set_timer(RETRY, Timer::Retry);
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match (self, msg) {
            (Lease::Grantor { holder, waiting }, Msg::Acquire { n }) => {
                if holder.is_some() || *waiting {
                    return ctx.send(from, Msg::Busy { n });
                }
                *holder = Some(from);
                ctx.set_timer(LEASE, Timer::Free);
                ctx.send(from, Msg::Granted { n });
            }
            // Only the latest request's grant: its lease timer is still running (an older
            // one may have fired already).
            (Lease::Candidate { holding, next, .. }, Msg::Granted { n })
                if n == *next && holding.is_none() =>
            {
                *holding = Some(n);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, _: TimerId, timer: Timer) {
        match (self, timer) {
            (Lease::Grantor { holder, waiting }, Timer::Free) => {
                *holder = None;
                *waiting = false;
            }
            (Lease::Candidate { holding, .. }, Timer::Expire { n }) if *holding == Some(n) => {
                *holding = None;
                ctx.set_timer(RETRY, Timer::Retry);
            }
            (
                Lease::Candidate {
                    holding,
                    next,
                    margin_ppm,
                },
                Timer::Retry,
            ) => {
                if holding.is_some() {
                    return;
                }
                *next += 1;
                // The grantor's lease begins after this send: timing ours from now can only
                // end it earlier — on a clock as good as the grantor's.
                let lease = LEASE - LEASE * (*margin_ppm as u32) / 1_000_000;
                ctx.set_timer(lease, Timer::Expire { n: *next });
                ctx.send(NodeId(0), Msg::Acquire { n: *next });
                ctx.set_timer(RETRY, Timer::Retry);
            }
            _ => {}
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LeaseOptions {
    /// How much the holder shortens its lease for clock drift, in parts per million.
    margin_ppm: u64,
}

struct LeaseModel;

impl Model for LeaseModel {
    const NAME: &'static str = "lease";
    const ABOUT: &'static str = "one lease, a grantor and two candidates";
    type Node = Lease;
    type Options = LeaseOptions;

    fn nodes(_: &LeaseOptions) -> Vec<NodeSpec> {
        vec![
            NodeSpec::new("grantor", "grantor"),
            NodeSpec::new("a", "candidate"),
            NodeSpec::new("b", "candidate"),
        ]
    }

    fn build(o: &LeaseOptions, id: NodeId) -> Lease {
        if id == NodeId(0) {
            Lease::Grantor {
                holder: None,
                waiting: false,
            }
        } else {
            Lease::Candidate {
                holding: None,
                next: 0,
                margin_ppm: o.margin_ppm,
            }
        }
    }

    fn invariants(_: &LeaseOptions) -> Vec<Box<dyn Invariant<Lease>>> {
        vec![invariant("one holder", |view| {
            let holders: Vec<usize> = view
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| {
                    matches!(
                        n,
                        Some(Lease::Candidate {
                            holding: Some(_),
                            ..
                        })
                    )
                })
                .map(|(i, _)| i)
                .collect();
            if holders.len() > 1 {
                return Err(format!("nodes {holders:?} both hold the lease").into());
            }
            Ok(())
        })]
    }
}

fn scenario(drift_ppm: u64, margin_ppm: u64) -> Scenario<LeaseOptions> {
    let text = format!(
        "model = \"lease\"\nseed = 1\ntime_limit = \"2s\"\n\
         [model_options]\nmargin_ppm = {margin_ppm}\n\
         [network]\nlatency = \"1ms..5ms\"\n\
         [clocks]\ndrift_ppm = {drift_ppm}\n"
    );
    scenario::parse::<LeaseModel>("lease.toml", &text).unwrap()
}

/// The first of `cases` fuzz cases (the CLI's rotation of strategies) that breaks the
/// invariant, with its seed and strategy.
fn first_failure(s: &Scenario<LeaseOptions>, cases: u64) -> Option<(u64, u64)> {
    (0..cases).find_map(|i| {
        let seed = case_seed(1, i);
        let case = run_case::<LeaseModel>(s, seed, rotating(i));
        case.report.violation.map(|_| (i, seed))
    })
}

#[test]
fn the_fuzzer_finds_two_lease_holders_when_clocks_drift_and_the_holder_allows_no_margin() {
    // 2% drift: the grantor's and a holder's clocks can differ by 4% of a lease (8 ms).
    let drifting = scenario(20_000, 0);
    let (i, seed) = first_failure(&drifting, 200).expect("the fuzzer finds two holders");
    let strategy = rotating(i);
    let case = run_case::<LeaseModel>(&drifting, seed, strategy);
    let v = case.report.violation.expect("a violation");
    assert!(v.message.contains("both hold the lease"), "{}", v.message);
    // The case replays from its schedule to the same violation.
    let again = replay_case::<LeaseModel>(
        &drifting,
        seed,
        strategy,
        &case.schedule,
        TraceSink::Discard,
    );
    assert_eq!(again.violation.map(|v| v.step_index), Some(v.step_index));

    // The same search without drift, and with drift but a margin for it, finds nothing:
    // it is the drift — timers on each node's own clock — that breaks the lease.
    assert_eq!(first_failure(&scenario(0, 0), 200), None, "no drift");
    assert_eq!(
        first_failure(&scenario(20_000, 40_000), 200),
        None,
        "a margin of twice the drift"
    );
}
