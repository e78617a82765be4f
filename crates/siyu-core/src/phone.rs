//! Phone numbers are stored in E.164 form (`+8613812345678`) and matched by a hash of
//! that form, so the same number typed three ways finds the same customer.

use sha2::{Digest, Sha256};

/// Normalises a phone number to E.164. Numbers without a country code are read as
/// mainland China numbers, the brands' home market: 11-digit mobiles (`1[3-9]…`) and
/// landlines with a trunk `0` and area code. Returns `None` when it cannot be a phone.
pub fn normalize_e164(raw: &str) -> Option<String> {
    let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let (international, digits) = if let Some(r) = compact.strip_prefix('+') {
        (true, r)
    } else if let Some(r) = compact.strip_prefix("00") {
        (true, r)
    } else {
        (false, compact.as_str())
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if international {
        return (8..=15).contains(&digits.len()).then(|| format!("+{digits}"));
    }
    let b = digits.as_bytes();
    if b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) {
        return Some(format!("+86{digits}"));
    }
    if b.len() == 13 && digits.starts_with("86") && b[2] == b'1' {
        return Some(format!("+{digits}"));
    }
    if (10..=12).contains(&b.len()) && b[0] == b'0' && b[1] != b'0' {
        return Some(format!("+86{}", &digits[1..]));
    }
    None
}

/// A phone number as staff without the right to see it are shown it (PIPL): the first
/// three and last four digits of the national number, `138****0013`. Anything that is
/// not a phone number is masked whole.
pub fn mask(raw: &str) -> String {
    let Some(e164) = normalize_e164(raw) else { return "****".into() };
    let national = e164.strip_prefix("+86").unwrap_or(e164.trim_start_matches('+'));
    if national.len() < 8 {
        return "****".into();
    }
    format!("{}****{}", &national[..3], &national[national.len() - 4..])
}

/// Masks every phone number in a JSON value for staff who may not see them: the values
/// of `phone` and `mobile` keys at any depth (traits, event properties, `context.traits`).
pub fn mask_in(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if matches!(key.as_str(), "phone" | "mobile") => *text = mask(text),
                    _ => mask_in(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_in),
        _ => {}
    }
}

/// The matching key for a normalised phone: lowercase hex SHA-256 of the E.164 text.
pub fn hash_e164(e164: &str) -> String {
    sha256_hex(e164)
}

/// Lowercase hex SHA-256 of a text: how contact addresses are matched without being
/// stored in the clear.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_as_staff_see_it() {
        assert_eq!(mask("+86 138 0013 0013"), "138****0013");
        assert_eq!(mask("13800130013"), "138****0013");
        assert_eq!(mask("not a phone"), "****");
        let mut v = serde_json::json!({"phone": "+8613800130013", "name": "周", "context": {"traits": {"mobile": "13800130013"}}, "list": [{"phone": "x"}]});
        mask_in(&mut v);
        assert_eq!(v, serde_json::json!({"phone": "138****0013", "name": "周", "context": {"traits": {"mobile": "138****0013"}}, "list": [{"phone": "****"}]}));
    }

    #[test]
    fn the_same_number_typed_many_ways_normalises_once() {
        for raw in ["13812345678", "+86 138 1234 5678", "0086-138-1234-5678", "8613812345678", "(+86)13812345678"] {
            assert_eq!(normalize_e164(raw).as_deref(), Some("+8613812345678"), "{raw}");
        }
        assert_eq!(normalize_e164("021-6123 4567").as_deref(), Some("+862161234567"));
        assert_eq!(normalize_e164("+852 9123 4567").as_deref(), Some("+85291234567"));
    }

    #[test]
    fn rejects_what_cannot_be_a_phone() {
        for raw in ["", "12345", "abc13812345678", "23812345678", "+12", "13812345678901234"] {
            assert_eq!(normalize_e164(raw), None, "{raw}");
        }
    }

    #[test]
    fn hash_is_stable_hex_sha256() {
        let h = hash_e164("+8613812345678");
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash_e164("+8613812345678"));
        assert_ne!(h, hash_e164("+8613812345679"));
    }
}
