//! Each view of the TUI on a small fixed trace, as text (`UPDATE_EXPECT=1` refreshes).

mod common;

use common::{app, keys, screen, LOST_WRITE};
use expect_test::expect_file;

#[test]
fn main_view_opens_at_the_violation() {
    let mut app = app(LOST_WRITE);
    expect_file!["snapshots/main.txt"].assert_eq(&screen(&mut app, 120, 36));
}

#[test]
fn main_view_with_the_causal_history() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "w");
    expect_file!["snapshots/why.txt"].assert_eq(&screen(&mut app, 120, 36));
}

#[test]
fn main_view_narrow_zoomed_out() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "zz:break invariant<Enter>:");
    expect_file!["snapshots/narrow-zoomed.txt"].assert_eq(&screen(&mut app, 80, 24));
}

#[test]
fn profile_view() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g/external<Enter>p");
    expect_file!["snapshots/profile.txt"].assert_eq(&screen(&mut app, 100, 30));
}

#[test]
fn help_view() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "?");
    expect_file!["snapshots/help.txt"].assert_eq(&screen(&mut app, 100, 36));
}

#[test]
fn too_small() {
    let mut app = app(LOST_WRITE);
    expect_file!["snapshots/too-small.txt"].assert_eq(&screen(&mut app, 40, 8));
}

#[test]
fn what_if_panel_and_branch_tree() {
    let mut app = app(LOST_WRITE);
    // After the kill: the primary down; drop the message in flight, restart the primary.
    keys(&mut app, ":goto crash<Enter>jfx");
    let nodes_at = app.what_if.as_ref().unwrap().moment.messages.len();
    keys(&mut app, &format!("g{}r", "j".repeat(nodes_at)));
    expect_file!["snapshots/what-if.txt"].assert_eq(&screen(&mut app, 120, 30));
    keys(&mut app, "<Enter>b");
    expect_file!["snapshots/branches.txt"].assert_eq(&screen(&mut app, 120, 16));
}
