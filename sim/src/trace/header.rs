use serde::{Deserialize, Serialize};

/// Where a trace came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Simulated from a scenario with this seed.
    Simulated { seed: u64 },
    /// Recorded from real processes and merged.
    Recorded { description: String },
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
