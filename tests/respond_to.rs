//! Answering a request when it is decided, not in the step it arrived in: a sequencer batches
//! requests and answers each with `respond_to` once a follower has acknowledged the batch.

use retrace_replayer::profile::{Kind, Profiler};
use retrace_replayer::{Causality, CheckpointPolicy, Cursor, Replay, Steps};
use retrace_sim::trace::Record;
use retrace_sim::{
    scenario, Ctx, Invariant, Model, Node, NodeId, NodeSpec, RequestId, SimRng, Simulation,
    TimerId, Trace, TraceSink,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Msg {
    Put(u64),
    Commit(u64),
    Ack(u64),
    Done(u64),
}

/// Node 0 sequences, node 1 follows. Requests wait in `pending` for the next 10 ms tick,
/// which sends them to the follower as batch `n`; its ack decides them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Seq {
    pending: Vec<RequestId>,
    batches: Vec<(u64, Vec<RequestId>)>,
    next_batch: u64,
}

impl Node for Seq {
    type Msg = Msg;
    type Timer = u64;
    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg>) {
        if ctx.id() == NodeId(0) {
            ctx.set_timer(Duration::from_millis(10), 0);
        }
    }
    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg>, _req: Msg) {
        self.pending.extend(ctx.request_ids().first().copied());
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg>, _timer: TimerId, _tag: u64) {
        if !self.pending.is_empty() {
            let n = self.next_batch;
            self.next_batch += 1;
            self.batches.push((n, std::mem::take(&mut self.pending)));
            ctx.send(NodeId(1), Msg::Commit(n));
        }
        ctx.set_timer(Duration::from_millis(10), 0);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Commit(n) => ctx.send(from, Msg::Ack(n)),
            Msg::Ack(n) => {
                let Some(i) = self.batches.iter().position(|(b, _)| *b == n) else {
                    return;
                };
                let (_, requests) = self.batches.remove(i);
                for r in requests {
                    ctx.respond_to(r, Msg::Done(n));
                }
            }
            _ => {}
        }
    }
}

struct SeqModel;

impl Model for SeqModel {
    const NAME: &'static str = "seq";
    const ABOUT: &'static str = "a sequencer answering batches once acknowledged";
    type Node = Seq;
    type Options = ();
    fn nodes(_: &()) -> Vec<NodeSpec> {
        vec![
            NodeSpec::new("sequencer", "sequencer"),
            NodeSpec::new("follower", "follower"),
        ]
    }
    fn build(_: &(), _: NodeId) -> Seq {
        Seq::default()
    }
    fn invariants(_: &()) -> Vec<Box<dyn Invariant<Seq>>> {
        Vec::new()
    }
    fn request(_: &(), rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        Some((NodeId(0), Msg::Put(rng.below(100))))
    }
}

fn run() -> Trace {
    let source =
        "model = \"seq\"\nseed = 9\ntime_limit = \"2s\"\n[network]\nlatency = \"1ms..3ms\"\n\
                  [workload]\nrate = \"200/s\"\nrequests = 100\n";
    let s = scenario::parse::<SeqModel>("seq.toml", source).unwrap_or_else(|e| panic!("{e}"));
    let report = Simulation::<SeqModel>::new(&s, s.seed, TraceSink::Memory).run();
    assert_eq!(report.stats.requests, 100);
    Trace::from_bytes(report.trace.as_ref().unwrap(), "seq").unwrap()
}

#[test]
fn every_request_is_answered_from_the_step_that_decided_it() {
    let trace = run();
    let steps = Steps::new(&trace.events);
    let requests: BTreeSet<RequestId> = trace
        .events
        .iter()
        .filter_map(|e| match e.record {
            Record::External { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    let mut answered = BTreeSet::new();
    for st in &steps.steps {
        let own = trace.events[st.input].record.request_ids().to_vec();
        for e in &trace.events[st.input + 1..st.end] {
            if let Record::Respond { request, .. } = e.record {
                // Answered from an ack's step, which belongs to no request.
                assert!(
                    !own.contains(&request),
                    "{request} answered in its own chain"
                );
                answered.insert(request);
            }
        }
    }
    assert_eq!(answered, requests);
}

#[test]
fn following_a_request_reaches_the_step_that_answered_it() {
    // What `r` in the TUI and `why`'s request membership use: the answering step belongs to
    // the request it answered, though it ran for none.
    let trace = run();
    let steps = Steps::new(&trace.events);
    let c = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    for (s, st) in steps.steps.iter().enumerate() {
        for e in &trace.events[st.input + 1..st.end] {
            if let Record::Respond { request, .. } = e.record {
                assert!(c.request(request).contains(&s), "{request}: step {s}");
                assert!(c.request(request).windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}

#[test]
fn replay_checks_answers_given_later() {
    let mut cursor = Cursor::new(
        Replay::<SeqModel>::new(run()).unwrap(),
        CheckpointPolicy::default(),
    );
    cursor.run_to_end();
    assert!(cursor.divergence().is_none(), "{:?}", cursor.divergence());
}

#[test]
fn the_critical_path_of_a_later_answer_waits_for_the_decision_and_adds_up() {
    let trace = run();
    let steps = Steps::new(&trace.events);
    let c = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    let names: Vec<String> = trace.header.node_names();
    let all = Profiler::new(&trace.events, &steps, &c, &names).all(None);
    assert_eq!(all.len(), 100, "every answered request has a profile");
    for p in &all {
        let sum: u64 = p.path.iter().map(|h| h.ns).sum();
        assert_eq!(sum, p.latency_ns, "r{}: {:?}", p.request, p.path);
        // The sequencer waited for its tick (the batch), then the round trip decided it.
        assert!(
            p.path.iter().any(|h| h.place.kind == Kind::Waiting),
            "r{}: {:?}",
            p.request,
            p.path
        );
        assert!(p.path.iter().any(|h| h.place.kind == Kind::Network));
    }
}

/// Exports `trace` as `format` through the library, with every request.
fn export(trace: &Trace, format: retrace_replayer::export::Format) -> serde_json::Value {
    use retrace_replayer::export::{self, Options};
    let name = |_: &[u8]| String::from("msg");
    let survey = export::survey(&trace.header, trace.events.iter().cloned()).unwrap();
    let options = Options {
        request: None,
        message_name: &name,
        message_text: &name,
        timer_name: &name,
        service_bytes: &name,
        survey: Some(&survey),
        base_time_ns: 0,
        dot_depth: None,
    };
    let mut out = Vec::new();
    export::export(
        &trace.header,
        trace.events.iter().cloned(),
        format,
        &options,
        &mut out,
    )
    .unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn in_otlp_and_jaeger_a_later_answer_is_a_span_of_the_request_it_answered() {
    let trace = run();
    // Where each request arrived, and which step answered it.
    let mut arrived = std::collections::BTreeMap::new();
    let mut answered_at = std::collections::BTreeMap::new();
    let steps = Steps::new(&trace.events);
    for st in &steps.steps {
        let input = &trace.events[st.input];
        if let Record::External { request, .. } = input.record {
            arrived.insert(request.0, input.index);
        }
        for e in &trace.events[st.input + 1..st.end] {
            if let Record::Respond { request, .. } = e.record {
                answered_at.insert(request.0, input.index);
            }
        }
    }
    assert_eq!(answered_at.len(), 100);
    let span_id = |index: u64| format!("{:016x}", index + 1);
    let trace_id = |r: u64| format!("7265747261636500{r:016x}");

    // OTLP: the answering step is a span in its request's trace, under the request's
    // arrival, and says which requests it answered.
    let otlp = export(&trace, retrace_replayer::export::Format::Otlp);
    let spans: Vec<&serde_json::Value> = otlp["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["scopeSpans"][0]["spans"].as_array().unwrap())
        .collect();
    for (&r, &at) in &answered_at {
        let span = spans
            .iter()
            .find(|s| s["traceId"] == trace_id(r) && s["spanId"] == span_id(at))
            .unwrap_or_else(|| panic!("r{r}: no span of its answer in its trace"));
        assert_eq!(span["parentSpanId"], span_id(arrived[&r]), "r{r}");
        let answers = span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "retrace.answers")
            .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(
            answers.split(' ').any(|a| a == format!("r{r}")),
            "{answers}"
        );
    }

    // Jaeger: the request's trace holds the answering span, a child of the arrival.
    let jaeger = export(&trace, retrace_replayer::export::Format::Jaeger);
    for (&r, &at) in &answered_at {
        let t = jaeger["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["traceID"] == trace_id(r))
            .unwrap_or_else(|| panic!("r{r}: no trace"));
        let span = t["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["spanID"] == span_id(at))
            .unwrap_or_else(|| panic!("r{r}: its answer is not in its trace"));
        assert_eq!(span["references"][0]["spanID"], span_id(arrived[&r]));
    }
}
