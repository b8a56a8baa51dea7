//! Peer-controlled text made safe to show on a terminal.
//!
//! Everything a peer chooses (message text, display names, room titles and topics, file names)
//! reaches the user's terminal. Raw, it could carry escape sequences: OSC 52 writes to the
//! clipboard, title changes, or a carriage return plus cursor moves that draw a fake line
//! spoofing another sender. Bidi overrides and isolates reorder what follows them, so a line
//! can read differently from what it contains. This is the one place that decides which
//! characters are shown as visible escapes instead; the command line and the terminal UI both
//! use it. It lives in `protocol` (a pure leaf) so every front end can import it.

use std::fmt::Write as _;

/// True for a character that must never reach the terminal as itself: C0 controls (tab and
/// newline included; callers that keep them handle them first), DEL, C1 controls, and the bidi
/// embedding, override and isolate controls.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}' | '\u{80}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends the visible form of `c` to `out`: C0 controls and DEL as their Control Pictures
/// symbol (ESC becomes `␛`, CR `␍`), everything else unsafe as `<U+XXXX>`, safe characters as
/// themselves.
pub fn push_visible(out: &mut String, c: char) {
    match c {
        '\u{0}'..='\u{1f}' => {
            // U+2400..U+241F are the pictures of U+0000..U+001F, in order.
            out.push(char::from_u32(0x2400 + u32::from(c)).unwrap_or('\u{fffd}'));
        }
        '\u{7f}' => out.push('\u{2421}'),
        c if is_unsafe(c) => {
            let _ = write!(out, "<U+{:04X}>", u32::from(c));
        }
        c => out.push(c),
    }
}

/// One line of peer text: every unsafe character (tab and newline included) escaped. For
/// names, titles and other strings that must stay on one line.
pub fn line(s: &str) -> String {
    if !s.chars().any(is_unsafe) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_visible(&mut out, c);
    }
    out
}

/// A message body for line-oriented output: tabs stay, every other unsafe character is escaped,
/// and each newline is followed by `indent`, so a body line can never start at column 0 and pass
/// for a new `sender:` line. A trailing newline is dropped (the caller ends the line).
pub fn body(s: &str, indent: &str) -> String {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push('\t'),
            '\n' => {
                out.push('\n');
                out.push_str(indent);
            }
            c => push_visible(&mut out, c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi() {
        let evil = "a\x1b]52;c;SGVsbG8=\x07b\r\x1b[2Kc\u{7f}\u{9b}\u{202e}\u{2066}d";
        let l = line(evil);
        assert!(!l.chars().any(is_unsafe), "{l:?}");
        assert_eq!(l, "a␛]52;c;SGVsbG8=␇b␍␛[2Kc␡<U+009B><U+202E><U+2066>d");
        assert_eq!(line("plain ✓ текст"), "plain ✓ текст");
        assert_eq!(line("a\tb\nc"), "a␉b␊c");
    }

    #[test]
    fn body_keeps_tabs_and_indents_newlines() {
        assert_eq!(body("a\tb\nmallory: hi\n", "    "), "a\tb\n    mallory: hi");
        let b = body("x\r\x1b[2Kmallory: fake", "  ");
        assert!(!b.contains(['\r', '\x1b']), "{b:?}");
        for l in body("one\ntwo\nthree", "  ").lines().skip(1) {
            assert!(l.starts_with("  "), "{l:?}");
        }
    }
}
