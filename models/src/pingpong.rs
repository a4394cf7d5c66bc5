//! `pingpong`: the smallest model. `ping` keeps `in_flight` pings outstanding; `pong`
//! answers each. A periodic timer resends when the network loses a message, so the model
//! also makes progress under drops.

use retrace_sim::{invariant, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, TimerId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// `boot` counts ping's restarts, so that pongs to an earlier life are recognised.
    Ping {
        boot: u32,
        seq: u64,
    },
    Pong {
        boot: u32,
        seq: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum PingPong {
    Ping {
        /// How many times ping has booted before (kept in synced storage).
        boot: u32,
        /// Highest sequence number sent so far.
        sent: u64,
        /// Pongs received.
        received: u64,
        /// `received` at the last retransmission check.
        received_at_check: u64,
        /// Highest sequence number a pong echoed.
        max_echo: u64,
        rounds: Option<u64>,
        in_flight: u64,
        retransmit_ms: u64,
    },
    Pong {
        answered: u64,
    },
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PingPongOptions {
    /// Stop after this many pongs (default: run until the time limit).
    pub rounds: Option<u64>,
    /// Pings kept outstanding at once.
    pub in_flight: u64,
    /// How often `ping` checks for lost messages and resends.
    pub retransmit_ms: u64,
}

impl Default for PingPongOptions {
    fn default() -> Self {
        PingPongOptions {
            rounds: None,
            in_flight: 1,
            retransmit_ms: 100,
        }
    }
}

const PING: NodeId = NodeId(0);
const PONG: NodeId = NodeId(1);

/// The pinger's timer: check for a pong, resend if none came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    Retransmit,
}

impl Node for PingPong {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        // A restarted ping starts over from its constructor's state; pong does not mind.
        if let PingPong::Ping {
            boot,
            sent,
            in_flight,
            retransmit_ms,
            ..
        } = self
        {
            *boot = ctx
                .storage()
                .get_value::<u32>("boots")
                .and_then(Result::ok)
                .unwrap_or(0);
            let _ = ctx.storage().put_value("boots", &(*boot + 1));
            ctx.storage().sync();
            for seq in 1..=*in_flight {
                ctx.send(PONG, Msg::Ping { boot: *boot, seq });
            }
            *sent = *in_flight;
            ctx.set_timer(Duration::from_millis(*retransmit_ms), Timer::Retransmit);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match (self, msg) {
            (PingPong::Pong { answered }, Msg::Ping { boot, seq }) => {
                *answered += 1;
                ctx.send(from, Msg::Pong { boot, seq });
            }
            (PingPong::Ping { boot, .. }, Msg::Pong { boot: old, seq }) if old != *boot => {
                ctx.annotate(format!("ignoring pong {seq} to an earlier life ({old})"));
            }
            (
                PingPong::Ping {
                    boot,
                    sent,
                    received,
                    rounds,
                    max_echo,
                    ..
                },
                Msg::Pong { seq, .. },
            ) => {
                *received += 1;
                *max_echo = (*max_echo).max(seq);
                if rounds.is_none_or(|r| *sent < r) {
                    *sent += 1;
                    ctx.send(
                        PONG,
                        Msg::Ping {
                            boot: *boot,
                            seq: *sent,
                        },
                    );
                }
            }
            (_, msg) => ctx.annotate(format!("unexpected {msg:?} from {from}")),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, _timer: TimerId, _tag: Timer) {
        if let PingPong::Ping {
            boot,
            sent,
            received,
            received_at_check,
            rounds,
            retransmit_ms,
            ..
        } = self
        {
            if *received == *received_at_check && rounds.is_none_or(|r| *received < r) {
                ctx.annotate("no pong since the last check: resending");
                ctx.send(
                    PONG,
                    Msg::Ping {
                        boot: *boot,
                        seq: *sent,
                    },
                );
            }
            *received_at_check = *received;
            ctx.set_timer(Duration::from_millis(*retransmit_ms), Timer::Retransmit);
        }
    }
}

/// The `pingpong` model.
pub struct PingPongModel;

impl Model for PingPongModel {
    const NAME: &'static str = "pingpong";
    const ABOUT: &'static str = "two nodes bounce a message back and forth (the smallest example)";
    type Node = PingPong;
    type Options = PingPongOptions;

    fn validate(options: &PingPongOptions) -> Result<(), OptionError> {
        if options.in_flight == 0 || options.in_flight > 1_000_000 {
            return Err(OptionError {
                field: "in_flight".into(),
                message: "must be between 1 and 1000000".into(),
            });
        }
        if options.retransmit_ms == 0 {
            return Err(OptionError {
                field: "retransmit_ms".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn nodes(_: &PingPongOptions) -> Vec<NodeSpec> {
        vec![NodeSpec::new("ping", "ping"), NodeSpec::new("pong", "pong")]
    }

    fn build(options: &PingPongOptions, id: NodeId) -> PingPong {
        if id == PING {
            PingPong::Ping {
                boot: 0,
                sent: 0,
                received: 0,
                received_at_check: 0,
                max_echo: 0,
                rounds: options.rounds,
                in_flight: options.in_flight,
                retransmit_ms: options.retransmit_ms,
            }
        } else {
            PingPong::Pong { answered: 0 }
        }
    }

    fn invariants(_: &PingPongOptions) -> Vec<Box<dyn Invariant<PingPong>>> {
        vec![invariant(
            "pong echoes only pings that were sent",
            |view| match view.nodes.first() {
                Some(Some(PingPong::Ping { sent, max_echo, .. })) if max_echo > sent => {
                    Err(format!("pong echoed ping {max_echo} but only {sent} were sent").into())
                }
                _ => Ok(()),
            },
        )]
    }
}
