//! kv's safety properties, checked after every event.

use super::msg::{Msg, Op, OpResult, Version};
use super::KvNode;
use retrace_sim::history::ClientEvent;
use retrace_sim::{Broken, Invariant, RequestId, View};
use std::collections::BTreeMap;

/// "No acknowledged write is lost."
///
/// It reads what clients saw (the step's requests and answers) to learn which writes were
/// acknowledged, with their versions. The primary of the newest *established* view must
/// hold every acknowledged write: that is checked the moment a view is established (its
/// store is the merge future views build on) and after every event while that primary
/// leads. A deposed primary that has not heard of its successor is not checked: it can no
/// longer gather a majority, so it can acknowledge nothing. (Whether reads see those writes
/// is the linearizability check's business, see `spec.rs`.)
#[derive(Default, Clone)]
pub struct AckedWritesDurable {
    /// The highest epoch any replica has been seen leading.
    established: u64,
    /// The newest acknowledged version of each key, with its value.
    acked: BTreeMap<String, (Version, String)>,
    /// Puts asked for and not yet answered.
    puts: BTreeMap<RequestId, (String, String)>,
}

impl AckedWritesDurable {
    fn observe_clients(&mut self, events: &[ClientEvent<Msg>]) {
        for e in events {
            match e {
                ClientEvent::Invoke {
                    request,
                    msg: Msg::Op(Op::Put { key, value }),
                    ..
                } => {
                    self.puts.insert(*request, (key.clone(), value.clone()));
                }
                ClientEvent::Complete { request, msg, .. } => {
                    let Some((key, value)) = self.puts.remove(request) else {
                        continue;
                    };
                    if let Msg::Done(OpResult::PutOk { version }) = msg {
                        let newer = self.acked.get(&key).is_none_or(|(v, _)| version > v);
                        if newer {
                            self.acked.insert(key, (*version, value));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Invariant<KvNode> for AckedWritesDurable {
    fn name(&self) -> &str {
        "acknowledged writes are durable"
    }

    fn sees_clients(&self) -> bool {
        true
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<KvNode>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, KvNode>) -> Result<(), Broken> {
        self.observe_clients(view.client);
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
