//! Breakpoint predicates: what "run until" stops on.

use retrace_sim::{NodeId, RequestId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// A step on this node.
    Node(NodeId),
    /// A step whose input is of this kind (`deliver`, `timer`, `external`, `crash`, ...).
    Kind(String),
    /// A delivery or request whose message is this variant (`Heartbeat`, `Op`, ...).
    Message(String),
    /// A delivery or request whose message, printed, contains this text.
    Contains(String),
    /// A node whose state, printed, contains this text after the step.
    State { node: NodeId, contains: String },
    /// A step after which some invariant is violated.
    Invariant,
    /// A step of this request.
    Request(RequestId),
    /// Any of these (a set of breakpoints).
    Any(Vec<Predicate>),
}

impl Predicate {
    /// Whether this predicate is a watch on the cluster's state (a node's state, the
    /// invariants) rather than a property of one step: a watch stops a run where it
    /// *becomes* true, as a gdb watchpoint fires on change; once a write is lost, every
    /// later step is "after a violation", and stopping at each would be useless.
    pub fn is_watch(&self) -> bool {
        matches!(self, Predicate::State { .. } | Predicate::Invariant)
    }

    /// The predicates of a set (`Any`), flattened; a single predicate is a set of one.
    pub fn leaves(&self) -> Vec<&Predicate> {
        match self {
            Predicate::Any(ps) => ps.iter().flat_map(Predicate::leaves).collect(),
            p => vec![p],
        }
    }

    /// Parses `node NAME`, `kind KIND`, `msg VARIANT`, `contains TEXT`, `state NAME TEXT`,
    /// `invariant`, `request ID`; `names` are the trace's node names.
    pub fn parse(text: &str, names: &[String]) -> Result<Predicate, String> {
        let text = text.trim();
        let (word, rest) = text
            .split_once(' ')
            .map_or((text, ""), |(w, r)| (w, r.trim()));
        let node = |name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .map(|i| NodeId(i as u32))
                .ok_or_else(|| format!("unknown node `{name}`; nodes are {}", names.join(", ")))
        };
        let need = |what: &str| {
            if rest.is_empty() {
                Err(format!("`{word}` needs {what}"))
            } else {
                Ok(())
            }
        };
        match word {
            "node" => {
                need("a node name")?;
                Ok(Predicate::Node(node(rest)?))
            }
            "kind" => {
                need("a record kind")?;
                Ok(Predicate::Kind(rest.to_string()))
            }
            "msg" => {
                need("a message variant")?;
                Ok(Predicate::Message(rest.to_string()))
            }
            "contains" => {
                need("text")?;
                Ok(Predicate::Contains(rest.to_string()))
            }
            "state" => {
                let (name, contains) = rest.split_once(' ').ok_or("`state` needs a node name and text")?;
                Ok(Predicate::State { node: node(name)?, contains: contains.trim().to_string() })
            }
            "invariant" => Ok(Predicate::Invariant),
            "request" => {
                let id = rest.trim_start_matches('r').parse().map_err(|_| format!("`{rest}` is not a request id"))?;
                Ok(Predicate::Request(RequestId(id)))
            }
            other => Err(format!(
                "unknown predicate `{other}`; use node, kind, msg, contains, state, invariant or request"
            )),
        }
    }
}
