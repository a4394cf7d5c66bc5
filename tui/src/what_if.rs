//! `f`: what if, at the selected event. The panel lists what is pending at that moment —
//! the messages in flight and the nodes — and takes changes by key: a message delivered
//! now, delayed, dropped or duplicated; a node crashed, restarted or isolated. `Enter` runs
//! the branch those changes make (a fork of the run, `retrace_replayer::what_if`) and opens
//! it where it is worth looking: the first breakpoint after the moment, else the
//! violation, else the moment. Branches form a tree ([`crate::branches`]).

use crate::app::{App, View};
use crate::session::{MomentView, PendingMessage};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use retrace_sim::{Intervention, NodeId};

/// The delays `d` steps through on a message, then back to none.
pub const DELAYS_NS: [u64; 4] = [10_000_000, 100_000_000, 1_000_000_000, 10_000_000_000];

/// Changes for people, in order, or `none` when there are none.
pub fn describe_changes(changes: &[Intervention], node_names: &[String], none: &str) -> String {
    if changes.is_empty() {
        return none.to_string();
    }
    let each: Vec<String> = changes.iter().map(|c| c.describe(node_names)).collect();
    each.join(", ")
}

/// One row of the panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row<'a> {
    Message(&'a PendingMessage),
    Node(NodeId),
}

/// The what-if panel: the moment, the changes picked so far, and the seed.
pub struct WhatIf {
    pub moment: MomentView,
    /// The selected row: messages first, then nodes.
    pub sel: usize,
    /// In the order picked (node changes happen in this order).
    pub changes: Vec<Intervention>,
    pub seed: u64,
}

impl WhatIf {
    pub fn new(moment: MomentView) -> WhatIf {
        let seed = moment.seed;
        WhatIf {
            moment,
            sel: 0,
            changes: Vec::new(),
            seed,
        }
    }

    pub fn rows(&self) -> usize {
        self.moment.messages.len() + self.moment.up.len()
    }

    pub fn row(&self, i: usize) -> Option<Row<'_>> {
        let m = &self.moment.messages;
        match m.get(i) {
            Some(msg) => Some(Row::Message(msg)),
            None => (i - m.len() < self.moment.up.len())
                .then(|| Row::Node(NodeId((i - m.len()) as u32))),
        }
    }

    /// The change picked for a message, if any.
    pub fn change_of_message(&self, send: u64) -> Option<&Intervention> {
        self.changes.iter().find(|c| c.send() == Some(send))
    }

    /// The changes picked for a node, in order.
    pub fn changes_of_node(&self, node: NodeId) -> impl Iterator<Item = &Intervention> {
        self.changes.iter().filter(move |c| c.node() == Some(node))
    }

    /// Whether `node` is up once the changes picked so far are made.
    pub fn up_after(&self, node: NodeId) -> bool {
        let up = self.moment.up.get(node.index()).copied().unwrap_or(false);
        self.changes_of_node(node).fold(up, |up, c| c.leaves_up(up))
    }

    /// Sets a message's fate: replaces the one it had; the same one again removes it.
    fn set_fate(&mut self, change: Intervention) {
        let send = change.send();
        match self.changes.iter().position(|c| c.send() == send) {
            Some(k) if self.changes[k] == change => {
                self.changes.remove(k);
            }
            Some(k) => self.changes[k] = change,
            None => self.changes.push(change),
        }
    }

    /// `d`: the next delay of [`DELAYS_NS`], then none.
    fn delay(&mut self, send: u64) {
        let next = match self.change_of_message(send) {
            Some(Intervention::Delay { by_ns, .. }) => {
                DELAYS_NS.iter().copied().find(|&d| d > *by_ns)
            }
            _ => Some(DELAYS_NS[0]),
        };
        self.changes.retain(|c| c.send() != Some(send));
        if let Some(by_ns) = next {
            self.changes.push(Intervention::Delay { send, by_ns });
        }
    }

    /// A node change: the same one again, last, removes it.
    fn node_change(&mut self, change: Intervention) -> Result<(), String> {
        if self.changes.last() == Some(&change) {
            self.changes.pop();
            return Ok(());
        }
        let node = change.node().expect("node changes only");
        if matches!(change, Intervention::Crash { .. }) && !self.up_after(node) {
            return Err("that node is down at this point: `r` restarts it".into());
        }
        self.changes.push(change);
        Ok(())
    }
}

impl App {
    /// `f`: sets up a what-if at the selected event (one re-execution of the run to it).
    pub(crate) fn open_what_if(&mut self) {
        if self.pager.is_some() {
            self.message = Some(
                "what-if needs the whole trace: `retrace cut` this window to a file and open that"
                    .into(),
            );
            return;
        }
        let at = self.record_of(self.sel) as u64;
        match self.session.what_if_moment(at) {
            Ok(moment) => {
                self.what_if = Some(WhatIf::new(moment));
                self.view = View::WhatIf;
            }
            Err(e) => self.message = Some(format!("cannot branch here: {e}")),
        }
    }

    pub(crate) fn what_if_key(&mut self, key: KeyEvent) {
        let Some(w) = self.what_if.as_mut() else {
            self.view = View::Main;
            return;
        };
        self.message = None;
        let rows = w.rows();
        let row = w.row(w.sel);
        let result: Result<(), String> = match (key.code, row) {
            (KeyCode::Esc | KeyCode::Char('q' | 'f'), _) => {
                self.view = View::Main;
                Ok(())
            }
            (KeyCode::Char('?'), _) => {
                self.view = View::Help;
                Ok(())
            }
            (KeyCode::Char('j') | KeyCode::Down, _) => {
                w.sel = (w.sel + 1).min(rows.saturating_sub(1));
                Ok(())
            }
            (KeyCode::Char('k') | KeyCode::Up, _) => {
                w.sel = w.sel.saturating_sub(1);
                Ok(())
            }
            (KeyCode::Char('g') | KeyCode::Home, _) => {
                w.sel = 0;
                Ok(())
            }
            (KeyCode::Char('G') | KeyCode::End, _) => {
                w.sel = rows.saturating_sub(1);
                Ok(())
            }
            (KeyCode::Char('u') | KeyCode::Backspace, _) => match w.changes.pop() {
                Some(_) => Ok(()),
                None => Err("no change to undo".into()),
            },
            (KeyCode::Char('s'), _) => {
                w.seed = w.seed.wrapping_add(1);
                Ok(())
            }
            (KeyCode::Char('S'), _) => {
                w.seed = w.seed.wrapping_sub(1);
                Ok(())
            }
            (KeyCode::Enter, _) => {
                self.run_what_if();
                return;
            }
            (KeyCode::Char('n'), Some(Row::Message(m))) => {
                let send = m.send;
                w.set_fate(Intervention::Deliver { send });
                Ok(())
            }
            (KeyCode::Char('d'), Some(Row::Message(m))) => {
                let send = m.send;
                w.delay(send);
                Ok(())
            }
            (KeyCode::Char('x'), Some(Row::Message(m))) => {
                let send = m.send;
                w.set_fate(Intervention::Drop { send });
                Ok(())
            }
            (KeyCode::Char('D'), Some(Row::Message(m))) => {
                let send = m.send;
                w.set_fate(Intervention::Duplicate { send });
                Ok(())
            }
            (KeyCode::Char('c'), Some(Row::Node(node))) => {
                w.node_change(Intervention::Crash { node })
            }
            (KeyCode::Char('r'), Some(Row::Node(node))) => {
                w.node_change(Intervention::Restart { node })
            }
            (KeyCode::Char('i'), Some(Row::Node(node))) => {
                w.node_change(Intervention::Isolate { node })
            }
            (KeyCode::Char('n' | 'd' | 'x' | 'D'), _) => {
                Err("n, d, x and D change a message: pick one in the list".into())
            }
            (KeyCode::Char('c' | 'r' | 'i'), _) => {
                Err("c, r and i change a node: pick one below the messages".into())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.message = Some(e);
        }
    }

    /// `Enter` in the panel: runs the branch and opens it.
    fn run_what_if(&mut self) {
        let Some(w) = self.what_if.as_ref() else {
            return;
        };
        match self.session.what_if_branch(w.seed, &w.changes) {
            Ok(run) => {
                self.what_if = None;
                self.view = View::Main;
                self.open_branch(run);
            }
            Err(e) => self.message = Some(format!("the branch did not run: {e}")),
        }
    }
}
