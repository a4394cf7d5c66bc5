//! What kv nodes say to each other.

use retrace_sim::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A write's position in the history: the epoch of the primary that ordered it, then its
/// sequence number within that epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub epoch: u64,
    pub seq: u64,
}

/// A stored value with its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: Version,
    pub value: String,
}

pub type Store = BTreeMap<String, Entry>;

/// A client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put { key: String, value: String },
    Get { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } => key,
        }
    }
}

/// The outcome of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    PutOk {
        version: Version,
    },
    GetOk {
        entry: Option<Entry>,
    },
    /// Ask this replica instead (the replica's idea of the primary).
    NotPrimary {
        hint: NodeId,
    },
    /// The client gave up after its retries: the operation may or may not have happened.
    Failed {
        reason: String,
    },
    /// The client refused the operation (too many outstanding): it did not happen.
    Refused {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External: an operation for a client to perform.
    Op(Op),
    /// External reply: what the client tells its caller.
    Done(OpResult),
    /// Client -> replica.
    Request {
        op_id: u64,
        op: Op,
    },
    /// Replica -> client.
    Reply {
        op_id: u64,
        result: OpResult,
    },
    /// Primary -> backups: apply `writes` (possibly none: a read barrier) and confirm `slot`.
    Replicate {
        epoch: u64,
        slot: u64,
        writes: Vec<(String, Entry)>,
    },
    ReplicateOk {
        epoch: u64,
        slot: u64,
    },
    /// Primary -> backups, periodically.
    Heartbeat {
        epoch: u64,
    },
    /// "Your epoch is behind mine."
    Reject {
        epoch: u64,
    },
    /// Candidate -> replicas: promise not to follow any epoch below `epoch`.
    ViewChange {
        epoch: u64,
    },
    /// Replica -> candidate: the promise, with the replica's store.
    ViewChangeOk {
        epoch: u64,
        store: Store,
    },
    /// New primary -> replicas: the merged store of the new epoch.
    StartView {
        epoch: u64,
        store: Store,
    },
    /// A replica that missed `StartView` asks the primary for it.
    StateRequest {
        epoch: u64,
    },
}

/// kv's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// A primary's next heartbeat to its backups.
    Heartbeat,
    /// A backup's check that it heard from the primary since the last one.
    Failover,
    /// A client's deadline for an answer to operation `op_id`.
    Retry { op_id: u64 },
}
