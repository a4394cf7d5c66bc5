//! The TUI's view of a replay, with the model's types erased: the app drives any model's
//! [`Cursor`] through [`Session`], and sees states and messages as text.

use retrace_replayer::diff::{diff_states, Change};
use retrace_replayer::provenance::{self, Ask, Provenance};
use retrace_replayer::{inevitable, what_if};
use retrace_replayer::{
    CheckpointPolicy, Cursor, Divergence, Predicate, Replay, ReplayViolation, Steps,
};
use retrace_sim::{codec, Intervention, Model, Node, NodeId, Trace};
use std::time::{Duration, Instant};

/// A node's state before and after one step, as text, and what changed.
#[derive(Clone, Debug, Default)]
pub struct StepStates {
    pub before: Option<String>,
    pub after: Option<String>,
    pub changes: Vec<Change>,
}

/// How far a bounded forward scan got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Reached the end of the run (or the divergence).
    Finished,
    /// Met an invariant violation at this step.
    Violation(usize),
    /// Ran out of time before either.
    OutOfTime,
}

/// A replay the TUI can move through, whatever the model.
pub trait Session {
    fn trace(&self) -> &Trace;
    fn steps(&self) -> &Steps;
    /// Steps applied: the state shown is the cluster after steps `0..position()`.
    fn position(&self) -> usize;
    /// Moves to the state after `position` steps (clamped; stops at a divergence).
    fn goto(&mut self, position: usize);
    /// Forward until `pred` holds after a step; false (at the end) if it never does.
    fn run_forward_until(&mut self, pred: &Predicate) -> bool;
    /// Backward until `pred` holds; false (where it started) if it never does.
    fn run_backward_until(&mut self, pred: &Predicate) -> bool;
    /// Whether `pred` holds at the current position.
    fn holds(&self, pred: &Predicate) -> bool;
    /// Moves forward until the end, a divergence or a violation, for at most `budget`.
    fn scan(&mut self, budget: Duration) -> Scan;
    fn divergence(&self) -> Option<&Divergence>;
    /// Violations met so far after step `step`.
    fn violations_at(&self, step: usize) -> Vec<ReplayViolation>;
    /// The first violation met so far.
    fn first_violation(&self) -> Option<ReplayViolation>;
    /// An encoded message, on one line.
    fn describe(&self, payload: &[u8]) -> String;
    /// An encoded timer value (`Node::Timer`), on one line.
    fn describe_timer(&self, tag: &[u8]) -> String;
    /// Bytes to or from a service, decoded where the model knows the protocol.
    fn describe_service(&self, bytes: &[u8]) -> String;
    /// An encoded message, pretty-printed over several lines.
    fn describe_pretty(&self, payload: &[u8]) -> String;
    /// The state of step `step`'s node before and after it. Leaves the cursor after the step.
    fn step_states(&mut self, step: usize) -> StepStates;
    /// Step `step`'s node state after it, in its serde form (for picking a field). Leaves
    /// the cursor after the step.
    fn state_after_json(&mut self, step: usize) -> Option<serde_json::Value>;
    /// An encoded message in its serde form.
    fn message_json(&self, payload: &[u8]) -> Option<serde_json::Value>;
    /// Where a value came from and where it went: one re-execution of the run, apart from
    /// the cursor.
    fn provenance(&self, ask: &Ask) -> Result<Provenance, String>;
    /// When did the trace's failure become inevitable: forks of the run at moments before
    /// its first violation (`retrace_replayer::inevitable`), apart from the cursor.
    fn inevitable(&self, settings: inevitable::Settings) -> Result<inevitable::Curve, String>;
    /// What-if: walks the run to the end of record `at`'s step (apart from the cursor),
    /// keeps that moment for [`Session::what_if_branch`], and says what is pending there.
    fn what_if_moment(&mut self, at: u64) -> Result<MomentView, String>;
    /// The branch `changes` make at the moment last set up, its future drawn from `seed`:
    /// run to the violation or the scenario's end, and opened as a session of its own.
    fn what_if_branch(&mut self, seed: u64, changes: &[Intervention]) -> Result<BranchRun, String>;
}

/// A message in flight at a what-if moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMessage {
    /// Its `Send` record: how a change names it.
    pub send: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub sent_ns: u64,
    /// Copies on their way (a duplicated message has two).
    pub copies: u32,
    pub text: String,
}

/// What a what-if moment holds, as the panel shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MomentView {
    /// The record picked: a branch keeps the trace up to the end of its step.
    pub at: u64,
    /// On the trace's time axis.
    pub time_ns: u64,
    pub messages: Vec<PendingMessage>,
    /// Whether each node is up at the moment.
    pub up: Vec<bool>,
    /// Messages in flight whose content the trace does not hold: lost to a branch.
    pub unknown_in_flight: u64,
    /// The seed a branch gets unless the user picks another.
    pub seed: u64,
}

/// A what-if branch, run: its session and how it was made.
pub struct BranchRun {
    pub session: Box<dyn Session>,
    pub branch: what_if::Branch,
}

/// [`Session`] over a model's cursor.
pub struct ModelSession<M: Model> {
    cursor: Cursor<M>,
    /// The what-if moment last set up.
    moment: Option<what_if::Moment<M>>,
}

impl<M: Model> ModelSession<M> {
    pub fn new(replay: Replay<M>) -> Self {
        ModelSession {
            cursor: Cursor::new(replay, CheckpointPolicy::default()),
            moment: None,
        }
    }

    pub fn cursor(&self) -> &Cursor<M> {
        &self.cursor
    }
}

fn pretty<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:#?}")
}

impl<M: Model> Session for ModelSession<M> {
    fn trace(&self) -> &Trace {
        &self.cursor.replay().trace
    }

    fn steps(&self) -> &Steps {
        &self.cursor.replay().steps
    }

    fn position(&self) -> usize {
        self.cursor.position()
    }

    fn goto(&mut self, position: usize) {
        self.cursor.goto(position);
    }

    fn run_forward_until(&mut self, pred: &Predicate) -> bool {
        self.cursor.run_forward_until(pred)
    }

    fn run_backward_until(&mut self, pred: &Predicate) -> bool {
        self.cursor.run_backward_until(pred)
    }

    fn holds(&self, pred: &Predicate) -> bool {
        self.cursor.holds(pred)
    }

    fn scan(&mut self, budget: Duration) -> Scan {
        let started = Instant::now();
        // Check the clock every so many steps: a step costs about a microsecond.
        let mut since_check = 0u32;
        loop {
            let k = self.cursor.position();
            if !self.cursor.forward() {
                return Scan::Finished;
            }
            if !self.cursor.violations_at(k).is_empty() {
                return Scan::Violation(k);
            }
            since_check += 1;
            if since_check >= 1024 {
                since_check = 0;
                if started.elapsed() >= budget {
                    return Scan::OutOfTime;
                }
            }
        }
    }

    fn divergence(&self) -> Option<&Divergence> {
        self.cursor.divergence()
    }

    fn violations_at(&self, step: usize) -> Vec<ReplayViolation> {
        self.cursor.violations_at(step).to_vec()
    }

    fn first_violation(&self) -> Option<ReplayViolation> {
        self.cursor.violations().next().cloned()
    }

    fn describe(&self, payload: &[u8]) -> String {
        match codec::decode::<<M::Node as Node>::Msg>(payload) {
            Ok(m) => format!("{m:?}"),
            Err(_) => format!("<{} bytes>", payload.len()),
        }
    }

    fn describe_timer(&self, tag: &[u8]) -> String {
        match codec::decode::<<M::Node as Node>::Timer>(tag) {
            Ok(t) => format!("{t:?}"),
            Err(_) => retrace_replayer::describe::timer_without_model(tag),
        }
    }

    fn describe_service(&self, bytes: &[u8]) -> String {
        M::show_service_bytes(bytes).unwrap_or_else(|| retrace_sim::http::show_bytes(bytes, 120))
    }

    fn describe_pretty(&self, payload: &[u8]) -> String {
        match codec::decode::<<M::Node as Node>::Msg>(payload) {
            Ok(m) => pretty(&m),
            Err(_) => format!(
                "<{} bytes that do not decode as this model's message>",
                payload.len()
            ),
        }
    }

    fn step_states(&mut self, step: usize) -> StepStates {
        let Some(node) = self.steps().steps.get(step).map(|s| s.node.index()) else {
            return StepStates::default();
        };
        // Stepping forward from just before the step is one step of work; anything else
        // goes through the cursor's checkpoints.
        if self.cursor.position() != step {
            self.cursor.goto(step);
        }
        let before = self.cursor.nodes().get(node).cloned().flatten();
        self.cursor.goto(step + 1);
        let after = self.cursor.nodes().get(node).cloned().flatten();
        StepStates {
            changes: diff_states(before.as_ref(), after.as_ref()),
            before: before.as_ref().map(pretty),
            after: after.as_ref().map(pretty),
        }
    }

    fn state_after_json(&mut self, step: usize) -> Option<serde_json::Value> {
        let node = self.steps().steps.get(step)?.node.index();
        if self.cursor.position() != step + 1 {
            self.cursor.goto(step + 1);
        }
        self.cursor
            .nodes()
            .get(node)?
            .as_ref()
            .map(provenance::state_json)
    }

    fn message_json(&self, payload: &[u8]) -> Option<serde_json::Value> {
        provenance::message_json::<M>(payload)
    }

    fn provenance(&self, ask: &Ask) -> Result<Provenance, String> {
        provenance::ask(self.cursor.replay(), ask).map_err(|e| e.to_string())
    }

    fn inevitable(&self, settings: inevitable::Settings) -> Result<inevitable::Curve, String> {
        let replay = self.cursor.replay();
        let target = inevitable::find_target(replay)
            .map_err(|e| e.to_string())?
            .ok_or("no invariant breaks in this trace: there is no failure to trace back")?;
        inevitable::curve(replay, &target, settings, &mut |_, _| {}).map_err(|e| e.to_string())
    }

    fn what_if_moment(&mut self, at: u64) -> Result<MomentView, String> {
        let moment = what_if::Moment::new(self.cursor.replay(), at).map_err(|e| e.to_string())?;
        let point = &moment.point;
        let mut messages: Vec<PendingMessage> = Vec::new();
        for m in &point.in_flight {
            match messages.last_mut() {
                Some(last) if last.send == m.send => last.copies += 1,
                _ => messages.push(PendingMessage {
                    send: m.send,
                    from: m.from,
                    to: m.to,
                    sent_ns: m.sent_ns,
                    copies: 1,
                    text: format!("{:?}", m.msg),
                }),
            }
        }
        let view = MomentView {
            at,
            time_ns: point.time_ns,
            messages,
            up: point
                .nodes
                .iter()
                .map(|n| matches!(n.state, retrace_sim::snapshot::NodeState::Up(_)))
                .collect(),
            unknown_in_flight: point.unknown_in_flight,
            seed: moment.default_seed(),
        };
        self.moment = Some(moment);
        Ok(view)
    }

    fn what_if_branch(&mut self, seed: u64, changes: &[Intervention]) -> Result<BranchRun, String> {
        let moment = self
            .moment
            .as_ref()
            .ok_or("no what-if moment is set up (press f on an event)")?;
        let replay = self.cursor.replay();
        let branch = moment
            .branch(replay, seed, changes)
            .map_err(|e| e.to_string())?;
        let trace = Trace::from_bytes(&branch.bytes, "the branch").map_err(|e| e.to_string())?;
        let replay = Replay::<M>::new(trace).map_err(|e| e.to_string())?;
        Ok(BranchRun {
            session: Box::new(ModelSession::new(replay)),
            branch,
        })
    }
}

/// A session as a [`retrace_replayer::Describe`]: messages and timers as its model reads them.
pub struct Described<'a>(pub &'a dyn Session);

impl retrace_replayer::Describe for Described<'_> {
    fn message(&self, payload: &[u8]) -> String {
        self.0.describe(payload)
    }
    fn timer(&self, tag: &[u8]) -> String {
        self.0.describe_timer(tag)
    }
    fn service_bytes(&self, bytes: &[u8]) -> String {
        self.0.describe_service(bytes)
    }
}
