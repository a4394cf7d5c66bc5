//! The manifest a recorded cluster run leaves beside its logs (`manifest.json`).

use retrace_sim::limits;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The log's file name, relative to the run's directory.
    pub log: String,
    pub started_wall_ns: u64,
    /// The node process's id while it ran.
    #[serde(default)]
    pub pid: u32,
    /// `stopped` (clean shutdown), `killed` (a fault), or `exited N`.
    pub ended: String,
    /// Why the node's recording stopped early (its disk filled), as the node reported it
    /// to the launcher: the one marker that needs no room on the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_stopped: Option<String>,
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
    /// How peer links were carried.
    #[serde(default)]
    pub transport: String,
    pub started_wall_ns: u64,
    pub ended_wall_ns: u64,
    pub nodes: Vec<ManifestNode>,
    pub workload: WorkloadStats,
    pub warnings: Vec<String>,
}

pub const MANIFEST_FILE: &str = "manifest.json";
/// Room kept free at the end of the manifest for its later, longer versions.
pub const MANIFEST_RESERVE_BYTES: usize = 64 << 10;

impl Manifest {
    /// Reads and checks a manifest: within its limits (`retrace_sim::limits`), every log a
    /// plain file name in the run's directory, and no log listed twice (a manifest that
    /// points 10,000 nodes at one log would otherwise read it 10,000 times).
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST_FILE);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = limits::read_text_bounded(file, limits::MAX_MANIFEST_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Manifest::parse(&text, &path)
    }

    /// Parses and checks a manifest's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
        m.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(m)
    }

    fn check(&self) -> Result<(), String> {
        let n = self.nodes.len();
        if n == 0 || n > limits::MAX_NODES {
            return Err(format!(
                "lists {n} nodes; a run has 1 to {}",
                limits::MAX_NODES
            ));
        }
        let logs: usize = self.nodes.iter().map(|n| n.incarnations.len()).sum();
        if logs > limits::MAX_MANIFEST_LOGS {
            return Err(format!(
                "lists {logs} node lives; the limit is {}",
                limits::MAX_MANIFEST_LOGS
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for (k, inc) in node.incarnations.iter().enumerate() {
                if inc.log.is_empty() {
                    continue;
                }
                let plain = Path::new(&inc.log)
                    .file_name()
                    .is_some_and(|f| f == inc.log.as_str());
                if !plain {
                    return Err(format!(
                        "nodes[{i}].incarnations[{k}].log `{}` is not a file name in the run's directory",
                        inc.log
                    ));
                }
                if !seen.insert(inc.log.as_str()) {
                    return Err(format!(
                        "nodes[{i}].incarnations[{k}].log `{}` is listed twice",
                        inc.log
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes the manifest in place, padded with trailing spaces (which JSON allows) to
    /// [`MANIFEST_RESERVE_BYTES`] more than it needs. The launcher writes it at the start
    /// and at the end of a run: the final write then overwrites room the file already
    /// has, so it succeeds even when the nodes' logs have filled the disk meanwhile.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        use std::io::{Seek, Write};
        let path = dir.join(MANIFEST_FILE);
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        text.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(fail)?;
        let had = file.metadata().map_err(fail)?.len() as usize;
        let room = if had >= text.len() {
            had
        } else {
            text.len() + MANIFEST_RESERVE_BYTES
        };
        let mut bytes = text.into_bytes();
        bytes.resize(room, b' ');
        file.seek(std::io::SeekFrom::Start(0)).map_err(fail)?;
        file.write_all(&bytes).map_err(fail)?;
        file.set_len(room as u64).map_err(fail)?;
        file.sync_all().map_err(fail)
    }
}
