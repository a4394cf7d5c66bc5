//! Example systems for retrace, each with its invariants and, where instructive, a
//! known-buggy variant a scenario can switch on.
//!
//! - [`pingpong`]: the smallest example, used in docs and benchmarks.
//! - [`kv`]: a primary-backup replicated key-value store with failover.
//! - [`raft`]: Raft election and replication, with three known bugs.
//! - [`twopc`]: two-phase commit with crashes, with a known bug.
//! - [`lockserv`]: a primary-backup lock service with fencing tokens, with a known bug.
//! - [`quorum`]: leaderless quorum reads and writes with read repair, with a known bug.
//! - [`webcache`]: an HTTP web tier with Redis in front of its database (a black-box
//!   service), cache-aside with its stale-read bug.
//! - [`webstack`]: clients, load balancer, web frontends, cache and database, with a noon
//!   batch job that slows the database.

pub mod kv;
pub mod lockserv;
pub mod pingpong;
pub mod quorum;
pub mod raft;
pub mod twopc;
pub mod webcache;
pub mod webstack;

pub use kv::KvModel;
pub use lockserv::LockModel;
pub use pingpong::PingPongModel;
pub use quorum::QuorumModel;
pub use raft::RaftModel;
pub use twopc::TwoPcModel;
pub use webcache::WebcacheModel;
pub use webstack::WebstackModel;
