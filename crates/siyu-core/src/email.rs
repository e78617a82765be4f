//! E-mail addresses: one written form, and the key they are matched by.

use crate::phone::sha256_hex;

/// `" Li.Na@Example.COM "` → `"li.na@example.com"`; `None` unless it has the shape of
/// an address (one `@`, something on both sides, a dot in the domain, no spaces).
pub fn normalize(text: &str) -> Option<String> {
    let t = text.trim().to_lowercase();
    let (local, domain) = t.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !t.contains(char::is_whitespace);
    valid.then_some(t)
}

/// The matching key for a normalised address: lowercase hex SHA-256, like a phone's,
/// so the identities table holds no address in the clear (the `email` trait does, for
/// sending).
pub fn hash(normalised: &str) -> String {
    sha256_hex(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_have_one_form() {
        assert_eq!(normalize(" Li.Na@Example.COM "), Some("li.na@example.com".into()));
        assert_eq!(normalize("not an address"), None);
        assert_eq!(normalize("a@b"), None);
        assert_eq!(hash("li.na@example.com").len(), 64);
    }
}
