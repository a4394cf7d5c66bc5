//! `raft`: leader election and log replication (the Raft paper, without membership changes
//! or snapshots), with the four safety properties as invariants and three real bugs a
//! scenario can switch on:
//! - `double-vote`: a vote is counted without checking its term or who sent it, so a vote
//!   from an earlier election (or a duplicated one) counts again;
//! - `forget-vote`: `votedFor` is not persisted, so a restarted node votes twice in a term;
//! - `commit-old-term`: a leader commits an entry of an earlier term by counting replicas
//!   (the Raft paper's Figure 8).

use retrace_sim::client::{Call, Client, ClientCtx};
use retrace_sim::{
    Broken, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, SimRng, TimerId, View,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RaftBug {
    DoubleVote,
    ForgetVote,
    CommitOldTerm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    pub value: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External: append a value to the replicated log.
    Propose {
        value: u64,
    },
    /// External reply.
    Accepted {
        index: u64,
        term: u64,
    },
    /// External reply: this node does not lead; the leader it last heard from, if any.
    NotLeader {
        leader: Option<u32>,
    },
    RequestVote {
        term: u64,
        last_index: u64,
        last_term: u64,
    },
    Vote {
        term: u64,
        granted: bool,
    },
    Append {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    AppendReply {
        term: u64,
        success: bool,
        match_index: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftOptions {
    pub nodes: u32,
    pub bug: Option<RaftBug>,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub heartbeat_ms: u64,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            nodes: 5,
            bug: None,
            election_min_ms: 150,
            election_max_ms: 300,
            heartbeat_ms: 50,
        }
    }
}

/// Entries per AppendEntries message.
const MAX_BATCH: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Raft {
    pub me: u32,
    pub n: u32,
    pub bug: Option<RaftBug>,
    pub election_ms: (u64, u64),
    pub heartbeat_ms: u64,
    pub term: u64,
    pub voted_for: Option<u32>,
    pub log: Vec<Entry>,
    pub role: Role,
    /// The leader of the current term, once heard from (for redirecting clients).
    pub leader: Option<u32>,
    pub votes: BTreeSet<u32>,
    pub vote_count: u32,
    pub commit: u64,
    /// Entries applied to the state machine, in order (index i + 1 at position i).
    pub applied: Vec<Entry>,
    pub next_index: Vec<u64>,
    pub match_index: Vec<u64>,
    pub election_timer: Option<TimerId>,
    pub heartbeat_timer: Option<TimerId>,
}

impl Raft {
    fn majority(&self) -> usize {
        self.n as usize / 2 + 1
    }

    fn last(&self) -> (u64, u64) {
        (self.log.len() as u64, self.log.last().map_or(0, |e| e.term))
    }

    fn peers(&self) -> Vec<NodeId> {
        (0..self.n).filter(|&p| p != self.me).map(NodeId).collect()
    }

    fn persist(&self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let s = ctx.storage();
        let _ = s.put_value("term", &self.term);
        let _ = s.put_value("log", &self.log);
        if self.bug != Some(RaftBug::ForgetVote) {
            let _ = s.put_value("voted_for", &self.voted_for);
        }
        s.sync();
    }

    fn reset_election(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        if let Some(t) = self.election_timer.take() {
            ctx.cancel_timer(t);
        }
        let (lo, hi) = self.election_ms;
        let ms = ctx.rng().between(lo, hi);
        self.election_timer = Some(ctx.set_timer(Duration::from_millis(ms), Timer::Election));
    }

    fn step_down(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, term: u64) {
        self.term = term;
        self.voted_for = None;
        self.role = Role::Follower;
        self.leader = None;
        self.persist(ctx);
    }

    fn apply(&mut self) {
        while (self.applied.len() as u64) < self.commit.min(self.log.len() as u64) {
            let e = self.log[self.applied.len()].clone();
            self.applied.push(e);
        }
    }

    fn start_election(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        self.term += 1;
        self.role = Role::Candidate;
        self.leader = None;
        self.voted_for = Some(self.me);
        self.votes = BTreeSet::from([self.me]);
        self.vote_count = 1;
        self.persist(ctx);
        let (last_index, last_term) = self.last();
        let term = self.term;
        for p in self.peers() {
            ctx.send(
                p,
                Msg::RequestVote {
                    term,
                    last_index,
                    last_term,
                },
            );
        }
        self.reset_election(ctx);
        if self.majority() <= 1 {
            self.become_leader(ctx);
        }
    }

    fn become_leader(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        self.role = Role::Leader;
        self.leader = Some(self.me);
        ctx.annotate(format!("leader of term {}", self.term));
        let len = self.log.len() as u64;
        self.next_index = vec![len + 1; self.n as usize];
        self.match_index = vec![0; self.n as usize];
        self.match_index[self.me as usize] = len;
        self.send_appends(ctx);
        if let Some(t) = self.heartbeat_timer.take() {
            ctx.cancel_timer(t);
        }
        self.heartbeat_timer =
            Some(ctx.set_timer(Duration::from_millis(self.heartbeat_ms), Timer::Heartbeat));
    }

    fn send_append(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, p: NodeId) {
        let next = self.next_index[p.index()].max(1);
        let prev_index = next - 1;
        let prev_term = if prev_index == 0 {
            0
        } else {
            self.log.get(prev_index as usize - 1).map_or(0, |e| e.term)
        };
        let entries: Vec<Entry> = self
            .log
            .iter()
            .skip(prev_index as usize)
            .take(MAX_BATCH)
            .cloned()
            .collect();
        let msg = Msg::Append {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
        };
        ctx.send(p, msg);
    }

    fn send_appends(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        for p in self.peers() {
            self.send_append(ctx, p);
        }
    }

    fn advance_commit(&mut self) {
        for n in (self.commit + 1..=self.log.len() as u64).rev() {
            let replicas = self.match_index.iter().filter(|&&m| m >= n).count();
            let current_term = self.log[n as usize - 1].term == self.term;
            if replicas >= self.majority()
                && (current_term || self.bug == Some(RaftBug::CommitOldTerm))
            {
                self.commit = n;
                self.apply();
                return;
            }
        }
    }
}

/// A raft node's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// No leader heard from for a while: stand for election.
    Election,
    /// A leader's next round of appends.
    Heartbeat,
}

impl Node for Raft {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let s = ctx.storage();
        self.term = s.get_value("term").and_then(Result::ok).unwrap_or(0);
        self.log = s.get_value("log").and_then(Result::ok).unwrap_or_default();
        self.voted_for = s
            .get_value("voted_for")
            .and_then(Result::ok)
            .unwrap_or(None);
        self.reset_election(ctx);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        let Msg::Propose { value } = request else {
            return ctx.annotate("raft takes Propose requests");
        };
        if self.role != Role::Leader {
            return ctx.respond(Msg::NotLeader {
                leader: self.leader,
            });
        }
        self.log.push(Entry {
            term: self.term,
            value,
        });
        self.persist(ctx);
        let index = self.log.len() as u64;
        self.match_index[self.me as usize] = index;
        self.send_appends(ctx);
        ctx.respond(Msg::Accepted {
            index,
            term: self.term,
        });
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match msg {
            Msg::RequestVote {
                term,
                last_index,
                last_term,
            } => {
                if term > self.term {
                    self.step_down(ctx, term);
                }
                let up_to_date = (last_term, last_index) >= (self.last().1, self.last().0);
                let free = self.voted_for.is_none_or(|v| v == from.0);
                let granted = term == self.term && free && up_to_date;
                if granted {
                    self.voted_for = Some(from.0);
                    self.persist(ctx);
                    self.reset_election(ctx);
                }
                ctx.send(
                    from,
                    Msg::Vote {
                        term: self.term,
                        granted,
                    },
                );
            }
            Msg::Vote { term, granted } => {
                if term > self.term {
                    return self.step_down(ctx, term);
                }
                if self.role != Role::Candidate || !granted {
                    return;
                }
                let won = if self.bug == Some(RaftBug::DoubleVote) {
                    self.vote_count += 1;
                    self.vote_count as usize >= self.majority()
                } else {
                    term == self.term
                        && self.votes.insert(from.0)
                        && self.votes.len() >= self.majority()
                };
                if won {
                    self.become_leader(ctx);
                }
            }
            Msg::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if term < self.term {
                    return ctx.send(
                        from,
                        Msg::AppendReply {
                            term: self.term,
                            success: false,
                            match_index: 0,
                        },
                    );
                }
                if term > self.term {
                    self.step_down(ctx, term);
                }
                self.role = Role::Follower;
                self.leader = Some(from.0);
                self.reset_election(ctx);
                let matches = prev_index == 0
                    || self
                        .log
                        .get(prev_index as usize - 1)
                        .is_some_and(|e| e.term == prev_term);
                if !matches {
                    return ctx.send(
                        from,
                        Msg::AppendReply {
                            term: self.term,
                            success: false,
                            match_index: 0,
                        },
                    );
                }
                let mut changed = false;
                for (i, e) in entries.iter().enumerate() {
                    let idx = prev_index as usize + i; // 0-based position
                    match self.log.get(idx) {
                        Some(mine) if mine.term == e.term => {}
                        Some(_) => {
                            self.log.truncate(idx);
                            self.log.push(e.clone());
                            changed = true;
                        }
                        None => {
                            self.log.push(e.clone());
                            changed = true;
                        }
                    }
                }
                if changed {
                    self.persist(ctx);
                }
                let last_new = prev_index + entries.len() as u64;
                if commit > self.commit {
                    self.commit = commit.min(last_new).max(self.commit);
                    self.apply();
                }
                ctx.send(
                    from,
                    Msg::AppendReply {
                        term: self.term,
                        success: true,
                        match_index: last_new,
                    },
                );
            }
            Msg::AppendReply {
                term,
                success,
                match_index,
            } => {
                if term > self.term {
                    return self.step_down(ctx, term);
                }
                if self.role != Role::Leader || term != self.term {
                    return;
                }
                let p = from.index();
                if success {
                    self.match_index[p] = self.match_index[p].max(match_index);
                    self.next_index[p] = self.match_index[p] + 1;
                    self.advance_commit();
                } else {
                    self.next_index[p] = self.next_index[p].saturating_sub(1).max(1);
                    self.send_append(ctx, from);
                }
            }
            other => ctx.annotate(format!("unexpected {other:?} from {from}")),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, timer: TimerId, tag: Timer) {
        match tag {
            Timer::Election if self.election_timer == Some(timer) => {
                self.election_timer = None;
                if self.role == Role::Leader {
                    return;
                }
                self.start_election(ctx);
            }
            Timer::Heartbeat if self.heartbeat_timer == Some(timer) => {
                self.heartbeat_timer = None;
                if self.role == Role::Leader {
                    self.send_appends(ctx);
                    self.heartbeat_timer = Some(
                        ctx.set_timer(Duration::from_millis(self.heartbeat_ms), Timer::Heartbeat),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Election safety, log matching, leader completeness and state machine safety.
#[derive(Clone, Default)]
pub struct RaftSafety {
    /// Who led each term.
    leaders: BTreeMap<u64, u32>,
    /// Every entry some node applied, by index (1-based), with the term of the node that
    /// applied it first: the entry is committed as of that term.
    committed: BTreeMap<u64, (Entry, u64)>,
}

impl Invariant<Raft> for RaftSafety {
    fn name(&self) -> &str {
        "raft safety"
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<Raft>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, Raft>) -> Result<(), Broken> {
        // The message names the property first: it is the fact tools want.
        self.violated(view).map_err(|message| {
            let property = message.split(':').next().unwrap_or_default().to_string();
            Broken::new(message).fact("property", property)
        })
    }
}

impl RaftSafety {
    /// The first of the four properties broken after this step, as "property: details".
    fn violated(&mut self, view: &View<'_, Raft>) -> Result<(), String> {
        let Some(Some(me)) = view.nodes.get(view.node.index()) else {
            return Ok(());
        };
        // Election safety: at most one leader per term.
        for r in view
            .nodes
            .iter()
            .flatten()
            .filter(|r| r.role == Role::Leader)
        {
            match self.leaders.get(&r.term) {
                Some(&other) if other != r.me => {
                    return Err(format!(
                        "election safety: node {other} and node {} both lead term {}",
                        r.me, r.term
                    ))
                }
                _ => {
                    self.leaders.insert(r.term, r.me);
                }
            }
        }
        // State machine safety: one entry per applied index, across nodes and restarts.
        for (i, e) in me.applied.iter().enumerate() {
            let index = i as u64 + 1;
            match self.committed.get(&index).map(|(c, _)| c) {
                Some(c) if c != e => {
                    return Err(format!(
                        "state machine safety: node {} applied {e:?} at index {index}, another node applied {c:?}",
                        me.me
                    ))
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, (e.clone(), me.term));
                }
            }
        }
        // Log matching: where two logs agree on a term at an index, they agree before it.
        for other in view.nodes.iter().flatten().filter(|o| o.me != me.me) {
            let common = me.log.len().min(other.log.len());
            if let Some(i) = (0..common)
                .rev()
                .find(|&i| me.log[i].term == other.log[i].term)
            {
                if me.log[..=i] != other.log[..=i] {
                    return Err(format!(
                        "log matching: nodes {} and {} agree on term {} at index {} but not before it",
                        me.me,
                        other.me,
                        me.log[i].term,
                        i + 1
                    ));
                }
            }
        }
        // Leader completeness: a leader holds every entry committed in an earlier term (as
        // of the term it was committed in, which may be later than the entry's own).
        for leader in view
            .nodes
            .iter()
            .flatten()
            .filter(|r| r.role == Role::Leader)
        {
            for (index, e) in self
                .committed
                .iter()
                .filter(|(_, (_, t))| *t < leader.term)
                .map(|(i, (e, _))| (i, e))
            {
                if leader.log.get(*index as usize - 1) != Some(e) {
                    return Err(format!(
                        "leader completeness: node {}, leader of term {}, lacks committed {e:?} at index {index}",
                        leader.me, leader.term
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The `raft` model.
pub struct RaftModel;

impl Model for RaftModel {
    const NAME: &'static str = "raft";
    const ABOUT: &'static str = "Raft leader election and log replication (bugs: double-vote, forget-vote, commit-old-term)";
    type Node = Raft;
    type Options = RaftOptions;

    fn validate(o: &RaftOptions) -> Result<(), OptionError> {
        let err = |field: &str, message: &str| {
            Err(OptionError {
                field: field.into(),
                message: message.into(),
            })
        };
        if !(1..=64).contains(&o.nodes) {
            return err("nodes", "must be between 1 and 64");
        }
        if o.election_min_ms == 0 || o.election_min_ms > o.election_max_ms {
            return err(
                "election_min_ms",
                "must be at least 1 and at most election_max_ms",
            );
        }
        if o.heartbeat_ms == 0 || o.heartbeat_ms >= o.election_min_ms {
            return err(
                "heartbeat_ms",
                "must be at least 1 and below election_min_ms",
            );
        }
        Ok(())
    }

    fn nodes(o: &RaftOptions) -> Vec<NodeSpec> {
        (0..o.nodes)
            .map(|i| NodeSpec::new(format!("raft-{i}"), "server"))
            .collect()
    }

    fn build(o: &RaftOptions, id: NodeId) -> Raft {
        Raft {
            me: id.0,
            n: o.nodes,
            bug: o.bug,
            election_ms: (o.election_min_ms, o.election_max_ms),
            heartbeat_ms: o.heartbeat_ms,
            term: 0,
            voted_for: None,
            log: Vec::new(),
            role: Role::Follower,
            leader: None,
            votes: BTreeSet::new(),
            vote_count: 0,
            commit: 0,
            applied: Vec::new(),
            next_index: Vec::new(),
            match_index: Vec::new(),
            election_timer: None,
            heartbeat_timer: None,
        }
    }

    fn invariants(_: &RaftOptions) -> Vec<Box<dyn Invariant<Raft>>> {
        vec![Box::new(RaftSafety::default())]
    }

    fn client(o: &RaftOptions, index: u32) -> Option<Box<dyn Client<Msg>>> {
        Some(Box::new(RaftClient::new(index, o.nodes)))
    }

    fn request(o: &RaftOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        let node = NodeId(rng.below(u64::from(o.nodes)) as u32);
        Some((
            node,
            Msg::Propose {
                value: rng.below(1_000_000),
            },
        ))
    }
}

/// A raft client (`[workload] clients = N`): proposes its own unique values one at a time
/// (client number × 10⁹ + its count, so every value names who proposed it), follows a
/// `NotLeader` to the leader it names at once, and after a timeout or a "no leader known"
/// tries the next node. A value is proposed again until some leader accepts it.
#[derive(Clone, Debug)]
pub struct RaftClient {
    /// Where the next proposal goes: the leader as far as this client knows.
    target: NodeId,
    /// Values accepted so far.
    count: u64,
    /// Redirections followed at once since the last accepted value: bounded, so two nodes
    /// that name each other (each behind on the term) cannot make the client spin.
    redirects: u32,
}

/// Where a client's values start: client `c` proposes `c * CLIENT_VALUES + 0, 1, …`.
pub const CLIENT_VALUES: u64 = 1_000_000_000;

impl RaftClient {
    pub fn new(client: u32, nodes: u32) -> Self {
        RaftClient {
            target: NodeId(client % nodes.max(1)),
            count: 0,
            redirects: 0,
        }
    }

    fn next_node(&mut self, cx: &ClientCtx<'_>) {
        self.target = NodeId((self.target.0 + 1) % cx.nodes().max(1));
    }
}

impl Client<Msg> for RaftClient {
    fn request(&mut self, cx: &mut ClientCtx<'_>) -> Option<Call<Msg>> {
        let value = u64::from(cx.client()) * CLIENT_VALUES + self.count;
        Some(Call {
            to: self.target,
            msg: Msg::Propose { value },
        })
    }

    fn on_answer(&mut self, cx: &mut ClientCtx<'_>, answer: Msg) {
        match answer {
            Msg::Accepted { .. } => {
                self.count += 1;
                self.redirects = 0;
            }
            Msg::NotLeader {
                leader: Some(leader),
            } if leader != self.target.0 && self.redirects < cx.nodes() => {
                self.target = NodeId(leader);
                self.redirects += 1;
                cx.next_after(Duration::ZERO);
            }
            // No leader known (an election is on): try another node after thinking.
            _ => self.next_node(cx),
        }
    }

    fn on_timeout(&mut self, cx: &mut ClientCtx<'_>) {
        self.next_node(cx);
    }
}
