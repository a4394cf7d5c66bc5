//! What the CLI's registry holds: one [`Model`] per system, with its invariants.

use crate::history::ClientEvent;
use crate::ids::NodeId;
use crate::node::Node;
use crate::rng::SimRng;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// A node's name and role, as shown in traces and used in scenario files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub role: String,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            role: role.into(),
        }
    }
}

/// A scenario's model options are invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError {
    /// The option's key under `[model_options]`.
    pub field: String,
    pub message: String,
}

/// A system retrace can simulate: its node type, how to build the cluster from options, the
/// invariants to check, and the workload of external requests.
pub trait Model: 'static {
    /// The name scenario files use in `model = "..."`.
    const NAME: &'static str;
    /// One line for `retrace models`.
    const ABOUT: &'static str;
    type Node: Node;
    /// The scenario's `[model_options]` table. Use `#[serde(deny_unknown_fields, default)]`.
    type Options: Serialize + DeserializeOwned + Default + Clone + Debug + Send + Sync + 'static;

    /// Checks option values serde cannot (ranges, combinations).
    fn validate(options: &Self::Options) -> Result<(), OptionError> {
        let _ = options;
        Ok(())
    }

    /// The cluster's nodes, indexed by `NodeId`.
    fn nodes(options: &Self::Options) -> Vec<NodeSpec>;

    /// Builds node `id` in its initial state: at first start, and again at every restart.
    fn build(options: &Self::Options, id: NodeId) -> Self::Node;

    /// The invariants checked after every event.
    fn invariants(options: &Self::Options) -> Vec<Box<dyn Invariant<Self::Node>>>;

    /// The sequential specification of what clients see (see [`crate::linearizability`]),
    /// for `retrace check TRACE --linearizable` on any trace of this model, recorded ones
    /// too. `None` (the default): the model has none.
    fn linearizability(
        options: &Self::Options,
    ) -> Option<Box<dyn crate::linearizability::HistoryCheck<<Self::Node as Node>::Msg>>> {
        let _ = options;
        None
    }

    /// Client number `index` of a closed-loop workload (`[workload] clients = N` in a
    /// scenario): a [`Client`](crate::client::Client) that keeps state and sees answers.
    /// `None` (the default): the model has no stateful client, and its scenarios use
    /// `rate` with [`Model::request`].
    fn client(
        options: &Self::Options,
        index: u32,
    ) -> Option<Box<dyn crate::client::Client<<Self::Node as Node>::Msg>>> {
        let _ = (options, index);
        None
    }

    /// How the model's external requests and answers travel over HTTP (the recorder's
    /// client port serves HTTP/1.1 beside framed JSON; `[workload] protocol = "http"` makes
    /// the simulator's workload speak it). The default carries messages as JSON bodies.
    fn http(options: &Self::Options) -> Box<dyn crate::http::HttpApi<<Self::Node as Node>::Msg>> {
        let _ = options;
        Box::new(crate::http::JsonBodies)
    }

    /// The simulator's stand-in for the service the scenario names `name` (`[services.NAME]`):
    /// a [`Service`](crate::service::Service) speaking the real server's bytes, built again
    /// after each of its crashes. `None` (the default): the model has no such service, and a
    /// scenario that declares it is refused.
    fn service(options: &Self::Options, name: &str) -> Option<Box<dyn crate::service::Service>> {
        let _ = (options, name);
        None
    }

    /// Bytes to or from the model's services as people read them, when the model knows the
    /// protocol (webcache: RESP, as `redis-cli` shows it) — what `show`, the TUI and the
    /// exports print. `None` (the default): shown as text, or as hex.
    fn show_service_bytes(bytes: &[u8]) -> Option<String> {
        let _ = bytes;
        None
    }

    /// The next external request of the workload: which node receives it and what it is.
    /// `None` means the model has no external workload.
    fn request(
        options: &Self::Options,
        rng: &mut SimRng,
    ) -> Option<(NodeId, <Self::Node as Node>::Msg)> {
        let _ = (options, rng);
        None
    }
}

/// The cluster as an invariant sees it after one step.
pub struct View<'a, N: Node> {
    /// Virtual time of the step.
    pub time_ns: u64,
    /// Trace index of the step's input record.
    pub step_index: u64,
    /// The node that just took a step (invariants can be incremental on it).
    pub node: NodeId,
    /// Every node's state; `None` while a node is down.
    pub nodes: &'a [Option<N>],
    /// What clients saw in this step: the external request it began with, and the answers
    /// it gave (to this or to earlier requests), in order. Filled only for invariants that
    /// say they read it ([`Invariant::sees_clients`]); [`crate::history::History`] gathers
    /// them over a run.
    pub client: &'a [ClientEvent<N::Msg>],
}

/// A broken invariant: the explanation a person reads, and named facts a tool can use
/// without parsing that prose (for example the key and the value of a lost write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Broken {
    pub message: String,
    /// (name, value), in the order the invariant gave them.
    pub facts: Vec<(String, String)>,
}

impl Broken {
    pub fn new(message: impl Into<String>) -> Self {
        Broken {
            message: message.into(),
            facts: Vec::new(),
        }
    }

    /// Adds a named fact.
    pub fn fact(mut self, name: &str, value: impl Into<String>) -> Self {
        self.facts.push((name.to_string(), value.into()));
        self
    }

    /// The first fact called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.facts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl From<String> for Broken {
    fn from(message: String) -> Self {
        Broken::new(message)
    }
}

impl From<&str> for Broken {
    fn from(message: &str) -> Self {
        Broken::new(message)
    }
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A property that must hold after every event. It may keep its own state (for example,
/// what has been acknowledged so far), which evolves deterministically with the run.
pub trait Invariant<N: Node>: 'static {
    fn name(&self) -> &str;
    /// Whether this invariant reads [`View::client`]. Runtimes copy requests and answers
    /// for the view only when some invariant does, so models that check node state alone
    /// pay nothing for it.
    fn sees_clients(&self) -> bool {
        false
    }
    /// `Err` with a human-readable explanation (and any facts a tool may want) when the
    /// property is broken.
    fn check(&mut self, view: &View<'_, N>) -> Result<(), Broken>;
    /// A copy with the same state, for the replayer's checkpoints (`Box::new(self.clone())`).
    fn boxed_clone(&self) -> Box<dyn Invariant<N>>;
}

struct FnInvariant<F> {
    name: String,
    check: F,
}

impl<N: Node, F> Invariant<N> for FnInvariant<F>
where
    F: FnMut(&View<'_, N>) -> Result<(), Broken> + Clone + 'static,
{
    fn boxed_clone(&self) -> Box<dyn Invariant<N>> {
        Box::new(FnInvariant {
            name: self.name.clone(),
            check: self.check.clone(),
        })
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&mut self, view: &View<'_, N>) -> Result<(), Broken> {
        (self.check)(view)
    }
}

/// An invariant from a closure; `Err("why".into())` or `Err(format!(…).into())` when broken,
/// or a [`Broken`] with facts.
pub fn invariant<N: Node>(
    name: &str,
    check: impl FnMut(&View<'_, N>) -> Result<(), Broken> + Clone + 'static,
) -> Box<dyn Invariant<N>> {
    Box::new(FnInvariant {
        name: name.to_string(),
        check,
    })
}
