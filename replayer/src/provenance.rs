//! Where a value came from and where it went, across machines (Pernosco's question, asked of
//! a whole cluster).
//!
//! One forward re-execution of the trace looks for the value in three places at every step:
//! the state of the step's node after it (before it is the state after the node's previous
//! step), the message the step handled, and every message the step sent (the trace keeps
//! only digests of sends; re-execution has the messages themselves). The steps where the
//! value is in any of them are kept as [`Touch`]es; everything else is forgotten, so memory
//! grows with how often the value is touched, not with the trace.
//!
//! **How values are matched.** States and messages are compared through their serde form
//! (JSON, as the state diffs are), and a place holds the value when the JSON there equals it.
//! A value that says little by itself — `true`, `null`, a number below 65,536, a string of
//! fewer than four characters — matches only in a field of the same name (an `epoch: 3`
//! matches another `epoch: 3`, not every 3). For an object or a list, its most distinctive
//! part is followed: its longest string of four or more characters, else its largest number
//! of 65,536 or more, else the whole value.
//!
//! From the touches:
//! - **back** (from the place asked about to where the value entered the system): the step
//!   that put it there; if the node already had it elsewhere, where it got it; if it came in
//!   a message, the step that sent it and how *that* node had it; and so on back to an
//!   external request (or a step that made it: one whose state and input did not hold it).
//! - **forward** (from that origin, in trace order): each node it reached and at what path,
//!   each message that carried it and its fate, the answer to the request that brought it
//!   (with who held the value at that moment), crashes of nodes holding it.
//! - **at the end**: who holds it, and where a copy was expected but never arrived — the
//!   other nodes of the role that took the value from another node (for the lost write:
//!   replica-0 took it from a client, so the other replicas), with why (no message carrying
//!   it was sent to them, or one was dropped).

use crate::causality::Causality;
use crate::engine::Replay;
use crate::steps::Steps;
use retrace_sim::codec;
use retrace_sim::trace::Record;
use retrace_sim::{Model, Node, NodeId, RequestId};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Places recorded per state or message: a value copied into hundreds of places is
/// reported by its first ones.
pub const PATHS_MAX: usize = 16;
/// Steps that touch the value kept at most; a value touched by more is reported up to there.
pub const TOUCHES_MAX: usize = 200_000;
/// Links reported forward at most.
pub const FORWARD_MAX: usize = 500;

/// What to follow: a value, and where the user saw it (if in a state or a message).
#[derive(Clone, Debug)]
pub struct Query {
    pub needle: Needle,
    pub anchor: Option<Anchor>,
}

/// A place in the run: after step `step`, in its node's state at `path`, or in the message
/// the step handled (`in_message`).
#[derive(Clone, Debug)]
pub struct Anchor {
    pub step: usize,
    pub path: String,
    pub in_message: bool,
}

/// The value looked for, and the field name it must sit in when it says little by itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Needle {
    pub value: Value,
    pub field: Option<String>,
    /// When the value asked about was an object or a list: the part of it followed.
    pub part: Option<String>,
}

impl Needle {
    /// The value at `path` in `root`, made into a needle (see the module's matching rules).
    pub fn at(root: &Value, path: &str) -> Option<Needle> {
        let value = lookup(root, path)?;
        Some(Needle::from_value(value.clone(), last_field(path)))
    }

    /// A needle for `value` found in field `field`.
    pub fn from_value(value: Value, field: Option<String>) -> Needle {
        if value.is_object() || value.is_array() {
            if let Some((part, leaf)) = distinctive_leaf(&value) {
                return Needle {
                    field: weak(&leaf).then(|| last_field(&part)).flatten(),
                    value: leaf,
                    part: Some(part),
                };
            }
        }
        let field = if weak(&value) { field } else { None };
        Needle {
            value,
            field,
            part: None,
        }
    }

    /// A value typed by a user: JSON if it parses, else a string.
    pub fn parse(text: &str) -> Needle {
        let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
        Needle::from_value(value, None)
    }

    /// The value as JSON text.
    pub fn text(&self) -> String {
        self.value.to_string()
    }

    /// Every path in `root` that holds the value (at most [`PATHS_MAX`]).
    pub fn find(&self, root: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(root, &mut String::new(), None, &mut out);
        out
    }

    fn walk(&self, v: &Value, path: &mut String, field: Option<&str>, out: &mut Vec<String>) {
        if out.len() >= PATHS_MAX {
            return;
        }
        if *v == self.value && (self.field.is_none() || self.field.as_deref() == field) {
            out.push(path.clone());
            return;
        }
        let len = path.len();
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push('.');
                    path.push_str(k);
                    self.walk(child, path, Some(k), out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    self.walk(child, path, field, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// A cheap first test on the serialized text: whether the value's text is in it at all.
    fn maybe_in(&self, json: &str) -> bool {
        match &self.value {
            Value::String(_) | Value::Number(_) => json.contains(&self.text()),
            _ => true,
        }
    }
}

/// Whether a value says too little by itself to be matched without its field name.
fn weak(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) => true,
        Value::Number(n) => n.as_f64().is_some_and(|x| x.abs() < 65_536.0),
        Value::String(s) => s.chars().count() < 4,
        _ => false,
    }
}

/// The longest string leaf of four or more characters, else the largest number of 65,536 or
/// more: (its path relative to `v`, the leaf).
fn distinctive_leaf(v: &Value) -> Option<(String, Value)> {
    let leaves = leaves(v, usize::MAX);
    let string = leaves
        .iter()
        .filter_map(|(p, l)| l.as_str().map(|s| (s.chars().count(), p, l)))
        .filter(|(n, _, _)| *n >= 4)
        .max_by_key(|(n, _, _)| *n);
    if let Some((_, p, l)) = string {
        return Some((p.clone(), l.clone()));
    }
    leaves
        .iter()
        .filter_map(|(p, l)| l.as_f64().map(|x| (x.abs(), p, l)))
        .filter(|(x, _, _)| *x >= 65_536.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p, l)| (p.clone(), l.clone()))
}

/// The last field name of a path (`.a.b[3]` -> `b`).
fn last_field(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches(|c: char| c == ']' || c.is_ascii_digit() || c == '[');
    trimmed
        .rsplit('.')
        .next()
        .filter(|f| !f.is_empty())
        .map(str::to_string)
}

/// The value at a path of the form `.a.b[3]` (the state diff's form); `""` or `.` is the root.
pub fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut v = root;
    let mut rest = path.trim();
    if rest == "." {
        return Some(root);
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            v = v.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let i: usize = r[..end].trim().parse().ok()?;
            v = v.get(i)?;
            rest = &r[end + 1..];
        } else {
            // A first field without its dot.
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            v = v.get(&rest[..end])?;
            rest = &rest[end..];
        }
    }
    Some(v)
}

/// Every leaf of a value with its path (at most `max`), for pickers.
pub fn leaves(root: &Value, max: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    fn go(v: &Value, path: &mut String, max: usize, out: &mut Vec<(String, Value)>) {
        if out.len() >= max {
            return;
        }
        let len = path.len();
        match v {
            Value::Object(map) => {
                for (k, c) in map {
                    path.push('.');
                    path.push_str(k);
                    go(c, path, max, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, c) in items.iter().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    go(c, path, max, out);
                    path.truncate(len);
                }
            }
            leaf => out.push((path.clone(), leaf.clone())),
        }
    }
    go(root, &mut String::new(), max, &mut out);
    out
}

/// A step where the value was somewhere.
#[derive(Clone, Debug, Default)]
struct Touch {
    step: usize,
    node: NodeId,
    /// Paths in the node's state before the step and after it.
    before: Vec<String>,
    after: Vec<String>,
    /// Paths in the message the step handled.
    input: Vec<String>,
    /// Sends that carried it: (send record index, to, paths in the message).
    sends: Vec<(usize, NodeId, Vec<String>)>,
    /// The request an external input brought.
    request: Option<RequestId>,
}

/// What happened to the value at one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// An external request brought it in (at `path` of its message).
    Request { request: RequestId, path: String },
    /// The step put it in its node's state at `path`.
    Set { path: String },
    /// The node already had it at `from`; this step put it at `to`.
    Moved { from: String, to: String },
    /// It arrived in the message the step handled, at `path`, sent by `from` in the step
    /// whose input is `sent_at`.
    Received {
        path: String,
        from: NodeId,
        sent_at: usize,
    },
    /// The step sent it to `to` (the `Send` record `send`), at `path` of the message.
    Sent {
        send: usize,
        to: NodeId,
        path: String,
        fate: Fate,
    },
    /// It appeared here without being in the node's state or the step's input: computed.
    Made { path: String },
    /// It was in the node's state after a restart: read back from its durable storage.
    Restored { path: String },
    /// The request that brought it was answered; `holders` had it in what led to the
    /// answer (after their last step that happens before it).
    Answered {
        request: RequestId,
        holders: Vec<NodeId>,
    },
    /// The node crashed holding it (and lost it, unless storage kept it).
    Crashed,
    /// The step removed it from the node's state (overwritten or deleted).
    Removed { path: String },
}

/// What became of a message that carried the value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    Delivered {
        event: usize,
    },
    Dropped {
        event: usize,
        reason: String,
    },
    /// Still in flight when the trace ends.
    InFlight,
}

/// One link of the value's story: the step (and its input record), the node, what happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    pub step: usize,
    pub event: usize,
    pub node: NodeId,
    pub what: What,
}

/// A node that holds the value when the trace ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Holder {
    pub node: NodeId,
    pub paths: Vec<String>,
}

/// A node where a copy was expected but never arrived, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Missing {
    pub node: NodeId,
    pub why: String,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Provenance {
    pub needle: Needle,
    /// From the place asked about back to where the value entered (newest first); empty
    /// when the query had no place.
    pub back: Vec<Link>,
    /// From where it entered, in trace order (at most [`FORWARD_MAX`]).
    pub forward: Vec<Link>,
    /// Forward links left out past [`FORWARD_MAX`].
    pub forward_left_out: usize,
    pub holders: Vec<Holder>,
    /// The role whose nodes were expected to get a copy, and those that did not.
    pub expected_role: Option<String>,
    pub missing: Vec<Missing>,
    /// Steps re-executed (the search stops at a divergence).
    pub steps_searched: usize,
    /// The touches stopped at [`TOUCHES_MAX`]: what comes after is not reported.
    pub truncated: bool,
}

/// Why a provenance query could not be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenanceError(pub String);

impl std::fmt::Display for ProvenanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProvenanceError {}

/// The JSON of a node's state.
pub fn state_json<N: Serialize>(node: &N) -> Value {
    serde_json::to_value(node).unwrap_or(Value::Null)
}

/// The JSON of an encoded message of model `M`, if it decodes.
pub fn message_json<M: Model>(payload: &[u8]) -> Option<Value> {
    let msg = codec::decode::<<M::Node as Node>::Msg>(payload).ok()?;
    serde_json::to_value(&msg).ok()
}

/// The needle an anchor points at: the value at its path after its step (re-executing up
/// to there), or in the step's message.
pub fn needle_at<M: Model>(replay: &Replay<M>, anchor: &Anchor) -> Result<Needle, ProvenanceError> {
    let steps = &replay.steps;
    let step = steps
        .steps
        .get(anchor.step)
        .ok_or_else(|| ProvenanceError(format!("there is no step {}", anchor.step)))?;
    let root = if anchor.in_message {
        match &replay.trace.events[step.input].record {
            Record::Deliver { payload, .. } | Record::External { payload, .. } => {
                message_json::<M>(payload).ok_or_else(|| {
                    ProvenanceError(format!(
                        "the message of event {} does not decode as a {} message",
                        step.input,
                        M::NAME
                    ))
                })?
            }
            _ => {
                return Err(ProvenanceError(format!(
                    "event {} handled no message",
                    step.input
                )))
            }
        }
    } else {
        let mut cluster = replay.initial();
        while cluster.applied <= anchor.step {
            replay.apply(&mut cluster).map_err(|d| {
                ProvenanceError(format!(
                    "the replay diverges at event {} before reaching event {}",
                    d.input_index, step.input
                ))
            })?;
        }
        match &cluster.nodes[step.node.index()] {
            Some(n) => state_json(n),
            None => {
                return Err(ProvenanceError(format!(
                    "{} is down after event {}",
                    replay
                        .node_names
                        .get(step.node.index())
                        .cloned()
                        .unwrap_or_default(),
                    step.input
                )))
            }
        }
    };
    Needle::at(&root, &anchor.path).ok_or_else(|| {
        ProvenanceError(format!(
            "no `{}` in {} event {}",
            anchor.path,
            if anchor.in_message {
                "the message of"
            } else {
                "the node's state after"
            },
            step.input
        ))
    })
}

/// Answers `query` over `replay`'s trace: one re-execution of the run.
pub fn provenance<M: Model>(
    replay: &Replay<M>,
    query: &Query,
) -> Result<Provenance, ProvenanceError> {
    let needle = &query.needle;
    let steps = &replay.steps;
    let events = &replay.trace.events;
    let nodes = replay.node_names.len();
    let mut drops: BTreeMap<usize, (usize, String)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Record::Drop { send, reason } = &e.record {
            drops
                .entry(*send as usize)
                .or_insert((i, reason.as_str().to_string()));
        }
    }

    // One pass: the touches.
    let mut touches: Vec<Touch> = Vec::new();
    let mut held: Vec<Vec<String>> = vec![Vec::new(); nodes];
    let mut cluster = replay.initial();
    let mut sent = Vec::new();
    let mut truncated = false;
    while cluster.applied < steps.len() {
        let k = cluster.applied;
        let step = &steps.steps[k];
        let i = step.node.index();
        sent.clear();
        if replay.apply_observed(&mut cluster, &mut sent).is_err() {
            break;
        }
        let input = &events[step.input];
        let (input_paths, request) = match &input.record {
            Record::Deliver { payload, .. } => (search_message::<M>(needle, payload), None),
            Record::External {
                payload, request, ..
            } => (search_message::<M>(needle, payload), Some(*request)),
            _ => (Vec::new(), None),
        };
        let after = match cluster.nodes.get(i).and_then(Option::as_ref) {
            Some(n) => search_state(needle, n),
            None => Vec::new(),
        };
        let mut sends = Vec::new();
        for (send, msg) in &sent {
            let json = serde_json::to_value(msg).unwrap_or(Value::Null);
            let paths = needle.find(&json);
            if !paths.is_empty() {
                if let Record::Send { to, .. } = events[*send].record {
                    sends.push((*send, to, paths));
                }
            }
        }
        let before = std::mem::replace(&mut held[i], after.clone());
        if before.is_empty() && after.is_empty() && input_paths.is_empty() && sends.is_empty() {
            continue;
        }
        if touches.len() >= TOUCHES_MAX {
            truncated = true;
            break;
        }
        touches.push(Touch {
            step: k,
            node: step.node,
            before,
            after,
            input: input_paths,
            sends,
            request: request.filter(|_| matches!(input.record, Record::External { .. })),
        });
    }
    let searched = cluster.applied;
    let by_step: BTreeMap<usize, usize> = touches
        .iter()
        .enumerate()
        .map(|(t, touch)| (touch.step, t))
        .collect();

    let back = match &query.anchor {
        Some(a) => back_chain(a, &touches, &by_step, steps, events),
        None => Vec::new(),
    };
    // Where the story starts: the origin of the back chain, or the first touch.
    let origin_step = back
        .last()
        .map(|l| l.step)
        .or_else(|| touches.first().map(|t| t.step));
    let mut forward = Vec::new();
    let mut left_out = 0;
    let mut ever: BTreeSet<NodeId> = BTreeSet::new();
    let mut requests: BTreeSet<RequestId> = BTreeSet::new();
    // The first node that took the value in a message from another node: its role is
    // where copies are expected.
    let mut taker: Option<NodeId> = query
        .anchor
        .as_ref()
        .filter(|a| !a.in_message)
        .and_then(|a| steps.steps.get(a.step).map(|s| s.node));
    for t in touches
        .iter()
        .filter(|t| origin_step.is_some_and(|o| t.step >= o))
    {
        let st = &steps.steps[t.step];
        let mut push = |what: What, forward: &mut Vec<Link>| {
            if forward.len() < FORWARD_MAX {
                forward.push(Link {
                    step: t.step,
                    event: st.input,
                    node: t.node,
                    what,
                });
            } else {
                left_out += 1;
            }
        };
        if let (Some(r), Some(p)) = (t.request, t.input.first()) {
            requests.insert(r);
            push(
                What::Request {
                    request: r,
                    path: p.clone(),
                },
                &mut forward,
            );
        }
        let is_crash = matches!(events[st.input].record, Record::Crash { .. });
        if is_crash && !t.before.is_empty() {
            push(What::Crashed, &mut forward);
        }
        let appeared: Vec<&String> = t.after.iter().filter(|p| !t.before.contains(p)).collect();
        if t.before.is_empty() && !t.after.is_empty() {
            let path = appeared.first().map(|p| (*p).clone()).unwrap_or_default();
            if let Record::Deliver {
                send: Some(send),
                from,
                ..
            } = &events[st.input].record
            {
                if !t.input.is_empty() {
                    let from_role = role(replay, *from);
                    if taker.is_none() && from_role != role(replay, t.node) {
                        taker = Some(t.node);
                    }
                    let sent_at = steps
                        .step_at_or_before(*send as usize)
                        .map_or(0, |s| steps.steps[s].input);
                    push(
                        What::Received {
                            path: t.input[0].clone(),
                            from: *from,
                            sent_at,
                        },
                        &mut forward,
                    );
                }
            }
            let what = if matches!(
                events[st.input].record,
                Record::Restart { .. } | Record::Resume { .. }
            ) {
                What::Restored { path }
            } else {
                What::Set { path }
            };
            push(what, &mut forward);
        } else if !t.before.is_empty() && t.after.is_empty() && !is_crash {
            push(
                What::Removed {
                    path: t.before[0].clone(),
                },
                &mut forward,
            );
        }
        for (send, to, paths) in &t.sends {
            push(
                What::Sent {
                    send: *send,
                    to: *to,
                    path: paths[0].clone(),
                    fate: fate(*send, steps, &drops),
                },
                &mut forward,
            );
        }
        if !t.after.is_empty() {
            ever.insert(t.node);
        }
        // Answers to the requests that brought the value: what its client was told (who
        // had the value in what led to it is filled in below).
        for e in &events[st.input..st.end] {
            if let Record::Respond { request, .. } = e.record {
                if requests.contains(&request) {
                    push(
                        What::Answered {
                            request,
                            holders: Vec::new(),
                        },
                        &mut forward,
                    );
                }
            }
        }
    }
    // Answers in steps that did not touch the value (a client answering from a reply that
    // does not carry it): look for them too.
    if !requests.is_empty() {
        add_answers(&mut forward, &touches, &requests, replay, origin_step);
    }

    // Who had the value in what led to each answer: each node's last step that happens
    // before the answer, and whether it held the value after it. (At the answer's moment
    // in trace order is not it: the node that acknowledged may have crashed since, and a
    // node that got it later never told the client.)
    if forward
        .iter()
        .any(|l| matches!(l.what, What::Answered { .. }))
    {
        let causality = Causality::new(steps, events, nodes);
        for l in forward.iter_mut() {
            if let What::Answered { holders, .. } = &mut l.what {
                *holders = held_before(&causality, &touches, nodes, l.step);
            }
        }
    }

    let holders: Vec<Holder> = held
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(k, p)| Holder {
            node: NodeId(k as u32),
            paths: p.clone(),
        })
        .collect();
    let expected_role = taker.map(|n| role(replay, n));
    let mut missing = Vec::new();
    if let Some(r) = &expected_role {
        for k in 0..nodes {
            let node = NodeId(k as u32);
            if role(replay, node) != *r || ever.contains(&node) {
                continue;
            }
            let carried: Vec<&Link> = forward
                .iter()
                .filter(|l| matches!(&l.what, What::Sent { to, .. } if *to == node))
                .collect();
            let why = if carried.is_empty() {
                "no message carrying it was sent to it".to_string()
            } else {
                let fates: Vec<String> = carried
                    .iter()
                    .map(|l| match &l.what {
                        What::Sent {
                            fate: Fate::Dropped { event, reason },
                            ..
                        } => format!("dropped at event {event} ({reason})"),
                        What::Sent {
                            fate: Fate::InFlight,
                            ..
                        } => "still in flight at the end".to_string(),
                        What::Sent {
                            fate: Fate::Delivered { event },
                            ..
                        } => format!("delivered at event {event}, but not kept"),
                        _ => String::new(),
                    })
                    .collect();
                format!(
                    "{} message(s) carried it: {}",
                    carried.len(),
                    fates.join("; ")
                )
            };
            missing.push(Missing { node, why });
        }
    }
    Ok(Provenance {
        needle: needle.clone(),
        back,
        forward,
        forward_left_out: left_out,
        holders,
        expected_role,
        missing,
        steps_searched: searched,
        truncated,
    })
}

fn role<M: Model>(replay: &Replay<M>, node: NodeId) -> String {
    replay
        .trace
        .header
        .nodes
        .get(node.index())
        .map(|n| n.role.clone())
        .unwrap_or_default()
}

fn search_state<N: Serialize>(needle: &Needle, node: &N) -> Vec<String> {
    // Serializing to text first is cheap and rules most states out without building a tree.
    match serde_json::to_string(node) {
        Ok(text) if needle.maybe_in(&text) => serde_json::from_str::<Value>(&text)
            .map(|v| needle.find(&v))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn search_message<M: Model>(needle: &Needle, payload: &[u8]) -> Vec<String> {
    message_json::<M>(payload).map_or_else(Vec::new, |v| needle.find(&v))
}

fn fate(send: usize, steps: &Steps, drops: &BTreeMap<usize, (usize, String)>) -> Fate {
    if let Some(&d) = steps.delivery_of_send.get(&(send as u64)) {
        return Fate::Delivered { event: d };
    }
    match drops.get(&send) {
        Some((event, reason)) => Fate::Dropped {
            event: *event,
            reason: reason.clone(),
        },
        None => Fate::InFlight,
    }
}

/// The nodes that held the value after their last step that happens before step `a`.
fn held_before(causality: &Causality, touches: &[Touch], nodes: usize, a: usize) -> Vec<NodeId> {
    (0..nodes)
        .filter(|&k| {
            let Some(&last) = causality.history_on(a, k).last() else {
                return false;
            };
            touches
                .iter()
                .rev()
                .find(|t| t.node.index() == k && t.step <= last)
                .is_some_and(|t| !t.after.is_empty())
        })
        .map(|k| NodeId(k as u32))
        .collect()
}

/// Answers to `requests` in steps that never touched the value, merged into `forward` in
/// trace order.
fn add_answers<M: Model>(
    forward: &mut Vec<Link>,
    touches: &[Touch],
    requests: &BTreeSet<RequestId>,
    replay: &Replay<M>,
    origin_step: Option<usize>,
) {
    let steps = &replay.steps.steps;
    let events = &replay.trace.events;
    let touched: BTreeSet<usize> = touches.iter().map(|t| t.step).collect();
    let from = origin_step.unwrap_or(0);
    let mut answers = Vec::new();
    for (k, st) in steps.iter().enumerate().skip(from) {
        if touched.contains(&k) {
            continue;
        }
        for e in &events[st.input..st.end] {
            if let Record::Respond { request, .. } = e.record {
                if requests.contains(&request) {
                    answers.push(Link {
                        step: k,
                        event: st.input,
                        node: st.node,
                        what: What::Answered {
                            request,
                            holders: Vec::new(),
                        },
                    });
                }
            }
        }
    }
    if answers.is_empty() {
        return;
    }
    forward.extend(answers);
    forward.sort_by_key(|l| l.step);
    forward.truncate(FORWARD_MAX);
}

/// From the anchor back to where the value entered the system.
fn back_chain(
    anchor: &Anchor,
    touches: &[Touch],
    by_step: &BTreeMap<usize, usize>,
    steps: &Steps,
    events: &[retrace_sim::trace::Event],
) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let Some(st) = steps.steps.get(anchor.step) else {
        return out;
    };
    let link = |t: &Touch, what: What| Link {
        step: t.step,
        event: steps.steps[t.step].input,
        node: t.node,
        what,
    };
    // The place: a node (looking back from a step, at a path or anywhere), or a step whose
    // input carried it.
    enum Place {
        State {
            node: NodeId,
            upto: usize,
            path: Option<String>,
        },
        Input(usize),
    }
    let mut place = if anchor.in_message {
        Place::Input(anchor.step)
    } else {
        Place::State {
            node: st.node,
            upto: anchor.step,
            path: Some(anchor.path.clone()),
        }
    };
    // Each turn moves strictly back in time, so the loop ends; the bound is a backstop.
    for _ in 0..touches.len() * 2 + 4 {
        match place {
            Place::State { node, upto, path } => {
                // The latest step on `node` at or before `upto` where the value appeared at
                // the path (or anywhere, without one).
                let at_path = |p: &String| {
                    path.as_ref().is_none_or(|want| {
                        p == want
                            || p.starts_with(&format!("{want}."))
                            || p.starts_with(&format!("{want}["))
                            || want.starts_with(p.as_str())
                    })
                };
                let found = touches.iter().rev().find(|t| {
                    t.node == node
                        && t.step <= upto
                        && t.after.iter().any(|p| at_path(p) && !t.before.contains(p))
                });
                let Some(t) = found else {
                    break;
                };
                let to = t
                    .after
                    .iter()
                    .find(|p| at_path(p) && !t.before.contains(p))
                    .cloned()
                    .unwrap_or_default();
                if let Some(from) = t.before.first() {
                    out.push(link(
                        t,
                        What::Moved {
                            from: from.clone(),
                            to,
                        },
                    ));
                    place = Place::State {
                        node,
                        upto: t.step.saturating_sub(1),
                        path: Some(from.clone()),
                    };
                    if t.step == 0 {
                        break;
                    }
                    continue;
                }
                if matches!(
                    events[steps.steps[t.step].input].record,
                    Record::Restart { .. } | Record::Resume { .. }
                ) {
                    out.push(link(t, What::Restored { path: to }));
                    if t.step == 0 {
                        break;
                    }
                    place = Place::State {
                        node,
                        upto: t.step - 1,
                        path: None,
                    };
                    continue;
                }
                out.push(link(t, What::Set { path: to.clone() }));
                if t.input.is_empty() {
                    out.push(link(t, What::Made { path: to }));
                    break;
                }
                place = Place::Input(t.step);
            }
            Place::Input(k) => {
                let Some(&ti) = by_step.get(&k) else {
                    break;
                };
                let t = &touches[ti];
                let Some(path) = t.input.first().cloned() else {
                    break;
                };
                match &events[steps.steps[k].input].record {
                    Record::External { request, .. } => {
                        out.push(link(
                            t,
                            What::Request {
                                request: *request,
                                path,
                            },
                        ));
                        break;
                    }
                    Record::Deliver {
                        send: Some(send),
                        from,
                        ..
                    } => {
                        let Some(sender) = steps.step_at_or_before(*send as usize) else {
                            break;
                        };
                        out.push(link(
                            t,
                            What::Received {
                                path,
                                from: *from,
                                sent_at: steps.steps[sender].input,
                            },
                        ));
                        let Some(&si) = by_step.get(&sender) else {
                            break;
                        };
                        let s = &touches[si];
                        if let Some((_, to, paths)) =
                            s.sends.iter().find(|(i, _, _)| *i == *send as usize)
                        {
                            out.push(link(
                                s,
                                What::Sent {
                                    send: *send as usize,
                                    to: *to,
                                    path: paths[0].clone(),
                                    fate: Fate::Delivered {
                                        event: steps.steps[k].input,
                                    },
                                },
                            ));
                        }
                        // How the sender had it: in its state before the send, or in what
                        // its step handled, or it made it there.
                        if let Some(p) = s.before.first() {
                            if sender == 0 {
                                break;
                            }
                            place = Place::State {
                                node: s.node,
                                upto: sender - 1,
                                path: Some(p.clone()),
                            };
                        } else if !s.input.is_empty() {
                            place = Place::Input(sender);
                        } else {
                            out.push(link(
                                s,
                                What::Made {
                                    path: String::new(),
                                },
                            ));
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }
    out
}

/// A question as a user asks it: a place (a step's node state or message, and a path in
/// it) or a value typed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    State { step: usize, path: String },
    Message { step: usize, path: String },
    Value { text: String },
}

impl Ask {
    /// From the command line's `EVENT PATH`: `message…` is in the event's message, a path
    /// starting with `.` or `[` is in the node's state after the step, anything else is a
    /// value (JSON if it parses, else a string).
    pub fn parse(steps: &Steps, event: usize, path: &str) -> Result<Ask, ProvenanceError> {
        let step = || {
            steps.step_at_or_before(event).ok_or_else(|| {
                ProvenanceError(format!("event {event} comes before the first step"))
            })
        };
        if let Some(rest) = path.strip_prefix("message") {
            return Ok(Ask::Message {
                step: step()?,
                path: rest.to_string(),
            });
        }
        if path.starts_with('.') || path.starts_with('[') {
            return Ok(Ask::State {
                step: step()?,
                path: path.to_string(),
            });
        }
        Ok(Ask::Value {
            text: path.to_string(),
        })
    }
}

/// Answers `ask` over `replay` (see [`provenance`]).
pub fn ask<M: Model>(replay: &Replay<M>, ask: &Ask) -> Result<Provenance, ProvenanceError> {
    let query = match ask {
        Ask::Value { text } => Query {
            needle: Needle::parse(text),
            anchor: None,
        },
        Ask::State { step, path } | Ask::Message { step, path } => {
            let anchor = Anchor {
                step: *step,
                path: path.clone(),
                in_message: matches!(ask, Ask::Message { .. }),
            };
            Query {
                needle: needle_at(replay, &anchor)?,
                anchor: Some(anchor),
            }
        }
    };
    provenance(replay, &query)
}

/// The answer as text lines, each with the event it is about (for jumping there).
pub fn lines(p: &Provenance, names: &[String]) -> Vec<(Option<usize>, String)> {
    let name = |n: NodeId| {
        names
            .get(n.index())
            .cloned()
            .unwrap_or_else(|| format!("n{}", n.0))
    };
    let mut out = Vec::new();
    let matched = match (&p.needle.part, &p.needle.field) {
        (Some(part), _) => format!(" (its most distinctive part, `{part}`)"),
        (None, Some(f)) => format!(" (in fields named `{f}`)"),
        (None, None) => String::new(),
    };
    out.push((None, format!("value {}{matched}", p.needle.text())));
    let describe = |l: &Link| -> String {
        let who = name(l.node);
        match &l.what {
            What::Request { request, path } => {
                format!("{who}: external request {request} brought it in (message{path})")
            }
            What::Set { path } => format!("{who}: this step put it in its state at {path}"),
            What::Moved { from, to } => {
                format!("{who}: moved within its state from {from} to {to}")
            }
            What::Received {
                path,
                from,
                sent_at,
            } => format!(
                "{who}: got it from {} (message{path}, sent at event {sent_at})",
                name(*from)
            ),
            What::Sent { to, path, fate, .. } => {
                let fate = match fate {
                    Fate::Delivered { event } => format!("delivered at event {event}"),
                    Fate::Dropped { event, reason } => {
                        format!("DROPPED at event {event} ({reason})")
                    }
                    Fate::InFlight => "still in flight at the end".into(),
                };
                format!("{who}: sent it to {} (message{path}): {fate}", name(*to))
            }
            What::Made { path } if path.is_empty() => {
                format!("{who}: made it (not in its state or its input before this step)")
            }
            What::Made { path } => {
                format!("{who}: made it at {path} (not in its state or its input before this step)")
            }
            What::Restored { path } => {
                format!("{who}: had it at {path} after restarting (from its durable storage)")
            }
            What::Answered { request, holders } => {
                let h: Vec<String> = holders.iter().map(|&n| name(n)).collect();
                format!(
                    "{who}: answered request {request}; in what led to the answer the value was held by {}",
                    if h.is_empty() {
                        "no node".to_string()
                    } else {
                        h.join(", ")
                    }
                )
            }
            What::Crashed => format!("{who}: CRASHED holding it"),
            What::Removed { path } => format!("{who}: removed it from {path}"),
        }
    };
    if !p.back.is_empty() {
        out.push((None, "where it came from (newest first):".into()));
        for l in &p.back {
            out.push((Some(l.event), format!("  #{:<7} {}", l.event, describe(l))));
        }
    }
    out.push((None, "where it went:".into()));
    if p.forward.is_empty() {
        out.push((None, "  nowhere: no state or message holds it".into()));
    }
    for l in &p.forward {
        out.push((Some(l.event), format!("  #{:<7} {}", l.event, describe(l))));
    }
    if p.forward_left_out > 0 {
        out.push((None, format!("  … and {} more", p.forward_left_out)));
    }
    let holders: Vec<String> = p
        .holders
        .iter()
        .map(|h| format!("{} ({})", name(h.node), h.paths.join(", ")))
        .collect();
    out.push((
        None,
        format!(
            "at the end: {}",
            if holders.is_empty() {
                "held by no running node".to_string()
            } else {
                format!("held by {}", holders.join("; "))
            }
        ),
    ));
    if let Some(role) = &p.expected_role {
        if p.missing.is_empty() {
            out.push((None, format!("every {role} got a copy")));
        } else {
            out.push((None, format!("expected on every {role}, never arrived at:")));
            for m in &p.missing {
                out.push((None, format!("  {}: {}", name(m.node), m.why)));
            }
        }
    }
    if p.truncated {
        out.push((
            None,
            format!("(stopped after {TOUCHES_MAX} steps that touch the value)"),
        ));
    }
    out
}
