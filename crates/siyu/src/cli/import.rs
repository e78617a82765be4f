//! `siyu import customers|events|stores|staff FILE`: CSV (with a header row) or JSON
//! lines. The whole file is one transaction: a fatal error (unreadable file, store
//! failure, or any invalid row under `--strict`) imports nothing. Otherwise invalid
//! rows are skipped and reported by line number with the reason.
//!
//! Customers and events go through the same identity resolution as the tracking API.
//! A row without a `messageId` gets one derived from its content, so importing the same
//! file twice stores nothing twice.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use siyu_core::message::{ParseContext, Rejection, parse_message};
use siyu_core::org::{DEFAULT_CUSTOMER_CAP, DEFAULT_TIME_ZONE, Staff, StaffRole, Store as StoreInfo};
use siyu_core::{IdentityKind, Timestamp};
use siyu_store::{Db, Store, StoreError, counters, ingest, org, profiles};

use super::admin_client::{AdminServer, answer, encode};
use siyu_core::org::validate_time_zone;
use siyu_core::tag::validate as validate_tag;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportKind {
    /// Profiles: identity columns (user_id, phone, member_no, unionid, external_userid,
    /// openid + app_id, anonymous_id), `tags` (separated by ; or |), `staff_userid`
    /// (the guide who added them); every other column becomes a trait.
    Customers,
    /// Segment-spec messages (JSONL), or CSV columns type, event, user_id, anonymous_id,
    /// message_id, timestamp, properties (a JSON object); other columns become properties.
    Events,
    /// id, name, city, time_zone.
    Stores,
    /// userid, name, store_id, role, customer_cap.
    Staff,
}

pub struct ImportOptions {
    pub strict: bool,
    pub progress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1 of a CSV).
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub rows: usize,
    pub imported: usize,
    /// Rows whose messageId had been imported or tracked before.
    pub duplicates: usize,
    pub errors: Vec<RowError>,
}

impl ImportReport {
    pub fn print(&self, file: &Path) {
        println!(
            "{}: {} rows read, {} imported, {} already present, {} rejected",
            file.display(),
            self.rows,
            self.imported,
            self.duplicates,
            self.errors.len()
        );
        const SHOWN: usize = 50;
        for e in self.errors.iter().take(SHOWN) {
            println!("  line {}: {}", e.line, e.reason);
        }
        if self.errors.len() > SHOWN {
            println!("  … and {} more rejected rows", self.errors.len() - SHOWN);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} invalid rows and --strict was given, so nothing was imported; first: line {}: {}", .0.len(), .0[0].line, .0[0].reason)]
    Strict(Vec<RowError>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl") | Some("ndjson") | Some("json") => Ok(Format::JsonLines),
        _ => bail!("{}: cannot tell the format; name the file .csv (with a header row) or .jsonl", path.display()),
    }
}

pub async fn run(store: &Store, kind: ImportKind, path: &Path, opts: ImportOptions) -> anyhow::Result<ImportReport> {
    let format = format_of(path)?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if opts.progress { ProgressBar::new(size) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} importing {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})").expect("progress template").progress_chars("=> "),
    );
    bar.set_message(format!("{kind:?}").to_lowercase());
    let counting = CountingReader { inner: file, bar: bar.clone() };
    let strict = opts.strict;

    let result = store
        .transaction(move |db| {
            Box::pin(async move {
                let mut report = ImportReport::default();
                let records = records(format, counting);
                let now = Timestamp::now();
                for (line, record) in records {
                    report.rows += 1;
                    let outcome = match record {
                        Ok(rec) => import_row(db, kind, format, rec, now).await?,
                        Err(reason) => Err(reason),
                    };
                    match outcome {
                        Ok(Applied::Stored) => report.imported += 1,
                        Ok(Applied::Duplicate) => report.duplicates += 1,
                        Err(reason) => report.errors.push(RowError { line, reason }),
                    }
                }
                if strict && !report.errors.is_empty() {
                    return Err(StoreError::Invalid(ImportError::Strict(report.errors).to_string()));
                }
                if matches!(kind, ImportKind::Customers | ImportKind::Events) {
                    counters::add(db, counters::EVENTS, report.imported as i64).await?;
                }
                Ok(report)
            })
        })
        .await;
    bar.finish_and_clear();
    Ok(result?)
}

struct CountingReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

type Record = Map<String, Value>;

/// The file's records with their line numbers; unreadable records are row errors.
fn records<R: Read + Send + 'static>(format: Format, reader: R) -> Box<dyn Iterator<Item = (usize, Result<Record, String>)> + Send> {
    match format {
        Format::JsonLines => Box::new(BufReader::new(reader).lines().enumerate().filter_map(|(i, line)| {
            let line_no = i + 1;
            match line {
                Err(e) => Some((line_no, Err(format!("unreadable line: {e}")))),
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some((
                    line_no,
                    match serde_json::from_str::<Value>(&l) {
                        Ok(Value::Object(m)) => Ok(m),
                        Ok(_) => Err("each line must be a JSON object".to_string()),
                        Err(e) => Err(format!("not valid JSON: {e}")),
                    },
                )),
            }
        })),
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::All).from_reader(reader);
            let headers = match csv.headers() {
                Ok(h) => h.clone(),
                Err(e) => return Box::new(std::iter::once((1, Err(format!("unreadable header row: {e}"))))),
            };
            Box::new(csv.into_records().map(move |row| {
                let line = row.as_ref().ok().and_then(|r| r.position()).map(|p| p.line() as usize).unwrap_or(0);
                match row {
                    Err(e) => (e.position().map(|p| p.line() as usize).unwrap_or(line), Err(format!("unreadable CSV row: {e}"))),
                    Ok(r) => {
                        let mut m = Map::new();
                        for (h, v) in headers.iter().zip(r.iter()) {
                            if !v.is_empty() {
                                m.insert(h.to_string(), Value::String(v.to_string()));
                            }
                        }
                        (line, Ok(m))
                    }
                }
            }))
        }
    }
}

enum Applied {
    Stored,
    Duplicate,
}

/// A row's own problem is `Ok(Err(reason))`; a store failure is `Err` and aborts.
async fn import_row(db: &mut dyn Db, kind: ImportKind, format: Format, rec: Record, now: Timestamp) -> Result<Result<Applied, String>, StoreError> {
    match kind {
        ImportKind::Stores => match store_row(&rec) {
            Ok(s) => org::upsert_store(db, &s, now).await.map(|_| Ok(Applied::Stored)),
            Err(e) => Ok(Err(e)),
        },
        ImportKind::Staff => match staff_row(&rec) {
            Ok(s) => {
                if let Some(store_id) = &s.store_id
                    && org::get_store(db, store_id).await?.is_none()
                {
                    return Ok(Err(format!("store {store_id:?} does not exist (import stores first)")));
                }
                org::upsert_staff(db, &s, now).await.map(|_| Ok(Applied::Stored))
            }
            Err(e) => Ok(Err(e)),
        },
        ImportKind::Customers => customer_row(db, rec, now).await,
        ImportKind::Events => {
            let msg = match format {
                Format::JsonLines => Value::Object(rec),
                Format::Csv => match csv_event(rec) {
                    Ok(m) => m,
                    Err(e) => return Ok(Err(e)),
                },
            };
            apply_message(db, &msg, now).await.map(|r| r.map(|(applied, _)| applied))
        }
    }
}

fn text(rec: &Record, key: &str) -> Option<String> {
    match rec.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required(rec: &Record, key: &str) -> Result<String, String> {
    text(rec, key).ok_or_else(|| format!("missing {key}"))
}

fn store_row(rec: &Record) -> Result<StoreInfo, String> {
    let time_zone = text(rec, "time_zone").unwrap_or_else(|| DEFAULT_TIME_ZONE.to_string());
    validate_time_zone(&time_zone)?;
    Ok(StoreInfo { id: required(rec, "id")?, name: required(rec, "name")?, city: required(rec, "city")?, time_zone })
}

fn staff_row(rec: &Record) -> Result<Staff, String> {
    let role = match text(rec, "role") {
        None => StaffRole::Guide,
        Some(r) => StaffRole::parse(&r).ok_or_else(|| format!("role {r:?} is not guide, store_manager or operator"))?,
    };
    let customer_cap = match text(rec, "customer_cap") {
        None => DEFAULT_CUSTOMER_CAP,
        Some(c) => c.parse::<i64>().ok().filter(|c| (1..=20_000).contains(c)).ok_or_else(|| format!("customer_cap {c:?} is not a number from 1 to 20000"))?,
    };
    Ok(Staff { userid: required(rec, "userid")?, name: required(rec, "name")?, store_id: text(rec, "store_id"), role, customer_cap })
}

/// Identity columns of a customer row, and how each reaches a Segment message.
const IDENTITY_COLUMNS: [&str; 7] = ["user_id", "anonymous_id", "phone", "member_no", "unionid", "external_userid", "openid"];
const CUSTOMER_META_COLUMNS: [&str; 5] = ["tags", "staff_userid", "added_at", "app_id", "updated_at"];

async fn customer_row(db: &mut dyn Db, rec: Record, now: Timestamp) -> Result<Result<Applied, String>, StoreError> {
    let mut tags = Vec::new();
    if let Some(t) = text(&rec, "tags") {
        for tag in t.split(['|', ';']).map(str::trim).filter(|t| !t.is_empty()) {
            if let Err(e) = validate_tag(tag) {
                return Ok(Err(format!("tag {tag:?}: {e}")));
            }
            tags.push(tag.to_string());
        }
    }
    let added_at = match text(&rec, "added_at") {
        None => now,
        Some(t) => match Timestamp::parse_iso8601(&t) {
            Some(ts) => ts,
            None => return Ok(Err(format!("added_at {t:?} is not an ISO-8601 date"))),
        },
    };
    let staff = text(&rec, "staff_userid");
    let msg = match customer_message(&rec) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let (applied, profile) = match apply_message(db, &msg, now).await? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let Some(profile) = profile else { return Ok(Ok(applied)) };
    for tag in &tags {
        profiles::add_tag(db, profile, tag, "import", now).await?;
    }
    if let Some(staff) = staff {
        org::link_customer(db, profile, &staff, added_at, None).await?;
    }
    Ok(Ok(applied))
}

/// A customer row as the identify call that says the same thing.
fn customer_message(rec: &Record) -> Result<Value, String> {
    let mut traits = Map::new();
    for (k, v) in rec {
        if !IDENTITY_COLUMNS.contains(&k.as_str()) && !CUSTOMER_META_COLUMNS.contains(&k.as_str()) {
            traits.insert(k.clone(), v.clone());
        }
    }
    let mut external_ids = Vec::new();
    for kind in [IdentityKind::Phone, IdentityKind::MemberNo, IdentityKind::Unionid, IdentityKind::ExternalUserid, IdentityKind::Openid] {
        if let Some(id) = text(rec, kind.as_str()) {
            let mut entry = json!({"id": id, "type": kind.as_str()});
            if kind == IdentityKind::Openid {
                entry["appId"] = json!(text(rec, "app_id"));
            }
            external_ids.push(entry);
        }
    }
    if let Some(phone) = text(rec, "phone") {
        traits.insert("phone".into(), Value::String(phone));
    }
    // An `email` column stays a trait; a valid address is also an identity (a row known
    // only by e-mail can be imported), something else in it stays just a trait.
    if let Some(email) = text(rec, "email").filter(|e| siyu_core::email::normalize(e).is_some()) {
        external_ids.push(json!({"id": email, "type": "email"}));
    }
    let mut msg = json!({
        "type": "identify",
        "traits": traits,
        "context": {"externalIds": external_ids, "source": "import"},
    });
    if let Some(u) = text(rec, "user_id") {
        msg["userId"] = json!(u);
    }
    if let Some(a) = text(rec, "anonymous_id") {
        msg["anonymousId"] = json!(a);
    }
    if msg.get("userId").is_none() && msg.get("anonymousId").is_none() {
        // Customers known only by phone, unionid … still need a Segment id: one derived
        // from their strongest identity (hashed, so no phone number leaks into it).
        let Some(first) = external_ids.first() else {
            return Err("the row has no identity: give user_id, phone, email, member_no, unionid, external_userid or openid".into());
        };
        let seed = format!("{}:{}", first["type"].as_str().unwrap_or(""), first["id"].as_str().unwrap_or(""));
        msg["anonymousId"] = json!(content_message_id(seed.as_bytes()).replacen("import-", "imported-", 1));
    }
    if let Some(t) = text(rec, "updated_at") {
        msg["timestamp"] = json!(t);
    }
    Ok(msg)
}

/// A CSV event row as a Segment message (JSONL lines are Segment messages already).
fn csv_event(rec: Record) -> Result<Value, String> {
    let mut msg = Map::new();
    let mut properties = Map::new();
    let mut external_ids = Vec::new();
    for (k, v) in rec {
        match k.as_str() {
            "type" | "event" | "name" | "timestamp" => {
                msg.insert(k, v);
            }
            "user_id" | "userId" => {
                msg.insert("userId".into(), v);
            }
            "anonymous_id" | "anonymousId" => {
                msg.insert("anonymousId".into(), v);
            }
            "message_id" | "messageId" => {
                msg.insert("messageId".into(), v);
            }
            "properties" => {
                let parsed = match v {
                    Value::String(s) => serde_json::from_str::<Value>(&s).map_err(|e| format!("properties is not a JSON object: {e}"))?,
                    other => other,
                };
                let Value::Object(map) = parsed else { return Err("properties must be a JSON object".into()) };
                properties.extend(map);
            }
            "phone" | "member_no" | "unionid" | "external_userid" => external_ids.push(json!({"id": v, "type": k})),
            "email" if v.as_str().and_then(siyu_core::email::normalize).is_some() => external_ids.push(json!({"id": v, "type": k})),
            _ => {
                properties.insert(k, v);
            }
        }
    }
    msg.entry("type").or_insert(json!("track"));
    msg.insert("properties".into(), Value::Object(properties));
    if !external_ids.is_empty() {
        msg.insert("context".into(), json!({"externalIds": external_ids}));
    }
    Ok(Value::Object(msg))
}

/// Validates a message like the tracking API does, gives it a content-derived
/// messageId if it has none, and stores it.
async fn apply_message(db: &mut dyn Db, msg: &Value, now: Timestamp) -> Result<Result<(Applied, Option<siyu_core::ProfileId>), String>, StoreError> {
    let body = serde_json::to_vec(msg).expect("JSON");
    let derived = content_message_id(&body);
    let id = || derived.clone();
    let cx = ParseContext { received_at: now, new_message_id: &id };
    let message = match parse_message(&body, &cx) {
        Ok(m) => m,
        Err(Rejection { reason, .. }) => return Ok(Err(reason)),
    };
    let outcome = ingest::apply(db, &message).await?;
    Ok(Ok(match outcome.profile_id {
        Some(p) => (Applied::Stored, Some(p)),
        None => (Applied::Duplicate, None),
    }))
}

fn content_message_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("import-{}", hex::encode(&digest[..16]))
}

// ---------- into a running server ----------

/// Messages per `/v1/batch` request when importing through a running server (well under
/// the 500 KB batch limit for ordinary rows; larger batches are split by size too).
const BATCH_MESSAGES: usize = 400;
const BATCH_BYTES: usize = 400 * 1024;

/// What an import through a running server sends: tracking messages, and what the admin
/// API carries (stores, staff, tags).
#[derive(Default)]
struct ServerImport {
    messages: Vec<Value>,
    /// (lookup query such as `user_id=m1`, tags) for each customer row with tags.
    tags: Vec<(String, Vec<String>)>,
    /// (path, body) of admin PUTs: stores and staff.
    puts: Vec<(String, Value)>,
}

/// `siyu import` beside a running server: the rows go through the server's own APIs (the
/// tracking API with the server write key, the admin API for stores, staff and tags), so
/// they reach the segment engine at once, exactly as live traffic does. Rows are checked
/// here first, with the same reasons as a direct import; repeats of an earlier import
/// (direct or not) carry the same message ids and are stored once.
pub async fn through_server(
    server: &str,
    write_key: &str,
    admin_token: Option<&str>,
    kind: ImportKind,
    path: &Path,
    strict: bool,
) -> anyhow::Result<ImportReport> {
    let format = format_of(path)?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bar = ProgressBar::new(file.metadata().map(|m| m.len()).unwrap_or(0));
    bar.set_style(ProgressStyle::with_template("{spinner} reading {msg} [{bar:30}] {bytes}/{total_bytes}").expect("progress template").progress_chars("=> "));
    bar.set_message(format!("{kind:?}").to_lowercase());
    let counting = CountingReader { inner: file, bar: bar.clone() };
    let mut report = ImportReport::default();
    let mut out = ServerImport::default();
    for (line, record) in records(format, counting) {
        report.rows += 1;
        let outcome = record.and_then(|rec| server_row(kind, format, rec, &mut out));
        match outcome {
            Ok(()) => report.imported += 1,
            Err(reason) => report.errors.push(RowError { line, reason }),
        }
    }
    bar.finish_and_clear();
    if strict && !report.errors.is_empty() {
        bail!(ImportError::Strict(report.errors).to_string());
    }
    let needs_admin = !out.puts.is_empty() || !out.tags.is_empty();
    let admin = match (needs_admin, admin_token) {
        (true, None) => {
            bail!("a server is running on this data directory ({server}): importing {} through it needs SIYU_ADMIN_TOKEN", format!("{kind:?}").to_lowercase())
        }
        (_, token) => AdminServer::new(server, token.unwrap_or_default())?,
    };
    let client = siyu_wecom::client::http_builder().no_proxy().timeout(std::time::Duration::from_secs(120)).build()?;
    let sent = ProgressBar::new((out.messages.len() + out.puts.len() + out.tags.len()) as u64);
    sent.set_style(ProgressStyle::with_template("{spinner} sending to {msg} [{bar:30}] {pos}/{len}").expect("progress template").progress_chars("=> "));
    sent.set_message(server.to_string());
    for (path, body) in &out.puts {
        admin.call(Method::PUT, path, Some(body)).await?;
        sent.inc(1);
    }
    for batch in batches(&out.messages) {
        let n = batch.len() as u64;
        let resp = client.post(format!("{server}/v1/batch")).basic_auth(write_key, Some("")).json(&json!({"batch": batch})).send().await;
        answer(resp, "/v1/batch").await?;
        sent.inc(n);
    }
    if !out.tags.is_empty() {
        wait_until_stored(&admin).await?;
        for (lookup, tags) in &out.tags {
            let profile = admin.call(Method::GET, &format!("/api/v1/profiles/lookup?{lookup}"), None).await?;
            let id = profile["id"].as_i64().context("the lookup answered without an id")?;
            for tag in tags {
                admin.call(Method::PUT, &format!("/api/v1/profiles/{id}/tags/{}", encode(tag)), None).await?;
            }
            sent.inc(1);
        }
    }
    sent.finish_and_clear();
    Ok(report)
}

/// Turns one row into what is sent for it, or says why it cannot be imported.
fn server_row(kind: ImportKind, format: Format, rec: Record, out: &mut ServerImport) -> Result<(), String> {
    match kind {
        ImportKind::Stores => {
            let s = store_row(&rec)?;
            out.puts.push((format!("/api/v1/stores/{}", encode(&s.id)), json!({"name": s.name, "city": s.city, "time_zone": s.time_zone})));
        }
        ImportKind::Staff => {
            let s = staff_row(&rec)?;
            let body = json!({"name": s.name, "store_id": s.store_id, "role": s.role.as_str(), "customer_cap": s.customer_cap});
            out.puts.push((format!("/api/v1/staff/{}", encode(&s.userid)), body));
        }
        ImportKind::Events => {
            let msg = match format {
                Format::JsonLines => Value::Object(rec),
                Format::Csv => csv_event(rec)?,
            };
            out.messages.push(checked(msg)?);
        }
        ImportKind::Customers => {
            let mut tags = Vec::new();
            for tag in text(&rec, "tags").unwrap_or_default().split(['|', ';']).map(str::trim).filter(|t| !t.is_empty()) {
                validate_tag(tag).map_err(|e| format!("tag {tag:?}: {e}"))?;
                tags.push(tag.to_string());
            }
            let added_at = match text(&rec, "added_at") {
                None => None,
                Some(t) => Some(Timestamp::parse_iso8601(&t).ok_or_else(|| format!("added_at {t:?} is not an ISO-8601 date"))?),
            };
            let msg = checked(customer_message(&rec)?)?;
            let lookup = lookup_query(&msg).ok_or("the row has no identity to look the customer up by")?;
            // The guide who added them: the same relationship as a WeCom add, in time order.
            if let Some(staff) = text(&rec, "staff_userid") {
                let mut added = json!({"type": "track", "event": "Contact Added", "properties": {"staff_userid": staff, "source": "import"}});
                for key in ["userId", "anonymousId", "context"] {
                    if let Some(v) = msg.get(key) {
                        added[key] = v.clone();
                    }
                }
                if let Some(at) = added_at {
                    added["timestamp"] = json!(at.to_rfc3339());
                }
                out.messages.push(checked(added)?);
            }
            out.messages.push(msg);
            if !tags.is_empty() {
                out.tags.push((lookup, tags));
            }
        }
    }
    Ok(())
}

/// Checks a message as the tracking API will, and gives it the content-derived message
/// id a direct import gives it (so importing twice, either way, stores it once).
fn checked(mut msg: Value) -> Result<Value, String> {
    let body = serde_json::to_vec(&msg).expect("JSON");
    let derived = content_message_id(&body);
    let id = || derived.clone();
    let cx = ParseContext { received_at: Timestamp::now(), new_message_id: &id };
    parse_message(&body, &cx).map_err(|r| r.reason)?;
    if msg.get("messageId").is_none() {
        msg["messageId"] = json!(derived);
    }
    Ok(msg)
}

/// `user_id=…` (or the customer's first other identity) for the admin lookup.
fn lookup_query(msg: &Value) -> Option<String> {
    if let Some(u) = msg["userId"].as_str() {
        return Some(format!("user_id={}", encode(u)));
    }
    if let Some(first) = msg["context"]["externalIds"].as_array().and_then(|a| a.first()) {
        let kind = first["type"].as_str()?;
        let mut q = format!("{kind}={}", encode(first["id"].as_str()?));
        if let Some(app) = first["appId"].as_str() {
            q.push_str(&format!("&app_id={}", encode(app)));
        }
        return Some(q);
    }
    msg["anonymousId"].as_str().map(|a| format!("anonymous_id={}", encode(a)))
}

/// Messages in batches under the tracking API's limits.
fn batches(messages: &[Value]) -> Vec<&[Value]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let size = m.to_string().len() + 1;
        if i > start && (i - start >= BATCH_MESSAGES || bytes + size > BATCH_BYTES) {
            out.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// Waits until the server has stored everything it acknowledged (tags need the
/// customers to exist).
async fn wait_until_stored(admin: &AdminServer) -> anyhow::Result<()> {
    for _ in 0..6000 {
        let status = admin.call(Method::GET, "/api/v1/ingest", None).await?;
        if status["lag"].as_u64() == Some(0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("the server did not store the imported customers within 10 minutes")
}
