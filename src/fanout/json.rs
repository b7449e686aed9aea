//! JSON Lines that are safe to show on a terminal, whatever a mirror sent.
//!
//! serde_json already writes C0 controls as `\uXXXX` escapes, but passes DEL, the C1 controls
//! (U+0080..U+009F, which include CSI on many terminals) and the bidirectional overrides and
//! isolates (U+202A..U+202E, U+2066..U+2069, which reorder what a reader sees), the directional
//! marks (U+200E, U+200F, U+061C) and the line and paragraph separators (U+2028, U+2029, which
//! many languages' line splitters treat as line ends, turning one object into several invalid
//! lines) through raw.
//! Every string the master prints as JSON (mirror output, messages, errors) is mirror-supplied
//! or derived from it, so each of those characters is written as a `\uXXXX` escape too: the
//! JSON text stays plain, and a JSON reader still gets the exact value back.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// Characters written as `\uXXXX` besides the ones JSON itself requires to be escaped.
pub fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{7f}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{061c}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// serde_json's compact format (every default of `Formatter`), escaping [`needs_escape`] characters inside strings.
struct TerminalSafe;

impl Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some((i, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            writer.write_all(&rest.as_bytes()[..i])?;
            // Every character needs_escape accepts is in the Basic Multilingual Plane.
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[i + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

/// One JSON object on one line, with [`needs_escape`] characters escaped.
pub fn line<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, TerminalSafe);
    match value.serialize(&mut ser) {
        // The formatter writes only ASCII escapes and whole UTF-8 sequences of valid strings.
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => format!("{{\"error\":\"cannot encode as JSON: {e}\"}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped_and_round_trip() {
        let hostile =
            "a\u{1b}[31m b\u{7f} c\u{85}\u{9b}2J d\u{202e}txt.exe\u{2066}e\u{2069} é ✓ \"\\\n";
        let text = line(&serde_json::json!({ "output": hostile }));
        for c in text.chars() {
            assert!(!needs_escape(c) && !c.is_control(), "{c:?} raw in {text}");
        }
        assert!(text.contains("\\u007f") && text.contains("\\u0085") && text.contains("\\u009b"));
        assert!(text.contains("\\u202e") && text.contains("\\u2066") && text.contains("\\u2069"));
        assert!(text.contains("\\u001b"), "{text}");
        // Other text passes as it is; the value a JSON reader gets back is exactly the input.
        assert!(text.contains("é ✓"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["output"], hostile);
    }

    #[test]
    fn line_separators_and_directional_marks_are_escaped() {
        let hostile = "one\u{2028}two\u{2029}three \u{200e}\u{200f}\u{61c}";
        let text = line(&serde_json::json!({ "output": hostile }));
        // What a reader that splits at U+2028/U+2029 (JavaScript, Python's str.splitlines) sees:
        // still one line, and still valid JSON.
        let pieces: Vec<&str> = text
            .split(['\n', '\u{2028}', '\u{2029}', '\u{85}'])
            .collect();
        assert_eq!(pieces.len(), 1, "{text}");
        for esc in ["\\u2028", "\\u2029", "\\u200e", "\\u200f", "\\u061c"] {
            assert!(text.contains(esc), "{esc} in {text}");
        }
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["output"], hostile);
    }

    #[test]
    fn keys_and_nested_strings_are_covered_too() {
        let text = line(&serde_json::json!({ "k\u{202d}": ["\u{80}"], "n": 1, "b": null }));
        assert!(!text.chars().any(needs_escape), "{text}");
        assert!(
            text.contains("\"n\":1") && text.contains("\"b\":null"),
            "{text}"
        );
    }
}
