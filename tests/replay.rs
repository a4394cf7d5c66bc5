//! The replayer: re-execution without divergence, divergence at the right event for changed
//! code, rewind that returns identical states, causality equal to the causal closure, the
//! lunchtime profile, and merged real recordings.

mod common;
use common::*;
use retrace_models::pingpong::{Msg as PingMsg, PingPong, PingPongOptions, Timer as PingTimer};
use retrace_models::webstack::Msg as WebMsg;
use retrace_models::{KvModel, PingPongModel, WebstackModel};
use retrace_replayer::profile::{compare_window, Kind, Profiler};
use retrace_replayer::{Causality, CheckpointPolicy, Cursor, Predicate, Replay, Steps};
use retrace_sim::trace::{Event, Record};
use retrace_sim::{
    codec, scenario, Ctx, Invariant, Model, Node, NodeId, NodeSpec, RequestId, SimRng, Simulation,
    TimerId, Trace, TraceSink,
};
use std::collections::BTreeSet;

fn simulate<M: Model>(name: &str, seed: Option<u64>) -> Trace {
    let path = root().join("scenarios").join(name);
    let s = scenario::parse::<M>(name, &read(&path)).unwrap();
    let report = Simulation::<M>::new(&s, seed.unwrap_or(s.seed), TraceSink::Memory).run();
    Trace::from_bytes(&report.trace.unwrap(), name).unwrap()
}

#[test]
fn every_shipped_scenario_replays_without_divergence() {
    let dir = scratch_dir("replay-all");
    for path in shipped_scenarios() {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let out = dir.join(format!("{name}.trace"));
        let rel = path
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let o = retrace(&["run", &rel, "-o", out.to_str().unwrap()]);
        let ran = o.status.code();
        assert!(matches!(ran, Some(0 | 1)), "{rel}: {}", stderr(&o));
        // One exit-code table: replay says what the run said (1: an invariant broke).
        let o = retrace(&["replay", out.to_str().unwrap(), "--headless"]);
        assert_eq!(o.status.code(), ran, "{rel}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("replay    ok:"),
            "{rel}: {}",
            stdout(&o)
        );
    }
}

/// pingpong's pong, changed: from ping 50 on it echoes the wrong number.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct OffByOne(PingPong);

impl Node for OffByOne {
    type Msg = PingMsg;
    type Timer = PingTimer;
    fn on_start(&mut self, ctx: &mut Ctx<'_, PingMsg, PingTimer>) {
        self.0.on_start(ctx)
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_, PingMsg, PingTimer>, from: NodeId, msg: PingMsg) {
        match (&mut self.0, msg) {
            (PingPong::Pong { answered }, PingMsg::Ping { boot, seq }) if seq >= 50 => {
                *answered += 1;
                ctx.send(from, PingMsg::Pong { boot, seq: seq + 1 });
            }
            (_, msg) => self.0.on_message(ctx, from, msg),
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_, PingMsg, PingTimer>, timer: TimerId, tag: PingTimer) {
        self.0.on_timer(ctx, timer, tag)
    }
}

struct ChangedPingPong;
impl Model for ChangedPingPong {
    const NAME: &'static str = "pingpong";
    const ABOUT: &'static str = "pingpong with a changed pong (test only)";
    type Node = OffByOne;
    type Options = PingPongOptions;
    fn nodes(o: &PingPongOptions) -> Vec<NodeSpec> {
        PingPongModel::nodes(o)
    }
    fn build(o: &PingPongOptions, id: NodeId) -> OffByOne {
        OffByOne(PingPongModel::build(o, id))
    }
    fn invariants(_: &PingPongOptions) -> Vec<Box<dyn Invariant<OffByOne>>> {
        Vec::new()
    }
    fn request(_: &PingPongOptions, _: &mut SimRng) -> Option<(NodeId, PingMsg)> {
        None
    }
}

#[test]
fn a_torn_trace_replays_its_complete_steps() {
    let dir = scratch_dir("replay-torn");
    let out = dir.join("k.trace");
    let o = retrace(&["run", "scenarios/kv.toml", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let bytes = std::fs::read(&out).unwrap();
    for cut in [7, 200, 5000] {
        std::fs::write(&out, &bytes[..bytes.len() - cut]).unwrap();
        let o = retrace(&["replay", out.to_str().unwrap(), "--headless"]);
        // The complete steps replay; the torn tail is bad input, as for `show` (exit 2).
        assert_eq!(
            o.status.code(),
            Some(2),
            "cut {cut}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stderr(&o).contains("torn frame"), "{}", stderr(&o));
        assert!(stdout(&o).contains("replay    ok:"), "{}", stdout(&o));
    }
    std::fs::write(&out, b"not a trace").unwrap();
    let o = retrace(&["replay", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a retrace trace"), "{}", stderr(&o));
}

#[test]
fn changed_code_diverges_at_the_first_changed_output() {
    let trace = simulate::<PingPongModel>("pingpong.toml", None);
    // Where the change must show: pong's send answering ping 50.
    let expected = trace
        .events
        .iter()
        .position(|e| match &e.record {
            Record::Deliver {
                node: NodeId(1),
                payload,
                ..
            } => {
                matches!(
                    codec::decode::<PingMsg>(payload),
                    Ok(PingMsg::Ping { seq: 50, .. })
                )
            }
            _ => false,
        })
        .expect("ping 50 is delivered")
        + 1;
    assert!(matches!(trace.events[expected].record, Record::Send { .. }));
    let mut cursor = Cursor::new(
        Replay::<ChangedPingPong>::new(trace).unwrap(),
        CheckpointPolicy::default(),
    );
    cursor.run_to_end();
    let d = cursor.divergence().expect("the change is caught");
    assert_eq!(d.record_index, expected);
    assert_eq!(d.node_name, "pong");
    assert!(d.expected.contains("seq: 50"), "{}", d.expected);
    assert!(d.actual.contains("seq: 51"), "{}", d.actual);
    assert!(
        d.changes.iter().any(|c| c.path.contains("seq")),
        "{:?}",
        d.changes
    );
    // The unchanged model replays the same trace cleanly.
    let trace = simulate::<PingPongModel>("pingpong.toml", None);
    let mut cursor = Cursor::new(
        Replay::<PingPongModel>::new(trace).unwrap(),
        CheckpointPolicy::default(),
    );
    cursor.run_to_end();
    assert!(cursor.divergence().is_none());
    assert_eq!(cursor.position(), cursor.len());
}

fn states(cursor: &Cursor<KvModel>) -> Vec<u8> {
    codec::encode(cursor.nodes()).unwrap()
}

#[test]
fn stepping_back_then_forward_returns_identical_states() {
    let trace = simulate::<KvModel>("kv.toml", Some(3));
    // A tiny spacing and budget: many checkpoints, thinned often.
    let policy = CheckpointPolicy {
        spacing: std::time::Duration::from_micros(50),
        budget_bytes: 2 << 20,
    };
    let mut cursor = Cursor::new(Replay::<KvModel>::new(trace).unwrap(), policy);
    let n = cursor.len();
    let mut seen = Vec::new();
    let mut rng = SimRng::new(1);
    for _ in 0..12 {
        let k = rng.below(n as u64) as usize;
        cursor.goto(k);
        assert_eq!(cursor.position(), k);
        seen.push((k, states(&cursor)));
    }
    for (k, bytes) in seen.iter().rev() {
        cursor.goto(*k);
        assert!(
            states(&cursor) == *bytes,
            "state after {k} steps differs on the second visit"
        );
    }
    // Back 50 single steps, forward again.
    cursor.goto(n / 2);
    let here = states(&cursor);
    for _ in 0..50 {
        cursor.back();
    }
    for _ in 0..50 {
        assert!(cursor.forward());
    }
    assert!(states(&cursor) == here);
    assert!(
        cursor.checkpoint_bytes() <= 2 << 20,
        "{} bytes of checkpoints",
        cursor.checkpoint_bytes()
    );
    assert!(cursor.checkpoint_count() > 2);
}

#[test]
fn cursor_moves_by_node_predicate_time_and_bookmark() {
    let trace = simulate::<KvModel>("kv.toml", Some(3));
    let names: Vec<String> = trace.header.node_names();
    let mut cursor = Cursor::new(
        Replay::<KvModel>::new(trace).unwrap(),
        CheckpointPolicy::default(),
    );
    let view_change = Predicate::parse("msg ViewChange", &names).unwrap();
    assert!(
        cursor.run_forward_until(&view_change),
        "the crash at 2s causes a view change"
    );
    let first = cursor.position();
    cursor.bookmark("first view change");
    assert!(cursor.run_forward_until(&view_change));
    let second = cursor.position();
    assert!(second > first);
    assert!(cursor.run_backward_until(&view_change));
    assert_eq!(cursor.position(), first);
    cursor.goto(second);
    assert!(cursor.goto_bookmark("first view change"));
    assert_eq!(cursor.position(), first);
    // By node.
    let replica1 = NodeId(1);
    assert!(cursor.next_on_node(replica1));
    let k = cursor.current_step().unwrap();
    assert_eq!(cursor.replay().steps.steps[k].node, replica1);
    assert!(cursor.prev_on_node(replica1));
    assert!(cursor.current_step().unwrap() < k);
    // By time: the first step at or after 2s.
    cursor.goto_time(2_000_000_000);
    let k = cursor.current_step().unwrap();
    assert!(cursor.replay().steps.steps[k].time_ns >= 2_000_000_000);
    assert!(cursor.replay().steps.steps[k - 1].time_ns < 2_000_000_000);
    // A state predicate, and the state diff of a step.
    let primary_epoch = Predicate::parse("state replica-1 epoch: 1", &names).unwrap();
    cursor.goto(0);
    assert!(cursor.run_forward_until(&primary_epoch));
    let (before, after, changes) = cursor.step_states(cursor.current_step().unwrap());
    assert!(before.is_some() && after.is_some());
    assert!(
        changes.iter().any(|c| c.path.contains("epoch")),
        "{changes:?}"
    );
    assert!(Predicate::parse("nonsense", &names).is_err());
}

/// A hand-built trace: `(node, sends to, delivers the send of step)` per step.
fn hand_built(shape: &[(u32, Option<u32>, Option<usize>)], nodes: u32) -> Vec<Event> {
    let mut events = Vec::new();
    let mut send_index_of_step = Vec::new();
    let mut prev: Vec<Option<u64>> = vec![None; nodes as usize];
    for (s, &(node, sends_to, delivers)) in shape.iter().enumerate() {
        let index = events.len() as u64;
        let record = match delivers {
            Some(p) => Record::Deliver {
                node: NodeId(node),
                prev: prev[node as usize],
                from: NodeId(shape[p].0),
                send: send_index_of_step[p],
                request_ids: vec![],
                payload: vec![],
            },
            None => Record::Start {
                node: NodeId(node),
                prev: prev[node as usize],
                seed: s as u64,
            },
        };
        events.push(Event {
            index,
            time_ns: s as u64,
            node: Some(NodeId(node)),
            record,
        });
        prev[node as usize] = Some(index);
        let send = events.len() as u64;
        let to = sends_to.unwrap_or(node);
        events.push(Event {
            index: send,
            time_ns: s as u64,
            node: Some(NodeId(node)),
            record: Record::Send {
                to: NodeId(to),
                digest: 0,
            },
        });
        send_index_of_step.push(Some(send));
    }
    events
}

fn closure(shape: &[(u32, Option<u32>, Option<usize>)], s: usize) -> Vec<usize> {
    // Direct predecessors: the previous step on the node, and the step whose send it delivers.
    let preds = |t: usize| -> Vec<usize> {
        let mut p: Vec<usize> = (0..t)
            .rev()
            .filter(|&u| shape[u].0 == shape[t].0)
            .take(1)
            .collect();
        p.extend(shape[t].2);
        p
    };
    let mut seen = BTreeSet::new();
    let mut stack = preds(s);
    while let Some(t) = stack.pop() {
        if seen.insert(t) {
            stack.extend(preds(t));
        }
    }
    seen.into_iter().collect()
}

#[test]
fn why_equals_the_causal_closure_on_hand_built_traces() {
    // a -> b -> c, and d unrelated: c's step 4 has a, b and their earlier steps behind it.
    let shape = [
        (0, Some(1), None),
        (1, Some(2), None),
        (1, Some(2), Some(0)),
        (3, None, None),
        (2, None, Some(2)),
    ];
    let events = hand_built(&shape, 4);
    let steps = Steps::new(&events);
    let c = Causality::new(&steps, &events, 4);
    assert_eq!(c.why(4), vec![0, 1, 2]);
    assert_eq!(c.effects(0), vec![2, 4]);
    assert!(c.why(3).is_empty());
    // Random shapes: why equals the closure, effects its converse, the graph agrees.
    let mut rng = SimRng::new(42);
    for _ in 0..200 {
        let nodes = 1 + rng.below(5) as u32;
        let len = 1 + rng.below(40) as usize;
        let mut shape = Vec::new();
        for s in 0..len {
            let node = rng.below(u64::from(nodes)) as u32;
            let delivers = (s > 0 && rng.chance(0.6)).then(|| rng.below(s as u64) as usize);
            shape.push((node, Some(rng.below(u64::from(nodes)) as u32), delivers));
        }
        let events = hand_built(&shape, nodes);
        let steps = Steps::new(&events);
        let c = Causality::new(&steps, &events, nodes as usize);
        let g = c.graph();
        for s in 0..len {
            let expected = closure(&shape, s);
            assert_eq!(c.why(s), expected, "{shape:?} step {s}");
            for &f in &expected {
                assert!(c.precedes(f, s));
                assert!(c.effects(f).contains(&s));
                assert!(petgraph::algo::has_path_connecting(
                    &g,
                    petgraph::graph::NodeIndex::new(f),
                    petgraph::graph::NodeIndex::new(s),
                    None
                ));
            }
        }
    }
}

#[test]
fn the_lunchtime_profile_names_queueing_at_the_database() {
    let trace = simulate::<WebstackModel>("webstack-lunchtime.toml", None);
    let steps = Steps::new(&trace.events);
    let c = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    let names: Vec<String> = trace.header.node_names();
    let profiler = Profiler::new(&trace.events, &steps, &c, &names);
    let all = profiler.all(None);
    assert!(all.len() > 5000);
    for p in all.iter().take(200) {
        let sum: u64 = p.path.iter().map(|h| h.ns).sum();
        assert_eq!(
            sum, p.latency_ns,
            "the critical path accounts for all of r{}'s time",
            p.request
        );
    }
    let cmp = compare_window(&all, 12_000_000_000, 14_000_000_000);
    let (top, extra) = &cmp.extra[0];
    assert_eq!(
        (top.kind, top.node.as_str()),
        (Kind::Queueing, "db"),
        "{:?}",
        &cmp.extra[..3]
    );
    assert!(
        *extra > 5_000_000,
        "noon adds {extra} ns of queueing per request"
    );
    assert!(cmp.window.latency.p50_ns > 2 * cmp.rest.latency.p50_ns);
    assert!(
        !cmp.hit.is_empty()
            && cmp
                .hit
                .iter()
                .take(10)
                .all(|(_, _, place)| place.node == "db")
    );
}

#[test]
fn webstack_request_ids_follow_requests_not_the_daily_batch() {
    let trace = simulate::<WebstackModel>("webstack-lunchtime.toml", None);
    let mut batch_queries = 0;
    let mut miss_queries = 0;
    for e in &trace.events {
        if let Record::Deliver {
            request_ids,
            payload,
            from,
            ..
        } = &e.record
        {
            if let Ok(WebMsg::Query { heavy, .. }) = codec::decode::<WebMsg>(payload) {
                if heavy {
                    batch_queries += 1;
                    assert!(
                        request_ids.is_empty(),
                        "the batch job's query {e:?} belongs to no request"
                    );
                } else {
                    miss_queries += 1;
                    assert_eq!(
                        request_ids.len(),
                        1,
                        "a cache miss's query belongs to its request"
                    );
                    assert_ne!(trace.header.nodes[from.index()].name, "batch");
                }
            }
        }
        if let Record::Timer { request_ids, .. } = &e.record {
            assert!(
                request_ids.is_empty(),
                "the daily timer re-arms itself without a request"
            );
        }
    }
    assert!(
        batch_queries >= 70 && miss_queries > 500,
        "{batch_queries} {miss_queries}"
    );
    let _ = RequestId(0);
}

#[test]
fn why_and_profile_speak_json() {
    let dir = scratch_dir("why-json");
    let out = dir.join("w.trace");
    let o = retrace(&[
        "run",
        "scenarios/webstack-lunchtime.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&["why", out.to_str().unwrap(), "5000", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["why"].as_array().is_some_and(|a| !a.is_empty()));
    let o = retrace(&["why", out.to_str().unwrap(), "5000"]);
    assert!(stdout(&o).contains("causally precede it"), "{}", stdout(&o));
    let o = retrace(&[
        "profile",
        out.to_str().unwrap(),
        "--window",
        "12s..14s",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["extra"][0][0]["node"], "db");
    let o = retrace(&["profile", out.to_str().unwrap(), "--window", "12s..14s"]);
    assert!(
        stdout(&o).lines().all(|l| l.chars().count() <= 80),
        "{}",
        stdout(&o)
    );
    let o = retrace(&["profile", out.to_str().unwrap(), "--window", "14s..12s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is empty"), "{}", stderr(&o));
    let o = retrace(&["why", out.to_str().unwrap(), "99999999"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_merged_real_recording_replays_without_divergence() {
    let dir = scratch_dir("replay-recorded");
    let o = retrace(&[
        "cluster",
        "scenarios/kv.toml",
        "--record",
        dir.to_str().unwrap(),
        "--duration",
        "2500ms",
        "--fsync",
        "always",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = dir.join("incident.trace");
    let o = retrace(&["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&["replay", out.to_str().unwrap(), "--headless"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("replay    ok:"), "{}", stdout(&o));
    // Measured handler times made it into the trace, so recorded requests can be profiled.
    let o = retrace(&["profile", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(" at replica-"), "{}", stdout(&o));
}

/// `why` printed `<3 bytes>` where `show` and the TUI print the decoded message.
#[test]
fn why_prints_messages_decoded_as_show_does() {
    let dir = scratch_dir("why-decoded");
    let trace = dir.join("pp.trace");
    let t = trace.to_str().unwrap();
    let o = retrace(&["run", "scenarios/pingpong.toml", "-o", t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&["why", t, "30"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("Ping { boot: 0, seq: 1 }"), "{text}");
    assert!(!text.contains(" bytes>"), "{text}");
}
