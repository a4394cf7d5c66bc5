//! The manifest a recorded cluster run leaves beside its logs (`manifest.json`).

use crate::log::RecordError;
use retrace_sim::limits;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a node's life ended. Written as the words the manifest has always used, so older
/// manifests still read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Ended {
    /// Still running (the launcher had not stopped it when the manifest was written).
    #[default]
    Running,
    /// A clean shutdown.
    Stopped,
    /// SIGKILLed: a planned fault.
    Killed,
    /// SIGKILLed at the end because it did not stop in time.
    KilledAtStop,
    /// Exited on its own with this status code (`None`: by a signal).
    Exited(Option<i32>),
}

impl Ended {
    /// Whether the life ended in a crash (anything but a clean stop).
    pub fn crashed(self) -> bool {
        self != Ended::Stopped
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Running => f.write_str("running"),
            Ended::Stopped => f.write_str("stopped"),
            Ended::Killed => f.write_str("killed"),
            Ended::KilledAtStop => f.write_str("killed at stop (did not exit in time)"),
            Ended::Exited(Some(code)) => write!(f, "exited {code}"),
            Ended::Exited(None) => f.write_str("exited by signal"),
        }
    }
}

impl From<Ended> for String {
    fn from(e: Ended) -> String {
        e.to_string()
    }
}

impl TryFrom<String> for Ended {
    type Error = String;
    fn try_from(text: String) -> Result<Ended, String> {
        Ok(match text.as_str() {
            "running" => Ended::Running,
            "stopped" => Ended::Stopped,
            "killed" => Ended::Killed,
            "killed at stop (did not exit in time)" => Ended::KilledAtStop,
            "exited by signal" => Ended::Exited(None),
            other => match other.strip_prefix("exited ").map(str::parse) {
                Some(Ok(code)) => Ended::Exited(Some(code)),
                _ => return Err(format!("unknown end of a node's life `{other}`")),
            },
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The log's file name, relative to the run's directory.
    pub log: String,
    pub started_wall_ns: u64,
    /// The node process's id while it ran.
    #[serde(default)]
    pub pid: u32,
    /// How this life ended (in the file: `stopped`, `killed`, `exited N`, ...).
    pub ended: Ended,
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
    pub fn read(dir: &Path) -> Result<Manifest, RecordError> {
        let path = dir.join(MANIFEST_FILE);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = limits::read_text_bounded(file, limits::MAX_MANIFEST_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Manifest::parse(&text, &path)
    }

    /// Parses and checks a manifest's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, RecordError> {
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
    pub fn write(&self, dir: &Path) -> Result<(), RecordError> {
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
        Ok(file.sync_all().map_err(fail)?)
    }
}

#[cfg(test)]
mod ended_tests {
    use super::Ended;

    /// `ended` was a string tested with `starts_with("stopped")`: the type keeps the words
    /// the manifest has always had, so manifests written before still read.
    #[test]
    fn how_a_life_ended_reads_and_writes_as_the_manifest_words() {
        for e in [
            Ended::Running,
            Ended::Stopped,
            Ended::Killed,
            Ended::KilledAtStop,
            Ended::Exited(Some(101)),
            Ended::Exited(None),
        ] {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Ended>(&json).unwrap(), e, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&Ended::Exited(Some(3))).unwrap(),
            "\"exited 3\""
        );
        assert!(serde_json::from_str::<Ended>("\"vanished\"").is_err());
        assert!(Ended::Killed.crashed() && !Ended::Stopped.crashed());
    }
}
