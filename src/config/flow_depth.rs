//! A quick scan for deeply nested flow collections (`[...]`, `{...}`),
//! made before the YAML parser reads the text.
//!
//! The YAML scanner under serde_yaml (unsafe-libyaml 0.2.11) walks its stack
//! of open flow levels for every token. So the time to scan text nested N
//! levels deep grows with N squared, and 128 KiB of `[` took 51 s (figures
//! in BENCHMARKS.md, "Fuzzing"). serde_yaml rejects values
//! nested more than 128 levels anyway, but only after the scanner has read
//! the whole document. Rejecting such text first changes only how fast it
//! fails.

/// serde_yaml's recursion limit; no file nested deeper can load.
pub const MAX_FLOW_DEPTH: usize = 128;

/// The place of the bracket that opens one level too many, 1-based.
#[derive(Debug, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

enum State {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Comment,
}

/// Finds the first `[` or `{` that opens more than [`MAX_FLOW_DEPTH`]
/// levels, outside quoted scalars and comments.
///
/// NOTE: the scan treats a quote as the start of a quoted scalar only after
/// whitespace, `[`, `{`, `,` or `:`, and counts every bracket elsewhere. So
/// brackets inside plain scalars are counted too: a file that leaves more
/// than 128 of them unclosed in plain scalars is rejected as too deep.
pub fn check(text: &str) -> Result<(), TooDeep> {
    let mut state = State::Plain;
    let mut depth = 0usize;
    let mut line = 1;
    let mut column = 0;
    let mut previous: Option<char> = None;
    let mut chars = text.chars().peekable();

    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        let scalar_may_start = previous.is_none_or(|p| p.is_whitespace() || "[{,:".contains(p));
        match state {
            State::Plain => match c {
                '#' if previous.is_none_or(char::is_whitespace) => state = State::Comment,
                '\'' if scalar_may_start => state = State::SingleQuoted,
                '"' if scalar_may_start => state = State::DoubleQuoted,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(TooDeep { line, column });
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
            State::SingleQuoted if c == '\'' => {
                // A quote inside a single-quoted scalar is written twice.
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    state = State::Plain;
                }
            }
            State::DoubleQuoted if c == '\\' => {
                // The escaped character cannot end the scalar.
                if chars.next() == Some('\n') {
                    line += 1;
                    column = 0;
                } else {
                    column += 1;
                }
            }
            State::DoubleQuoted if c == '"' => state = State::Plain,
            State::Comment if c == '\n' || c == '\r' => state = State::Plain,
            _ => {}
        }
        previous = Some(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_depth_passes() {
        let text = format!("x: {}{}\n", "[".repeat(128), "]".repeat(128));
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn one_level_more_points_at_it() {
        let text = format!("a: 1\nx: {}", "[{".repeat(100));
        // The 129th bracket is the 129th character after `x: ` on line 2.
        assert_eq!(
            check(&text),
            Err(TooDeep {
                line: 2,
                column: 132
            })
        );
    }

    #[test]
    fn closed_levels_not_counted() {
        let text = "[[]]".repeat(10_000);
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn quoted_and_commented_brackets_skipped() {
        let many = "[".repeat(200);
        for text in [
            format!("x: '{many}'\n"),
            format!("x: 'it''s {many}'\n"),
            format!("x: \"{many}\"\n"),
            format!("x: \"\\\" {many}\"\n"),
            format!("x: [\"{many}\", '{many}']\n"),
            format!("# {many}\nx: 1 # {many}\n"),
        ] {
            assert_eq!(check(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn hash_inside_word_is_not_comment() {
        let text = format!("x: a#{}", "[".repeat(129));
        assert_eq!(
            check(&text),
            Err(TooDeep {
                line: 1,
                column: 134
            })
        );
    }

    #[test]
    fn quote_inside_word_does_not_hide() {
        let text = format!("x: it's{}", "[".repeat(129));
        assert_eq!(
            check(&text),
            Err(TooDeep {
                line: 1,
                column: 136
            })
        );
    }
}
