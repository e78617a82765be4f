//! Manual tags on customers (`VIP`, `宝妈`): what a tag may be, wherever it comes from
//! (the admin API, an import, WeCom's corp tags).

/// Why a tag is refused, in words a person understands.
pub const RULE: &str = "a tag is 1 to 64 characters without control characters";

/// Checks a tag: not blank, at most 64 characters, no control characters.
pub fn validate(tag: &str) -> Result<(), &'static str> {
    let ok = !tag.trim().is_empty() && tag.chars().count() <= 64 && !tag.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(RULE) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_are_short_visible_text() {
        assert!(super::validate("宝妈").is_ok());
        assert!(super::validate(" ").is_err());
        assert!(super::validate(&"x".repeat(65)).is_err());
        assert!(super::validate("a\u{7}b").is_err());
    }
}
