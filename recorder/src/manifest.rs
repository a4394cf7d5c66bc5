//! The manifest a recorded cluster run leaves beside its logs (`manifest.json`).

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The log's file name, relative to the run's directory.
    pub log: String,
    pub started_wall_ns: u64,
    /// `stopped` (clean shutdown), `killed` (a fault), or `exited N`.
    pub ended: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    pub name: String,
    pub role: String,
    pub peer_addr: String,
    pub client_addr: String,
    pub incarnations: Vec<Incarnation>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadStats {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub throughput_per_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub model: String,
    pub scenario_name: String,
    pub scenario_toml: String,
    pub recording: bool,
    pub fsync: String,
    pub started_wall_ns: u64,
    pub ended_wall_ns: u64,
    pub nodes: Vec<ManifestNode>,
    pub workload: WorkloadStats,
    pub warnings: Vec<String>,
}

pub const MANIFEST_FILE: &str = "manifest.json";

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
