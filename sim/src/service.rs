//! Black-box services a node calls over TCP (a cache, a database, a payment API): what node
//! code sees of them, what a trace records, and what plays them in the simulator.
//!
//! A node opens a connection to a service by its scenario name ([`crate::Ctx::connect`]),
//! writes bytes to it and closes it — outputs, recorded in full — and gets back what happened
//! on the connection as an input ([`crate::Node::on_service`]): connected, data, closed (with
//! why), or no answer within the connection's timeout. Every byte in is an input, so replay
//! answers from the trace and needs no service; in the real runtime the bytes cross a real
//! socket; in the simulator a [`Service`] the model provides answers, under the scenario's
//! faults for that service (`[services.NAME]`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A connection to a service, unique in the run (the runtimes make it so, as timer ids).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// What happened on a connection: the input [`crate::Node::on_service`] gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceEvent {
    /// The connection is open: writes reach the service.
    Connected,
    /// Bytes from the service, as they arrived (a reply may come in several pieces, or
    /// several replies in one: framing is the protocol's, so the node's codec's).
    Data { bytes: Vec<u8> },
    /// The connection ended (refused, reset, closed by the service, the service gone), and
    /// why. Nothing more arrives on it.
    Closed { reason: String },
    /// Nothing arrived within the connection's timeout after a write: the runtime closed it
    /// (a late answer would be taken for the next one's).
    TimedOut,
}

impl ServiceEvent {
    /// A short name of the event's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceEvent::Connected => "connected",
            ServiceEvent::Data { .. } => "data",
            ServiceEvent::Closed { .. } => "closed",
            ServiceEvent::TimedOut => "timed out",
        }
    }
}

/// What a node did to a connection: the output records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceOp {
    /// Open a connection to the service the scenario names `service`; `timeout_ns` (0: none)
    /// bounds the wait for an answer after each write.
    Connect { service: String, timeout_ns: u64 },
    /// Bytes to the service, in full.
    Write { bytes: Vec<u8> },
    /// Close the connection; nothing more arrives on it.
    Close,
}

impl ServiceOp {
    /// A short name of the operation's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceOp::Connect { .. } => "connect",
            ServiceOp::Write { .. } => "write",
            ServiceOp::Close => "close",
        }
    }
}

/// A service as the simulator plays it: the model's stand-in for the real server, speaking
/// the same bytes (built by [`crate::Model::service`], again after each of its crashes, so
/// a crash loses what it held). It sees each write's bytes as they arrive and answers with
/// bytes; framing (a command split over writes, several in one) is its codec's business, so
/// it keeps a buffer per connection as a real server does.
pub trait Service: Send {
    /// Bytes a connection wrote; the answer's bytes (empty: nothing to send yet).
    fn on_data(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<u8>;
    /// The connection closed (by the node, or by a fault); forget what it buffered.
    fn on_close(&mut self, conn: ConnId) {
        let _ = conn;
    }
}

/// Why a service connection ended, in the words both runtimes use.
pub mod reason {
    /// The node connected to a name its scenario does not declare.
    pub fn unknown(service: &str) -> String {
        format!("no service named `{service}` in the scenario")
    }
    pub const RESET: &str = "connection reset by the service";
    pub const CRASHED: &str = "the service crashed";
    pub const CLOSED: &str = "closed by the service";
    pub const NODE_CRASHED: &str = "the node crashed";
}
