//! A node between two steps, as data: what re-executing it from that moment needs, and
//! nothing a step carries in itself.
//!
//! Re-execution (`verify`, replay) runs a handler against a [`crate::check::NodeWorld`]: the
//! node's state, its random generator, its storage, the timers it has pending, and which
//! life it is in. A snapshot is exactly those five, so a node re-executed from a snapshot is
//! in the state it would have reached by re-executing every step since its boot — which a
//! reader can check wherever it has both (`verify` compares each snapshot it passes with
//! the state it re-executed to; [`NodeSnapshot::differences`] names what differs).

use crate::codec::{self, CodecError};
use crate::rng::{StepRng, StepRngState};
use crate::storage::{Storage, StorageImage};
use crate::{Boot, Node, TimerId};
use serde::{Deserialize, Serialize};

/// One node's state between steps, each part as data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// The model's node value, through the codec.
    pub state: Vec<u8>,
    /// Its storage: synced contents and the writes not yet synced.
    pub storage: StorageImage,
    /// The timers it set that have neither fired nor been cancelled, in id order.
    pub timers: Vec<TimerId>,
    /// Where its random generator is.
    pub rng: StepRngState,
    /// Which life of the node it is.
    pub boot: Boot,
}

/// One node between two steps, as data: up (everything re-executing it needs), or down
/// (what its disk keeps for its next life). A replay's cluster (`Cluster::states` in the
/// replayer) and a simulation (`Simulation::node_states`) both give them, for the state
/// checkpoints a trace's index keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Up(Box<NodeSnapshot>),
    Down { storage: StorageImage, boot: Boot },
}

/// Everything a snapshot is taken from, borrowed from whichever runtime holds it.
pub struct SnapshotOf<'a, N> {
    pub node: &'a N,
    pub storage: &'a Storage,
    pub timers: &'a mut dyn Iterator<Item = TimerId>,
    pub rng: &'a StepRng,
    pub boot: Boot,
}

/// A node, resumed from a snapshot: the parts a checking environment runs handlers against.
pub struct Resumed<N> {
    pub node: N,
    pub storage: Storage,
    pub timers: std::collections::BTreeSet<TimerId>,
    pub rng: StepRng,
    pub boot: Boot,
}

impl NodeSnapshot {
    /// Takes a snapshot. Fails only if the node's state does not encode (its `Serialize`
    /// refuses), which a runtime reports rather than records.
    pub fn take<N: Node>(of: SnapshotOf<'_, N>) -> Result<Self, CodecError> {
        let mut timers: Vec<TimerId> = of.timers.collect();
        timers.sort_unstable();
        Ok(NodeSnapshot {
            state: codec::encode(of.node)?,
            storage: of.storage.image(),
            timers,
            rng: of.rng.state(),
            boot: of.boot,
        })
    }

    /// The node and its world as they were, ready to re-execute the next step. A snapshot
    /// read from a file is untrusted: a state that does not decode as this model's node, or
    /// a generator state out of range, is an error.
    pub fn resume<N: Node>(&self) -> Result<Resumed<N>, String> {
        let node = codec::decode::<N>(&self.state)
            .map_err(|e| format!("the node's state does not decode: {e}"))?;
        let rng = StepRng::resume(&self.rng)?;
        Ok(Resumed {
            node,
            storage: Storage::from_image(self.storage.clone()),
            timers: self.timers.iter().copied().collect(),
            rng,
            boot: self.boot,
        })
    }

    /// The parts in which `other` differs from this snapshot, by name.
    pub fn differences(&self, other: &NodeSnapshot) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.state != other.state {
            out.push("node state");
        }
        if self.storage != other.storage {
            out.push("storage");
        }
        if self.timers != other.timers {
            out.push("pending timers");
        }
        if self.rng != other.rng {
            out.push("random generator");
        }
        if self.boot != other.boot {
            out.push("boot");
        }
        out
    }
}
