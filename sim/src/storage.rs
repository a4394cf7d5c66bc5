//! A node's durable storage: what survives a crash is exactly what was synced.

use crate::codec::{self, CodecError};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;

/// A [`Storage`] as data: its synced contents, sync count and unsynced writes (`None` a
/// delete), each in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageImage {
    pub synced: Vec<(String, Vec<u8>)>,
    pub syncs: u64,
    pub pending: Vec<(String, Option<Vec<u8>>)>,
}

/// Key-value storage with explicit sync, as a node sees its disk.
///
/// Writes are visible to the node at once, but only [`Storage::sync`] makes them durable:
/// on a crash every write since the last sync is lost, like an un-fsynced page cache.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    synced: BTreeMap<String, Vec<u8>>,
    /// How many times `sync` ran: a runtime persists the synced map when this moves.
    syncs: u64,
    /// Writes since the last sync; `None` is a delete.
    pending: BTreeMap<String, Option<Vec<u8>>>,
}

impl Storage {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        match self.pending.get(key) {
            Some(entry) => entry.as_deref(),
            None => self.synced.get(key).map(Vec::as_slice),
        }
    }

    pub fn put(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), Some(value.into()));
    }

    pub fn delete(&mut self, key: impl Into<String>) {
        self.pending.insert(key.into(), None);
    }

    /// Storage whose durable contents are `synced` (what a restarted node finds on disk).
    pub fn from_synced(synced: BTreeMap<String, Vec<u8>>) -> Self {
        Storage {
            synced,
            syncs: 0,
            pending: BTreeMap::new(),
        }
    }

    /// Everything the node's storage holds, durable or not: what a snapshot keeps.
    pub fn image(&self) -> StorageImage {
        StorageImage {
            synced: self
                .synced
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            syncs: self.syncs,
            pending: self
                .pending
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Storage as `image` describes it.
    pub fn from_image(image: StorageImage) -> Self {
        Storage {
            synced: image.synced.into_iter().collect(),
            syncs: image.syncs,
            pending: image.pending.into_iter().collect(),
        }
    }

    /// The durable contents.
    pub fn synced(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.synced
    }

    /// How many times [`Storage::sync`] has run.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        self.syncs += 1;
        for (key, value) in std::mem::take(&mut self.pending) {
            match value {
                Some(v) => self.synced.insert(key, v),
                None => self.synced.remove(&key),
            };
        }
    }

    /// Whether there are writes a crash would lose.
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Stores a serializable value under `key` (unsynced).
    pub fn put_value<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), CodecError> {
        let bytes = codec::encode(value)?;
        self.put(key, bytes);
        Ok(())
    }

    /// Reads back a value stored by [`Storage::put_value`].
    pub fn get_value<T: DeserializeOwned>(&self, key: &str) -> Option<Result<T, CodecError>> {
        self.get(key).map(codec::decode)
    }

    /// The keys currently visible, in order.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.synced.keys().cloned().collect();
        for (k, v) in &self.pending {
            match v {
                Some(_) => keys.push(k.clone()),
                None => keys.retain(|x| x != k),
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// What a crash does: unsynced writes vanish.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// A digest of the durable contents, recorded at restart.
    pub fn synced_digest(&self) -> u64 {
        let mut bytes = Vec::new();
        for (k, v) in &self.synced {
            codec::put_bytes(&mut bytes, k.as_bytes());
            codec::put_bytes(&mut bytes, v);
        }
        codec::digest(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_lost_on_crash() {
        let mut s = Storage::default();
        s.put("a", b"1".to_vec());
        s.sync();
        s.put("a", b"2".to_vec());
        s.put("b", b"3".to_vec());
        s.delete("a");
        assert_eq!(s.get("a"), None);
        assert_eq!(s.keys(), vec!["b".to_string()]);
        s.crash();
        assert_eq!(s.get("a"), Some(&b"1"[..]));
        assert_eq!(s.get("b"), None);
    }
}
