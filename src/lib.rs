//! retrace: a deterministic distributed-system simulator for record-and-replay debugging.
//!
//! This crate is the command-line tool and a facade over the library crates:
//! [`sim`] (the node API, simulator, scenarios and trace format) and [`models`] (example
//! systems). To run your own system with retrace's commands, implement
//! [`sim::Model`] for it and call [`cli::main_with`] from your own binary:
//!
//! ```no_run
//! # use retrace::registry::Registry;
//! fn main() -> std::process::ExitCode {
//!     let registry = Registry::builtin(); // .with::<my_crate::MyModel>()
//!     retrace::cli::main_with(registry)
//! }
//! ```

pub mod bench;
mod capture_cli;
pub mod check_cli;
pub mod cli;
mod demo;
pub mod exit;
mod export_cli;
mod fork_cli;
pub mod fuzz_cli;
mod inevitable_cli;
mod provenance_cli;
mod record_cli;
pub mod registry;
pub mod replay_cli;
mod replay_run;
mod run_states;
pub mod summary;
mod tap_cli;
mod window_cli;

pub use retrace_models as models;
pub use retrace_recorder as recorder;
pub use retrace_replayer as replayer;
pub use retrace_sim as sim;
pub use retrace_tui as tui;
