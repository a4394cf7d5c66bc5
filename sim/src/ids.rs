//! Small identifier and time types shared by every part of the simulator.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the cluster: an index into the scenario's node list.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The node's position in the cluster's node list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A timer set by a node; unique across the whole run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct TimerId(pub u64);

/// The identity of one external request, propagated along causality by the simulator
/// (as X-Trace's task ids), never by node code.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default,
)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A point in time in nanoseconds: virtual time in the simulator, or a node's local clock
/// reading as returned by [`crate::Ctx::now`].
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default,
)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later (clocks can jump back).
    pub fn saturating_since(self, earlier: Time) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<std::time::Duration> for Time {
    type Output = Time;
    fn add(self, rhs: std::time::Duration) -> Time {
        Time(self.0.saturating_add(duration_ns(rhs)))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_ns(self.0))
    }
}

/// Saturating conversion of a `Duration` to nanoseconds.
pub fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Formats nanoseconds the way scenario files write them: `0s`, `1.5ms`, `2.000001s`.
pub fn format_ns(ns: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns == 0 {
        return "0s".to_string();
    }
    for (scale, unit) in UNITS {
        if ns >= scale {
            let whole = ns / scale;
            let frac = ns % scale;
            if frac == 0 {
                return format!("{whole}{unit}");
            }
            let digits = scale.ilog10() as usize;
            let frac = format!("{frac:0digits$}");
            return format!("{whole}.{}{unit}", frac.trim_end_matches('0'));
        }
    }
    unreachable!("ns >= 1 always matches the last unit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ns_picks_the_largest_unit() {
        assert_eq!(format_ns(0), "0s");
        assert_eq!(format_ns(1), "1ns");
        assert_eq!(format_ns(1_500_000), "1.5ms");
        assert_eq!(format_ns(2_000_000_001), "2.000000001s");
        assert_eq!(format_ns(10_000_000_000), "10s");
    }
}
