use serde::{Deserialize, Serialize};

/// Where a trace came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Simulated from a scenario with this seed.
    Simulated { seed: u64 },
    /// Recorded from real processes and merged.
    Recorded { description: String },
    /// A fork (`retrace fork`): records before `at` are those of a trace of origin
    /// `parent`, unchanged; from `at` on, the simulator continued it with `seed`.
    Forked {
        parent: Box<Origin>,
        at: u64,
        seed: u64,
    },
}

impl Origin {
    /// Whether the record at `index` was made by the simulator (its modelled service time
    /// is checked on replay), not measured in a recording.
    pub fn simulated_at(&self, index: u64) -> bool {
        match self {
            Origin::Simulated { .. } => true,
            Origin::Recorded { .. } => false,
            Origin::Forked { parent, at, .. } => index >= *at || parent.simulated_at(index),
        }
    }

    /// Whether the trace's time is virtual from its start (simulated all along).
    pub fn virtual_time(&self) -> bool {
        self.simulated_at(0)
    }

    /// Where the simulator last took over from a recording or another run: the latest
    /// fork's first record (a fork of a fork branched after its parent did).
    pub fn branch_at(&self) -> Option<u64> {
        match self {
            Origin::Forked { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// One line for people: `simulated, seed 7`, `recorded: …`, `forked at record 120
    /// with seed 9 from: …`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Simulated { seed } => format!("simulated, seed {seed}"),
            Origin::Recorded { description } => format!("recorded: {description}"),
            Origin::Forked { parent, at, seed } => {
                format!(
                    "forked at record {at} with seed {seed} from {}",
                    parent.describe()
                )
            }
        }
    }
}

/// One node of the traced cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: String,
}

impl NodeInfo {
    /// One per node, from (name, role) pairs in node-id order.
    pub fn list<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<NodeInfo> {
        nodes
            .into_iter()
            .map(|(name, role)| NodeInfo {
                name: name.to_string(),
                role: role.to_string(),
            })
            .collect()
    }
}

/// Everything needed to make sense of, and re-execute, the records that follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub origin: Origin,
    /// The model's registry name, e.g. `kv`.
    pub model: String,
    /// The scenario as given (path or name), for display.
    pub scenario_name: String,
    /// The full scenario source, so a trace is self-contained.
    pub scenario_toml: String,
    /// Node names and roles, indexed by `NodeId`.
    pub nodes: Vec<NodeInfo>,
    /// The retrace version that wrote the trace.
    pub writer: String,
}

impl Header {
    /// The nodes' names, indexed by `NodeId`.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
}
