//! Standard Webhooks signatures (contract §2, https://www.standardwebhooks.com).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Secret;

/// `v1,<base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"))>`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    sign_with_key(&secret.key(), msg_id, timestamp, body)
}

fn sign_with_key(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The `webhook-signature` header value: one signature per valid secret, space-separated
/// (during a rotation the old secret signs beside the new one). `None` without secrets.
pub fn signature_header(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<String> {
    if secrets.is_empty() {
        return None;
    }
    let parts: Vec<String> = secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect();
    Some(parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference implementation.
    #[test]
    fn matches_the_standard_webhooks_reference() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn plain_secrets_use_their_bytes_and_rotation_signs_twice() {
        let plain = Secret::parse("my-plain-secret-of-24-bytes").unwrap();
        let a = sign(&plain, "evt_1", 1, b"{}");
        assert_eq!(
            a,
            sign_with_key(b"my-plain-secret-of-24-bytes", "evt_1", 1, b"{}")
        );
        let new = Secret::parse("another-plain-secret-24-by").unwrap();
        let header = signature_header(&[new.clone(), plain], "evt_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            vec![sign(&new, "evt_1", 1, b"{}").as_str(), a.as_str()]
        );
        assert_eq!(signature_header(&[], "evt_1", 1, b"{}"), None);
        assert_ne!(
            sign(&new, "evt_1", 2, b"{}"),
            sign(&new, "evt_1", 1, b"{}"),
            "the timestamp is signed"
        );
    }
}
