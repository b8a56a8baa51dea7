//! Display-width-aware wrapping: grapheme clusters (combining marks stay with their base),
//! wide characters (CJK, most emoji) count two columns, and lines break at spaces when a word
//! fits, else inside the word.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::protocol::safe_text;

/// Display width of `s` in terminal columns.
pub fn width(s: &str) -> usize {
    s.graphemes(true).map(grapheme_width).sum()
}

fn grapheme_width(g: &str) -> usize {
    // Control characters (tabs included) would move the cursor; they are drawn as one space.
    if g.chars().any(char::is_control) {
        return 1;
    }
    UnicodeWidthStr::width(g)
}

/// Wraps `text` to `cols` columns; explicit newlines start new lines, and other control and
/// bidi characters are escaped (see [`safe_text`]). Never returns an empty vector (an empty
/// text is one empty line).
pub fn wrap(text: &str, cols: usize) -> Vec<String> {
    let cols = cols.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        // Peer text is escaped here, where every message body passes, so what reaches the
        // terminal is what the grid was laid out for; tabs are drawn as a space.
        let para = safe_text::line(&para.replace('\t', " "));
        let mut line = String::new();
        let mut line_w = 0usize;
        // Position in `line` (bytes) and width just after the last space, for word breaks.
        let mut last_space: Option<(usize, usize)> = None;
        for g in para.graphemes(true) {
            let g_owned;
            let g = if g.chars().any(char::is_control) {
                g_owned = " ".to_owned();
                g_owned.as_str()
            } else {
                g
            };
            let w = grapheme_width(g);
            if line_w + w > cols && line_w > 0 && g == " " {
                // The line is full exactly at a space: break here and drop the space.
                out.push(std::mem::take(&mut line).trim_end().to_owned());
                line_w = 0;
                last_space = None;
                continue;
            }
            if line_w + w > cols && line_w > 0 {
                match last_space {
                    Some((at, at_w)) if at < line.len() => {
                        let rest = line.split_off(at);
                        out.push(line.trim_end().to_owned());
                        line = rest;
                        line_w -= at_w;
                    }
                    _ => {
                        out.push(std::mem::take(&mut line).trim_end().to_owned());
                        line_w = 0;
                    }
                }
                last_space = None;
                if g == " " && line.is_empty() {
                    continue;
                }
            }
            line.push_str(g);
            line_w += w;
            if g == " " {
                last_space = Some((line.len(), line_w));
            }
        }
        out.push(line);
    }
    out
}

/// Truncates `s` to `cols` columns, adding `…` when cut; unsafe characters are escaped first
/// (see [`safe_text`]).
pub fn truncate(s: &str, cols: usize) -> String {
    // Names and titles pass here; escaped like message bodies.
    let s = &safe_text::line(&s.replace('\t', " "));
    if width(s) <= cols {
        return s.clone();
    }
    let mut out = String::new();
    let mut w = 0;
    for g in s.graphemes(true) {
        let gw = grapheme_width(g);
        if w + gw + 1 > cols {
            break;
        }
        out.push_str(g);
        w += gw;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_inside_long_words() {
        assert_eq!(wrap("hello world foo", 11), vec!["hello world", "foo"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("a\n\nb", 5), vec!["a", "", "b"]);
    }

    #[test]
    fn wide_combining_and_emoji() {
        // Each CJK character is two columns.
        assert_eq!(
            wrap("日本語のテキスト", 6),
            vec!["日本語", "のテキ", "スト"]
        );
        // e + combining acute stays one column and one cluster.
        let e = "e\u{301}";
        assert_eq!(width(e), 1);
        assert_eq!(
            wrap(&e.repeat(5), 2),
            vec![e.repeat(2), e.repeat(2), e.to_string()]
        );
        // A family emoji (ZWJ sequence) is never split.
        let fam = "👨‍👩‍👧";
        for line in wrap(&format!("{fam}{fam}{fam}"), 3) {
            assert!(line.is_empty() || line.contains(fam), "{line:?}");
        }
        assert!(wrap("👋👋👋", 4).iter().all(|l| width(l) <= 4));
        assert_eq!(width("a\tb"), 3);
    }

    #[test]
    fn peer_escapes_are_drawn_visibly() {
        let lines = wrap("hi\x1b]52;c;SGVsbG8=\x07\r\u{202e}x", 80);
        assert_eq!(lines, vec!["hi␛]52;c;SGVsbG8=␇␍<U+202E>x"]);
        assert_eq!(truncate("m\x1b[2Kx", 80), "m␛[2Kx");
    }

    #[test]
    fn every_line_fits() {
        let text = "Ünïcödé — 漢字 and 🎉 emoji mixed with averyveryverylongwordthatmustbreak here";
        for cols in 1..40 {
            for l in wrap(text, cols) {
                assert!(width(&l) <= cols.max(2), "{cols}: {l:?}");
            }
        }
        assert_eq!(truncate("hello world", 6), "hello…");
        assert_eq!(truncate("hi", 6), "hi");
    }
}
