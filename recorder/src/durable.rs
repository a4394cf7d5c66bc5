//! A node's durable storage on a real disk: the synced map in one file, replaced atomically
//! (write, fsync, rename) whenever the node syncs.

use retrace_sim::codec;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct DurableFile {
    path: PathBuf,
}

impl DurableFile {
    pub fn new(path: &Path) -> Self {
        DurableFile {
            path: path.to_owned(),
        }
    }

    /// What survived on disk; an unreadable file is reported and treated as empty.
    pub fn load(&self) -> BTreeMap<String, Vec<u8>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => codec::decode(&bytes).unwrap_or_else(|e| {
                crate::diag::warn(format_args!(
                    "warning: {}: unreadable storage ({e}); starting empty",
                    self.path.display()
                ));
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Makes `synced` the durable state.
    pub fn store(&self, synced: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
        let bytes = codec::encode(synced).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }
}
