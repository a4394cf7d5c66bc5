//! kv's safety properties, checked after every event.

use super::client::Completed;
use super::msg::{Op, OpResult, Version};
use super::KvNode;
use retrace_sim::{Broken, Invariant, View};
use std::collections::BTreeMap;

/// "No acknowledged write is lost, and reads see the latest acknowledged write."
///
/// It watches clients' issue and completion counters to learn, in event order, which writes
/// were acknowledged and when each read was issued. A read must return a version at least
/// as new as the newest write acknowledged before the read was issued. The primary of the
/// newest *established* view must hold every acknowledged write: that is checked the moment
/// a view is established (its store is the merge future views build on) and after every
/// event while that primary leads. A deposed primary that has not heard of its successor is
/// not checked: it can no longer gather a majority, so it can acknowledge nothing.
#[derive(Default, Clone)]
pub struct AckedWritesDurable {
    /// The highest epoch any replica has been seen leading.
    established: u64,
    /// The newest acknowledged version of each key, with its value.
    acked: BTreeMap<String, (Version, String)>,
    /// Reads in flight: (client, op id) -> key and the version they must at least see.
    reads: BTreeMap<(u32, u64), (String, Option<Version>)>,
    /// Last issue and completion counters seen, per node.
    seen: BTreeMap<u32, (u64, u64)>,
}

impl AckedWritesDurable {
    fn observe_client(
        &mut self,
        node: u32,
        issued: u64,
        completed: u64,
        client: &super::client::Client,
    ) -> Result<(), String> {
        let seen = self.seen.entry(node).or_insert((0, 0));
        if issued != seen.0 {
            seen.0 = issued;
            if let Some((op_id, Op::Get { key })) = &client.last_issued {
                let floor = self.acked.get(key).map(|(v, _)| *v);
                self.reads.insert((node, *op_id), (key.clone(), floor));
            }
        }
        if completed != seen.1 {
            seen.1 = completed;
            let Some(Completed { op_id, op, result }) = &client.last_completed else {
                return Ok(());
            };
            let read = self.reads.remove(&(node, *op_id));
            match (op, result) {
                (Op::Put { key, value }, OpResult::PutOk { version }) => {
                    let newer = self.acked.get(key).is_none_or(|(v, _)| version > v);
                    if newer {
                        self.acked.insert(key.clone(), (*version, value.clone()));
                    }
                }
                (Op::Get { key }, OpResult::GetOk { entry }) => {
                    let got = entry.as_ref().map(|e| e.version);
                    if let Some((_, Some(floor))) = read {
                        if got.is_none_or(|g| g < floor) {
                            return Err(format!(
                                "stale read of `{key}`: got {}, but {} was acknowledged before the read began",
                                got.map_or("nothing".into(), |v| format!("{v:?}")),
                                format_args!("{floor:?}")
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Invariant<KvNode> for AckedWritesDurable {
    fn name(&self) -> &str {
        "acknowledged writes are durable and visible"
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<KvNode>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, KvNode>) -> Result<(), Broken> {
        let node = view.node.0;
        match view.nodes.get(view.node.index()) {
            Some(Some(KvNode::Client(c))) => self.observe_client(node, c.issued, c.completed, c)?,
            Some(None) => {
                // A crashed client forgets its operations; so do we.
                self.reads.retain(|(client, _), _| *client != node);
                self.seen.remove(&node);
            }
            _ => {}
        }
        let leaders = || {
            view.nodes.iter().flatten().filter_map(|n| match n {
                KvNode::Replica(r) if r.is_primary() => Some(r),
                _ => None,
            })
        };
        self.established = leaders().map(|r| r.epoch).fold(self.established, u64::max);
        let Some(primary) = leaders().find(|r| r.epoch == self.established) else {
            return Ok(());
        };
        for (key, (version, value)) in &self.acked {
            let lost = match primary.store.get(key) {
                None => true,
                Some(e) => e.version < *version || (e.version == *version && &e.value != value),
            };
            if lost {
                let held = primary.store.get(key).map_or("nothing".into(), |e| {
                    format!("{:?} = {:?}", e.version, e.value)
                });
                return Err(Broken::new(format!(
                    "acknowledged write lost: `{key}` = {value:?} at {version:?} was acknowledged, \
                     but replica-{} (primary of epoch {}) holds {held}",
                    primary.me, primary.epoch
                ))
                .fact("key", key.as_str())
                .fact("value", value.as_str())
                .fact("primary", format!("replica-{}", primary.me)));
            }
        }
        Ok(())
    }
}
