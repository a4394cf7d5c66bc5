//! `twopc`: two-phase commit. A coordinator asks every participant to prepare a
//! transaction, decides commit if all vote yes (abort otherwise, or on a timeout), logs the
//! decision durably, then tells everyone. A participant that restarts while prepared asks
//! the coordinator for the decision (which presumes abort for a transaction it never
//! decided). Invariant: atomicity — no transaction commits anywhere and aborts elsewhere.
//!
//! With `bug = "presumed-commit"`, a recovering participant that missed the decision
//! commits on its own.

use retrace_sim::{
    Broken, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, SimRng, TimerId, View,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TwoPcBug {
    PresumedCommit,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External: run one transaction.
    Begin,
    /// External reply.
    Outcome {
        tx: u64,
        committed: bool,
    },
    Prepare {
        tx: u64,
    },
    Vote {
        tx: u64,
        yes: bool,
    },
    Decision {
        tx: u64,
        commit: bool,
    },
    Query {
        tx: u64,
    },
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwoPcOptions {
    pub participants: u32,
    pub bug: Option<TwoPcBug>,
    /// Chance that a participant votes no.
    pub no_vote: f64,
    pub timeout_ms: u64,
}

impl Default for TwoPcOptions {
    fn default() -> Self {
        TwoPcOptions {
            participants: 3,
            bug: None,
            no_vote: 0.1,
            timeout_ms: 200,
        }
    }
}

const COORDINATOR: NodeId = NodeId(0);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwoPc {
    Coordinator {
        participants: u32,
        timeout_ms: u64,
        next_tx: u64,
        /// Undecided transactions and the yes votes so far.
        voting: BTreeMap<u64, BTreeSet<u32>>,
        /// Durable decisions.
        decided: BTreeMap<u64, bool>,
    },
    Participant {
        bug: Option<TwoPcBug>,
        /// Per mille chance of a no vote.
        no_vote_pm: u64,
        /// Durable: voted yes, decision not yet known.
        prepared: BTreeSet<u64>,
        /// Durable: what this participant did with each transaction.
        decided: BTreeMap<u64, bool>,
        query_timer: Option<TimerId>,
    },
}

impl TwoPc {
    fn persist(&self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let s = ctx.storage();
        match self {
            TwoPc::Coordinator {
                next_tx, decided, ..
            } => {
                let _ = s.put_value("next_tx", next_tx);
                let _ = s.put_value("decided", decided);
            }
            TwoPc::Participant {
                prepared, decided, ..
            } => {
                let _ = s.put_value("prepared", prepared);
                let _ = s.put_value("decided", decided);
            }
        }
        s.sync();
    }

    fn decide(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, tx: u64, commit: bool) {
        let TwoPc::Coordinator {
            participants,
            voting,
            decided,
            ..
        } = self
        else {
            return;
        };
        voting.remove(&tx);
        if decided.contains_key(&tx) {
            return;
        }
        decided.insert(tx, commit);
        let n = *participants;
        // The decision is durable before anyone hears it.
        self.persist(ctx);
        for p in 1..=n {
            ctx.send(NodeId(p), Msg::Decision { tx, commit });
        }
        ctx.respond(Msg::Outcome {
            tx,
            committed: commit,
        });
    }

    fn ask_for_decisions(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let TwoPc::Participant {
            prepared,
            query_timer,
            ..
        } = self
        else {
            return;
        };
        for tx in prepared.iter() {
            ctx.send(COORDINATOR, Msg::Query { tx: *tx });
        }
        if !prepared.is_empty() {
            ctx.detach();
            *query_timer = Some(ctx.set_timer(Duration::from_millis(100), Timer::Query));
        }
    }
}

/// 2PC's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// The coordinator's deadline for the votes of transaction `tx`: abort if they are not in.
    Vote { tx: u64 },
    /// A participant in doubt asks the coordinator for its decisions again.
    Query,
}

impl Node for TwoPc {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let s = ctx.storage();
        match self {
            TwoPc::Coordinator {
                next_tx, decided, ..
            } => {
                *next_tx = s.get_value("next_tx").and_then(Result::ok).unwrap_or(0);
                *decided = s
                    .get_value("decided")
                    .and_then(Result::ok)
                    .unwrap_or_default();
            }
            TwoPc::Participant {
                bug,
                prepared,
                decided,
                ..
            } => {
                *prepared = s
                    .get_value("prepared")
                    .and_then(Result::ok)
                    .unwrap_or_default();
                *decided = s
                    .get_value("decided")
                    .and_then(Result::ok)
                    .unwrap_or_default();
                if *bug == Some(TwoPcBug::PresumedCommit) && !prepared.is_empty() {
                    for tx in std::mem::take(prepared) {
                        ctx.annotate(format!("recovered prepared tx {tx}: committing on my own"));
                        decided.insert(tx, true);
                    }
                    self.persist(ctx);
                    return;
                }
                self.ask_for_decisions(ctx);
            }
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        let TwoPc::Coordinator {
            participants,
            timeout_ms,
            next_tx,
            voting,
            ..
        } = self
        else {
            return ctx.annotate("only the coordinator takes transactions");
        };
        if !matches!(request, Msg::Begin) {
            return ctx.annotate(format!("ignored external {request:?}"));
        }
        let tx = *next_tx;
        *next_tx += 1;
        voting.insert(tx, BTreeSet::new());
        let (n, timeout) = (*participants, *timeout_ms);
        self.persist(ctx);
        for p in 1..=n {
            ctx.send(NodeId(p), Msg::Prepare { tx });
        }
        ctx.set_timer(Duration::from_millis(timeout), Timer::Vote { tx });
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match (&mut *self, msg) {
            (
                TwoPc::Coordinator {
                    participants,
                    voting,
                    decided,
                    ..
                },
                Msg::Vote { tx, yes },
            ) => {
                if let Some(&commit) = decided.get(&tx) {
                    return ctx.send(from, Msg::Decision { tx, commit });
                }
                let n = *participants as usize;
                let Some(votes) = voting.get_mut(&tx) else {
                    return;
                };
                if !yes {
                    return self.decide(ctx, tx, false);
                }
                votes.insert(from.0);
                if votes.len() == n {
                    self.decide(ctx, tx, true);
                }
            }
            (
                TwoPc::Coordinator {
                    voting, decided, ..
                },
                Msg::Query { tx },
            ) => match decided.get(&tx) {
                Some(&commit) => ctx.send(from, Msg::Decision { tx, commit }),
                // Never decided and no longer voting (the coordinator restarted): abort.
                None if !voting.contains_key(&tx) => self.decide(ctx, tx, false),
                None => {}
            },
            (
                TwoPc::Participant {
                    no_vote_pm,
                    prepared,
                    decided,
                    ..
                },
                Msg::Prepare { tx },
            ) => {
                if let Some(&done) = decided.get(&tx) {
                    return ctx.send(from, Msg::Vote { tx, yes: done });
                }
                let yes = prepared.contains(&tx) || ctx.rng().below(1000) >= *no_vote_pm;
                if yes {
                    prepared.insert(tx);
                } else {
                    decided.insert(tx, false);
                }
                self.persist(ctx);
                ctx.send(from, Msg::Vote { tx, yes });
            }
            (
                TwoPc::Participant {
                    prepared, decided, ..
                },
                Msg::Decision { tx, commit },
            ) => {
                prepared.remove(&tx);
                if decided.insert(tx, commit) != Some(commit) {
                    self.persist(ctx);
                }
            }
            (_, other) => ctx.annotate(format!("unexpected {other:?} from {from}")),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, timer: TimerId, tag: Timer) {
        match self {
            TwoPc::Coordinator { voting, .. } => {
                if let Timer::Vote { tx } = tag {
                    if voting.contains_key(&tx) {
                        self.decide(ctx, tx, false);
                    }
                }
            }
            TwoPc::Participant { query_timer, .. } => {
                if *query_timer == Some(timer) {
                    *query_timer = None;
                    self.ask_for_decisions(ctx);
                }
            }
        }
    }
}

/// Atomicity: every transaction commits everywhere or nowhere.
#[derive(Clone, Default)]
pub struct Atomicity {
    /// tx -> (a node that committed it, a node that aborted it).
    seen: BTreeMap<u64, (Option<u32>, Option<u32>)>,
}

impl Invariant<TwoPc> for Atomicity {
    fn name(&self) -> &str {
        "atomicity"
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<TwoPc>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, TwoPc>) -> Result<(), Broken> {
        let Some(Some(node)) = view.nodes.get(view.node.index()) else {
            return Ok(());
        };
        let decided = match node {
            TwoPc::Coordinator { decided, .. } | TwoPc::Participant { decided, .. } => decided,
        };
        for (&tx, &commit) in decided {
            let entry = self.seen.entry(tx).or_default();
            if commit {
                entry.0.get_or_insert(view.node.0);
            } else {
                entry.1.get_or_insert(view.node.0);
            }
            if let (Some(c), Some(a)) = *entry {
                return Err(Broken::new(format!(
                    "transaction {tx} committed at node {c} but aborted at node {a}"
                ))
                .fact("transaction", tx.to_string()));
            }
        }
        Ok(())
    }
}

/// The `twopc` model.
pub struct TwoPcModel;

impl Model for TwoPcModel {
    const NAME: &'static str = "twopc";
    const ABOUT: &'static str = "two-phase commit with crashes (bug: presumed-commit)";
    type Node = TwoPc;
    type Options = TwoPcOptions;

    fn validate(o: &TwoPcOptions) -> Result<(), OptionError> {
        if !(1..=64).contains(&o.participants) {
            return Err(OptionError {
                field: "participants".into(),
                message: "must be between 1 and 64".into(),
            });
        }
        if !(0.0..=1.0).contains(&o.no_vote) {
            return Err(OptionError {
                field: "no_vote".into(),
                message: "must be between 0 and 1".into(),
            });
        }
        if o.timeout_ms == 0 {
            return Err(OptionError {
                field: "timeout_ms".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn nodes(o: &TwoPcOptions) -> Vec<NodeSpec> {
        let mut v = vec![NodeSpec::new("coordinator", "coordinator")];
        v.extend(
            (1..=o.participants).map(|i| NodeSpec::new(format!("participant-{i}"), "participant")),
        );
        v
    }

    fn build(o: &TwoPcOptions, id: NodeId) -> TwoPc {
        if id == COORDINATOR {
            TwoPc::Coordinator {
                participants: o.participants,
                timeout_ms: o.timeout_ms,
                next_tx: 0,
                voting: BTreeMap::new(),
                decided: BTreeMap::new(),
            }
        } else {
            TwoPc::Participant {
                bug: o.bug,
                no_vote_pm: (o.no_vote * 1000.0).round() as u64,
                prepared: BTreeSet::new(),
                decided: BTreeMap::new(),
                query_timer: None,
            }
        }
    }

    fn invariants(_: &TwoPcOptions) -> Vec<Box<dyn Invariant<TwoPc>>> {
        vec![Box::new(Atomicity::default())]
    }

    fn request(_: &TwoPcOptions, _: &mut SimRng) -> Option<(NodeId, Msg)> {
        Some((COORDINATOR, Msg::Begin))
    }
}
