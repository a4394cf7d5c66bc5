//! The simulator's world model, checked through the public API with a small probe system:
//! partitions and one-way cuts, clocks, duplication, crash and storage durability, timers,
//! request-id propagation, bounds, swarm runs, invariant violations.

use retrace_sim::trace::{DropReason, FaultRecord, Record};
use retrace_sim::{
    invariant, scenario, Ctx, Event, Invariant, Model, Node, NodeId, NodeSpec, Outcome, RunReport,
    SimRng, Simulation, Tag, TimerId, Trace, TraceSink, View,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
enum Msg {
    Tick(u64),
    Work,
    Forwarded,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Probe {
    ticks: u64,
    received: u64,
    clock_readings: Vec<(u64, u64)>,
    recovered_tick: Option<u64>,
}

const TAG_TICK: u64 = 1;
const TAG_WORK: u64 = 7;

impl Node for Probe {
    type Msg = Msg;
    type Timer = u64;
    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg>) {
        self.recovered_tick = ctx.storage().get_value::<u64>("tick").and_then(Result::ok);
        ctx.set_timer(Duration::from_millis(10), TAG_TICK);
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_, Msg>, _from: NodeId, _msg: Msg) {
        self.received += 1;
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg>, _timer: TimerId, tag: u64) {
        if tag == TAG_WORK {
            ctx.send(NodeId(2), Msg::Forwarded);
            return;
        }
        self.ticks += 1;
        let local = ctx.now().as_nanos();
        if ctx.id() == NodeId(0) {
            self.clock_readings.push((self.ticks, local));
            ctx.storage().put_value("tick", &self.ticks).unwrap();
            if self.ticks.is_multiple_of(3) {
                ctx.storage().sync();
            }
        }
        for peer in ctx.peers().to_vec() {
            ctx.send(peer, Msg::Tick(self.ticks));
        }
        ctx.set_timer(Duration::from_millis(10), TAG_TICK);
    }
    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg>, _req: Msg) {
        // Work is finished a little later; the timer carries the request on.
        ctx.set_timer(Duration::from_millis(5), TAG_WORK);
        ctx.detach();
        ctx.set_timer(Duration::from_millis(6), 99);
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProbeOptions {
    fail_at_tick: Option<u64>,
}

struct ProbeModel;

impl Model for ProbeModel {
    const NAME: &'static str = "probe";
    const ABOUT: &'static str = "test probe";
    type Node = Probe;
    type Options = ProbeOptions;
    fn nodes(_: &ProbeOptions) -> Vec<NodeSpec> {
        ["a", "b", "c"]
            .iter()
            .map(|n| NodeSpec::new(*n, "probe"))
            .collect()
    }
    fn build(_: &ProbeOptions, _: NodeId) -> Probe {
        Probe::default()
    }
    fn invariants(o: &ProbeOptions) -> Vec<Box<dyn Invariant<Probe>>> {
        let fail_at = o.fail_at_tick;
        vec![invariant(
            "a ticks below the limit",
            move |v: &View<'_, Probe>| match (fail_at, v.nodes[0].as_ref()) {
                (Some(limit), Some(a)) if a.ticks >= limit => {
                    Err(format!("a reached tick {}", a.ticks).into())
                }
                _ => Ok(()),
            },
        )]
    }
    fn request(_: &ProbeOptions, _: &mut SimRng) -> Option<(NodeId, Msg)> {
        Some((NodeId(1), Msg::Work))
    }
}

fn run(extra: &str) -> (RunReport, Trace) {
    let source = format!("model = \"probe\"\nseed = 5\ntime_limit = \"300ms\"\n{extra}");
    let s = scenario::parse::<ProbeModel>("probe.toml", &source).unwrap_or_else(|e| panic!("{e}"));
    let report = Simulation::<ProbeModel>::new(&s, s.seed, TraceSink::Memory).run();
    let trace = Trace::from_bytes(report.trace.as_ref().unwrap(), "probe").unwrap();
    assert!(trace.tail.is_none());
    (report, trace)
}

fn send_of(trace: &Trace, send: u64) -> (&Event, NodeId) {
    let e = &trace.events[send as usize];
    match e.record {
        Record::Send { to, .. } => (e, to),
        _ => panic!("#{send} is not a send: {e:?}"),
    }
}

#[test]
fn a_symmetric_partition_drops_across_groups_until_it_heals() {
    let (_, trace) = run("[[faults]]\nat = \"100ms\"\npartition = [[\"a\"], [\"b\", \"c\"]]\nheal_after = \"100ms\"\n");
    let mut partition_drops = 0;
    for e in &trace.events {
        if let Record::Drop {
            send,
            reason: DropReason::Partition,
        } = e.record
        {
            partition_drops += 1;
            let (s, to) = send_of(&trace, send);
            assert!((100_000_000..200_000_000).contains(&s.time_ns), "{s:?}");
            let from = s.node.unwrap();
            assert!(
                (from.0 == 0) != (to.0 == 0),
                "only links across the cut: {from}->{to}"
            );
        }
        if let Record::Deliver { node, from, .. } = e.record {
            if (node.0 == 0) != (from.0 == 0) {
                assert!(
                    !(101_000_000..200_000_000).contains(&e.time_ns),
                    "delivered across the cut: {e:?}"
                );
            }
        }
    }
    // a sends 2 and receives 2 per 10ms tick: ~10 ticks cut, 4 links.
    assert!((30..=44).contains(&partition_drops), "{partition_drops}");
    let faults: Vec<&FaultRecord> = trace
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::Fault(f) => Some(f),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            faults[..],
            [FaultRecord::Cut { id: 0, .. }, FaultRecord::Heal { id: 0 }]
        ),
        "{faults:?}"
    );
}

#[test]
fn a_one_way_block_drops_only_that_direction() {
    let (_, trace) = run("[[faults]]\nat = \"0s\"\nblock = { from = \"a\", to = \"b\" }\n");
    let mut blocked = 0;
    let mut b_to_a = 0;
    for e in &trace.events {
        match e.record {
            Record::Drop { send, reason } => {
                let (s, to) = send_of(&trace, send);
                assert_eq!(
                    (s.node, to, reason),
                    (Some(NodeId(0)), NodeId(1), DropReason::Partition)
                );
                blocked += 1;
            }
            Record::Deliver {
                node: NodeId(0),
                from: NodeId(1),
                ..
            } => b_to_a += 1,
            _ => {}
        }
    }
    assert!(blocked >= 25 && b_to_a >= 25, "{blocked} {b_to_a}");
}

/// Node a's clock readings: (true time, reading).
fn clock_reads_of_a(trace: &Trace) -> Vec<(u64, u64)> {
    trace
        .events
        .iter()
        .filter_map(|e| match e.record {
            Record::ClockRead { value_ns } if e.node == Some(NodeId(0)) => {
                Some((e.time_ns, value_ns))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn clocks_are_skewed_jumped_and_recorded() {
    let (report, trace) = run("[clocks]\nskew = \"50ms\"\n[[faults]]\nat = \"95ms\"\nclock_jump = \"a\"\nby = \"-30ms\"\n");
    let reads = clock_reads_of_a(&trace);
    assert!(reads.len() >= 25);
    for (t, v) in &reads {
        let offset = if *t < 95_000_000 {
            50_000_000
        } else {
            20_000_000
        };
        assert_eq!(*v, t + offset, "reading at {t}");
    }
    assert_eq!(
        report.stats.clock_reads as usize,
        trace
            .events
            .iter()
            .filter(|e| matches!(e.record, Record::ClockRead { .. }))
            .count()
    );
}

#[test]
fn timers_run_on_their_nodes_drifting_clock_and_a_jump_does_not_move_them() {
    // ±5% drift: a's 10 ms tick timer runs on a's clock, so between two ticks a's own clock
    // advances 10 ms while true time advances 10 ms / (1 + drift). A jump moves the readings,
    // not the timers.
    let (_, trace) = run("[clocks]\ndrift_ppm = 50000\n[[faults]]\nat = \"95ms\"\nclock_jump = \"a\"\nby = \"-30ms\"\n");
    let reads = clock_reads_of_a(&trace);
    assert!(reads.len() >= 25);
    let mut true_gaps = Vec::new();
    for pair in reads.windows(2) {
        let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
        let local = v1 as i64 - v0 as i64;
        let jumped = t0 < 95_000_000 && t1 >= 95_000_000;
        let expected = if jumped {
            10_000_000 - 30_000_000
        } else {
            10_000_000
        };
        assert!(
            (local - expected).abs() <= 2,
            "{local} ns on a's clock between ticks at {t0} and {t1}"
        );
        true_gaps.push(t1 - t0);
    }
    // The drawn drift is not zero, so true time between ticks is not 10 ms, and it is the same
    // for every tick, the jump's included.
    assert!(true_gaps.iter().all(|&g| g != 10_000_000), "{true_gaps:?}");
    assert!(
        true_gaps.iter().all(|&g| g.abs_diff(true_gaps[0]) <= 1),
        "{true_gaps:?}"
    );
}

#[test]
fn duplication_delivers_one_send_twice() {
    let (report, trace) = run("[network]\nduplicate = 1.0\n");
    assert_eq!(report.stats.duplicated, report.stats.sent);
    let mut per_send = std::collections::BTreeMap::new();
    for e in &trace.events {
        if let Record::Deliver { send, .. } = e.record {
            *per_send.entry(send).or_insert(0) += 1;
        }
    }
    assert!(per_send.values().filter(|&&n| n == 2).count() > 50);
    assert!(per_send.values().all(|&n| n <= 2));
}

#[test]
fn a_crash_loses_volatile_state_and_unsynced_writes() {
    // a ticks every 10ms (tick k at k*10ms) and syncs every third tick: at 105ms it has
    // written tick 10 but synced only tick 9.
    let s = scenario::parse::<ProbeModel>(
        "probe.toml",
        "model = \"probe\"\ntime_limit = \"170ms\"\n[[faults]]\nat = \"105ms\"\ncrash = \"a\"\nrestart_after = \"50ms\"\n",
    )
    .unwrap();
    let mut sim = Simulation::<ProbeModel>::new(&s, 1, TraceSink::Memory);
    let run_until = |sim: &mut Simulation<ProbeModel>, ns: u64| {
        while sim.next_event_ns().is_some_and(|t| t < ns) {
            sim.step();
        }
    };
    run_until(&mut sim, 104_000_000);
    assert_eq!(sim.nodes()[0].as_ref().unwrap().ticks, 10);
    run_until(&mut sim, 120_000_000);
    assert!(sim.nodes()[0].is_none(), "a is down");
    let report_nodes = loop {
        if !sim.step() {
            break sim.nodes().to_vec();
        }
    };
    let a = report_nodes[0].as_ref().expect("a restarted");
    assert_eq!(a.recovered_tick, Some(9));
    assert_eq!(a.ticks, 1, "volatile state started over at 155ms");
    let report = sim.run();
    assert_eq!((report.stats.crashes, report.stats.restarts), (1, 1));
    let trace = Trace::from_bytes(report.trace.as_ref().unwrap(), "probe").unwrap();
    let crash = trace
        .events
        .iter()
        .find(|e| matches!(e.record, Record::Crash { .. }))
        .unwrap();
    let restart = trace
        .events
        .iter()
        .find(|e| matches!(e.record, Record::Restart { .. }))
        .unwrap();
    assert_eq!(crash.time_ns, 105_000_000);
    assert_eq!(restart.time_ns, 155_000_000);
    // Program order links: the restart points back at the crash, which points at a's last step.
    let Record::Restart { prev, .. } = restart.record else {
        unreachable!()
    };
    assert_eq!(prev, Some(crash.index));
    // Messages that arrive while a is down are lost, and say so.
    assert!(trace.events.iter().any(|e| matches!(
        e.record,
        Record::Drop {
            reason: DropReason::NodeDown,
            ..
        }
    )));
}

#[test]
fn request_ids_ride_timers_unless_detached() {
    let (_, trace) = run("[workload]\nrate = \"100/s\"\nrequests = 3\n");
    let externals: Vec<_> = trace
        .events
        .iter()
        .filter_map(|e| match e.record {
            Record::External { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(externals.len(), 3);
    let work_timers: Vec<_> = trace
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::Timer {
                tag, request_ids, ..
            } if *tag == Tag::number(TAG_WORK) => Some(request_ids.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        work_timers,
        externals.iter().map(|r| vec![*r]).collect::<Vec<_>>()
    );
    let forwarded: Vec<_> = trace
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::Deliver {
                node: NodeId(2),
                request_ids,
                ..
            } if !request_ids.is_empty() => Some(request_ids.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        forwarded.len(),
        3,
        "the forwarded message inherits the timer's request"
    );
    for e in &trace.events {
        match &e.record {
            Record::Timer {
                tag, request_ids, ..
            } if *tag == Tag::number(99) || *tag == Tag::number(TAG_TICK) => {
                assert!(request_ids.is_empty(), "{e:?}")
            }
            _ => {}
        }
    }
}

#[test]
fn the_first_violation_stops_the_run_and_names_its_event() {
    let (report, trace) = run("[model_options]\nfail_at_tick = 7\n");
    assert_eq!(report.outcome, Outcome::Violation);
    let v = report.violation.unwrap();
    assert_eq!(
        (v.node_name.as_str(), v.time_ns, v.message.as_str()),
        ("a", 70_000_000, "a reached tick 7")
    );
    let step = &trace.events[v.step_index as usize];
    assert!(
        matches!(
            step.record,
            Record::Timer {
                node: NodeId(0),
                ..
            }
        ),
        "{step:?}"
    );
    assert!(v.describe().contains(&format!("at event {}", v.step_index)));
    assert_eq!(
        trace.events.last().unwrap().record,
        Record::End {
            outcome: Outcome::Violation
        }
    );
}

#[test]
fn max_events_bounds_a_run() {
    let (report, _) = run("max_events = 50\n");
    assert_eq!(report.outcome, Outcome::EventLimit);
    assert_eq!(report.stats.steps, 50);
}

#[test]
fn swarm_runs_switch_fault_kinds_per_seed_deterministically() {
    let source = "model = \"probe\"\ntime_limit = \"200ms\"\nswarm = true\n[network]\ndrop = 0.3\n[random_faults]\ncrash_rate = \"20/s\"\n";
    let s = scenario::parse::<ProbeModel>("probe.toml", source).unwrap();
    let mut drop_on = 0;
    let mut crash_on = 0;
    for seed in 0..32 {
        let a = Simulation::<ProbeModel>::new(&s, seed, TraceSink::Memory).run();
        let b = Simulation::<ProbeModel>::new(&s, seed, TraceSink::Memory).run();
        assert!(a.trace == b.trace);
        let kinds = a.swarm.unwrap();
        let trace = Trace::from_bytes(a.trace.as_ref().unwrap(), "swarm").unwrap();
        let losses = trace
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.record,
                    Record::Drop {
                        reason: DropReason::Loss,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(kinds.drop, losses > 0, "seed {seed}");
        drop_on += usize::from(kinds.drop);
        crash_on += usize::from(kinds.crash && a.stats.crashes > 0);
    }
    assert!((6..=26).contains(&drop_on), "{drop_on}");
    assert!(crash_on >= 4, "{crash_on}");
}

#[test]
fn random_faults_come_from_the_seed() {
    let source = "model = \"probe\"\ntime_limit = \"2s\"\n[random_faults]\ncrash_rate = \"2/s\"\nrestart_after = \"10ms..50ms\"\npartition_rate = \"3/s\"\npartition_duration = \"10ms..100ms\"\nclock_jump_rate = \"1/s\"\n";
    let s = scenario::parse::<ProbeModel>("probe.toml", source).unwrap();
    let a = Simulation::<ProbeModel>::new(&s, 8, TraceSink::Memory).run();
    assert!(
        a.stats.crashes >= 3 && a.stats.restarts >= 3,
        "{:?}",
        a.stats
    );
    assert!(a.stats.network_faults >= 3, "{:?}", a.stats);
    let b = Simulation::<ProbeModel>::new(&s, 8, TraceSink::Memory).run();
    assert!(a.trace == b.trace);
}
