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
