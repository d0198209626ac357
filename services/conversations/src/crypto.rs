//! Sealing of app secrets and verify tokens at rest (AES-256-GCM).
//!
//! Each sealed value records the id of the key that sealed it, so keys can be
//! rotated: add a new key first in the list, old rows still open with the old
//! one. The associated data binds a ciphertext to its row and column, so a
//! sealed value copied elsewhere does not open.

use std::collections::HashMap;

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};

use crate::Error;

const NONCE_LEN: usize = 12;

pub struct SecretBox {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    /// Parses `<key-id>:<base64 of 32 bytes>` entries; the first one seals.
    pub fn from_specs(specs: &[String]) -> Result<Self, Error> {
        let mut keys = HashMap::new();
        let mut active = None;
        for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let (id, b64) = spec.split_once(':').ok_or_else(|| {
                Error::Config("encryption key must look like <key-id>:<base64 of 32 bytes>".into())
            })?;
            if id.is_empty() || id.len() > 32 {
                return Err(Error::Config(
                    "encryption key id must be 1..=32 characters".into(),
                ));
            }
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| Error::Config(format!("encryption key {id:?} is not valid base64")))?;
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|_| {
                Error::Config(format!(
                    "encryption key {id:?} must be 32 bytes, got {}",
                    raw.len()
                ))
            })?;
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(Error::Config(format!(
                    "encryption key id {id:?} appears twice"
                )));
            }
            active.get_or_insert_with(|| id.to_owned());
        }
        let active = active.ok_or_else(|| Error::Config("no encryption key given".into()))?;
        Ok(Self { active, keys })
    }

    /// The id of the key that seals new values (the first one configured).
    pub fn sealing_key_id(&self) -> &str {
        &self.active
    }

    /// Returns the sealing key's id and `nonce || ciphertext`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<(String, Vec<u8>), Error> {
        let cipher = &self.keys[&self.active];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok((self.active.clone(), out))
    }

    pub fn open(&self, key_id: &str, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| Error::Crypto(format!("unknown key id {key_id:?}")))?;
        if sealed.len() < NONCE_LEN {
            return Err(Error::Crypto("sealed value too short".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| Error::Crypto(format!("authentication failed under key {key_id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn seals_and_opens_across_rotation() {
        let old = SecretBox::from_specs(&[spec("k1", 1)]).expect("valid");
        let (kid, sealed) = old.seal(b"s3cret", b"app:1").expect("seal");
        assert_eq!(kid, "k1");
        let rotated = SecretBox::from_specs(&[spec("k2", 2), spec("k1", 1)]).expect("valid");
        assert_eq!(
            rotated.open(&kid, &sealed, b"app:1").expect("open"),
            b"s3cret"
        );
        assert_eq!(rotated.seal(b"x", b"a").expect("seal").0, "k2");
    }

    #[test]
    fn rejects_other_row_and_tampering() {
        let b = SecretBox::from_specs(&[spec("k1", 1)]).expect("valid");
        let (kid, mut sealed) = b.seal(b"s3cret", b"app:1").expect("seal");
        assert!(b.open(&kid, &sealed, b"app:2").is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(b.open(&kid, &sealed, b"app:1").is_err());
        assert!(b.open("nope", &sealed, b"app:1").is_err());
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in ["", "nokey", "k:not-base64!", "k:AAAA"] {
            assert!(SecretBox::from_specs(&[bad.to_owned()]).is_err(), "{bad}");
        }
        assert!(SecretBox::from_specs(&[spec("k", 1), spec("k", 2)]).is_err());
    }
}
