//! Example systems for retrace, each with its invariants and, where instructive, a
//! known-buggy variant a scenario can switch on.
//!
//! - [`pingpong`]: the smallest example, used in docs and benchmarks.
//! - [`kv`]: a primary-backup replicated key-value store with failover.

pub mod kv;
pub mod pingpong;

pub use kv::KvModel;
pub use pingpong::PingPongModel;
