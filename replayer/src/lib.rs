//! # retrace-replayer
//!
//! The headless engine the TUI and scripts stand on. It loads any trace — simulated, or merged
//! from a real recording — and:
//! - re-executes the whole cluster in one process with the model's code, checking every
//!   output against the trace and stopping at the first [`Divergence`] ([`engine`]);
//! - moves a [`Cursor`] over the run, forward and back, with checkpoints for rewind
//!   ([`cursor`]);
//! - answers causality queries over the happens-before graph ([`causality`]);
//! - profiles requests over their exact message edges ([`profile`]).

pub mod causality;
pub mod cursor;
pub mod describe;
pub mod diff;
pub mod engine;
pub mod export;
pub mod faults;
pub mod fork;
pub mod index;
pub mod inevitable;
pub mod predicate;
pub mod profile;
pub mod provenance;
pub mod steps;
pub mod stream;
pub mod what_if;
pub mod window;

pub use causality::Causality;
pub use cursor::{CheckpointPolicy, Cursor};
pub use describe::{event_detail, event_line, node_name, Describe};
pub use engine::{Cluster, Divergence, Replay, ReplayError, ReplayViolation};
pub use predicate::Predicate;
pub use steps::Steps;
