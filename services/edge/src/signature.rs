//! Meta's `X-Hub-Signature-256`: HMAC-SHA256 of the raw body, keyed by the app
//! secret. Verified over the bytes as received (Meta signs its own escaped
//! serialization; a re-serialized body does not match) and compared in
//! constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The decoded digest of a `sha256=<64 hex>` header value.
pub(crate) fn parse_header(value: &[u8]) -> Option<[u8; 32]> {
    let hex_part = value.strip_prefix(b"sha256=")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

pub(crate) fn verify(secret: &[u8], body: &[u8], digest: &[u8; 32]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(digest).is_ok()
}

/// The header value Meta would send for `body` (for tools and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_own_signature_and_rejects_others() {
        let body = "{\"text\":\"caf\\u00e9 \u{1F44D}\"}".as_bytes();
        let header = sign(b"secret", body);
        let digest = parse_header(header.as_bytes()).expect("well formed");
        assert!(verify(b"secret", body, &digest));
        assert!(!verify(b"other", body, &digest));
        assert!(!verify(b"secret", b"{}", &digest));
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "sha256=",
            "sha1=00",
            "sha256=zz",
            &format!("sha256={}", "0".repeat(63)),
        ] {
            assert!(parse_header(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(parse_header(format!("sha256={}", "ab".repeat(32)).as_bytes()).is_some());
    }
}
