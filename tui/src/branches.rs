//! The tree of what-if branches (`b`): the original run at its root, each branch under the
//! run it branched from. One of them is on screen (the app's session); the others are
//! parked with the row they were left at. `o` goes back to the original; `:save PATH`
//! writes the branch shown as a trace and the schedule that makes it again.

use crate::app::{App, View};
use crate::session::{BranchRun, Session};
use crate::what_if::describe_changes;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use retrace_replayer::what_if::Branch as BranchMade;
use std::path::{Path, PathBuf};

/// One run of the tree.
pub struct Branch {
    /// The run it branched from (None: the original).
    pub parent: Option<usize>,
    /// What became of it, for the tree's line (empty for the original).
    pub outcome: String,
    /// Parked while another run is on screen.
    pub session: Option<Box<dyn Session>>,
    /// The row selected when it was left.
    pub row: usize,
    /// How it was made: where, with which changes and seed (None for the original).
    pub made: Option<BranchMade>,
    /// Where it was saved, or for the original where it was read from.
    pub file: Option<PathBuf>,
}

/// The tree; empty until the first branch is made.
#[derive(Default)]
pub struct Branches {
    pub list: Vec<Branch>,
    /// The run on screen.
    pub current: usize,
    /// The tree view's selected line.
    pub sel: usize,
}

impl Branches {
    /// Depth of each run in the tree.
    pub fn depth(&self, k: usize) -> usize {
        let mut depth = 0;
        let mut at = self.list.get(k).and_then(|b| b.parent);
        while let Some(p) = at {
            depth += 1;
            at = self.list.get(p).and_then(|b| b.parent);
        }
        depth
    }

    /// The runs in tree order (each followed by its branches, oldest first).
    pub fn order(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.list.len());
        let mut stack: Vec<usize> = (0..self.list.len())
            .rev()
            .filter(|&k| self.list[k].parent.is_none())
            .collect();
        while let Some(k) = stack.pop() {
            out.push(k);
            stack.extend(
                (0..self.list.len())
                    .rev()
                    .filter(|&c| self.list[c].parent == Some(k)),
            );
        }
        out
    }

    /// Saves run `k` at `path`, and the schedule that makes it beside it; a parent branch
    /// not saved yet is saved first, beside it, since the schedule names its file.
    fn save(&mut self, k: usize, path: &Path) -> Result<Vec<PathBuf>, String> {
        let parent = self.list[k]
            .parent
            .ok_or("the original run is in its file already")?;
        let mut written = Vec::new();
        if self.list[parent].file.is_none() {
            if self.list[parent].parent.is_none() {
                return Err(
                    "the original trace's file is not known, so a schedule cannot name it".into(),
                );
            }
            let stem = path
                .file_stem()
                .map_or_else(|| "branch".into(), |s| s.to_string_lossy().into_owned());
            let sibling = path.with_file_name(format!("{stem}.branch{parent}.trace"));
            written.extend(self.save(parent, &sibling)?);
        }
        let parent_file = self.list[parent]
            .file
            .as_ref()
            .expect("saved above")
            .display()
            .to_string();
        let made = self.list[k]
            .made
            .as_ref()
            .expect("a branch has how it was made");
        let schedule = made.schedule_file(&parent_file);
        let json = serde_json::to_string_pretty(&schedule).map_err(|e| e.to_string())?;
        let schedule_path = path.with_extension("schedule.json");
        std::fs::write(path, &made.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&schedule_path, json)
            .map_err(|e| format!("{}: {e}", schedule_path.display()))?;
        self.list[k].file = Some(path.to_path_buf());
        written.push(path.to_path_buf());
        written.push(schedule_path);
        Ok(written)
    }
}

impl App {
    /// Puts a what-if branch made at a moment of the current run on screen, as its child,
    /// opened at the first breakpoint after the moment, else its violation, else the
    /// moment.
    pub(crate) fn open_branch(&mut self, run: BranchRun) {
        let BranchRun {
            mut session,
            branch,
        } = run;
        if self.branches.list.is_empty() {
            self.branches.list.push(Branch {
                parent: None,
                outcome: String::new(),
                session: None,
                row: 0,
                made: None,
                file: self.source.clone(),
            });
        }
        let records = session.trace().header.origin.branch_at().unwrap_or(0) as usize;
        let first_step = session
            .steps()
            .steps
            .iter()
            .position(|s| s.input >= records)
            .unwrap_or(session.steps().len());
        let mut note = String::new();
        let mut start_at = None;
        if !self.breakpoints.is_empty() {
            let pred = self.breakpoint_predicate();
            session.goto(first_step);
            if session.run_forward_until(&pred) {
                let step = session.position().saturating_sub(1);
                start_at = session.steps().steps.get(step).map(|s| s.input);
                note = "stopped at a breakpoint".into();
            }
        }
        let violation = branch.report.violation.as_ref().map(|v| v.describe());
        let outcome = match &violation {
            Some(v) => format!("✗ {v}"),
            None => format!("no violation ({} records)", branch.report.trace_records),
        };
        if start_at.is_none() {
            start_at = crate::timeline::recorded_violation(&session.trace().events)
                .map(|(i, _)| i)
                .or(Some(
                    records.min(session.trace().events.len().saturating_sub(1)),
                ));
            let missed = if self.breakpoints.is_empty() {
                ""
            } else {
                "no breakpoint holds after the moment; "
            };
            note = match &violation {
                Some(_) => format!("{missed}at its violation"),
                None => format!("{missed}at the moment it branched"),
            };
        }
        let label = describe_changes(branch.changes(), &self.node_names, "no change");
        let seed = branch.seed();
        let k = self.branches.list.len();
        self.branches.list.push(Branch {
            parent: Some(self.branches.current),
            outcome: outcome.clone(),
            session: None,
            row: 0,
            made: Some(branch),
            file: None,
        });
        self.show_run(k, session, start_at);
        self.message = Some(format!(
            "branch {k}: {label} (seed {seed}): {outcome}; shown {note} · b branches · o the original · :save PATH"
        ));
    }

    /// Puts run `k` of the tree on screen (its session given), parking the one shown.
    fn show_run(&mut self, k: usize, session: Box<dyn Session>, start_at: Option<usize>) {
        let violation =
            crate::timeline::recorded_violation(&session.trace().events).map(|(i, _)| i);
        let mut next = App::opened(session, start_at, violation);
        self.hand_setup_to(&mut next);
        next.source = self.source.clone();
        next.branches = std::mem::take(&mut self.branches);
        let old = std::mem::replace(self, next);
        let left = self.branches.current;
        if let Some(b) = self.branches.list.get_mut(left) {
            b.session = Some(old.session);
            b.row = old.sel;
        }
        self.branches.current = k;
    }

    /// Switches to run `k` of the tree, where it was left.
    pub(crate) fn switch_to_run(&mut self, k: usize) {
        if k == self.branches.current {
            self.view = View::Main;
            return;
        }
        let Some(session) = self.branches.list.get_mut(k).and_then(|b| b.session.take()) else {
            return;
        };
        let row = self.branches.list[k].row;
        self.show_run(k, session, None);
        self.select(row);
        self.view = View::Main;
        self.message = Some(if k == 0 {
            "the original run".into()
        } else {
            format!("branch {k}: {}", self.branches.list[k].outcome)
        });
    }

    /// `o`: back to the original run.
    pub(crate) fn back_to_original(&mut self) {
        if self.branches.list.is_empty() || self.branches.current == 0 {
            self.message = Some("this is the original run (`f` branches from an event)".into());
            return;
        }
        self.switch_to_run(0);
    }

    /// `b`: the tree.
    pub(crate) fn open_branches(&mut self) {
        if self.branches.list.is_empty() {
            self.message =
                Some("no branches yet: `f` on an event asks what if, and runs a branch".into());
            return;
        }
        self.branches.sel = self
            .branches
            .order()
            .iter()
            .position(|&k| k == self.branches.current)
            .unwrap_or(0);
        self.view = View::Branches;
    }

    pub(crate) fn branches_key(&mut self, key: KeyEvent) {
        let order = self.branches.order();
        match key.code {
            KeyCode::Esc | KeyCode::Char('q' | 'b') => self.view = View::Main,
            KeyCode::Char('j') | KeyCode::Down => {
                self.branches.sel = (self.branches.sel + 1).min(order.len().saturating_sub(1))
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.branches.sel = self.branches.sel.saturating_sub(1)
            }
            KeyCode::Enter => {
                if let Some(&k) = order.get(self.branches.sel) {
                    self.switch_to_run(k);
                }
            }
            KeyCode::Char('o') => self.back_to_original(),
            KeyCode::Char('?') => self.view = View::Help,
            _ => {}
        }
    }

    /// `:save PATH`: the run shown, as a trace and its schedule.
    pub(crate) fn save_branch(&mut self, path: &str) {
        let k = self.branches.current;
        if self.branches.list.is_empty() || k == 0 {
            self.message = Some("this is the original run: it is in its file already".into());
            return;
        }
        self.message = Some(match self.branches.save(k, Path::new(path)) {
            Ok(written) => {
                let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
                let b = &self.branches.list[k];
                let parent = b.parent.and_then(|p| self.branches.list[p].file.as_ref());
                format!(
                    "saved {}; again with: retrace fork {} --at {} --schedule {}",
                    names.join(", "),
                    parent.map_or_else(String::new, |p| p.display().to_string()),
                    b.made.as_ref().map_or(0, |m| m.at()),
                    // The schedule is the last file saved (parents come first).
                    names.last().map_or("", String::as_str)
                )
            }
            Err(e) => format!("not saved: {e}"),
        });
    }
}
