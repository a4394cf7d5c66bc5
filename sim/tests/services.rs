//! The simulator's services through the public API: a one-node model whose node calls an
//! echo service under the scenario's faults; what the node hears, as the trace records it.

use retrace_sim::trace::Record;
use retrace_sim::{
    scenario, ConnId, Ctx, Invariant, Model, Node, NodeId, NodeSpec, Service, ServiceEvent,
    Simulation, TimerId, Trace, TraceSink,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Connects at start, writes three times; closes right after the writes when
/// `close_at_once`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Caller {
    close_at_once: bool,
}

impl Node for Caller {
    type Msg = u8;
    type Timer = u8;
    fn on_start(&mut self, ctx: &mut Ctx<'_, u8, u8>) {
        let conn = ctx.connect("echo", Duration::from_millis(20));
        for n in [b"1", b"2", b"3"] {
            ctx.write(conn, n.to_vec());
        }
        if self.close_at_once {
            ctx.close(conn);
        }
    }
    fn on_message(&mut self, _: &mut Ctx<'_, u8, u8>, _: NodeId, _: u8) {}
    fn on_timer(&mut self, _: &mut Ctx<'_, u8, u8>, _: TimerId, _: u8) {}
    fn on_service(&mut self, ctx: &mut Ctx<'_, u8, u8>, conn: ConnId, event: ServiceEvent) {
        ctx.annotate(format!("{conn} {}", event.kind()));
    }
}

struct Echo;

impl Service for Echo {
    fn on_data(&mut self, _: ConnId, bytes: &[u8]) -> Vec<u8> {
        bytes.to_vec()
    }
}

struct EchoModel;

impl Model for EchoModel {
    const NAME: &'static str = "echo";
    const ABOUT: &'static str = "a node that calls an echo service";
    type Node = Caller;
    type Options = bool;
    fn nodes(_: &bool) -> Vec<NodeSpec> {
        vec![NodeSpec::new("caller", "caller")]
    }
    fn build(close_at_once: &bool, _: NodeId) -> Caller {
        Caller {
            close_at_once: *close_at_once,
        }
    }
    fn invariants(_: &bool) -> Vec<Box<dyn Invariant<Caller>>> {
        Vec::new()
    }
    fn service(_: &bool, name: &str) -> Option<Box<dyn Service>> {
        (name == "echo").then(|| Box::new(Echo) as Box<dyn Service>)
    }
}

/// What the node heard, in order: each service event's kind (and a data event's bytes).
fn heard(close_at_once: bool, faults: &str) -> Vec<String> {
    let source = format!(
        "model = \"echo\"\nmodel_options = {close_at_once}\ntime_limit = \"1s\"\n\
         [services.echo]\nlatency = \"1ms..9ms\"\n{faults}\n"
    );
    let s = scenario::parse::<EchoModel>("echo.toml", &source).unwrap();
    let report = Simulation::<EchoModel>::new(&s, 1, TraceSink::Memory).run();
    let trace = Trace::from_bytes(&report.trace.unwrap(), "echo").unwrap();
    trace
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::ServiceIn {
                event: ServiceEvent::Data { bytes },
                ..
            } => Some(format!("data {}", String::from_utf8_lossy(bytes))),
            Record::ServiceIn { event, .. } => Some(event.kind().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_answers_in_order_and_a_reset_a_hang_or_a_crash_is_news_to_the_node() {
    // Each write draws its own latency; a connection keeps their order all the same.
    assert_eq!(
        heard(false, ""),
        ["connected", "data 1", "data 2", "data 3"]
    );
    assert_eq!(heard(false, "reset = 1.0"), ["closed"]);
    assert_eq!(heard(false, "hang = 1.0"), ["connected", "timed out"]);
    assert_eq!(heard(false, "crash = 1.0"), ["closed"]);
}

#[test]
fn a_connection_the_node_closed_hears_nothing_more_not_even_its_reset() {
    assert_eq!(heard(true, ""), Vec::<String>::new());
    assert_eq!(heard(true, "reset = 1.0"), Vec::<String>::new());
    assert_eq!(heard(true, "hang = 1.0"), Vec::<String>::new());
}

#[test]
fn connecting_to_a_service_the_scenario_does_not_name_is_refused() {
    let source = "model = \"echo\"\ntime_limit = \"1s\"\n";
    let s = scenario::parse::<EchoModel>("echo.toml", source).unwrap();
    let report = Simulation::<EchoModel>::new(&s, 1, TraceSink::Memory).run();
    let trace = Trace::from_bytes(&report.trace.unwrap(), "echo").unwrap();
    let reasons: Vec<&str> = trace
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::ServiceIn {
                event: ServiceEvent::Closed { reason },
                ..
            } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["no service named `echo` in the scenario"]);
}
