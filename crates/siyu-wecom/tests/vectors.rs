//! The published WeCom callback test vectors (`../shared/wecom/callback-vectors.json`,
//! copied here as `tests/callback-vectors.json`).

use siyu_wecom::crypto::{CryptoError, MsgCrypt};

fn vectors() -> Vec<serde_json::Value> {
    let text = include_str!("callback-vectors.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["vectors"].as_array().unwrap().clone()
}

fn crypt(v: &serde_json::Value) -> MsgCrypt {
    MsgCrypt::new(v["token"].as_str().unwrap(), v["encoding_aes_key"].as_str().unwrap(), v["receive_id"].as_str().unwrap()).unwrap()
}

#[test]
fn every_published_vector_verifies_and_decrypts() {
    let all = vectors();
    assert_eq!(all.len(), 4);
    for v in &all {
        let c = crypt(v);
        let s = |k: &str| v[k].as_str().unwrap();
        let message = c.open(s("msg_signature"), s("timestamp"), s("nonce"), s("encrypt")).unwrap_or_else(|e| panic!("{}: {e}", s("name")));
        assert_eq!(message, s("plaintext"), "{}", s("name"));
    }
}

#[test]
fn tampering_is_caught() {
    for v in vectors() {
        let c = crypt(&v);
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        assert_eq!(c.open(&s("msg_signature"), &s("timestamp"), "1", &s("encrypt")), Err(CryptoError::BadSignature));
        let mut sig = s("msg_signature");
        sig.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert_eq!(c.open(&sig, &s("timestamp"), &s("nonce"), &s("encrypt")), Err(CryptoError::BadSignature));
        // The right signature over garbage: undecryptable.
        let garbage = "bm90IGEgcmVhbCBtZXNzYWdlIGF0IGFsbCEhISEhIQ==";
        let sig = c.sign(&s("timestamp"), &s("nonce"), garbage);
        assert!(matches!(c.open(&sig, &s("timestamp"), &s("nonce"), garbage), Err(CryptoError::BadEnvelope(_))));
        // Another corp's configuration with the same key and token: wrong receiver.
        let other = MsgCrypt::new(&s("token"), &s("encoding_aes_key"), "ww_someone_else").unwrap();
        assert!(matches!(other.open(&s("msg_signature"), &s("timestamp"), &s("nonce"), &s("encrypt")), Err(CryptoError::WrongReceiver { .. })));
    }
}

#[test]
fn encryption_round_trips_with_32_byte_padding() {
    let v = &vectors()[0];
    let c = crypt(v);
    for len in [0usize, 1, 11, 12, 31, 32, 33, 100, 1000] {
        let message = "企".repeat(len / 3) + &"x".repeat(len % 3);
        let enc = c.encrypt(&message);
        let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &enc).unwrap();
        assert_eq!(raw.len() % 32, 0, "padded to 32-byte blocks");
        let sig = c.sign("1409659813", "1372623149", &enc);
        assert_eq!(c.open(&sig, "1409659813", "1372623149", &enc).unwrap(), message);
    }
    assert!(format!("{c:?}").contains("receive_id") && !format!("{c:?}").contains(v["token"].as_str().unwrap()), "secrets are not printed");
    assert_eq!(MsgCrypt::new("t", "short", "id").unwrap_err(), CryptoError::BadKey);
}
