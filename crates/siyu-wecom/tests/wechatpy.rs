//! Interoperability with an independent implementation: `wechatpy` (PyPI) encrypts and
//! Siyu decrypts, and the reverse. The Python comes from `SIYU_TEST_PYTHON` (scripts/test
//! installs wechatpy there); without it the test is skipped locally and fails under CI.

use std::io::Write;
use std::process::{Command, Stdio};

use siyu_store::testing::python_with;
use siyu_wecom::callback;
use siyu_wecom::crypto::MsgCrypt;

const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";

fn wechatpy(python: &str, args: &[&str], stdin: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python/wecom_crypto.py");
    let mut child = Command::new(python).arg(script).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wechatpy failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const EVENT: &str = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[li.sh0052]]></UserID><ExternalUserID><![CDATA[wmABCDEF]]></ExternalUserID><State><![CDATA[SH001-poster]]></State></xml>";

#[test]
fn wechatpy_encrypts_and_siyu_decrypts() {
    let Some(py) = python_with("wechatpy.enterprise.crypto") else { return };
    let siyu = MsgCrypt::new(TOKEN, KEY, CORP).unwrap();
    for message in [EVENT, "你好，岚山咖啡", "x"] {
        let envelope = wechatpy(&py, &["encrypt", TOKEN, KEY, CORP, "nonce42", "1700000000"], message);
        let f = callback::parse(&envelope).unwrap();
        let opened =
            siyu.open(f.require("MsgSignature").unwrap(), f.require("TimeStamp").unwrap(), f.require("Nonce").unwrap(), f.require("Encrypt").unwrap()).unwrap();
        assert_eq!(opened, message);
    }
}

#[test]
fn siyu_encrypts_and_wechatpy_decrypts() {
    let Some(py) = python_with("wechatpy.enterprise.crypto") else { return };
    let siyu = MsgCrypt::new(TOKEN, KEY, CORP).unwrap();
    for message in [EVENT, "你好，岚山咖啡", "x"] {
        let envelope = siyu.seal(message, "1700000001", "nonce43");
        let f = callback::parse(&envelope).unwrap();
        let signature = f.require("MsgSignature").unwrap();
        // wechatpy reads the envelope's Encrypt and checks the signature itself.
        let opened = wechatpy(&py, &["decrypt", TOKEN, KEY, CORP, signature, "1700000001", "nonce43"], &envelope);
        assert_eq!(opened, message);
    }
}
