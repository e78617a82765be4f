//! WXBizMsgCrypt: how WeCom signs and encrypts callbacks.
//!
//! - key = base64(EncodingAESKey + "="), 32 bytes; IV = its first 16 bytes.
//! - plaintext = random(16) ‖ len(message) as big-endian u32 ‖ message ‖ receive id
//!   (the corp id), padded PKCS#7-style to a multiple of **32** bytes (pad 1–32), then
//!   AES-256-CBC without further padding, then base64.
//! - msg_signature = hex(SHA-1(concat(sort([token, timestamp, nonce, ciphertext])))).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::callback::{self, Field};

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

const BLOCK: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the EncodingAESKey must be 43 characters of base64 (it decodes to 32 bytes)")]
    BadKey,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the message is not valid base64")]
    BadBase64,
    #[error("the message does not decrypt to a valid envelope: {0}")]
    BadEnvelope(&'static str),
    #[error("the message is for receive id {found:?}, not this corp")]
    WrongReceiver { found: String },
}

/// The secrets of one callback configuration. `Debug` does not print them.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt").field("receive_id", &self.receive_id).finish_non_exhaustive()
    }
}

/// The SHA-1 signature over the sorted parts.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypted: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypted];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

impl MsgCrypt {
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<MsgCrypt, CryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(CryptoError::BadKey);
        }
        // Real keys end in a character whose low bits are not zero: decode as leniently
        // as WeCom's own samples (Python's b64decode) do.
        let lenient =
            base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));
        let bytes = lenient.decode(format!("{encoding_aes_key}=")).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(MsgCrypt { token: token.to_string(), key, receive_id: receive_id.to_string() })
    }

    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    pub fn sign(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        signature(&self.token, timestamp, nonce, encrypted)
    }

    /// Checks the signature in constant time.
    pub fn verify(&self, msg_signature: &str, timestamp: &str, nonce: &str, encrypted: &str) -> Result<(), CryptoError> {
        let expected = self.sign(timestamp, nonce, encrypted);
        let given = msg_signature.trim().to_ascii_lowercase();
        // Slices of different lengths are unequal at once; the length is no secret.
        let same: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
        if same { Ok(()) } else { Err(CryptoError::BadSignature) }
    }

    /// Verifies, decrypts and checks the receive id: the message.
    pub fn open(&self, msg_signature: &str, timestamp: &str, nonce: &str, encrypted: &str) -> Result<String, CryptoError> {
        self.verify(msg_signature, timestamp, nonce, encrypted)?;
        let (message, receive_id) = self.decrypt(encrypted)?;
        if receive_id != self.receive_id {
            return Err(CryptoError::WrongReceiver { found: receive_id });
        }
        Ok(message)
    }

    /// Decrypts an envelope into (message, receive id) without checking either.
    pub fn decrypt(&self, encrypted: &str) -> Result<(String, String), CryptoError> {
        let mut data = STANDARD.decode(encrypted.trim()).map_err(|_| CryptoError::BadBase64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(CryptoError::BadEnvelope("not a whole number of AES blocks"));
        }
        let plain =
            Decryptor::new(&self.key.into(), self.key[..16].into()).decrypt_padded_mut::<NoPadding>(&mut data).map_err(|_| CryptoError::BadEnvelope("AES"))?;
        let pad = *plain.last().ok_or(CryptoError::BadEnvelope("empty"))? as usize;
        if pad == 0 || pad > BLOCK || pad > plain.len() || !plain[plain.len() - pad..].iter().all(|&b| b as usize == pad) {
            return Err(CryptoError::BadEnvelope("padding"));
        }
        let body = &plain[..plain.len() - pad];
        if body.len() < 20 {
            return Err(CryptoError::BadEnvelope("too short"));
        }
        let len = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        if 20 + len > body.len() {
            return Err(CryptoError::BadEnvelope("length"));
        }
        let message = std::str::from_utf8(&body[20..20 + len]).map_err(|_| CryptoError::BadEnvelope("message is not UTF-8"))?;
        let receive_id = std::str::from_utf8(&body[20 + len..]).map_err(|_| CryptoError::BadEnvelope("receive id is not UTF-8"))?;
        Ok((message.to_string(), receive_id.to_string()))
    }

    /// Encrypts a message with a fresh random prefix.
    pub fn encrypt(&self, message: &str) -> String {
        let random: [u8; 16] = rand::random();
        self.encrypt_with(random, message)
    }

    pub fn encrypt_with(&self, random: [u8; 16], message: &str) -> String {
        let mut plain = Vec::with_capacity(20 + message.len() + self.receive_id.len() + BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(self.receive_id.as_bytes());
        let pad = BLOCK - plain.len() % BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let cipher =
            Encryptor::new(&self.key.into(), self.key[..16].into()).encrypt_padded_mut::<NoPadding>(&mut plain, len).expect("a whole number of blocks");
        STANDARD.encode(cipher)
    }

    /// A passive reply or a simulated callback body: the encrypted XML envelope.
    pub fn seal(&self, message: &str, timestamp: &str, nonce: &str) -> String {
        let encrypted = self.encrypt(message);
        let signature = self.sign(timestamp, nonce, &encrypted);
        callback::write(&[
            ("Encrypt", Field::CData(encrypted)),
            ("MsgSignature", Field::CData(signature)),
            ("TimeStamp", Field::Text(timestamp.to_string())),
            ("Nonce", Field::CData(nonce.to_string())),
        ])
    }
}
