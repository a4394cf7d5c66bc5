//! Structural diffs of node states and messages, through their serde form.

use serde::Serialize;
use serde_json::Value;
use std::fmt::Debug;

/// One difference: where, and the value on each side (`None`: absent there).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_string(), |v| v.to_string());
        write!(
            f,
            "{}: {} -> {}",
            if self.path.is_empty() {
                "."
            } else {
                &self.path
            },
            show(&self.before),
            show(&self.after)
        )
    }
}

/// At most this many changes are reported for one pair.
pub const MAX_CHANGES: usize = 64;

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    if out.len() >= MAX_CHANGES || a == b {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                walk(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        _ => out.push(Change {
            path: path.to_string(),
            before: a.cloned(),
            after: b.cloned(),
        }),
    }
}

/// The differences between two values, as paths into their serde form. Values that do not
/// serialize to JSON are compared by their `Debug` text.
pub fn diff<T: Serialize + Debug>(before: &T, after: &T) -> Vec<Change> {
    match (serde_json::to_value(before), serde_json::to_value(after)) {
        (Ok(a), Ok(b)) => {
            let mut out = Vec::new();
            walk("", Some(&a), Some(&b), &mut out);
            out
        }
        _ => {
            let (a, b) = (format!("{before:?}"), format!("{after:?}"));
            if a == b {
                Vec::new()
            } else {
                vec![Change {
                    path: String::new(),
                    before: Some(Value::String(a)),
                    after: Some(Value::String(b)),
                }]
            }
        }
    }
}

/// Differences between two optional states (a node that is down has none).
pub fn diff_states<T: Serialize + Debug>(before: Option<&T>, after: Option<&T>) -> Vec<Change> {
    match (before, after) {
        (Some(a), Some(b)) => diff(a, b),
        (None, None) => Vec::new(),
        (a, b) => vec![Change {
            path: String::new(),
            before: a.map(|v| serde_json::to_value(v).unwrap_or(Value::Null)),
            after: b.map(|v| serde_json::to_value(v).unwrap_or(Value::Null)),
        }],
    }
}
