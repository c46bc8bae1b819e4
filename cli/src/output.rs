//! How commands print results: aligned tables and key/value views for people,
//! pretty JSON for programs. Everything here renders to a `String` (so it is
//! testable) and the `print_*` helpers write it to stdout. Progress and errors
//! never come through here: they go to stderr, so `-o json` stays parseable.

use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// How a command prints its result on stdout.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// Pretty-printed JSON, the API's own representation.
    Json,
    /// The same as YAML.
    Yaml,
    /// A table with more columns (where a command has them).
    Wide,
    /// Only names, one per line, for scripts (where a command lists things).
    Name,
}

impl OutputFormat {
    /// Whether the result is printed as data (JSON or YAML) rather than
    /// for people.
    pub fn is_data(self) -> bool {
        matches!(self, OutputFormat::Json | OutputFormat::Yaml)
    }
}

/// Shown in a cell that has no value.
pub const NONE: &str = "-";

/// Rows under a header, rendered with columns aligned and separated by two
/// spaces. The last column is not padded, so long details do not widen the
/// others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; empty cells show as [`NONE`]. Missing cells are empty,
    /// extra cells are kept and widen the table.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let row = cells
            .into_iter()
            .map(Into::into)
            .map(|c: String| if c.is_empty() { NONE.to_owned() } else { c })
            .collect();
        self.rows.push(row);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                text.push_str(cell);
                if i + 1 < columns {
                    let pad = width - cell.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A "key: value" view, values aligned in one column; sections nest by
/// indentation.
///
/// ```text
/// Name:        orders
/// Spec:
///   Version:   15
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    lines: Vec<(usize, String, Option<String>)>,
    depth: usize,
}

impl Details {
    pub fn new() -> Details {
        Details::default()
    }

    /// A `key: value` line; an empty value shows as [`NONE`].
    pub fn field(&mut self, key: &str, value: impl Into<String>) -> &mut Details {
        let value: String = value.into();
        let value = if value.is_empty() {
            NONE.to_owned()
        } else {
            value
        };
        self.lines
            .push((self.depth, format!("{key}:"), Some(value)));
        self
    }

    /// A line of its own (a list item), at the current depth.
    pub fn item(&mut self, text: impl Into<String>) -> &mut Details {
        self.lines.push((self.depth, text.into(), None));
        self
    }

    /// A `key:` heading whose lines, added by `body`, are indented under it.
    pub fn section(&mut self, key: &str, body: impl FnOnce(&mut Details)) -> &mut Details {
        self.lines.push((self.depth, format!("{key}:"), None));
        self.depth += 1;
        body(self);
        self.depth -= 1;
        self
    }

    pub fn render(&self) -> String {
        let width = self
            .lines
            .iter()
            .filter(|(_, _, v)| v.is_some())
            .map(|(depth, key, _)| depth * 2 + key.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (depth, key, value) in &self.lines {
            let indent = "  ".repeat(*depth);
            match value {
                Some(v) => {
                    let pad = width - depth * 2 - key.chars().count() + 2;
                    out.push_str(&format!("{indent}{key}{}{v}", " ".repeat(pad)));
                }
                None => out.push_str(&format!("{indent}{key}")),
            }
            out.push('\n');
        }
        out
    }
}

/// Writes `text` to stdout as is.
pub fn print_text(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `value` to stdout as pretty JSON followed by a newline.
pub fn print_json<T: Serialize>(value: &T) -> io::Result<()> {
    print_text(&render_json(value)?)
}

/// Writes `value` to stdout as JSON or YAML ([`OutputFormat::is_data`]).
pub fn print_data<T: Serialize>(format: OutputFormat, value: &T) -> io::Result<()> {
    print_text(&render_data(format, value)?)
}

/// `value` as YAML for [`OutputFormat::Yaml`], as pretty JSON otherwise.
pub fn render_data<T: Serialize>(format: OutputFormat, value: &T) -> io::Result<String> {
    match format {
        OutputFormat::Yaml => serde_yaml::to_string(value).map_err(io::Error::other),
        _ => render_json(value),
    }
}

pub fn render_json<T: Serialize>(value: &T) -> io::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// `text` on one line and at most `max` characters, ending in `…` when
/// shortened.
pub fn ellipsize(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && !text.contains('\n') {
        return line.to_owned();
    }
    let kept: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// A timestamp as people read it in tables: RFC 3339, UTC, whole seconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The age of something created at `then`, as of `now`, in its largest unit
/// (`45s`, `12m`, `3h`, `5d`), like kubectl's AGE column.
pub fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A duration the way `--timeout` accepts it: `90s` → `1m30s`, `300s` → `5m`.
pub fn duration(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (total / 3_600, total % 3_600 / 60, total % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn table_aligns_columns_and_marks_empty_cells() {
        let mut t = Table::new(["NAME", "STATE", "EXTENSIONS"]);
        t.row(["orders", "Up", "citext,hstore"]);
        t.row(["a-much-longer-name", "Configuring", ""]);
        assert_eq!(
            t.render(),
            "NAME                STATE        EXTENSIONS\n\
             orders              Up           citext,hstore\n\
             a-much-longer-name  Configuring  -\n"
        );
    }

    #[test]
    fn table_does_not_pad_the_last_column_and_counts_chars_not_bytes() {
        let mut t = Table::new(["FROM", "DETAIL"]);
        t.row(["Up→", "short"]);
        t.row(["x", "a much longer detail"]);
        assert_eq!(
            t.render(),
            "FROM  DETAIL\nUp→   short\nx     a much longer detail\n"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let t = Table::new(["A", "B"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A  B\n");
    }

    #[test]
    fn details_align_values_across_sections() {
        let mut d = Details::new();
        d.field("Name", "orders").field("Error", "");
        d.section("Spec", |d| {
            d.field("Postgres version", "15");
            d.section("Config", |d| {
                d.item("work_mem = 16MB");
            });
        });
        assert_eq!(
            d.render(),
            "Name:                orders\n\
             Error:               -\n\
             Spec:\n\
             \x20 Postgres version:  15\n\
             \x20 Config:\n\
             \x20   work_mem = 16MB\n"
        );
    }

    #[test]
    fn ages_use_the_largest_unit() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(60), "1m");
        assert_eq!(ago(3_599), "59m");
        assert_eq!(ago(7_200), "2h");
        assert_eq!(ago(3 * 86_400 + 5), "3d");
        // Clock skew between client and server never shows a negative age.
        assert_eq!(ago(-30), "0s");
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(3_605)), "1h5s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn json_is_pretty_and_ends_with_a_newline() {
        let text = render_json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        assert_eq!(timestamp(at), "2024-05-01T12:00:00Z");
    }
}
