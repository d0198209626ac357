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

/// YCloud's `YCloud-Signature: t=<unix seconds>,s=<hex>`: HMAC-SHA256 of
/// `"{t}.{raw body}"` under the endpoint's signing secret. Returns the signed
/// time and digest; unknown keys are ignored.
pub(crate) fn parse_ycloud_header(value: &[u8]) -> Option<(i64, [u8; 32], &[u8])> {
    let (mut t, mut s) = (None, None);
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if let Some(v) = part.strip_prefix(b"t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix(b"s=") {
            s = Some(v);
        }
    }
    let t_raw = t?;
    let t = std::str::from_utf8(t_raw).ok()?.parse::<i64>().ok()?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(s?, &mut digest).ok()?;
    Some((t, digest, t_raw))
}

pub(crate) fn verify_ycloud(secret: &[u8], t_raw: &[u8], body: &[u8], digest: &[u8; 32]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(t_raw);
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(digest).is_ok()
}

/// The `YCloud-Signature` value YCloud would send for `body` at time `t`.
pub fn sign_ycloud(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},s={}", hex::encode(mac.finalize().into_bytes()))
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
    fn ycloud_signature_matches_the_documented_scheme() {
        let header = sign_ycloud(b"whsec", 1_749_416_384, b"{}");
        let (t, digest, raw) = parse_ycloud_header(header.as_bytes()).expect("well formed");
        assert_eq!(t, 1_749_416_384);
        assert!(verify_ycloud(b"whsec", raw, b"{}", &digest));
        assert!(!verify_ycloud(b"whsec", b"1749416385", b"{}", &digest));
        assert!(!verify_ycloud(b"other", raw, b"{}", &digest));
        assert!(parse_ycloud_header(b"t=1,s=zz").is_none());
        assert!(parse_ycloud_header(b"s=00").is_none());
        let spaced = format!("s={}, t=5, v=1", "00".repeat(32));
        assert_eq!(parse_ycloud_header(spaced.as_bytes()).map(|p| p.0), Some(5));
    }

    /// Every byte of the digest counts: a check that compared a prefix (or
    /// skipped the end) would pass a digest whose last byte is wrong.
    fn each_byte_flipped(digest: [u8; 32]) -> impl Iterator<Item = (usize, [u8; 32])> {
        (0..32).flat_map(move |i| {
            [0x01u8, 0x80].map(|bit| {
                let mut d = digest;
                d[i] ^= bit;
                (i, d)
            })
        })
    }

    #[test]
    fn a_meta_digest_with_any_byte_changed_is_refused() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), computed independently.
        let body = b"The quick brown fox jumps over the lazy dog";
        let header = b"sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        let digest = parse_header(header).expect("well formed");
        assert_eq!(sign(b"key", body).as_bytes(), header);
        assert!(verify(b"key", body, &digest));
        let mut last = digest;
        last[31] ^= 0x01;
        assert!(!verify(b"key", body, &last), "last byte flipped");
        for (i, bad) in each_byte_flipped(digest) {
            assert!(!verify(b"key", body, &bad), "byte {i} flipped");
        }
    }

    #[test]
    fn a_ycloud_digest_with_any_byte_changed_is_refused() {
        // HMAC-SHA256("whsec_test", "1749416384.{\"id\":\"evt_1\"}"), computed independently.
        let body = br#"{"id":"evt_1"}"#;
        let header =
            b"t=1749416384,s=93e6fbf7feeec3e66d4d72fce9c564faf6b337618ca02b84def8d7a7a92a8d90";
        let (t, digest, raw) = parse_ycloud_header(header).expect("well formed");
        assert_eq!(sign_ycloud(b"whsec_test", t, body).as_bytes(), header);
        assert!(verify_ycloud(b"whsec_test", raw, body, &digest));
        let mut last = digest;
        last[31] ^= 0x01;
        assert!(
            !verify_ycloud(b"whsec_test", raw, body, &last),
            "last byte flipped"
        );
        for (i, bad) in each_byte_flipped(digest) {
            assert!(
                !verify_ycloud(b"whsec_test", raw, body, &bad),
                "byte {i} flipped"
            );
        }
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
