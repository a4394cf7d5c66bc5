//! # retrace-recorder
//!
//! The same `Node` code that runs in the simulator, run for real: each node is an OS process
//! talking TCP on 127.0.0.1 or a network, and every input that crosses its boundary is
//! written to its own crash-safe log. A launcher runs a scenario's cluster as processes;
//! [`merge`] turns the logs of a run into one trace; [`verify`] re-executes each node
//! from its log and checks it makes the recorded outputs.

pub mod capture;
pub mod client;
pub mod diag;
pub mod durable;
pub mod http_port;
pub mod launcher;
pub mod log;
pub mod manifest;
pub mod merge;
pub mod net;
pub mod policy;
pub mod ports;
pub mod runtime;
pub mod segments;
pub mod service_conn;
pub mod tap;
pub mod tls;
pub mod verify;
pub mod wire;

pub use log::{read_log, Fsync, Log, LogHeader, LogRecord};
pub use runtime::{run_node, NodeOptions, NodeSummary};
