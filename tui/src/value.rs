//! `v`: follow a value across the cluster. A picker offers the values worth following at
//! the selected event — those a broken invariant names, the fields the step changed, the
//! message's fields, then the rest of the node's state — and `Enter` asks the replayer's
//! provenance (one re-execution of the run) where the value came from and where it went.
//! The answer's lines name events; `Enter` on one goes there, with the value's story
//! highlighted so `]`/`[` walk through it and `w` narrows to it.

use crate::app::{App, Highlight, View};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use retrace_replayer::provenance::{leaves, lines, Ask};
use retrace_sim::trace::Record;

/// State leaves offered at most (after the changes and the message's fields).
const STATE_PICKS_MAX: usize = 300;

/// One value the picker offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    pub label: String,
    pub ask: Ask,
}

/// A value's story, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The value, as JSON text.
    pub value: String,
    /// Lines, each with the event it is about.
    pub lines: Vec<(Option<usize>, String)>,
    pub sel: usize,
    /// The steps of the story (sorted), for the highlight and for narrowing `w`.
    pub steps: Vec<usize>,
}

pub struct ValueView {
    pub picks: Vec<Pick>,
    pub pick_sel: usize,
    pub answer: Option<Answer>,
}

/// The quoted parts of a text: `"…"` and `` `…` ``, in order, each once.
fn quoted(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for quote in ['"', '`'] {
        let parts: Vec<&str> = text.split(quote).collect();
        for (k, part) in parts.iter().enumerate() {
            // Odd pieces are inside quotes (when the quote is closed).
            if k % 2 == 1 && k + 1 < parts.len() && !part.is_empty() && part.len() <= 200 {
                let p = part.to_string();
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

fn short(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(59).collect();
        format!("{cut}…")
    } else {
        text
    }
}

impl App {
    /// `v`: the picker for the selected event.
    pub(crate) fn open_value(&mut self) {
        let mut picks: Vec<Pick> = Vec::new();
        let row_record = self.record_of(self.sel);
        let step = self.causal_step();
        // A broken invariant names the values that matter.
        let mut violation_texts: Vec<String> = Vec::new();
        if let Record::Violation { message, .. } = &self.session.trace().events[row_record].record {
            violation_texts.push(message.clone());
        }
        if let Some(s) = self.own_step(self.sel) {
            violation_texts.extend(self.session.violations_at(s).into_iter().map(|v| v.message));
        }
        for text in &violation_texts {
            for q in quoted(text) {
                let ask = Ask::Value {
                    text: serde_json::Value::String(q.clone()).to_string(),
                };
                if !picks.iter().any(|p| p.ask == ask) {
                    picks.push(Pick {
                        label: format!("\"{q}\"  (named by the broken invariant)"),
                        ask,
                    });
                }
            }
        }
        if let Some(s) = step {
            // The fields this step changed.
            if self.detail.step == Some(s) {
                for c in &self.detail.states.changes {
                    if let Some(after) = &c.after {
                        picks.push(Pick {
                            label: format!("{} = {}  (changed here)", c.path, short(after)),
                            ask: Ask::State {
                                step: s,
                                path: c.path.clone(),
                            },
                        });
                    }
                }
            }
            // The message's fields.
            let input = self.session.steps().steps[s].input;
            let payload = match &self.session.trace().events[input].record {
                Record::Deliver { payload, .. } | Record::External { payload, .. } => {
                    Some(payload.clone())
                }
                _ => None,
            };
            if let Some(json) = payload.and_then(|p| self.session.message_json(&p)) {
                for (path, leaf) in leaves(&json, STATE_PICKS_MAX) {
                    picks.push(Pick {
                        label: format!("message{path} = {}", short(&leaf)),
                        ask: Ask::Message { step: s, path },
                    });
                }
            }
            // The rest of the node's state.
            if let Some(json) = self.session.state_after_json(s) {
                for (path, leaf) in leaves(&json, STATE_PICKS_MAX) {
                    let ask = Ask::State { step: s, path };
                    if !picks.iter().any(|p| p.ask == ask) {
                        let Ask::State { path, .. } = &ask else {
                            continue;
                        };
                        picks.push(Pick {
                            label: format!("{path} = {}", short(&leaf)),
                            ask,
                        });
                    }
                }
            }
        }
        if picks.is_empty() {
            self.message = Some("no value here to follow: select an event of a node".into());
            return;
        }
        self.value = Some(ValueView {
            picks,
            pick_sel: 0,
            answer: None,
        });
        self.view = View::Value;
        self.message = Some("pick a value to follow (`j`/`k`, Enter), Esc back".into());
    }

    /// `:value TEXT`: follow a value typed in, across the whole run.
    pub(crate) fn follow_value_text(&mut self, text: &str) {
        self.value = Some(ValueView {
            picks: Vec::new(),
            pick_sel: 0,
            answer: None,
        });
        self.view = View::Value;
        self.answer(Ask::Value {
            text: text.to_string(),
        });
    }

    fn answer(&mut self, ask: Ask) {
        match self.session.provenance(&ask) {
            Ok(p) => {
                let mut steps: Vec<usize> =
                    p.back.iter().chain(&p.forward).map(|l| l.step).collect();
                steps.sort_unstable();
                steps.dedup();
                let value = p.needle.text();
                let missing = p.missing.len();
                let out = lines(&p, &self.node_names);
                // Start on the first line that says what went wrong, else the first event.
                let sel = out
                    .iter()
                    .position(|(_, l)| l.contains("never arrived"))
                    .or_else(|| out.iter().position(|(e, _)| e.is_some()))
                    .unwrap_or(0);
                self.highlight = Some(Highlight {
                    label: format!("value {value}"),
                    steps: steps.clone(),
                    records: Vec::new(),
                });
                self.message = Some(if missing > 0 {
                    format!(
                        "{value}: {} events; {missing} node(s) never got a copy (Enter goes to an event)",
                        steps.len()
                    )
                } else {
                    format!("{value}: {} events (Enter goes to an event)", steps.len())
                });
                if let Some(v) = self.value.as_mut() {
                    v.answer = Some(Answer {
                        value,
                        lines: out,
                        sel,
                        steps,
                    });
                }
            }
            Err(e) => self.message = Some(e),
        }
    }

    pub(crate) fn value_key(&mut self, key: KeyEvent) {
        let Some(v) = self.value.as_mut() else {
            self.view = View::Main;
            return;
        };
        match (&mut v.answer, key.code) {
            (_, KeyCode::Esc | KeyCode::Char('q' | 'v')) => self.view = View::Main,
            (_, KeyCode::Char('?')) => self.view = View::Help,
            (Some(a), KeyCode::Char('j') | KeyCode::Down) => {
                a.sel = (a.sel + 1).min(a.lines.len().saturating_sub(1))
            }
            (Some(a), KeyCode::Char('k') | KeyCode::Up) => a.sel = a.sel.saturating_sub(1),
            (Some(_), KeyCode::Backspace | KeyCode::Char('b')) if !v.picks.is_empty() => {
                v.answer = None
            }
            (Some(a), KeyCode::Enter) => {
                if let Some(event) = a.lines.get(a.sel).and_then(|(e, _)| *e) {
                    let row = self.timeline.row_of(event);
                    self.view = View::Main;
                    self.select(row);
                }
            }
            (None, KeyCode::Char('j') | KeyCode::Down) => {
                v.pick_sel = (v.pick_sel + 1).min(v.picks.len().saturating_sub(1))
            }
            (None, KeyCode::Char('k') | KeyCode::Up) => v.pick_sel = v.pick_sel.saturating_sub(1),
            (None, KeyCode::Enter) => {
                if let Some(p) = v.picks.get(v.pick_sel) {
                    let ask = p.ask.clone();
                    self.answer(ask);
                }
            }
            _ => {}
        }
    }
}
