//! The linearizability checker on hand-written histories: shapes from the literature
//! (Herlihy & Wing; Jepsen's stale and lost-update anomalies; porcupine's examples), each
//! written as one line per operation: `call ret op [-> result]`, `ret` `-` for an
//! operation that never answered.

use retrace_sim::history::{History, Instant, Operation};
use retrace_sim::linearizability::{check, draw, Limits, Observed, Spec};
use retrace_sim::{NodeId, RequestId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Msg {
    Put(String, u64),
    Get(String),
    Add(String, u64),
    Ok,
    Value(Option<u64>),
    Refused,
    TimedOut,
}

/// Registers and counters by key: `put` sets, `get` reads, `add` adds and returns the sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Cell(Option<u64>);

impl Spec for Cell {
    type Msg = Msg;
    type Ret = Option<Option<u64>>;
    fn partition(input: &Msg) -> Option<String> {
        match input {
            Msg::Put(k, _) | Msg::Get(k) | Msg::Add(k, _) => Some(k.clone()),
            _ => None,
        }
    }
    fn apply(&mut self, input: &Msg) -> Self::Ret {
        match input {
            Msg::Put(_, v) => {
                self.0 = Some(*v);
                None
            }
            Msg::Add(_, n) => {
                let sum = self.0.unwrap_or(0) + n;
                self.0 = Some(sum);
                Some(Some(sum))
            }
            _ => Some(self.0),
        }
    }
    fn observe(output: &Msg) -> Observed<Self::Ret> {
        match output {
            Msg::Ok => Observed::Returned(None),
            Msg::Value(v) => Observed::Returned(Some(*v)),
            Msg::Refused => Observed::Failed,
            _ => Observed::Unknown,
        }
    }
    fn describe(input: &Msg, output: Option<&Msg>) -> String {
        let op = match input {
            Msg::Put(k, v) => format!("put {k} = {v}"),
            Msg::Get(k) => format!("get {k}"),
            Msg::Add(k, n) => format!("add {k} {n}"),
            other => format!("{other:?}"),
        };
        match output {
            Some(Msg::Ok) => format!("{op} -> ok"),
            Some(Msg::Value(v)) => {
                format!("{op} -> {}", v.map_or("nothing".into(), |v| v.to_string()))
            }
            Some(o) => format!("{op} -> {o:?}"),
            None => format!("{op} -> ?"),
        }
    }
}

/// Parses the little history language of this file.
fn history(text: &str) -> History<Msg> {
    let ops = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, line)| {
            let (head, result) = match line.split_once("->") {
                Some((h, r)) => (h.trim(), Some(r.trim())),
                None => (line, None),
            };
            let words: Vec<&str> = head.split_whitespace().collect();
            let call: u64 = words[0].parse().unwrap();
            let ret: Option<u64> = words[1].parse().ok();
            let input = match words[2] {
                "put" => Msg::Put(words[3].into(), words[4].parse().unwrap()),
                "get" => Msg::Get(words[3].into()),
                "add" => Msg::Add(words[3].into(), words[4].parse().unwrap()),
                other => panic!("unknown operation {other}"),
            };
            let output = ret.map(|_| match result {
                None | Some("ok") => Msg::Ok,
                Some("nothing") => Msg::Value(None),
                Some("refused") => Msg::Refused,
                Some("timeout") => Msg::TimedOut,
                Some(v) => Msg::Value(Some(v.parse().unwrap())),
            });
            Operation {
                request: RequestId(i as u64),
                node: NodeId(0),
                input,
                call: Instant::call(call),
                call_ns: call * 1_000_000,
                ret: ret.map_or(Instant::NEVER, Instant::ret),
                ret_ns: ret.map(|r| r * 1_000_000),
                answered_by: ret.map(|_| NodeId(0)),
                output,
            }
        })
        .collect();
    History::from_ops(ops)
}

fn linearizable(text: &str) -> bool {
    let h = history(text);
    let report = check::<Cell>(&h, Limits::default());
    assert!(report.undecided.is_empty());
    report.is_linearizable()
}

/// The witness of the first violation: its operations' request numbers, and its drawing.
fn witness(text: &str) -> (Vec<u64>, String) {
    let h = history(text);
    let report = check::<Cell>(&h, Limits::default());
    let w = report.violations.first().expect("a violation");
    assert!(w.minimal);
    let ids = w.ops.iter().map(|&i| h.ops()[i].request.0).collect();
    (ids, draw::<Cell>(&h, w, &|n| format!("node-{}", n.0)))
}

#[test]
fn sequential_histories_are_linearizable() {
    assert!(linearizable(
        "0 1 put x 1
         2 3 get x -> 1
         4 5 put x 2
         6 7 get x -> 2
         8 9 get y -> nothing"
    ));
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    // Herlihy & Wing: a read overlapping a write may return the old or the new value...
    assert!(linearizable(
        "0 1 put x 1
         2 9 put x 2
         3 4 get x -> 1
         5 6 get x -> 2
         7 8 get x -> 2"
    ));
}

#[test]
fn stale_read_is_not_linearizable() {
    // ...but once a write has answered, no later read may miss it.
    let text = "0 1 put x 1
                2 3 put x 2
                4 5 get x -> 1";
    assert!(!linearizable(text));
    let (ids, drawing) = witness(text);
    assert_eq!(ids, vec![0, 1, 2], "both writes and the read:\n{drawing}");
    expect_test::expect![[r#"
        key "x": 3 operations of 3 cannot be ordered (each takes effect once, between its call and its answer)
          r0    node-0     put x = 1 -> ok  |---|                      0s .. 1ms
          r1    node-0     put x = 2 -> ok          |---|              2ms .. 3ms
          r2    node-0     get x -> 1                       |---|      4ms .. 5ms
    "#]]
    .assert_eq(&drawing);
}

#[test]
fn a_read_that_saw_a_new_value_forbids_later_reads_of_the_old_one() {
    // The write is still in flight, yet one read saw it: later reads must too (the
    // "new-old inversion" a primary serving uncommitted writes produces).
    let text = "0 1 put x 1
                2 20 put x 2
                3 4 get x -> 2
                5 6 get x -> 1";
    assert!(!linearizable(text));
    let (ids, _) = witness(text);
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[test]
fn lost_update_is_not_linearizable() {
    // Two concurrent increments that both return 1: one of them was lost.
    let text = "0 5 add c 1 -> 1
                1 6 add c 1 -> 1";
    assert!(!linearizable(text));
    let (ids, _) = witness(text);
    assert_eq!(ids, vec![0, 1]);
    assert!(linearizable(
        "0 5 add c 1 -> 2
         1 6 add c 1 -> 1"
    ));
}

#[test]
fn an_unanswered_write_may_or_may_not_have_happened() {
    // A write that never answered (its node crashed, the client timed out) can take effect
    // at any time after its call, or never.
    assert!(linearizable(
        "0 - put x 3
         5 6 get x -> nothing
         7 8 get x -> 3
         9 10 get x -> 3"
    ));
    assert!(!linearizable(
        "0 - put x 3
         5 6 get x -> 3
         7 8 get x -> nothing"
    ));
    // "Timed out" answers read as unknown, like no answer at all.
    assert!(linearizable(
        "0 1 put x 3 -> timeout
         5 6 get x -> nothing
         7 8 get x -> 3"
    ));
}

#[test]
fn refused_operations_are_left_out() {
    assert!(linearizable(
        "0 1 put x 3 -> refused
         5 6 get x -> nothing"
    ));
}

#[test]
fn a_value_nobody_wrote_is_its_own_witness() {
    let text = "0 1 put x 1
                2 3 get x -> 7
                4 5 put y 1";
    let (ids, _) = witness(text);
    assert_eq!(ids, vec![1]);
}

#[test]
fn a_read_from_the_future_keeps_the_write_it_read() {
    let text = "0 1 get x -> 5
                2 3 put x 5";
    let (ids, drawing) = witness(text);
    assert_eq!(ids, vec![0, 1], "{drawing}");
}

#[test]
fn keys_are_checked_apart() {
    // Each key alone is linearizable; a checker that mixed keys would not notice either
    // way, but the report counts them apart.
    let h = history(
        "0 1 put x 1
         0 1 put y 1
         2 3 get x -> 1
         2 3 get y -> 1",
    );
    let report = check::<Cell>(&h, Limits::default());
    assert_eq!((report.keys, report.ops), (2, 4));
    assert!(report.is_linearizable());
}

#[test]
fn a_search_out_of_budget_is_undecided_not_a_violation() {
    let mut text = String::new();
    // Many overlapping writes and reads of values written by other overlapping writes.
    for i in 0..40 {
        text.push_str(&format!("0 100 put x {i}\n"));
    }
    text.push_str("101 102 get x -> 999\n");
    let h = history(&text);
    let report = check::<Cell>(
        &h,
        Limits {
            steps_per_key: 1_000,
            steps_per_witness: 1_000,
        },
    );
    assert_eq!(report.undecided, vec!["x".to_string()]);
    assert!(report.is_linearizable());
}

#[test]
fn long_concurrent_histories_from_a_sequential_run_are_linearizable() {
    // A register run sequentially with random values; each operation's interval is then
    // stretched to overlap its neighbours: the true order is still a linearization.
    let mut text = String::new();
    let mut value = None;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..2_000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let t = i * 10;
        if seed.is_multiple_of(3) {
            value = Some(seed % 1000);
            text.push_str(&format!(
                "{} {} put x {}\n",
                t.saturating_sub(15),
                t + 15,
                seed % 1000
            ));
        } else {
            let v = value.map_or("nothing".to_string(), |v: u64| v.to_string());
            text.push_str(&format!(
                "{} {} get x -> {v}\n",
                t.saturating_sub(15),
                t + 15
            ));
        }
    }
    assert!(linearizable(&text));
}

/// A node type for handing client events to the invariant; it never runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Idle;

impl retrace_sim::Node for Idle {
    type Msg = Msg;
    type Timer = u64;
    fn on_start(&mut self, _: &mut retrace_sim::Ctx<'_, Msg>) {}
    fn on_message(&mut self, _: &mut retrace_sim::Ctx<'_, Msg>, _: NodeId, _: Msg) {}
    fn on_timer(&mut self, _: &mut retrace_sim::Ctx<'_, Msg>, _: retrace_sim::TimerId, _: u64) {}
}

/// One step of a random run: client `c` calls (`Some(op)`) or its open call is answered.
#[derive(Clone, Debug)]
enum Step {
    Call(u8, u8, u8), // client, key, what: 0 get, 1-3 put that value, 4-5 add 1
    Answer(u8, u8),   // client, answer kind/value
}

fn step_strategy() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0u8..3, 0u8..2, 0u8..6).prop_map(|(c, k, v)| Step::Call(c, k, v)),
        (0u8..3, 0u8..8).prop_map(|(c, a)| Step::Answer(c, a)),
    ]
}

/// The events of a random run of three clients over two keys, one step each: answers are
/// random (ok, refused, timed out, or a read or sum of 0–3), so some runs are linearizable
/// for a while and then are not.
fn events(steps: &[Step]) -> Vec<Vec<retrace_sim::history::ClientEvent<Msg>>> {
    use retrace_sim::history::ClientEvent;
    let mut open: [Option<(RequestId, bool)>; 3] = [None; 3];
    let mut next = 0u64;
    let mut out = Vec::new();
    for s in steps {
        let e = match *s {
            Step::Call(c, k, v) if open[c as usize].is_none() => {
                let request = RequestId(next);
                next += 1;
                let key = format!("k{k}");
                let (msg, put) = match v {
                    0 => (Msg::Get(key), false),
                    1..=3 => (Msg::Put(key, u64::from(v)), true),
                    _ => (Msg::Add(key, 1), false),
                };
                open[c as usize] = Some((request, put));
                ClientEvent::Invoke {
                    request,
                    node: NodeId(0),
                    msg,
                }
            }
            Step::Answer(c, a) => {
                let Some((request, put)) = open[c as usize].take() else {
                    continue;
                };
                let msg = match (a, put) {
                    (0, _) => Msg::Refused,
                    (1, _) => Msg::TimedOut,
                    (_, true) => Msg::Ok,
                    (2, false) => Msg::Value(None),
                    (a, false) => Msg::Value(Some(u64::from(a % 4))),
                };
                ClientEvent::Complete {
                    request,
                    node: NodeId(0),
                    msg,
                }
            }
            Step::Call(..) => continue,
        };
        out.push(vec![e]);
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
    /// The invariant extends a linearization answer by answer and searches only when it
    /// cannot; it must break at exactly the first step whose history the whole-history
    /// check finds not linearizable.
    #[test]
    fn the_incremental_check_breaks_exactly_where_the_whole_history_stops_being_linearizable(
        steps in proptest::collection::vec(step_strategy(), 1..40)
    ) {
        use retrace_sim::linearizability::Linearizable;
        use retrace_sim::{Invariant, View};
        let mut inv = Linearizable::<Cell>::new("linearizable");
        let mut whole = History::new();
        let nodes: [Option<Idle>; 1] = [Some(Idle)];
        for (i, step) in events(&steps).iter().enumerate() {
            let view = View {
                time_ns: i as u64,
                step_index: i as u64,
                node: NodeId(0),
                nodes: &nodes,
                client: step,
            };
            let incremental = Invariant::<Idle>::check(&mut inv, &view).is_ok();
            whole.observe(i as u64, i as u64, step);
            let report = check::<Cell>(&whole, Limits::default());
            proptest::prop_assert!(report.undecided.is_empty());
            proptest::prop_assert_eq!(incremental, report.is_linearizable(), "at step {}", i);
            if !incremental {
                break;
            }
        }
    }
}
