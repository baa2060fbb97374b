//! Escaping of control characters in text fields.
//!
//! Event text comes from users (program names, user agents, failure reasons) and ends up in
//! terminals, log lines and web pages. Control characters are escaped rather than rejected, so
//! an event is never lost over its text and never carries a raw CR, LF, ESC or bidirectional
//! override into a text sink (OWASP log-injection guidance). Escaping is idempotent: its output
//! holds no character it would escape, so escaping an escaped value changes nothing. A literal
//! backslash is left alone for that reason, which means `\n` (two characters) and an escaped
//! line feed read the same; for an audit trail, not corrupting a sink matters more.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Returns true for characters that must not reach a text sink raw: C0 and C1 controls, DEL,
/// the Unicode line and paragraph separators and the bidirectional embedding, override and
/// isolate controls (the "Trojan Source" characters).
pub fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Returns `text` with every character that [`needs_escape`] replaced by a visible escape:
/// `\n`, `\r`, `\t`, or `\u{XXXX}` for the others. Borrows when nothing needs escaping.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !might_need_escape(text) || !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing to a String cannot fail.
                let _ = write!(escaped, "\\u{{{:04x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Returns false when no character of `text` can need escaping, from its bytes alone: every
/// character [`needs_escape`] matches is a C0 control or DEL (one byte below 0x20, or 0x7f), a
/// C1 control (UTF-8 lead byte 0xc2) or one of the U+2028–U+2069 separators and bidirectional
/// controls (lead byte 0xe2). Most text has none of these bytes and skips decoding.
fn might_need_escape(text: &str) -> bool {
    text.bytes().any(|byte| byte < 0x20 || byte == 0x7f || byte == 0xc2 || byte == 0xe2)
}

/// What marks a text cut short by [`truncate`]: visible, so a reader knows there was more.
pub const TRUNCATION_MARKER: &str = "…(truncated)";

/// Returns `text` cut to at most `max_bytes` bytes on a character boundary, ending in
/// [`TRUNCATION_MARKER`] when anything was cut. Borrows when `text` fits. A `max_bytes` smaller
/// than the marker yields the marker alone cut to fit.
pub fn truncate(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let mut keep = max_bytes.saturating_sub(TRUNCATION_MARKER.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut short = String::with_capacity(max_bytes);
    short.push_str(&text[..keep]);
    short.push_str(TRUNCATION_MARKER);
    if short.len() > max_bytes {
        // Only when the marker alone does not fit.
        let mut end = max_bytes;
        while !short.is_char_boundary(end) {
            end -= 1;
        }
        short.truncate(end);
    }
    Cow::Owned(short)
}

/// Escapes `text` in place.
pub(crate) fn escape_in_place(text: &mut String) {
    if let Cow::Owned(escaped) = escape_control(text) {
        *text = escaped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_bidi_characters() {
        assert_eq!(escape_control("plain <b>text</b> é"), "plain <b>text</b> é");
        assert!(matches!(escape_control("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape_control("\u{1b}[31mred"), "\\u{001b}[31mred");
        assert_eq!(escape_control("nul\0"), "nul\\u{0000}");
        assert_eq!(escape_control("x\u{202e}y\u{2028}"), "x\\u{202e}y\\u{2028}");
        assert_eq!(escape_control("\u{85}\u{7f}"), "\\u{0085}\\u{007f}");
    }

    /// The byte pre-check must never miss a character that needs escaping.
    #[test]
    fn the_byte_check_sees_every_character_that_needs_escaping() {
        for code in 0..=0x2_ffff_u32 {
            if let Some(c) = char::from_u32(code)
                && needs_escape(c)
            {
                assert!(might_need_escape(c.encode_utf8(&mut [0; 4])), "U+{code:04X}");
            }
        }
    }

    #[test]
    fn truncates_on_character_boundaries_with_a_marker() {
        assert!(matches!(truncate("short", 5), Cow::Borrowed("short")));
        let long = "é".repeat(100);
        let cut = truncate(&long, 50);
        assert!(cut.len() <= 50, "{cut}");
        assert!(cut.ends_with(TRUNCATION_MARKER), "{cut}");
        assert!(cut.starts_with("éé"), "{cut}");
        let tiny = truncate("abcdefghijklmnopqrstuvwxyz", 4);
        assert!(tiny.len() <= 4, "{tiny}");
    }

    #[test]
    fn escaping_is_idempotent() {
        for text in ["a\nb", "\u{1b}\u{202e}", "already \\n escaped", "\\u{001b}"] {
            let once = escape_control(text).into_owned();
            assert_eq!(escape_control(&once), once);
            assert!(!once.chars().any(needs_escape));
        }
    }
}
