//! The one exit-code table of every command (also in `--help` and the README). Its own
//! module: every command's file uses it, and none of them needs the CLI's definitions.

/// Every invariant held (or the command succeeded).
pub const OK: u8 = 0;
/// An invariant was violated: in a run, a fuzz campaign, or a trace replayed.
pub const VIOLATION: u8 = 1;
/// Bad input: an unreadable, invalid or over-limit file; a corrupt or torn trace (what
/// can be used of it is used first, then the command exits 2); an unreadable log;
/// unwritable output.
pub const BAD_INPUT: u8 = 2;
/// Two executions that should agree differ: `--check-determinism`'s two runs, or the
/// code re-executing a trace (`replay`) or a log (`verify`) against what it recorded.
pub const NONDETERMINISM: u8 = 3;

/// The code of a command that used the valid prefix of a trace whose tail was torn.
pub fn after_reading(tail: Option<&retrace_sim::trace::TailError>, code: u8) -> u8 {
    match tail {
        Some(_) => BAD_INPUT,
        None => code,
    }
}
