//! Tab completion in the composer: command names, command arguments and user names.
//!
//! Pure functions over the input line; the app decides what to do with the candidates (replace
//! the word with the only one, or with their [`common_prefix`] and show the list).

use super::action::CommandSpec;

/// What to complete: replace `input[start..end]` with one of `candidates`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Byte offset where the word to replace starts (after any `/` or `@`).
    pub start: usize,
    /// Byte offset where it ends (the end of the word under the cursor).
    pub end: usize,
    /// Matches, deduplicated and sorted (ignoring case); never empty.
    pub candidates: Vec<String>,
}

impl Completion {
    /// `input` with the word replaced by `candidate`, and the cursor just after it.
    pub fn apply(&self, input: &str, candidate: &str) -> (String, usize) {
        let mut out = String::with_capacity(input.len() + candidate.len());
        out.push_str(input.get(..self.start).unwrap_or(input));
        out.push_str(candidate);
        let cursor = out.len();
        out.push_str(input.get(self.end..).unwrap_or(""));
        (out, cursor)
    }
}

/// Completes the word before byte offset `cursor` in `input`.
///
/// - The first word, starting with `prefix` (`/` or vim's `:`): command names (`/se` ->
///   `search`); the range excludes the prefix.
/// - An argument of a command, by the word of its synopsis at that position: `USER` (or
///   `USER...`, which repeats) completes user names (`/dm al`, also `/dm @al`, `/invite bob ca`);
///   a choice such as `[default|vim|emacs]` those choices; a lowercase keyword such as `create`
///   of `/room create NAME` or `expire`/`burn` of `/timer` the command's keywords.
/// - Anywhere else, `@al` or a bare word that starts a known user name: user names.
///
/// Matching is a case-insensitive prefix match; candidates are deduplicated and sorted without
/// regard to case. `None` when nothing matches, including a bare
/// empty word (Tab on nothing does not list every user).
pub fn complete(
    input: &str,
    cursor: usize,
    prefix: char,
    commands: &[CommandSpec],
    users: &[String],
) -> Option<Completion> {
    let cursor = char_floor(input, cursor);
    let before = &input[..cursor];
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let end = input[cursor..]
        .find(char::is_whitespace)
        .map_or(input.len(), |i| cursor + i);
    let typed = &input[start..cursor];

    if start == 0
        && let Some(name) = typed.strip_prefix(prefix)
    {
        return finish(
            start + prefix.len_utf8(),
            end,
            commands.iter().map(|c| c.name),
            name,
        );
    }

    if let Some(line) = input.strip_prefix(prefix) {
        let position = input[..start].split_whitespace().count();
        let name = line.split_whitespace().next().unwrap_or("");
        if position >= 1
            && let Some(cmd) = commands.iter().find(|c| c.name.eq_ignore_ascii_case(name))
        {
            let slots: Vec<&str> = cmd.args.split_whitespace().collect();
            let slot = slots
                .get(position - 1)
                .or_else(|| {
                    slots
                        .last()
                        .filter(|s| s.trim_end_matches(']').ends_with("..."))
                })
                .copied()
                .unwrap_or("");
            let bare = slot.trim_start_matches('[').trim_end_matches(']');
            if bare.contains("USER") {
                return complete_user(start, end, typed, users, true);
            }
            if let Some(choices) = choices(slot) {
                return finish(start, end, choices, typed);
            }
            if is_keyword(bare) {
                let keywords = slots
                    .iter()
                    .map(|s| s.trim_start_matches('[').trim_end_matches(']'))
                    .filter(|s| is_keyword(s));
                return finish(start, end, keywords, typed);
            }
        }
    }

    complete_user(start, end, typed, users, false)
}

/// User names for `typed` (with or without a leading `@`); a bare word must not be empty
/// unless `empty_ok` (the argument slot of `/dm`).
fn complete_user(
    start: usize,
    end: usize,
    typed: &str,
    users: &[String],
    empty_ok: bool,
) -> Option<Completion> {
    match typed.strip_prefix('@') {
        Some(name) => finish(start + 1, end, users.iter().map(String::as_str), name),
        None if typed.is_empty() && !empty_ok => None,
        None => finish(start, end, users.iter().map(String::as_str), typed),
    }
}

/// A literal word of a synopsis (`create`, `expire`), as opposed to a placeholder (`NAME`).
fn is_keyword(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase())
}

/// The alternatives of an argument synopsis like `[default|vim|emacs]`, if it is one.
fn choices(args: &str) -> Option<impl Iterator<Item = &str>> {
    let inner = args.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .contains('|')
        .then(|| inner.split('|').map(str::trim).filter(|s| !s.is_empty()))
}

fn finish<'a>(
    start: usize,
    end: usize,
    pool: impl Iterator<Item = &'a str>,
    typed: &str,
) -> Option<Completion> {
    let want = typed.to_lowercase();
    let mut candidates: Vec<String> = pool
        .filter(|c| c.to_lowercase().starts_with(&want))
        .map(str::to_owned)
        .collect();
    // Case-insensitive order reads naturally ("Alan", "alice", "bob"); ties by exact text.
    candidates.sort_by(|a, b| {
        a.to_lowercase()
            .cmp(&b.to_lowercase())
            .then_with(|| a.cmp(b))
    });
    candidates.dedup();
    (!candidates.is_empty()).then_some(Completion {
        start,
        end,
        candidates,
    })
}

/// The longest prefix all candidates share (exactly, character by character); empty for none.
pub fn common_prefix(cands: &[String]) -> String {
    let Some((first, rest)) = cands.split_first() else {
        return String::new();
    };
    let mut len = first.len();
    for c in rest {
        len = first
            .char_indices()
            .zip(c.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(len);
    }
    first[..len].to_owned()
}

/// `cursor` clamped to the input and moved back to a character boundary.
fn char_floor(s: &str, cursor: usize) -> usize {
    let mut i = cursor.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::action::COMMANDS;

    fn users() -> Vec<String> {
        ["alice", "Alan", "bob", "alice", "Zoë"]
            .map(String::from)
            .to_vec()
    }

    fn at_end(input: &str, prefix: char) -> Option<Completion> {
        complete(input, input.len(), prefix, COMMANDS, &users())
    }

    fn cands(c: &Option<Completion>) -> Vec<&str> {
        c.as_ref()
            .map(|c| c.candidates.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn command_names_after_the_prefix() {
        let c = at_end("/se", '/').unwrap();
        assert_eq!((c.start, c.end), (1, 3));
        assert_eq!(c.candidates, ["search"]);
        assert_eq!(c.apply("/se", "search"), ("/search".to_owned(), 7));
        assert_eq!(cands(&at_end("/", '/')).len(), COMMANDS.len());
        let slash = at_end("/", '/');
        let all = cands(&slash);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(all, sorted);
        assert_eq!(cands(&at_end("/H", '/')), ["help"]);
        assert_eq!(cands(&at_end(":se", ':')), ["search"]);
        assert_eq!(at_end(":zz", ':'), None);
        // The wrong prefix is not a command.
        assert_eq!(at_end(":se", '/'), None);
        // Cursor inside the word: match what is before it, replace the whole word.
        let c = complete("/sxyz rest", 2, '/', COMMANDS, &users()).unwrap();
        assert_eq!(c.candidates, ["search"]);
        assert_eq!((c.start, c.end), (1, 5));
        assert_eq!(c.apply("/sxyz rest", "search").0, "/search rest");
    }

    #[test]
    fn command_arguments() {
        let c = at_end("/dm al", '/').unwrap();
        assert_eq!((c.start, c.end), (4, 6));
        assert_eq!(c.candidates, ["Alan", "alice"]);
        assert_eq!(cands(&at_end("/dm ", '/')), ["Alan", "alice", "bob", "Zoë"]);
        let c = at_end("/dm @b", '/').unwrap();
        assert_eq!(
            (c.start, c.candidates.as_slice()),
            (5, ["bob".to_owned()].as_slice())
        );
        assert_eq!(cands(&at_end(":dm zo", ':')), ["Zoë"]);
        assert_eq!(cands(&at_end("/keys v", '/')), ["vim"]);
        assert_eq!(cands(&at_end("/keys ", '/')), ["default", "emacs", "vim"]);
        assert_eq!(at_end("/dm xy", '/'), None);
    }

    #[test]
    fn room_and_timer_arguments() {
        assert_eq!(cands(&at_end("/room c", '/')), ["create"]);
        assert_eq!(cands(&at_end("/room ", '/')), ["create"]);
        // NAME is free text; the members after it are users, as many as you like.
        assert_eq!(at_end("/room create xy", '/'), None);
        assert_eq!(cands(&at_end("/room create ops b", '/')), ["bob"]);
        assert_eq!(
            cands(&at_end("/room create ops bob a", '/')),
            ["Alan", "alice"]
        );
        assert_eq!(cands(&at_end("/invite bob zo", '/')), ["Zoë"]);
        assert_eq!(cands(&at_end("/kick ", '/')).len(), 4);
        assert_eq!(cands(&at_end("/group alice @b", '/')), ["bob"]);
        assert_eq!(cands(&at_end("/timer ", '/')), ["burn", "expire"]);
        assert_eq!(cands(&at_end("/timer expire 1d b", '/')), ["burn"]);
        assert_eq!(at_end("/timer expire 1", '/'), None);
        assert_eq!(at_end("/leave x", '/'), None);
    }

    #[test]
    fn user_names_anywhere_else() {
        let c = at_end("hi @al", '/').unwrap();
        assert_eq!((c.start, c.end), (4, 6));
        assert_eq!(c.candidates, ["Alan", "alice"]);
        assert_eq!(cands(&at_end("thanks BO", '/')), ["bob"]);
        assert_eq!(cands(&at_end("@", '/')), ["Alan", "alice", "bob", "Zoë"]);
        assert_eq!(cands(&at_end("/search al", '/')), ["Alan", "alice"]);
        assert_eq!(at_end("hello ", '/'), None);
        assert_eq!(at_end("", '/'), None);
        assert_eq!(at_end("hello wor", '/'), None);
        // Not at the start of the line: not a command.
        assert_eq!(at_end("see /se", '/'), None);
        // Cursor past the end or inside a character is clamped.
        let s = "hi Zo";
        assert_eq!(cands(&complete(s, 99, '/', COMMANDS, &users())), ["Zoë"]);
        let s = "@Zoë";
        let c = complete(s, s.len() - 1, '/', COMMANDS, &users()).unwrap();
        assert_eq!(c.candidates, ["Zoë"]);
        assert_eq!(c.end, s.len());
    }

    #[test]
    fn common_prefix_of_candidates() {
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(common_prefix(&[]), "");
        assert_eq!(common_prefix(&v(&["search"])), "search");
        assert_eq!(common_prefix(&v(&["alice", "alan"])), "al");
        assert_eq!(common_prefix(&v(&["alice", "alan", "bob"])), "");
        assert_eq!(common_prefix(&v(&["zoë", "zoëy"])), "zoë");
        assert_eq!(common_prefix(&v(&["Alan", "alice"])), "");
    }
}
