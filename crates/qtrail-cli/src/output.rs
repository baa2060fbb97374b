//! Rendering results: aligned tables and key/value blocks for people, JSON for scripts.
//!
//! Every cell goes through [`qtrail_cadf::text::escape_control`]: event text is user-controlled,
//! and a program named with escape sequences must not repaint the auditor's terminal.

use std::io::Write;

use qtrail_cadf::text::escape_control;
use serde_json::Value;

/// Widest a table cell gets before it is cut with `…`.
const MAX_CELL_CHARS: usize = 64;

/// A table with a header row.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Starts a table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.into_iter().map(|cell| cell_text(&cell)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Writes the table, columns separated by two spaces, the last column unpadded.
    ///
    /// # Errors
    /// I/O errors of `out`.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

fn cell_text(text: &str) -> String {
    let escaped = escape_control(text);
    if escaped.chars().count() <= MAX_CELL_CHARS {
        return escaped.into_owned();
    }
    let cut: String = escaped.chars().take(MAX_CELL_CHARS - 1).collect();
    format!("{cut}…")
}

/// Writes `key: value` lines, keys aligned.
///
/// # Errors
/// I/O errors of `out`.
pub fn write_fields(out: &mut dyn Write, fields: &[(&str, String)]) -> std::io::Result<()> {
    let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        let label = format!("{key}:");
        writeln!(out, "{label:<width$} {}", escape_control(value))?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON followed by a newline.
///
/// # Errors
/// I/O errors of `out`.
pub fn write_json(out: &mut dyn Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Writes `value` as one line of JSON (for streams such as `events tail`).
///
/// # Errors
/// I/O errors of `out`.
pub fn write_json_line(out: &mut dyn Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_escapes_and_cuts_cells() {
        let mut table = Table::new(&["ID", "NAME", "NOTE"]);
        table.row(vec!["1".into(), "bell".into(), "ok".into()]);
        table.row(vec!["22".into(), "evil\u{1b}[2J\nname".into()]);
        table.row(vec!["3".into(), "x".repeat(100), "z".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["ID", "NAME", "NOTE"]);
        assert!(lines[1].starts_with("1   bell"), "{text}");
        assert!(lines[2].contains("evil\\u{001b}[2J\\nname"), "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(lines[3].contains(&format!("{}…", "x".repeat(63))), "{text}");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn writes_aligned_fields() {
        let mut out = Vec::new();
        write_fields(&mut out, &[("id", "j-1".into()), ("status", "COMPLETED".into())]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "id:     j-1\nstatus: COMPLETED\n");
    }
}
