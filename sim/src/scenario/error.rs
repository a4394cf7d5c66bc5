use std::fmt;

/// A scenario file is unusable. Names the file, the place and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    /// 1-based; 0 when the problem has no place (an unreadable file).
    pub line: usize,
    pub column: usize,
    /// The dotted key, like `network.drop`, when known.
    pub field: Option<String>,
    pub message: String,
    /// The offending source line, for display.
    pub snippet: Option<String>,
}

impl ScenarioError {
    /// An error with no position (for example, the file cannot be read).
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        ScenarioError {
            file: file.to_string(),
            line: 0,
            column: 0,
            field: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// An error at byte offset `at` of `source`.
    pub fn at_offset(file: &str, source: &str, at: usize, message: impl Into<String>) -> Self {
        let at = at.min(source.len());
        let before = &source[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..at].chars().count() + 1;
        let line_text = source[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        ScenarioError {
            file: file.to_string(),
            line,
            column,
            field: field_path(source, line_start),
            message: message.into(),
            snippet: Some(line_text),
        }
    }

    /// An error at the key `key` of table `table` (`""` for the top level); falls back to
    /// the table header, then to the whole file.
    pub fn at_key(
        file: &str,
        source: &str,
        table: &str,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        match find_key(source, table, key) {
            Some(offset) => ScenarioError::at_offset(file, source, offset, message),
            None => {
                let mut e = ScenarioError::whole_file(file, message);
                e.field = Some(if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                });
                e
            }
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if let Some(field) = &self.field {
            write!(f, "in `{field}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n  {:>4} | {snippet}", self.line)?;
            write!(
                f,
                "\n       | {}^",
                " ".repeat(self.column.saturating_sub(1))
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// The table header in force at byte `line_start`, like `network` or `faults`.
fn table_at(source: &str, line_start: usize) -> String {
    source[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

/// The dotted path of the key defined on the line starting at `line_start`, if any.
fn field_path(source: &str, line_start: usize) -> Option<String> {
    let line = source[line_start..].lines().next()?.trim();
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = table_at(source, line_start);
    Some(if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    })
}

/// Byte offset of `key = ...` inside `[table]` (top level when `table` is empty).
fn find_key(source: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut offset = 0;
    let mut table_offset = None;
    for line in source.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if current == table && table_offset.is_none() {
                table_offset = Some(offset + (line.len() - line.trim_start().len()));
            }
        } else if current == table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == key {
                    return Some(offset + (line.len() - line.trim_start().len()));
                }
            }
        }
        offset += line.len();
    }
    table_offset
}
