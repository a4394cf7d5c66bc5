//! `retrace verify`: re-execute each node from its own log, in this process, and check that
//! it makes exactly the recorded outputs. The log supplies every input — deliveries, timer
//! firings, external requests, clock readings, the random seed, the storage found at boot —
//! and the node's code regenerates the outputs, which must match record for record.

use crate::log::{incomplete_marker, read_log, Log, LogRecord};
use crate::manifest::Manifest;
use retrace_sim::{
    codec, Ctx, Env, Message, Model, Node, NodeId, RequestId, Scenario, SimRng, StepRng, Storage,
    Time, TimerId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The first place a node did something other than what its log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub node: String,
    pub log: String,
    /// Index of the record in the log (0 = the first record after the header).
    pub record: usize,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}), record {}:\n  expected (log): {}\n  actual (code):  {}",
            self.node, self.log, self.record, self.expected, self.actual
        )
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub logs: usize,
    pub events: u64,
    pub outputs: u64,
    pub mismatches: Vec<Mismatch>,
    /// Logs that could not be checked (missing, unreadable, corrupt), by name: the run
    /// is not verified while any is listed.
    pub unreadable: Vec<String>,
    /// Logs cut where a crash or a full disk cuts them, verified up to their last
    /// complete step: where, why, and how much was left out.
    pub cut: Vec<String>,
}

struct ReplayEnv<'a, M> {
    id: NodeId,
    peers: &'a [NodeId],
    node_count: usize,
    records: &'a [LogRecord],
    /// Next record to compare.
    cursor: usize,
    request_ids: Vec<RequestId>,
    rng: &'a mut StepRng,
    storage: &'a mut Storage,
    active_timers: &'a mut BTreeSet<u64>,
    mismatch: Option<(usize, String, String)>,
    outputs: u64,
    _msg: std::marker::PhantomData<M>,
}

impl<M: Message> ReplayEnv<'_, M> {
    /// Takes the next recorded output if `accept` says it is the one the code made.
    fn expect(
        &mut self,
        actual: String,
        accept: impl FnOnce(&LogRecord) -> bool,
    ) -> Option<LogRecord> {
        if self.mismatch.is_some() {
            return None;
        }
        // Log lines are not checked: logging added to node code still verifies old logs.
        while matches!(self.records.get(self.cursor), Some(LogRecord::Log { .. })) {
            self.cursor += 1;
        }
        let next = self
            .records
            .get(self.cursor)
            .filter(|r| !r.is_input() && !matches!(r, LogRecord::Stop { .. }));
        match next {
            Some(r) if accept(r) => {
                self.cursor += 1;
                self.outputs += 1;
                Some(r.clone())
            }
            other => {
                let expected =
                    other.map_or_else(|| "no further output in this step".to_string(), show);
                self.mismatch = Some((self.cursor, expected, actual));
                None
            }
        }
    }
}

/// A recorded output in the same words the code's actual output is described in.
fn show(r: &LogRecord) -> String {
    match r {
        LogRecord::Send { to, digest, .. } => format!("Send {{ to: {to}, digest: {digest:016x} }}"),
        LogRecord::Respond { request, digest } => {
            format!("Respond {{ request: {request}, digest: {digest:016x} }}")
        }
        other => format!("{other:?}"),
    }
}

fn encoded<M: Message>(msg: &M) -> Vec<u8> {
    codec::encode(msg).unwrap_or_default()
}

impl<M: Message> Env<M> for ReplayEnv<'_, M> {
    fn id(&self) -> NodeId {
        self.id
    }
    fn peers(&self) -> &[NodeId] {
        self.peers
    }
    fn node_count(&self) -> usize {
        self.node_count
    }
    fn now(&mut self) -> Time {
        match self.expect("the node read the clock".into(), |r| {
            matches!(r, LogRecord::ClockRead { .. })
        }) {
            Some(LogRecord::ClockRead { value_ns }) => Time(value_ns),
            _ => Time(0),
        }
    }
    fn send(&mut self, to: NodeId, msg: M) {
        let digest = codec::digest(&encoded(&msg));
        let actual = format!("Send {{ to: {}, digest: {digest:016x} }} of {msg:?}", to.0);
        self.expect(
            actual,
            |r| matches!(r, LogRecord::Send { to: t, digest: d, .. } if *t == to.0 && *d == digest),
        );
    }
    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        let after_ns = retrace_sim::duration_ns(after);
        let actual = format!("TimerSet {{ tag: {tag}, after_ns: {after_ns} }}");
        match self.expect(actual, |r| matches!(r, LogRecord::TimerSet { tag: t, after_ns: a, .. } if *t == tag && *a == after_ns)) {
            Some(LogRecord::TimerSet { timer, .. }) => {
                self.active_timers.insert(timer);
                TimerId(timer)
            }
            _ => TimerId(u64::MAX),
        }
    }
    fn cancel_timer(&mut self, timer: TimerId) -> bool {
        if !self.active_timers.remove(&timer.0) {
            return false;
        }
        let actual = format!("TimerCancel {{ timer: {} }}", timer.0);
        self.expect(
            actual,
            |r| matches!(r, LogRecord::TimerCancel { timer: t } if *t == timer.0),
        )
        .is_some()
    }
    fn rng(&mut self) -> &mut SimRng {
        self.rng.rng()
    }
    fn storage(&mut self) -> &mut Storage {
        self.storage
    }
    fn annotate(&mut self, text: String) {
        let actual = format!("Annotate {{ text: {text:?} }}");
        self.expect(
            actual,
            |r| matches!(r, LogRecord::Annotate { text: t } if *t == text),
        );
    }
    fn respond(&mut self, msg: M) {
        let Some(&request) = self.request_ids.first() else {
            return self.annotate(format!("respond outside of any request ignored: {msg:?}"));
        };
        let digest = codec::digest(&encoded(&msg));
        let actual = format!(
            "Respond {{ request: {}, digest: {digest:016x} }} of {msg:?}",
            request.0
        );
        self.expect(actual, |r| matches!(r, LogRecord::Respond { request: q, digest: d } if *q == request.0 && *d == digest));
    }
    fn request_ids(&self) -> &[RequestId] {
        &self.request_ids
    }
    fn detach(&mut self) {
        self.request_ids.clear();
    }
    fn busy(&mut self, _duration: Duration) {
        // Recorded handlers report measured time (in the log's input records), not this.
    }
}

/// Re-executes one log. Returns the number of events and outputs checked, or the mismatch.
pub fn verify_log<M: Model>(
    scenario: &Scenario<M::Options>,
    log: &Log,
    log_name: &str,
) -> Result<(u64, u64), Mismatch> {
    let id = NodeId(log.header.node);
    let node_name = log.header.name.clone();
    let mismatch = |record: usize, expected: String, actual: String| Mismatch {
        node: node_name.clone(),
        log: log_name.to_string(),
        record,
        expected,
        actual,
    };
    let n = scenario.nodes.len();
    if id.index() >= n {
        return Err(mismatch(
            0,
            format!("a node of a {n}-node cluster"),
            format!("node id {}", id.0),
        ));
    }
    let peers: Vec<NodeId> = (0..n as u32).map(NodeId).filter(|p| *p != id).collect();
    let records = &log.records;
    let mut node: Option<M::Node> = None;
    let mut rng = StepRng::new(0);
    let mut storage = Storage::default();
    let mut active_timers = BTreeSet::new();
    let mut events = 0u64;
    let mut outputs = 0u64;
    let mut i = 0usize;
    while i < records.len() {
        let record = &records[i];
        if !record.is_input() {
            match record {
                LogRecord::Stop { .. } | LogRecord::Incomplete { .. } => {
                    i += 1;
                    continue;
                }
                other => {
                    return Err(mismatch(
                        i,
                        show(other),
                        "no output: the step had already ended".into(),
                    ))
                }
            }
        }
        let request_ids: Vec<RequestId> = match record {
            LogRecord::Deliver { request_ids, .. } | LogRecord::Timer { request_ids, .. } => {
                request_ids.iter().map(|&r| RequestId(r)).collect()
            }
            LogRecord::External { request, .. } => vec![RequestId(*request)],
            _ => Vec::new(),
        };
        if let LogRecord::Start {
            seed,
            storage: found,
            ..
        } = record
        {
            rng = StepRng::new(*seed);
            storage = Storage::from_synced(found.iter().cloned().collect::<BTreeMap<_, _>>());
            active_timers.clear();
            node = Some(M::build(&scenario.options, id));
        }
        if let LogRecord::Timer { timer, .. } = record {
            // A fired timer is no longer active: cancelling it now is a no-op, as in the runtime.
            active_timers.remove(timer);
        }
        let Some(state) = node.as_mut() else {
            return Err(mismatch(
                i,
                format!("{record:?}"),
                "an input before the node started".into(),
            ));
        };
        rng.begin_step(&request_ids);
        let mut env = ReplayEnv::<<M::Node as Node>::Msg> {
            id,
            peers: &peers,
            node_count: n,
            records,
            cursor: i + 1,
            request_ids,
            rng: &mut rng,
            storage: &mut storage,
            active_timers: &mut active_timers,
            mismatch: None,
            outputs: 0,
            _msg: std::marker::PhantomData,
        };
        let decode = |payload: &[u8]| codec::decode::<<M::Node as Node>::Msg>(payload);
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
                let ctx = &mut Ctx::new(&mut env);
                match record {
                    LogRecord::Start { .. } => state.on_start(ctx),
                    LogRecord::Deliver {
                        id: msg_id,
                        payload,
                        ..
                    } => {
                        let msg =
                            decode(payload).map_err(|e| format!("payload does not decode: {e}"))?;
                        state.on_message(ctx, NodeId(msg_id.node), msg)
                    }
                    LogRecord::Timer { timer, tag, .. } => {
                        state.on_timer(ctx, TimerId(*timer), *tag)
                    }
                    LogRecord::External { payload, .. } => {
                        let msg =
                            decode(payload).map_err(|e| format!("payload does not decode: {e}"))?;
                        state.on_request(ctx, msg)
                    }
                    _ => {}
                }
                Ok(())
            }));
        match run {
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                return Err(mismatch(
                    i,
                    "the handler returns".into(),
                    format!("the node panicked: {}", text.unwrap_or_default()),
                ));
            }
            Ok(Err(e)) => return Err(mismatch(i, format!("{record:?}"), e)),
            Ok(Ok(())) => {}
        }
        if let Some((at, expected, actual)) = env.mismatch.take() {
            return Err(mismatch(at, expected, actual));
        }
        // Every recorded output of the step must have been made.
        let end = env.cursor;
        if let Some(extra) = records.get(end).filter(|r| {
            !r.is_input() && !matches!(r, LogRecord::Stop { .. } | LogRecord::Incomplete { .. })
        }) {
            return Err(mismatch(
                end,
                show(extra),
                "the step ended without this output".into(),
            ));
        }
        outputs += env.outputs;
        events += 1;
        i = end;
    }
    Ok((events, outputs))
}

/// Verifies every log of the run in `dir`.
pub fn verify_dir<M: Model>(
    dir: &Path,
    scenario: &Scenario<M::Options>,
) -> Result<VerifyReport, String> {
    let manifest = Manifest::read(dir)?;
    let mut report = VerifyReport::default();
    for (node, mn) in manifest.nodes.iter().enumerate() {
        for inc in &mn.incarnations {
            if inc.log.is_empty() {
                continue;
            }
            let path = dir.join(&inc.log);
            let log = match read_log(&path) {
                Ok(log) => log,
                // A life that started on a full disk has a log with no room for its header.
                Err(e) if inc.recording_stopped.is_some() || incomplete_marker(&path).exists() => {
                    report.cut.push(format!(
                        "{}: {} recorded nothing ({e}): its recording had stopped",
                        mn.name, inc.log
                    ));
                    continue;
                }
                Err(e) => {
                    report.unreadable.push(format!("{}: {e}", mn.name));
                    continue;
                }
            };
            report.logs += 1;
            if let Some(cut) = &log.cut {
                let line = format!("{}: {} {cut}", mn.name, inc.log);
                if cut.is_expected() || inc.recording_stopped.is_some() {
                    report.cut.push(line);
                } else {
                    report
                        .unreadable
                        .push(format!("{line} (corrupt: bytes after it are lost)"));
                }
            }
            let expected_node = NodeId(node as u32);
            if NodeId(log.header.node) != expected_node {
                report.unreadable.push(format!(
                    "{}: {} is node {}'s log, not node {}'s",
                    mn.name, inc.log, log.header.node, expected_node.0
                ));
                continue;
            }
            match verify_log::<M>(scenario, &log, &inc.log) {
                Ok((events, outputs)) => {
                    report.events += events;
                    report.outputs += outputs;
                }
                Err(m) => report.mismatches.push(m),
            }
        }
    }
    Ok(report)
}
