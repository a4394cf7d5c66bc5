//! # retrace-tui
//!
//! The time-travel terminal UI over a replayed run: a space-time diagram (one lane per
//! node, arrows from send to delivery), the event list, the selected event's detail (its
//! message, the node's state before and after with a structural diff, the timers and
//! messages pending at that moment), breakpoints, causal highlighting, request profiles and
//! the history of a value across machines (`v`).
//!
//! - [`session`]: the replay behind the screen, with the model's types erased;
//! - [`timeline`]: what is precomputed when a trace opens;
//! - [`app`]: state and the key-driven update function (what tests drive);
//! - [`value`]: `v`, following a value (picker and answer);
//! - [`what_if`]: `f`, changing what is pending at an event and running the branch;
//! - [`branches`]: `b`, `o`, `:save`, the tree of what-if branches;
//! - [`pager`]: a trace too large to open whole, one window at a time (`(` `)`);
//! - [`ui`]: rendering, a pure function of the app;
//! - [`terminal`]: the event loop on a real terminal.

pub mod app;
pub mod branches;
pub mod command;
pub mod pager;
pub mod session;
pub mod terminal;
pub mod timeline;
pub mod ui;
pub mod value;
pub mod what_if;

pub use app::App;
pub use pager::{Pager, Toward, WindowPager};
pub use session::{ModelSession, Session};
