//! Your own system under retrace's commands: a replicated register, defined here and added to
//! the registry — the shapes a model of your own needs.
//!
//! ```sh
//! cargo run --example custom_model -- run examples/register.toml
//! cargo run --example custom_model -- run examples/register-forget-commit.toml
//! cargo run --example custom_model -- run examples/register-clients.toml
//! cargo run --example custom_model -- fuzz examples/register.toml --cases 200
//! cargo run --example custom_model -- check target/retrace/register-seed3.trace --linearizable
//! ```
//!
//! `register`: node 0 leads, the others follow. Clients' puts and gets arrive at the leader
//! (`on_request`). A put is appended to the leader's log, kept in durable storage, sent to the
//! followers, and answered — with `respond_to`, several steps later — once a majority holds it.
//! A get is answered at once with the committed value. A typed timer (`Timer::Resend`) sends
//! followers what they lack; `ctx.boot()` tells the leader to recover its log and commit point
//! after a crash. What clients saw must be linearizable: `Cell` is the specification.
//! `Writer` is a client with state — its own values, waiting for answers, retrying after a
//! timeout — for scenarios with `[workload] clients = N` instead of a `rate`.
//!
//! With `bug = "forget-commit"` the leader does not keep its commit point durable: after a
//! restart it answers gets with the value before puts it had acknowledged — a stale read that
//! only the linearizability check sees.

use retrace::registry::Registry;
use retrace::sim::client::{Call, Client, ClientCtx};
use retrace::sim::linearizability::{self, HistoryCheck, Linearizable, Observed, Spec};
use retrace::sim::{
    Boot, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, RequestId, SimRng, TimerId,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External requests, and their answers.
    Put(u64),
    Get,
    Stored,
    Value(Option<u64>),
    /// Leader -> follower: the log from `from` on.
    Append {
        from: usize,
        entries: Vec<u64>,
    },
    /// Follower -> leader: "my log is this long".
    Ack {
        len: usize,
    },
}

/// The leader's one timer. An enum, so traces and the TUI show it by name and the fuzzer
/// counts it as one handler whatever it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    Resend,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Register {
    Leader {
        log: Vec<u64>,
        /// Entries a majority holds.
        committed: usize,
        /// How much of the log each follower is known to hold.
        held: BTreeMap<NodeId, usize>,
        /// Puts waiting for their entry to commit: log index -> the request to answer.
        waiting: BTreeMap<usize, RequestId>,
        forget_commit: bool,
    },
    Follower {
        log: Vec<u64>,
    },
}

const RESEND: Duration = Duration::from_millis(20);

impl Register {
    fn persist(ctx: &mut Ctx<'_, Msg, Timer>, log: &[u64], committed: Option<usize>) {
        let storage = ctx.storage();
        let _ = storage.put_value("log", &log);
        if let Some(c) = committed {
            let _ = storage.put_value("committed", &c);
        }
        storage.sync();
    }
}

impl Node for Register {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let Register::Leader { log, committed, .. } = self else {
            return;
        };
        if ctx.boot() == Boot::Restart {
            // The model built us afresh; what we synced survived.
            let storage = ctx.storage();
            *log = storage
                .get_value("log")
                .and_then(Result::ok)
                .unwrap_or_default();
            *committed = storage
                .get_value("committed")
                .and_then(Result::ok)
                .unwrap_or(0);
            ctx.annotate(format!(
                "recovered {} entries, {committed} committed",
                log.len()
            ));
        }
        ctx.set_timer(RESEND, Timer::Resend);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        let Register::Leader {
            log,
            committed,
            waiting,
            ..
        } = self
        else {
            return ctx.annotate("followers take no requests");
        };
        match request {
            Msg::Put(v) => {
                log.push(v);
                Self::persist(ctx, log, None);
                // Keep the request id: the answer comes when the entry commits.
                if let Some(&id) = ctx.request_ids().first() {
                    waiting.insert(log.len(), id);
                }
                let from = log.len() - 1;
                for peer in ctx.peers().to_vec() {
                    ctx.send(
                        peer,
                        Msg::Append {
                            from,
                            entries: vec![v],
                        },
                    );
                }
            }
            Msg::Get => {
                let value = committed.checked_sub(1).map(|i| log[i]);
                ctx.respond(Msg::Value(value));
            }
            other => ctx.annotate(format!("not a request: {other:?}")),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match (self, msg) {
            (Register::Follower { log }, Msg::Append { from: at, entries }) => {
                if at <= log.len() {
                    log.truncate(at);
                    log.extend(entries);
                }
                ctx.send(from, Msg::Ack { len: log.len() });
            }
            (
                Register::Leader {
                    log,
                    committed,
                    held,
                    waiting,
                    forget_commit,
                },
                Msg::Ack { len },
            ) => {
                held.insert(from, len.min(log.len()));
                // The leader holds its whole log: the majority's length is the
                // (n/2)-th largest of the followers'.
                let mut lens: Vec<usize> = held.values().copied().collect();
                lens.sort_unstable_by(|a, b| b.cmp(a));
                let need = ctx.node_count() / 2; // followers needed besides the leader
                let majority = if need == 0 {
                    log.len()
                } else {
                    lens.get(need - 1).copied().unwrap_or(0)
                };
                if majority > *committed {
                    *committed = majority;
                    let keep = (!*forget_commit).then_some(*committed);
                    Register::persist(ctx, log, keep);
                    let done: Vec<usize> = waiting.range(..=*committed).map(|(&i, _)| i).collect();
                    for i in done {
                        if let Some(id) = waiting.remove(&i) {
                            ctx.respond_to(id, Msg::Stored);
                        }
                    }
                }
            }
            (_, other) => ctx.annotate(format!("unexpected {other:?} from {from}")),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, _timer: TimerId, tag: Timer) {
        let (Register::Leader { log, held, .. }, Timer::Resend) = (self, tag) else {
            return;
        };
        // Periodic work: it belongs to no client's request.
        ctx.detach();
        for peer in ctx.peers().to_vec() {
            let from = held.get(&peer).copied().unwrap_or(0).min(log.len());
            ctx.send(
                peer,
                Msg::Append {
                    from,
                    entries: log[from..].to_vec(),
                },
            );
        }
        ctx.set_timer(RESEND, Timer::Resend);
    }
}

/// What clients should see: one register (a single key), each operation at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cell(Option<u64>);

impl Spec for Cell {
    type Msg = Msg;
    type Ret = Option<Option<u64>>; // None: a put's "stored"; Some(v): what a get read
    fn partition(input: &Msg) -> Option<String> {
        matches!(input, Msg::Put(_) | Msg::Get).then(|| "register".to_string())
    }
    fn apply(&mut self, input: &Msg) -> Self::Ret {
        match input {
            Msg::Put(v) => {
                self.0 = Some(*v);
                None
            }
            _ => Some(self.0),
        }
    }
    fn observe(output: &Msg) -> Observed<Self::Ret> {
        match output {
            Msg::Stored => Observed::Returned(None),
            Msg::Value(v) => Observed::Returned(Some(*v)),
            _ => Observed::Unknown,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterOptions {
    nodes: u32,
    put_ratio: f64,
    bug: Option<Bug>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// The commit point is not kept durable: forgotten at a restart.
    ForgetCommit,
}

pub struct RegisterModel;

impl Model for RegisterModel {
    const NAME: &'static str = "register";
    const ABOUT: &'static str =
        "a leader replicates a register, answers puts once committed (bug: forget-commit)";
    type Node = Register;
    type Options = RegisterOptions;

    fn validate(o: &RegisterOptions) -> Result<(), OptionError> {
        if !(1..=9).contains(&o.nodes) {
            return Err(OptionError {
                field: "nodes".into(),
                message: "must be between 1 and 9".into(),
            });
        }
        Ok(())
    }

    fn nodes(o: &RegisterOptions) -> Vec<NodeSpec> {
        (0..o.nodes)
            .map(|i| match i {
                0 => NodeSpec::new("leader", "leader"),
                _ => NodeSpec::new(format!("follower-{i}"), "follower"),
            })
            .collect()
    }

    fn build(o: &RegisterOptions, id: NodeId) -> Register {
        if id == NodeId(0) {
            Register::Leader {
                log: Vec::new(),
                committed: 0,
                held: BTreeMap::new(),
                waiting: BTreeMap::new(),
                forget_commit: o.bug == Some(Bug::ForgetCommit),
            }
        } else {
            Register::Follower { log: Vec::new() }
        }
    }

    fn invariants(_: &RegisterOptions) -> Vec<Box<dyn Invariant<Register>>> {
        vec![Box::new(Linearizable::<Cell>::new(
            "clients see one register",
        ))]
    }

    fn linearizability(_: &RegisterOptions) -> Option<Box<dyn HistoryCheck<Msg>>> {
        Some(linearizability::checker::<Cell>())
    }

    fn client(o: &RegisterOptions, index: u32) -> Option<Box<dyn Client<Msg>>> {
        Some(Box::new(Writer {
            put_ratio: o.put_ratio,
            next: u64::from(index) * 1_000_000,
            last: None,
            retry: false,
        }))
    }

    fn request(o: &RegisterOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        let msg = if rng.chance(o.put_ratio) {
            Msg::Put(rng.below(1_000_000))
        } else {
            Msg::Get
        };
        Some((NodeId(0), msg))
    }
}

/// A client with state (`[workload] clients = N`, examples/register-clients.toml): it
/// writes values of its own (client × 10⁶ + a count, so a value names its writer), waits
/// for each answer, and after a timeout asks again — the same put, since the first may or
/// may not have been stored.
struct Writer {
    put_ratio: f64,
    /// The last value this client wrote.
    next: u64,
    /// The call in flight, and whether to make it again.
    last: Option<Msg>,
    retry: bool,
}

impl Client<Msg> for Writer {
    fn request(&mut self, cx: &mut ClientCtx<'_>) -> Option<Call<Msg>> {
        let again = std::mem::take(&mut self.retry).then(|| self.last.clone());
        let msg = again.flatten().unwrap_or_else(|| {
            if cx.rng().chance(self.put_ratio) {
                self.next += 1;
                Msg::Put(self.next)
            } else {
                Msg::Get
            }
        });
        self.last = Some(msg.clone());
        Some(Call { to: NodeId(0), msg })
    }

    fn on_answer(&mut self, _cx: &mut ClientCtx<'_>, _answer: Msg) {}

    fn on_timeout(&mut self, cx: &mut ClientCtx<'_>) {
        self.retry = true;
        // Back off a little more than the scenario's think time.
        cx.next_after(Duration::from_millis(20));
    }
}

fn main() -> std::process::ExitCode {
    retrace::cli::main_with(Registry::builtin().with::<RegisterModel>())
}
