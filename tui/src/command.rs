//! The `:` command line: parsing only; the app carries the commands out.

use retrace_sim::scenario::parse_duration_ns;
use retrace_sim::RequestId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `goto N`: the event with this trace index.
    GotoEvent(usize),
    /// `goto 12.5ms`: the first event at or after this time (from the trace's start).
    GotoTime(u64),
    /// `goto NAME`: a bookmark.
    GotoBookmark(String),
    /// `break PREDICATE`: add a breakpoint; `break` alone lists them.
    Break(Option<String>),
    /// `delete N` (one breakpoint, by its number) or `delete` (all).
    Delete(Option<usize>),
    Why,
    Effects,
    Request(RequestId),
    /// `clear`: no highlight.
    Clear,
    Bookmark(String),
    /// `profile [ID]`: the selected event's request, or this one.
    Profile(Option<RequestId>),
    /// `value TEXT`: where a value (JSON, or a bare string) came from and went, across the
    /// whole run.
    Provenance(String),
    /// `window N`: for a trace opened a window at a time, the window around the trace's
    /// event N (the trace's numbering, not the window's).
    Window(u64),
    /// `save PATH`: the what-if branch shown, as a trace at PATH and the schedule that
    /// makes it again beside it.
    Save(String),
    Help,
    Quit,
}

fn request_id(text: &str) -> Result<RequestId, String> {
    text.trim_start_matches('r')
        .parse()
        .map(RequestId)
        .map_err(|_| format!("`{text}` is not a request id (like r12 or 12)"))
}

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let line = line.trim();
        let (word, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(w, r)| (w, r.trim()));
        let none_expected = |c: Command| {
            if rest.is_empty() {
                Ok(c)
            } else {
                Err(format!("`{word}` takes no argument"))
            }
        };
        match word {
            "goto" | "g" => {
                if rest.is_empty() {
                    return Err("`goto` needs an event index, a time (12.5ms) or a bookmark".into());
                }
                if let Ok(n) = rest.parse::<usize>() {
                    return Ok(Command::GotoEvent(n));
                }
                if rest.starts_with(|c: char| c.is_ascii_digit()) {
                    return parse_duration_ns(rest, false)
                        .map(|ns| Command::GotoTime(ns as u64))
                        .map_err(|e| format!("`goto {rest}`: {e}"));
                }
                Ok(Command::GotoBookmark(rest.to_string()))
            }
            "break" | "b" => Ok(Command::Break((!rest.is_empty()).then(|| rest.to_string()))),
            "delete" | "d" => {
                if rest.is_empty() {
                    Ok(Command::Delete(None))
                } else {
                    rest.parse()
                        .map(|n| Command::Delete(Some(n)))
                        .map_err(|_| format!("`delete {rest}`: expected a breakpoint number"))
                }
            }
            "window" => rest
                .parse()
                .map(Command::Window)
                .map_err(|_| format!("`window {rest}`: expected an event of the trace, like 48000000")),
            "save" | "w" => {
                if rest.is_empty() {
                    Err("`save` needs a file to write the branch's trace to".into())
                } else {
                    Ok(Command::Save(rest.to_string()))
                }
            }
            "why" => none_expected(Command::Why),
            "effects" => none_expected(Command::Effects),
            "request" | "r" => {
                if rest.is_empty() {
                    Err("`request` needs a request id".into())
                } else {
                    request_id(rest).map(Command::Request)
                }
            }
            "clear" => none_expected(Command::Clear),
            "bookmark" | "mark" => {
                if rest.is_empty() {
                    Err("`bookmark` needs a name".into())
                } else {
                    Ok(Command::Bookmark(rest.to_string()))
                }
            }
            "profile" | "p" => {
                if rest.is_empty() {
                    Ok(Command::Profile(None))
                } else {
                    request_id(rest).map(|r| Command::Profile(Some(r)))
                }
            }
            "value" | "v" => {
                if rest.is_empty() {
                    Err("`value` needs a value, like \"vc8c58fc4\" or 42 (or press `v` on an event)".into())
                } else {
                    Ok(Command::Provenance(rest.to_string()))
                }
            }
            "help" | "h" => none_expected(Command::Help),
            "q" | "quit" => none_expected(Command::Quit),
            "" => Err("empty command".into()),
            other => Err(format!(
                "unknown command `{other}`; commands: goto, break, delete, why, effects, request, value, clear, bookmark, profile, save, help, quit"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("goto 42"), Ok(Command::GotoEvent(42)));
        assert_eq!(
            Command::parse("goto 12.5ms"),
            Ok(Command::GotoTime(12_500_000))
        );
        assert_eq!(
            Command::parse("goto lost"),
            Ok(Command::GotoBookmark("lost".into()))
        );
        assert_eq!(
            Command::parse("break msg Request"),
            Ok(Command::Break(Some("msg Request".into())))
        );
        assert_eq!(
            Command::parse("request r7"),
            Ok(Command::Request(RequestId(7)))
        );
        assert_eq!(Command::parse("profile"), Ok(Command::Profile(None)));
        assert_eq!(
            Command::parse("w out/branch.trace"),
            Ok(Command::Save("out/branch.trace".into()))
        );
        assert!(Command::parse("save").is_err());
        assert!(Command::parse("goto").is_err());
        assert!(Command::parse("why now").is_err());
        assert!(Command::parse("frobnicate")
            .unwrap_err()
            .contains("unknown command"));
    }
}
