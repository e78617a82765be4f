//! Callback XML: the outer envelope (`Encrypt`, …) and the decrypted event, read as flat
//! `<Name>value</Name>` fields. A document type declaration is refused outright, so no
//! entity can be defined, let alone expanded (no XXE, no billion laughs). [`write`] makes
//! the same flat documents (a sealed envelope, the simulator's events).

use std::collections::BTreeMap;

use quick_xml::events::Event as XmlEvent;
use quick_xml::events::{BytesCData, BytesEnd, BytesStart, BytesText};
use quick_xml::{Reader, Writer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is not well-formed XML: {0}")]
    Malformed(String),
    #[error("XML with a document type declaration is refused")]
    Doctype,
    #[error("the XML has no <{0}>")]
    Missing(&'static str),
}

/// The leaf elements of a callback document, by name (the first occurrence wins). A
/// list (`<MemChangeList><Item>a</Item><Item>b</Item></MemChangeList>`) is kept under
/// its own name as `a,b`, the form WeCom used before lists had items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub BTreeMap<String, String>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The items of a list element, in either form; empty when it is absent.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name).map(|v| v.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_string).collect()).unwrap_or_default()
    }

    pub fn require(&self, name: &'static str) -> Result<&str, XmlError> {
        self.get(name).ok_or(XmlError::Missing(name))
    }
}

pub fn parse(xml: &str) -> Result<Fields, XmlError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut fields = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut open: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(|e| XmlError::Malformed(e.to_string()))? {
            XmlEvent::DocType(_) => return Err(XmlError::Doctype),
            XmlEvent::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                open.push(name.clone());
                current = Some(name);
                text.clear();
            }
            XmlEvent::Text(t) => {
                text.push_str(&t.decode().map_err(|e| XmlError::Malformed(e.to_string()))?);
            }
            XmlEvent::GeneralRef(r) => {
                // Character references and the five predefined entities; nothing else
                // can exist without a DTD.
                if let Some(ch) = r.resolve_char_ref().map_err(|e| XmlError::Malformed(e.to_string()))? {
                    text.push(ch);
                } else {
                    let name = r.decode().map_err(|e| XmlError::Malformed(e.to_string()))?;
                    let value = quick_xml::escape::resolve_predefined_entity(&name).ok_or_else(|| XmlError::Malformed(format!("unknown entity &{name};")))?;
                    text.push_str(value);
                }
            }
            XmlEvent::CData(c) => text.push_str(&String::from_utf8_lossy(&c.into_inner())),
            XmlEvent::End(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                open.pop();
                let list = open.last().filter(|_| name == "Item").cloned();
                if let (Some(list), true) = (list, current.as_deref() == Some("Item")) {
                    let items = fields.entry(list).or_insert_with(String::new);
                    if !items.is_empty() {
                        items.push(',');
                    }
                    items.push_str(text.trim());
                } else if current.as_deref() == Some(name.as_str()) {
                    fields.entry(name).or_insert_with(|| text.clone());
                }
                current = None;
                text.clear();
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if fields.is_empty() {
        return Err(XmlError::Malformed("no elements".into()));
    }
    Ok(Fields(fields))
}

/// One element of a callback document, written as WeCom writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A string: `<![CDATA[…]]>`. A value holding `]]>` (which cannot appear inside
    /// CDATA) is split into two sections there; [`parse`] joins them again.
    CData(String),
    /// A number or timestamp (`CreateTime`, `MemChangeCnt`): plain, escaped text.
    Text(String),
    /// A list: `<Item><![CDATA[…]]></Item>` per value (`MemChangeList`).
    Items(Vec<String>),
}

/// The document `<xml><Name>…</Name>…</xml>` with `fields` in order, no declaration and
/// no whitespace between elements (what WeCom sends and `wechatpy` reads).
pub fn write(fields: &[(&str, Field)]) -> String {
    let mut w = Writer::new(Vec::new());
    put(&mut w, XmlEvent::Start(BytesStart::new("xml")));
    for (name, field) in fields {
        put(&mut w, XmlEvent::Start(BytesStart::new(*name)));
        match field {
            Field::CData(value) => put_cdata(&mut w, value),
            Field::Text(value) => put(&mut w, XmlEvent::Text(BytesText::new(value))),
            Field::Items(items) => {
                for item in items {
                    put(&mut w, XmlEvent::Start(BytesStart::new("Item")));
                    put_cdata(&mut w, item);
                    put(&mut w, XmlEvent::End(BytesEnd::new("Item")));
                }
            }
        }
        put(&mut w, XmlEvent::End(BytesEnd::new(*name)));
    }
    put(&mut w, XmlEvent::End(BytesEnd::new("xml")));
    String::from_utf8(w.into_inner()).expect("XML written from strings is UTF-8")
}

fn put(w: &mut Writer<Vec<u8>>, event: XmlEvent<'_>) {
    // Writing into a Vec cannot fail.
    w.write_event(event).expect("writing XML into memory");
}

fn put_cdata(w: &mut Writer<Vec<u8>>, value: &str) {
    for section in BytesCData::escaped(value) {
        put(w, XmlEvent::CData(section));
    }
}

/// What a callback means for Siyu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackEvent {
    /// `change_external_contact` / `add_external_contact` (and `add_half_external_contact`).
    ContactAdded { staff: String, external_userid: String, state: Option<String>, welcome_code: Option<String> },
    /// `edit_external_contact`: remarks or tags changed by the guide.
    ContactEdited { staff: String, external_userid: String },
    /// `del_follow_user`: the customer removed the guide (the block signal).
    ContactDeletedByCustomer { staff: String, external_userid: String },
    /// `del_external_contact`: the guide removed the customer.
    ContactDeletedByStaff { staff: String, external_userid: String },
    /// `del_external_contact` with `Source=DELETE_BY_TRANSFER`: the customer moved to
    /// another guide (在职继承), so WeCom removed them from `staff`. Not a block.
    ContactHandedOver { staff: String, external_userid: String },
    /// `transfer_fail`: a customer transfer to `staff` failed.
    TransferFailed { staff: String, external_userid: String, reason: Option<String> },
    /// `change_external_chat`: `create`, `update` (`add_member`/`del_member` with the
    /// members who joined or left, `change_owner`, `change_name`, …), `dismiss`.
    Group {
        chat_id: String,
        change: String,
        update_detail: Option<String>,
        join_scene: Option<String>,
        quit_scene: Option<String>,
        member_change_count: Option<u32>,
        members: Vec<String>,
    },
    /// `change_external_tag`: create, update, delete, shuffle.
    Tag { id: String, tag_type: String, change: String },
    /// Anything else, kept for the record.
    Other { msg_type: String, event: Option<String>, change: Option<String> },
}

impl CallbackEvent {
    pub fn from_fields(f: &Fields) -> Result<CallbackEvent, XmlError> {
        let msg_type = f.require("MsgType")?.to_string();
        let event = f.get("Event").map(str::to_string);
        let change = f.get("ChangeType").map(str::to_string);
        let s = |k: &'static str| f.require(k).map(str::to_string);
        let o = |k: &str| f.get(k).map(str::to_string).filter(|v| !v.is_empty());
        Ok(match (event.as_deref(), change.as_deref()) {
            (Some("change_external_contact"), Some("add_external_contact" | "add_half_external_contact")) => {
                CallbackEvent::ContactAdded { staff: s("UserID")?, external_userid: s("ExternalUserID")?, state: o("State"), welcome_code: o("WelcomeCode") }
            }
            (Some("change_external_contact"), Some("edit_external_contact")) => {
                CallbackEvent::ContactEdited { staff: s("UserID")?, external_userid: s("ExternalUserID")? }
            }
            (Some("change_external_contact"), Some("del_follow_user")) => {
                CallbackEvent::ContactDeletedByCustomer { staff: s("UserID")?, external_userid: s("ExternalUserID")? }
            }
            (Some("change_external_contact"), Some("del_external_contact")) if f.get("Source") == Some("DELETE_BY_TRANSFER") => {
                CallbackEvent::ContactHandedOver { staff: s("UserID")?, external_userid: s("ExternalUserID")? }
            }
            (Some("change_external_contact"), Some("del_external_contact")) => {
                CallbackEvent::ContactDeletedByStaff { staff: s("UserID")?, external_userid: s("ExternalUserID")? }
            }
            (Some("change_external_contact"), Some("transfer_fail")) => {
                CallbackEvent::TransferFailed { staff: s("UserID")?, external_userid: s("ExternalUserID")?, reason: o("FailReason") }
            }
            (Some("change_external_chat"), Some(c)) => CallbackEvent::Group {
                chat_id: s("ChatId")?,
                change: c.to_string(),
                update_detail: o("UpdateDetail"),
                join_scene: o("JoinScene"),
                quit_scene: o("QuitScene"),
                member_change_count: f.get("MemChangeCnt").and_then(|v| v.parse().ok()),
                members: f.list("MemChangeList"),
            },
            (Some("change_external_tag"), Some(c)) => CallbackEvent::Tag { id: s("Id")?, tag_type: o("TagType").unwrap_or_default(), change: c.to_string() },
            _ => CallbackEvent::Other { msg_type, event, change },
        })
    }
}

/// WeCom retries a callback up to three times: the same event has the same key.
/// Messages carry `MsgId`; events are keyed by sender, time and what happened (for a
/// group change, which change: a join and a leave within one second are two events).
pub fn dedupe_key(f: &Fields) -> String {
    let key = dedupe_base(f);
    match f.get("UpdateDetail") {
        Some(detail) => format!("{key}:{detail}"),
        None => key,
    }
}

fn dedupe_base(f: &Fields) -> String {
    match f.get("MsgId") {
        Some(id) => format!("wecom:msg:{id}"),
        None => format!(
            "wecom:event:{}:{}:{}:{}:{}:{}",
            f.get("FromUserName").unwrap_or(""),
            f.get("CreateTime").unwrap_or(""),
            f.get("Event").unwrap_or(""),
            f.get("ChangeType").unwrap_or(""),
            f.get("ExternalUserID").or(f.get("ChatId")).or(f.get("Id")).unwrap_or(""),
            f.get("UserID").unwrap_or(""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_by_transfer_is_a_hand_over_not_a_removal() {
        let xml = |source: &str| {
            format!(
                "<xml><ToUserName>ww1</ToUserName><FromUserName>sys</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>\
                 <Event>change_external_contact</Event><ChangeType>del_external_contact</ChangeType><UserID>li</UserID>\
                 <ExternalUserID>wm1</ExternalUserID>{source}</xml>"
            )
        };
        let read = |x: String| CallbackEvent::from_fields(&parse(&x).unwrap()).unwrap();
        assert_eq!(
            read(xml("<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>")),
            CallbackEvent::ContactHandedOver { staff: "li".into(), external_userid: "wm1".into() }
        );
        assert_eq!(read(xml("")), CallbackEvent::ContactDeletedByStaff { staff: "li".into(), external_userid: "wm1".into() });
    }

    #[test]
    fn reads_an_add_contact_event() {
        let xml = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
            <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA]]></ExternalUserID>\
            <State><![CDATA[SH001-table_card]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>";
        let f = parse(xml).unwrap();
        assert_eq!(
            CallbackEvent::from_fields(&f).unwrap(),
            CallbackEvent::ContactAdded {
                staff: "zhangsan".into(),
                external_userid: "woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA".into(),
                state: Some("SH001-table_card".into()),
                welcome_code: Some("WELCOMECODE".into())
            }
        );
        assert_eq!(dedupe_key(&f), "wecom:event:sys:1403610513:change_external_contact:add_external_contact:woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA:zhangsan");
    }

    #[test]
    fn reads_group_member_changes_in_both_list_forms() {
        let head = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId>\
            <ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>1</JoinScene><MemChangeCnt>2</MemChangeCnt>";
        let items = format!(
            "{head}<MemChangeList>\n  <Item><![CDATA[wmAAA]]></Item>\n  <Item><![CDATA[zhangsan]]></Item>\n</MemChangeList><LastMemVer>9c3f</LastMemVer></xml>"
        );
        let joined = format!("{head}<MemChangeList><![CDATA[wmAAA,zhangsan]]></MemChangeList></xml>");
        for xml in [items, joined] {
            let f = parse(&xml).unwrap();
            let CallbackEvent::Group { update_detail, join_scene, members, .. } = CallbackEvent::from_fields(&f).unwrap() else { panic!("not a group event") };
            assert_eq!((update_detail.as_deref(), join_scene.as_deref()), (Some("add_member"), Some("1")));
            assert_eq!(members, vec!["wmAAA".to_string(), "zhangsan".to_string()]);
            assert_eq!(f.get("LastMemVer"), if xml.contains("LastMemVer") { Some("9c3f") } else { None });
        }
    }

    #[test]
    fn writes_what_wecom_sends_and_reads_it_back() {
        let xml = write(&[
            ("ToUserName", Field::CData("ww1".into())),
            ("CreateTime", Field::Text("1403610513".into())),
            ("State", Field::CData(String::new())),
            ("MemChangeList", Field::Items(vec!["wmAAA".into(), "zhangsan".into()])),
        ]);
        assert_eq!(
            xml,
            "<xml><ToUserName><![CDATA[ww1]]></ToUserName><CreateTime>1403610513</CreateTime><State><![CDATA[]]></State>\
             <MemChangeList><Item><![CDATA[wmAAA]]></Item><Item><![CDATA[zhangsan]]></Item></MemChangeList></xml>"
        );
        let f = parse(&xml).unwrap();
        assert_eq!((f.get("ToUserName"), f.get("State"), f.list("MemChangeList")), (Some("ww1"), Some(""), vec!["wmAAA".to_string(), "zhangsan".to_string()]));

        // Values that would break hand-made XML come back unchanged.
        let tricky = "a]]>b <c> & \"d\" ]]>";
        let xml = write(&[("State", Field::CData(tricky.into())), ("Note", Field::Text(tricky.into()))]);
        let f = parse(&xml).unwrap();
        assert_eq!((f.get("State"), f.get("Note")), (Some(tricky), Some(tricky)), "{xml}");
    }

    #[test]
    fn refuses_doctypes_and_garbage() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>"#;
        assert_eq!(parse(xxe), Err(XmlError::Doctype));
        assert!(parse("not xml at all").is_err());
        assert!(parse("<xml><a>1</b></xml>").is_err());
        assert_eq!(parse("<xml><a>&lt;ok&gt; &#20320;</a></xml>").unwrap().get("a"), Some("<ok> 你"));
        assert!(parse("<xml><a>&custom;</a></xml>").is_err());
    }
}
