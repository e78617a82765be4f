//! Segment-spec tracking messages: `identify`, `track`, `page`, `screen`, `group`, `alias`.
//!
//! The wire format is parsed once per request into [`Message`]s that are known to be
//! valid; storage never sees a message that could fail later for a reason the sender
//! should have been told about. Field values that the store keeps verbatim
//! (`properties`, `context`) stay as the sender's JSON text, which is both faster and
//! faithful.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::identity::{Identity, IdentityKind};
use crate::phone;
use crate::time::Timestamp;

/// Segment: "a maximum of 32KB per call".
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Segment: "the batch endpoint accepts a maximum of 500KB per request".
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
const MAX_NAME_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageKind {
    pub const ALL: [MessageKind; 6] =
        [MessageKind::Identify, MessageKind::Track, MessageKind::Page, MessageKind::Screen, MessageKind::Group, MessageKind::Alias];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Identify => "identify",
            MessageKind::Track => "track",
            MessageKind::Page => "page",
            MessageKind::Screen => "screen",
            MessageKind::Group => "group",
            MessageKind::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One validated message, ready for identity resolution and storage.
///
/// Built only here: from the wire by [`parse_batch`]-style parsing, or by Siyu itself
/// through [`Message::internal`], [`Message::track_about`] and
/// [`Message::identify_about`]. `non_exhaustive` keeps other crates from writing a
/// struct literal that skips the checks; they read the fields freely.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Message {
    pub kind: MessageKind,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Track: the event name. Page/screen: the page name, if any.
    pub event: Option<String>,
    /// Alias: the id being merged into `user_id`.
    pub previous_id: Option<String>,
    pub group_id: Option<String>,
    /// When it happened, corrected for client clock skew as Segment does.
    #[serde(with = "crate::time::as_millis")]
    pub timestamp: Timestamp,
    #[serde(with = "crate::time::as_millis")]
    pub received_at: Timestamp,
    /// Track/page/screen properties, or identify/group traits: the sender's JSON object.
    pub payload: String,
    /// The sender's `context` object, verbatim, if any.
    pub context: Option<String>,
    /// Profile traits this message sets: `context.traits`, then identify `traits`.
    pub traits: Vec<(String, Value)>,
    /// Identities this message names, strongest first, without duplicates.
    pub identities: Vec<Identity>,
    /// Set only by Siyu itself (segment and journey events): the profile the message
    /// is about, by id. Never read from the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<crate::ProfileId>,
}

impl Message {
    /// An event Siyu itself records about a profile it already knows (segment
    /// membership, journeys, coupons, WeCom transfers): a track message with the
    /// `{"source":"siyu"}` context, addressed by profile id rather than by identity.
    pub fn internal(profile: crate::ProfileId, event: &str, message_id: String, properties: Value, at: Timestamp) -> Message {
        Message {
            kind: MessageKind::Track,
            message_id,
            user_id: None,
            anonymous_id: None,
            event: Some(event.to_string()),
            previous_id: None,
            group_id: None,
            timestamp: at,
            received_at: at,
            payload: properties.to_string(),
            context: Some(r#"{"source":"siyu"}"#.to_string()),
            traits: Vec::new(),
            identities: Vec::new(),
            profile_id: Some(profile),
        }
    }

    /// A track message Siyu records from another system (WeCom callbacks and syncs)
    /// about the customer these identities name, with `{"source": source}` as context.
    pub fn track_about(
        identities: Vec<Identity>,
        event: &str,
        message_id: String,
        properties: Value,
        at: Timestamp,
        received_at: Timestamp,
        source: &str,
    ) -> Message {
        debug_assert!(!event.is_empty() && event.len() <= MAX_NAME_LEN, "an event name Siyu gives is a valid one");
        Message {
            kind: MessageKind::Track,
            message_id,
            user_id: None,
            anonymous_id: None,
            event: Some(event.to_string()),
            previous_id: None,
            group_id: None,
            timestamp: at,
            received_at,
            payload: properties.to_string(),
            context: Some(serde_json::json!({ "source": source }).to_string()),
            traits: Vec::new(),
            identities,
            profile_id: None,
        }
    }

    /// An identify message setting `traits` on the customer these identities name, as
    /// read from another system (a WeCom contact's name).
    pub fn identify_about(identities: Vec<Identity>, message_id: String, traits: Vec<(String, Value)>, at: Timestamp, source: &str) -> Message {
        let payload = Value::Object(traits.iter().cloned().collect()).to_string();
        Message {
            kind: MessageKind::Identify,
            event: None,
            payload,
            traits,
            ..Message::track_about(identities, "Identify", message_id, Value::Null, at, at, source)
        }
    }

    /// The same message with traits it sets on the profile (a synced contact's remark).
    pub fn with_traits(mut self, traits: Vec<(String, Value)>) -> Message {
        self.traits = traits;
        self
    }

    /// The same message as received from `source` at `received_at`, not made by Siyu.
    pub fn from_source(mut self, source: &str, received_at: Timestamp) -> Message {
        self.context = Some(serde_json::json!({ "source": source }).to_string());
        self.received_at = received_at;
        self
    }
}

impl Message {
    /// Profile-level identities plus, for alias, the previous id (which may be either a
    /// user id or an anonymous id; resolution tries both).
    pub fn is_alias(&self) -> bool {
        self.kind == MessageKind::Alias
    }

    /// Whether the message is one of the contact events the store applies to the
    /// guide relationships: whoever mirrors guides (the segment engine) re-reads them.
    pub fn changes_guides(&self) -> bool {
        matches!(self.event.as_deref(), Some("Contact Added" | "Contact Deleted" | "Contact Transferred" | "Contact Handed Over"))
    }
}

/// Why one message in a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Position in the batch (0 for single calls).
    pub index: usize,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub code: &'static str,
    pub reason: String,
}

/// Why a tracking request was refused as a whole. Nothing of a refused request is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{} message(s) rejected: {}", .0.len(), summarize(.0))]
    Invalid(Vec<Rejection>),
}

fn summarize(rejections: &[Rejection]) -> String {
    let first = &rejections[0];
    let mut s = format!("message {}: {}", first.index, first.reason);
    if rejections.len() > 1 {
        s.push_str(&format!(" (and {} more)", rejections.len() - 1));
    }
    s
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::TooLarge { .. } => "payload_too_large",
            RequestError::Invalid(r) if r.len() == 1 => r[0].code,
            RequestError::Invalid(_) => "invalid_messages",
        }
    }
}

/// A parsed tracking request: the messages and every write key the body carried
/// (top level and per message), for the caller to check.
#[derive(Debug)]
pub struct ParsedRequest {
    pub messages: Vec<Message>,
    pub body_write_key: Option<String>,
    /// Per message: the `writeKey` it carried, if any.
    pub message_write_keys: Vec<Option<String>>,
}

/// What the parser needs from its surroundings.
pub struct ParseContext<'a> {
    pub received_at: Timestamp,
    /// Assigns a `messageId` to messages that come without one.
    pub new_message_id: &'a (dyn Fn() -> String + Sync),
}

/// The top-level fields Siyu reads; everything else (`integrations`, `channel`, …) is
/// accepted and ignored, as Segment does.
#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<&'a RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", borrow, default)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(rename = "previousId", borrow, default)]
    previous_id: Option<&'a RawValue>,
    #[serde(rename = "groupId", borrow, default)]
    group_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "originalTimestamp", borrow, default)]
    original_timestamp: Option<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(rename = "writeKey", borrow, default)]
    write_key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "writeKey", borrow, default)]
    write_key: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct WireContext {
    #[serde(rename = "externalIds", default)]
    external_ids: Option<Value>,
    #[serde(default)]
    traits: Option<Value>,
}

/// Parses the body of `POST /v1/{identify,track,page,screen,group,alias}`.
pub fn parse_single(kind: MessageKind, body: &[u8], cx: &ParseContext) -> Result<ParsedRequest, RequestError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(RequestError::TooLarge { size: body.len(), limit: MAX_MESSAGE_BYTES });
    }
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let wire = wire_message(raw).map_err(RequestError::InvalidJson)?;
    let write_key = text_field("writeKey", wire.write_key).map_err(|r| invalid_one(0, None, "invalid_field", r))?;
    let message = validate(Some(kind), &wire, None, cx).map_err(|(code, reason)| {
        let id = text_field("messageId", wire.message_id).ok().flatten();
        invalid_one(0, id, code, reason)
    })?;
    Ok(ParsedRequest { messages: vec![message], body_write_key: write_key, message_write_keys: vec![None] })
}

/// Parses the body of `POST /v1/batch`. Any invalid message rejects the whole request,
/// and the error lists every rejected message with its reason.
pub fn parse_batch(body: &[u8], cx: &ParseContext) -> Result<ParsedRequest, RequestError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(RequestError::TooLarge { size: body.len(), limit: MAX_BATCH_BYTES });
    }
    let wire: WireBatch = serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let items = wire.batch.ok_or_else(|| invalid_one(0, None, "missing_batch", "the body needs a \"batch\" array of messages".into()))?;
    let batch_sent_at = timestamp_field("sentAt", wire.sent_at).map_err(|r| invalid_one(0, None, "invalid_field", r))?;
    let body_write_key = text_field("writeKey", wire.write_key).map_err(|r| invalid_one(0, None, "invalid_field", r))?;
    if items.is_empty() {
        return Err(invalid_one(0, None, "empty_batch", "the batch has no messages".into()));
    }

    let mut messages = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    let mut rejections = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let size = item.get().len();
        let wire = match wire_message(item) {
            Ok(w) => w,
            Err(reason) => {
                rejections.push(Rejection { index, message_id: None, code: "invalid_message", reason });
                continue;
            }
        };
        let message_id = text_field("messageId", wire.message_id).ok().flatten();
        if size > MAX_MESSAGE_BYTES {
            rejections.push(Rejection {
                index,
                message_id,
                code: "message_too_large",
                reason: format!("the message is {size} bytes; the limit is {MAX_MESSAGE_BYTES} bytes per message"),
            });
            continue;
        }
        let key = match text_field("writeKey", wire.write_key) {
            Ok(k) => k,
            Err(reason) => {
                rejections.push(Rejection { index, message_id, code: "invalid_field", reason });
                continue;
            }
        };
        match validate(None, &wire, batch_sent_at, cx) {
            Ok(m) => {
                messages.push(m);
                keys.push(key);
            }
            Err((code, reason)) => rejections.push(Rejection { index, message_id, code, reason }),
        }
    }
    if !rejections.is_empty() {
        return Err(RequestError::Invalid(rejections));
    }
    Ok(ParsedRequest { messages, body_write_key, message_write_keys: keys })
}

/// Parses one standalone message that names its own `type` (a line of a JSONL import).
pub fn parse_message(body: &[u8], cx: &ParseContext) -> Result<Message, Rejection> {
    let reject = |message_id, code, reason| Rejection { index: 0, message_id, code, reason };
    if body.len() > MAX_MESSAGE_BYTES {
        let reason = format!("the message is {} bytes; the limit is {MAX_MESSAGE_BYTES} bytes", body.len());
        return Err(reject(None, "message_too_large", reason));
    }
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| reject(None, "invalid_json", format!("not valid JSON: {e}")))?;
    let wire = wire_message(raw).map_err(|reason| reject(None, "invalid_message", reason))?;
    validate(None, &wire, None, cx).map_err(|(code, reason)| {
        let id = text_field("messageId", wire.message_id).ok().flatten();
        reject(id, code, reason)
    })
}

fn invalid_one(index: usize, message_id: Option<String>, code: &'static str, reason: String) -> RequestError {
    RequestError::Invalid(vec![Rejection { index, message_id, code, reason }])
}

fn wire_message(raw: &RawValue) -> Result<WireMessage<'_>, String> {
    if !raw.get().trim_start().starts_with('{') {
        return Err("a message must be a JSON object".into());
    }
    // Valid JSON that could not be stored or read back faithfully (too deep, a NUL, a
    // lone surrogate) is refused here, for every field alike.
    crate::json_check::check(raw.get()).map_err(|e| e.to_string())?;
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

type Invalid = (&'static str, String);

/// Checks one message against the spec and builds the [`Message`].
/// `path_kind` is the kind implied by the endpoint, for single calls.
fn validate(path_kind: Option<MessageKind>, wire: &WireMessage, batch_sent_at: Option<Timestamp>, cx: &ParseContext) -> Result<Message, Invalid> {
    let field = |code: &'static str| move |reason: String| (code, reason);
    let kind = match path_kind {
        Some(k) => k,
        None => {
            let t = text_field("type", wire.kind)
                .map_err(field("invalid_field"))?
                .ok_or(("missing_type", "the message has no \"type\" (identify, track, page, screen, group or alias)".to_string()))?;
            MessageKind::parse(&t).ok_or(("unsupported_type", format!("\"type\" is {t:?}; expected identify, track, page, screen, group or alias")))?
        }
    };

    let message_id = match text_field("messageId", wire.message_id).map_err(field("invalid_field"))? {
        Some(id) if id.len() > MAX_NAME_LEN => return Err(("invalid_field", "\"messageId\" is longer than 256 characters".into())),
        Some(id) => id,
        None => (cx.new_message_id)(),
    };
    let user_id = id_field("userId", wire.user_id).map_err(field("invalid_field"))?;
    let anonymous_id = id_field("anonymousId", wire.anonymous_id).map_err(field("invalid_field"))?;

    let mut event = None;
    let mut previous_id = None;
    let mut group_id = None;
    match kind {
        MessageKind::Track => {
            let name = text_field("event", wire.event).map_err(field("invalid_field"))?;
            match name {
                Some(n) if n.len() <= MAX_NAME_LEN => event = Some(n),
                Some(_) => return Err(("invalid_field", "\"event\" is longer than 256 characters".into())),
                None => return Err(("missing_event", "a track call needs an \"event\" name".into())),
            }
        }
        MessageKind::Page | MessageKind::Screen => {
            event = text_field("name", wire.name).map_err(field("invalid_field"))?;
        }
        MessageKind::Alias => {
            previous_id = id_field("previousId", wire.previous_id).map_err(field("invalid_field"))?;
            if previous_id.is_none() {
                return Err(("missing_previous_id", "an alias call needs a \"previousId\"".into()));
            }
            if user_id.is_none() {
                return Err(("missing_user_id", "an alias call needs the \"userId\" that \"previousId\" becomes".into()));
            }
        }
        MessageKind::Group => {
            group_id = id_field("groupId", wire.group_id).map_err(field("invalid_field"))?;
            if group_id.is_none() {
                return Err(("missing_group_id", "a group call needs a \"groupId\"".into()));
            }
        }
        MessageKind::Identify => {}
    }
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(("missing_identity", "the message needs a \"userId\" or an \"anonymousId\"".into()));
    }

    let original = match timestamp_field("timestamp", wire.timestamp).map_err(field("invalid_field"))? {
        Some(t) => Some(t),
        None => timestamp_field("originalTimestamp", wire.original_timestamp).map_err(field("invalid_field"))?,
    };
    let sent_at = timestamp_field("sentAt", wire.sent_at).map_err(field("invalid_field"))?.or(batch_sent_at);
    let timestamp = match (original, sent_at) {
        // Segment's clock-skew correction: receivedAt - (sentAt - originalTimestamp).
        (Some(o), Some(s)) => Timestamp(cx.received_at.0 - (s.0 - o.0)),
        (Some(o), None) => o,
        (None, _) => cx.received_at,
    };

    let payload_field = match kind {
        MessageKind::Identify | MessageKind::Group => ("traits", wire.traits),
        _ => ("properties", wire.properties),
    };
    let payload = object_text(payload_field.0, payload_field.1).map_err(field("invalid_field"))?;
    let context = object_text("context", wire.context).map_err(field("invalid_field"))?;
    let wire_context: WireContext = match &context {
        Some(text) => serde_json::from_str(text).map_err(|e| ("invalid_field", format!("\"context\": {e}")))?,
        None => WireContext::default(),
    };

    let mut traits: Vec<(String, Value)> = Vec::new();
    if let Some(ctx_traits) = wire_context.traits {
        let Value::Object(map) = ctx_traits else {
            return Err(("invalid_field", "\"context.traits\" must be an object".into()));
        };
        traits.extend(map);
    }
    if kind == MessageKind::Identify
        && let Some(text) = &payload
    {
        let map: Map<String, Value> = serde_json::from_str(text).map_err(|e| ("invalid_field", format!("\"traits\": {e}")))?;
        traits.extend(map);
    }
    flatten_consent(&mut traits);
    normalize_contact_traits(&mut traits);

    let identities = collect_identities(&user_id, &anonymous_id, wire_context.external_ids.as_ref(), &traits)?;

    Ok(Message {
        kind,
        message_id,
        user_id,
        anonymous_id,
        event,
        previous_id,
        group_id,
        timestamp,
        received_at: cx.received_at,
        payload: payload.unwrap_or_else(|| "{}".to_string()),
        context,
        traits,
        identities,
        profile_id: None,
    })
}

/// Addresses are stored in one form: a `phone` trait in E.164 when it can be read as a
/// phone number, an `email` trait trimmed and lower-cased when it looks like an address.
fn normalize_contact_traits(traits: &mut [(String, Value)]) {
    for (key, value) in traits.iter_mut() {
        let normal = match key.as_str() {
            "phone" => value.as_str().and_then(phone::normalize_e164),
            "email" => value.as_str().and_then(crate::email::normalize),
            _ => None,
        };
        if let Some(v) = normal {
            *value = Value::String(v);
        }
    }
}

/// Consent given the Segment way, nested (`"consent": {"sms": true}`), becomes the flat
/// traits the contact policy reads (`consent.sms`). Flat keys given in the same message
/// win over nested ones, whatever their order.
fn flatten_consent(traits: &mut Vec<(String, Value)>) {
    while let Some(i) = traits.iter().position(|(k, v)| k == "consent" && v.is_object()) {
        let (_, Value::Object(nested)) = traits.remove(i) else { return };
        for (channel, value) in nested {
            let key = format!("consent.{channel}");
            if !traits.iter().any(|(k, _)| *k == key) {
                traits.push((key, value));
            }
        }
    }
}

fn collect_identities(
    user_id: &Option<String>,
    anonymous_id: &Option<String>,
    external_ids: Option<&Value>,
    traits: &[(String, Value)],
) -> Result<Vec<Identity>, Invalid> {
    let mut out = Vec::new();
    if let Some(u) = user_id {
        out.push(Identity::user_id(u));
    }
    if let Some(a) = anonymous_id {
        out.push(Identity::anonymous_id(a));
    }
    match external_ids {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(identity) = external_identity(i, item)? {
                    out.push(identity);
                }
            }
        }
        Some(_) => return Err(("invalid_field", "\"context.externalIds\" must be an array".into())),
    }
    out.extend(identities_from_traits(traits));
    out.sort_by_key(|i| i.priority());
    out.dedup();
    Ok(out)
}

/// The phone and email traits are identities too: they are how offline members and
/// e-mail subscribers are matched. A value that is no phone or address stays a trait.
pub fn identities_from_traits(traits: &[(String, Value)]) -> Vec<Identity> {
    traits
        .iter()
        .filter_map(|(key, value)| {
            let kind = match key.as_str() {
                "phone" => IdentityKind::Phone,
                "email" => IdentityKind::Email,
                _ => return None,
            };
            Identity::new(kind, value.as_str()?, None).ok()
        })
        .collect()
}

/// One `context.externalIds` entry: `{"id": "...", "type": "...", "collection": "users",
/// "encoding": "none"}`; openids name their app in `appId` (or `collection`).
fn external_identity(i: usize, item: &Value) -> Result<Option<Identity>, Invalid> {
    let bad = |reason: String| ("invalid_external_id", format!("\"context.externalIds[{i}]\": {reason}"));
    let Value::Object(map) = item else {
        return Err(bad("must be an object with \"id\" and \"type\"".into()));
    };
    let id = match map.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad("needs a non-empty \"id\"".into())),
    };
    let Some(Value::String(kind)) = map.get("type") else {
        return Err(bad("needs a \"type\" such as external_userid, unionid, openid, phone, email or member_no".into()));
    };
    let Some(kind) = IdentityKind::from_external_id_type(kind) else {
        return Ok(None);
    };
    let app_id =
        ["appId", "app_id", "collection"].iter().filter_map(|k| map.get(*k).and_then(Value::as_str)).find(|v| !matches!(*v, "users" | "accounts" | ""));
    Identity::new(kind, &id, app_id).map(Some).map_err(|e| bad(e.to_string()))
}

fn parse_value(name: &str, raw: &RawValue) -> Result<Value, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("\"{name}\": {e}"))
}

/// A string field; `null` and `""` count as absent.
fn text_field(name: &str, raw: Option<&RawValue>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    match parse_value(name, raw)? {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("\"{name}\" must be a string, not {}", json_type(&other))),
    }
}

/// An id field: strings, and numbers (which Segment libraries coerce to strings).
fn id_field(name: &str, raw: Option<&RawValue>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let value = match parse_value(name, raw)? {
        Value::Null => return Ok(None),
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("\"{name}\" must be a string or a number, not {}", json_type(&other))),
    };
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!("\"{name}\" is longer than 256 characters"));
    }
    Ok(Some(value))
}

fn timestamp_field(name: &str, raw: Option<&RawValue>) -> Result<Option<Timestamp>, String> {
    match text_field(name, raw)? {
        None => Ok(None),
        Some(s) => {
            Timestamp::parse_iso8601(&s).map(Some).ok_or_else(|| format!("\"{name}\" is {s:?}, which is not an ISO-8601 date such as 2024-05-01T08:30:00Z"))
        }
    }
}

/// An object field kept verbatim; `null` counts as absent.
fn object_text(name: &str, raw: Option<&RawValue>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('{') {
        let value = parse_value(name, raw)?;
        return Err(format!("\"{name}\" must be an object, not {}", json_type(&value)));
    }
    Ok(Some(text.to_string()))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> ParseContext<'static> {
        ParseContext { received_at: Timestamp(1_700_000_000_000), new_message_id: &|| "generated".to_string() }
    }

    fn batch(body: &str) -> Result<ParsedRequest, RequestError> {
        parse_batch(body.as_bytes(), &cx())
    }

    #[test]
    fn parses_a_track_call() {
        let body = br#"{"userId":"u1","event":"Order Completed","properties":{"revenue":2500},
            "context":{"externalIds":[{"id":"wmABC","type":"external_userid","collection":"users","encoding":"none"}]},
            "timestamp":"2023-11-14T22:13:20Z","messageId":"m1"}"#;
        let p = parse_single(MessageKind::Track, body, &cx()).unwrap();
        let m = &p.messages[0];
        assert_eq!(m.kind, MessageKind::Track);
        assert_eq!(m.event.as_deref(), Some("Order Completed"));
        assert_eq!(m.payload, r#"{"revenue":2500}"#);
        assert_eq!(m.timestamp, Timestamp(1_700_000_000_000));
        assert_eq!(m.identities, vec![Identity::user_id("u1"), Identity { kind: IdentityKind::ExternalUserid, value: "wmABC".into() }]);
    }

    #[test]
    fn assigns_a_message_id_and_coerces_numeric_ids() {
        let p = parse_single(MessageKind::Identify, br#"{"userId": 42, "traits": {"name": "Li"}}"#, &cx()).unwrap();
        assert_eq!(p.messages[0].message_id, "generated");
        assert_eq!(p.messages[0].user_id.as_deref(), Some("42"));
        assert_eq!(p.messages[0].traits, vec![("name".to_string(), Value::String("Li".into()))]);
    }

    #[test]
    fn corrects_clock_skew_with_sent_at() {
        // The device clock is 10 minutes fast: the event happened 5 s before sending.
        let p =
            batch(r#"{"sentAt":"2023-11-14T22:23:20Z","batch":[{"type":"track","anonymousId":"a","event":"X","timestamp":"2023-11-14T22:23:15Z"}]}"#).unwrap();
        assert_eq!(p.messages[0].timestamp, Timestamp(1_700_000_000_000 - 5_000));
    }

    #[test]
    fn nested_consent_becomes_the_flat_traits_the_policy_reads() {
        let p = parse_single(MessageKind::Identify, br#"{"userId":"u1","traits":{"consent":{"sms":true,"email":false},"consent.email":true}}"#, &cx()).unwrap();
        let mut traits = p.messages[0].traits.clone();
        traits.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(traits, vec![("consent.email".to_string(), Value::Bool(true)), ("consent.sms".to_string(), Value::Bool(true))]);
    }

    #[test]
    fn email_traits_are_normalised_and_become_identities() {
        let p = parse_single(MessageKind::Identify, br#"{"userId":"u1","traits":{"email":" Li.Na@Example.COM "}}"#, &cx()).unwrap();
        let m = &p.messages[0];
        assert_eq!(m.traits[0].1, Value::String("li.na@example.com".into()));
        assert!(m.identities.contains(&Identity::new(IdentityKind::Email, "li.na@example.com", None).unwrap()));
        // Something in the email trait that is no address stays a trait only.
        let p = parse_single(MessageKind::Identify, br#"{"userId":"u1","traits":{"email":"ask at the counter"}}"#, &cx()).unwrap();
        assert!(p.messages[0].identities.iter().all(|i| i.kind != IdentityKind::Email));
    }

    #[test]
    fn phone_traits_are_normalised_and_become_identities() {
        let p = parse_single(MessageKind::Identify, br#"{"userId":"u1","traits":{"phone":"138 1234 5678"}}"#, &cx()).unwrap();
        let m = &p.messages[0];
        assert_eq!(m.traits[0].1, Value::String("+8613812345678".into()));
        assert!(m.identities.iter().any(|i| i.kind == IdentityKind::Phone));
    }

    #[test]
    fn rejects_each_bad_input_with_a_reason() {
        let cases = [
            (r#"{"type":"track","event":"X"}"#, "missing_identity"),
            (r#"{"type":"track","userId":"u"}"#, "missing_event"),
            (r#"{"type":"alias","userId":"u"}"#, "missing_previous_id"),
            (r#"{"type":"group","userId":"u"}"#, "missing_group_id"),
            (r#"{"type":"shout","userId":"u"}"#, "unsupported_type"),
            (r#"{"userId":"u"}"#, "missing_type"),
            (r#"{"type":"track","userId":"u","event":"X","properties":[1]}"#, "invalid_field"),
            (r#"{"type":"track","userId":{"a":1},"event":"X"}"#, "invalid_field"),
            (r#"{"type":"track","userId":"u","event":"X","timestamp":"soon"}"#, "invalid_field"),
            (r#"{"type":"identify","userId":"u","context":{"externalIds":[{"id":"x","type":"phone"}]}}"#, "invalid_external_id"),
            (r#"{"type":"identify","userId":"u","context":{"externalIds":[{"id":"o1","type":"openid"}]}}"#, "invalid_external_id"),
            (r#"17"#, "invalid_message"),
        ];
        for (msg, code) in cases {
            let body = format!(r#"{{"batch":[{msg}]}}"#);
            match batch(&body) {
                Err(RequestError::Invalid(r)) => assert_eq!(r[0].code, code, "{msg}: {}", r[0].reason),
                other => panic!("{msg}: expected rejection, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_batch_names_every_rejected_message() {
        let body = r#"{"batch":[
            {"type":"track","userId":"u","event":"ok","messageId":"good"},
            {"type":"track","event":"no id","messageId":"bad1"},
            {"type":"track","userId":"u","messageId":"bad2"}]}"#;
        let Err(RequestError::Invalid(r)) = batch(body) else { panic!() };
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].index, r[0].message_id.as_deref()), (1, Some("bad1")));
        assert_eq!((r[1].index, r[1].message_id.as_deref()), (2, Some("bad2")));
    }

    #[test]
    fn enforces_size_limits() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let single = format!(r#"{{"userId":"u","event":"{big}"}}"#);
        assert!(matches!(parse_single(MessageKind::Track, single.as_bytes(), &cx()), Err(RequestError::TooLarge { .. })));
        let in_batch = format!(r#"{{"batch":[{{"type":"track","userId":"u","event":"X","properties":{{"p":"{big}"}}}}]}}"#);
        let Err(RequestError::Invalid(r)) = batch(&in_batch) else { panic!() };
        assert_eq!(r[0].code, "message_too_large");
        let huge = vec![b' '; MAX_BATCH_BYTES + 1];
        assert!(matches!(parse_batch(&huge, &cx()), Err(RequestError::TooLarge { .. })));
    }

    #[test]
    fn malformed_json_is_refused() {
        assert!(matches!(batch("{\"batch\": ["), Err(RequestError::InvalidJson(_))));
        assert!(matches!(parse_single(MessageKind::Track, b"not json", &cx()), Err(RequestError::InvalidJson(_))));
    }

    #[test]
    fn write_keys_are_collected_from_the_body() {
        let p = batch(r#"{"writeKey":"k0","batch":[{"type":"page","userId":"u","writeKey":"k1"}]}"#).unwrap();
        assert_eq!(p.body_write_key.as_deref(), Some("k0"));
        assert_eq!(p.message_write_keys, vec![Some("k1".to_string())]);
    }
}
