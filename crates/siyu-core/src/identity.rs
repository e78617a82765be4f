//! The ways one customer is known across touchpoints. A profile is found or created
//! from any of them; when one message names identities of two profiles, they merge.

use serde::{Deserialize, Serialize};

use crate::{email, phone};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// The brand's own customer id (Segment `userId`). At most one per profile.
    UserId,
    /// The brand's membership number.
    MemberNo,
    /// Phone, matched by the SHA-256 of its E.164 form.
    Phone,
    /// E-mail address, matched by the SHA-256 of its normalised (trimmed, lower-case) form.
    Email,
    /// WeChat `unionid`, the same across a brand's official account and mini programs.
    Unionid,
    /// WeCom `external_userid` of the customer as an external contact.
    ExternalUserid,
    /// WeChat `openid`, per app id; stored as `appid:openid`.
    Openid,
    /// A device or browser id (Segment `anonymousId`).
    AnonymousId,
}

impl IdentityKind {
    /// Kinds in resolution priority: the profile owning a higher kind is the anchor.
    pub const ALL: [IdentityKind; 8] = [
        IdentityKind::UserId,
        IdentityKind::MemberNo,
        IdentityKind::Phone,
        IdentityKind::Email,
        IdentityKind::Unionid,
        IdentityKind::ExternalUserid,
        IdentityKind::Openid,
        IdentityKind::AnonymousId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::UserId => "user_id",
            IdentityKind::MemberNo => "member_no",
            IdentityKind::Phone => "phone",
            IdentityKind::Email => "email",
            IdentityKind::Unionid => "unionid",
            IdentityKind::ExternalUserid => "external_userid",
            IdentityKind::Openid => "openid",
            IdentityKind::AnonymousId => "anonymous_id",
        }
    }

    pub fn parse(s: &str) -> Option<IdentityKind> {
        IdentityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a profile holds at most one identity of this kind (the user id).
    /// Resolution never merges profiles holding two different ones implicitly, so a
    /// new one may start a profile of its own instead of joining the profile a
    /// message's other identities lead to. The store resolves by this rule and the
    /// engine's early resolver predicts it: one definition, here.
    pub fn is_exclusive(self) -> bool {
        self == IdentityKind::UserId
    }

    /// Reads the `type` of a Segment `context.externalIds` entry. Unknown types are not
    /// identities Siyu resolves on (they stay in the stored context).
    pub fn from_external_id_type(t: &str) -> Option<IdentityKind> {
        let t = t.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Some(match t.as_str() {
            "user_id" | "userid" => IdentityKind::UserId,
            "anonymous_id" | "anonymousid" => IdentityKind::AnonymousId,
            "external_userid" | "wecom_external_userid" | "externaluserid" | "wecom" => IdentityKind::ExternalUserid,
            "unionid" | "union_id" | "wechat_unionid" => IdentityKind::Unionid,
            "openid" | "open_id" | "wechat_openid" => IdentityKind::Openid,
            "phone" | "phone_number" | "mobile" => IdentityKind::Phone,
            "email" | "email_address" | "e_mail" => IdentityKind::Email,
            "member_no" | "member_number" | "membership_number" | "member_id" => IdentityKind::MemberNo,
            _ => return None,
        })
    }
}

impl std::fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One identity in its stored (matching) form. Build it with [`Identity::new`], which
/// normalises: phones become the hash of their E.164 form, openids carry their app id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{kind} is empty")]
    Empty { kind: IdentityKind },
    #[error("{0:?} is not a phone number (expected E.164 like +8613812345678 or an 11-digit mainland mobile)")]
    BadPhone(String),
    #[error("{0:?} is not an e-mail address")]
    BadEmail(String),
    #[error("openid {0:?} needs the app id it belongs to (appId)")]
    OpenidWithoutApp(String),
    #[error("{kind} is longer than 256 characters")]
    TooLong { kind: IdentityKind },
    #[error("{kind} holds a NUL or other control character")]
    ControlCharacter { kind: IdentityKind },
}

pub const MAX_IDENTITY_LEN: usize = 256;

impl Identity {
    /// Normalises a raw identity value. `app_id` is required for openids only.
    pub fn new(kind: IdentityKind, raw: &str, app_id: Option<&str>) -> Result<Identity, IdentityError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(IdentityError::Empty { kind });
        }
        if raw.len() > MAX_IDENTITY_LEN {
            return Err(IdentityError::TooLong { kind });
        }
        if raw.chars().any(char::is_control) {
            return Err(IdentityError::ControlCharacter { kind });
        }
        let value = match kind {
            IdentityKind::Phone => {
                let e164 = phone::normalize_e164(raw).ok_or_else(|| IdentityError::BadPhone(raw.to_string()))?;
                phone::hash_e164(&e164)
            }
            IdentityKind::Email => email::hash(&email::normalize(raw).ok_or_else(|| IdentityError::BadEmail(raw.to_string()))?),
            IdentityKind::Openid => {
                if raw.contains(':') {
                    raw.to_string()
                } else {
                    let app = app_id.map(str::trim).filter(|a| !a.is_empty()).ok_or_else(|| IdentityError::OpenidWithoutApp(raw.to_string()))?;
                    format!("{app}:{raw}")
                }
            }
            _ => raw.to_string(),
        };
        Ok(Identity { kind, value })
    }

    pub fn user_id(id: &str) -> Identity {
        Identity { kind: IdentityKind::UserId, value: id.to_string() }
    }

    pub fn anonymous_id(id: &str) -> Identity {
        Identity { kind: IdentityKind::AnonymousId, value: id.to_string() }
    }

    /// What an alias's `previousId` may name, in the order resolution tries them: a
    /// user id, else an anonymous id (which is also what an unknown one is attached as).
    pub fn previous_ids(prev: &str) -> [Identity; 2] {
        [Identity::user_id(prev), Identity::anonymous_id(prev)]
    }

    /// Position in [`IdentityKind::ALL`]: lower is stronger.
    pub fn priority(&self) -> usize {
        IdentityKind::ALL.iter().position(|k| *k == self.kind).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_identities_match_however_typed() {
        let a = Identity::new(IdentityKind::Phone, "138 1234 5678", None).unwrap();
        let b = Identity::new(IdentityKind::Phone, "+8613812345678", None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.value, phone::hash_e164("+8613812345678"));
        assert!(matches!(Identity::new(IdentityKind::Phone, "nope", None), Err(IdentityError::BadPhone(_))));
    }

    #[test]
    fn email_identities_match_however_typed() {
        let a = Identity::new(IdentityKind::Email, " Li.Na@Example.COM", None).unwrap();
        let b = Identity::new(IdentityKind::Email, "li.na@example.com", None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.value, email::hash("li.na@example.com"));
        assert!(matches!(Identity::new(IdentityKind::Email, "li.na", None), Err(IdentityError::BadEmail(_))));
    }

    #[test]
    fn openids_are_per_app() {
        let a = Identity::new(IdentityKind::Openid, "oABC", Some("wxmini")).unwrap();
        assert_eq!(a.value, "wxmini:oABC");
        assert_eq!(Identity::new(IdentityKind::Openid, "wxmini:oABC", None).unwrap(), a);
        assert!(Identity::new(IdentityKind::Openid, "oABC", None).is_err());
    }

    #[test]
    fn only_user_ids_are_exclusive_and_previous_ids_try_them_first() {
        let exclusive: Vec<IdentityKind> = IdentityKind::ALL.into_iter().filter(|k| k.is_exclusive()).collect();
        assert_eq!(exclusive, vec![IdentityKind::UserId]);
        assert_eq!(Identity::previous_ids("x"), [Identity::user_id("x"), Identity::anonymous_id("x")]);
    }

    #[test]
    fn external_id_types_map_to_kinds() {
        assert_eq!(IdentityKind::from_external_id_type("wecom_external_userid"), Some(IdentityKind::ExternalUserid));
        assert_eq!(IdentityKind::from_external_id_type("Phone"), Some(IdentityKind::Phone));
        assert_eq!(IdentityKind::from_external_id_type("email"), Some(IdentityKind::Email));
        assert_eq!(IdentityKind::from_external_id_type("fax"), None);
        for k in IdentityKind::ALL {
            assert_eq!(IdentityKind::parse(k.as_str()), Some(k));
        }
    }
}
