//! What every JSON document Siyu accepts must also be, beyond valid syntax: nested at
//! most [`MAX_DEPTH`] levels, with no NUL character and no lone UTF-16 surrogate in a
//! string escape. Such input is valid JSON, but PostgreSQL cannot store a NUL, a lone
//! surrogate is not text, and very deep nesting is past what readers of the stored JSON
//! (serde_json stops at 128 levels) can read back. Refusing it at the door, the same way
//! on every endpoint, is what keeps "acknowledged" meaning "stored and readable".
//!
//! The check is a single pass over already-valid JSON text, cheap enough for the
//! tracking API's hot path.

/// Levels of objects and arrays a document may nest.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonProblem {
    #[error("the JSON nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a string holds the NUL character (\\u0000), which cannot be stored")]
    Nul,
    #[error("a string holds a lone UTF-16 surrogate ({0}), which is not text")]
    LoneSurrogate(String),
}

/// Checks JSON text that is already known to be syntactically valid.
pub fn check(text: &str) -> Result<(), JsonProblem> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonProblem::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => i = string_end(bytes, i + 1)?,
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index of the closing quote of a string starting at `i`, checking its escapes.
fn string_end(b: &[u8], mut i: usize) -> Result<usize, JsonProblem> {
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i),
            b'\\' if b.get(i + 1) == Some(&b'u') => {
                let unit = hex4(b, i + 2);
                match unit {
                    Some(0) => return Err(JsonProblem::Nul),
                    Some(high @ 0xD800..=0xDBFF) => {
                        let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u')).then(|| hex4(b, i + 8)).flatten();
                        match low {
                            Some(0xDC00..=0xDFFF) => i += 12,
                            _ => return Err(JsonProblem::LoneSurrogate(format!("\\u{high:04x}"))),
                        }
                        continue;
                    }
                    Some(low @ 0xDC00..=0xDFFF) => return Err(JsonProblem::LoneSurrogate(format!("\\u{low:04x}"))),
                    _ => i += 6,
                }
                continue;
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Checks a string that arrived outside JSON (a query parameter, a CSV cell).
pub fn check_text(s: &str) -> Result<(), JsonProblem> {
    if s.contains('\0') { Err(JsonProblem::Nul) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json_and_surrogate_pairs() {
        assert_eq!(check(r#"{"a":[1,{"b":"\ud83d\ude00 ok \" \\u0000 is text here"}],"c":"\u4e2d"}"#), Ok(()));
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(&deep), Ok(()));
    }

    #[test]
    fn refuses_depth_nul_and_lone_surrogates() {
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(check(&deep), Err(JsonProblem::TooDeep));
        assert_eq!(check(r#"{"userId":"a\u0000b"}"#), Err(JsonProblem::Nul));
        assert!(matches!(check(r#"{"p":"\udc00"}"#), Err(JsonProblem::LoneSurrogate(_))));
        assert!(matches!(check(r#"{"p":"\ud800x"}"#), Err(JsonProblem::LoneSurrogate(_))));
        assert!(matches!(check(r#"{"p":"\ud800\u0041"}"#), Err(JsonProblem::LoneSurrogate(_))));
        // Brackets inside strings are not nesting.
        assert_eq!(check(&format!("{{\"p\":\"{}\"}}", "[".repeat(500))), Ok(()));
    }
}
