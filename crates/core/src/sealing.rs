//! Webhook secrets encrypted at rest (contract §2: "Secrets are encrypted at rest when
//! `secret_key` is set").
//!
//! A sealed value is `hookrelay-sealed:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`,
//! XChaCha20-Poly1305 under a 32-byte key, with the webhook's id as associated data: a sealed
//! secret copied onto another webhook's row does not open. The 24-byte nonce is random, which
//! XChaCha's nonce length makes safe for any number of values under one key. The key id is
//! the first 4 bytes of the key's SHA-256, so a value names the key it needs without
//! revealing it, and old keys can keep opening values until `hookrelay reencrypt` has moved
//! them to the current one. A value without the prefix is a secret stored before encryption
//! was turned on, and is used as it is.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::Invalid;

/// The prefix of every sealed value; [`crate::Secret::parse`] refuses secrets that start
/// with it, so a plain secret is never mistaken for a sealed one.
pub const SEALED_PREFIX: &str = "hookrelay-sealed:v1:";
pub const NONCE_BYTES: usize = 24;
const KEY_BYTES: usize = 32;

/// One key of `secret_key` or `old_secret_keys`. Its `Debug` shows only its id.
#[derive(Clone)]
pub struct SealingKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    /// A key as written in the settings: standard base64 of 32 random bytes
    /// (`openssl rand -base64 32`).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| {
                Invalid::new(
                    "invalid_key",
                    "a key is standard base64 of 32 random bytes (openssl rand -base64 32)",
                )
            })?;
        let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            Invalid::new(
                "invalid_key",
                format!(
                    "a key is 32 bytes once decoded, not {} (openssl rand -base64 32)",
                    bytes.len()
                ),
            )
        })?;
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: [u8; KEY_BYTES]) -> Self {
        let digest = Sha256::digest(key);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id,
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// The key's public name, as written into the values it seals.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({})", self.id)
    }
}

/// Why a stored value could not be opened. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "the secret is sealed with key {0}, which is neither secret_key nor one of old_secret_keys"
    )]
    UnknownKey(String),
    #[error("the sealed secret is damaged, or belongs to another webhook")]
    Damaged,
    #[error("the secret cannot be encrypted")]
    Encrypt,
}

/// The keys of a deployment: the one that seals, and older ones that still open.
#[derive(Debug, Clone, Default)]
pub struct Sealer {
    current: Option<SealingKey>,
    old: Vec<SealingKey>,
}

impl Sealer {
    /// `current` seals new values (none: they are stored as given); `current` and `old` open.
    pub fn new(current: Option<SealingKey>, old: Vec<SealingKey>) -> Self {
        Self { current, old }
    }

    /// The value to store for `plain`, the secret of the webhook `owner`: sealed under the
    /// current key with `nonce`, or `plain` itself without one.
    pub fn seal(
        &self,
        plain: &str,
        owner: &[u8],
        nonce: [u8; NONCE_BYTES],
    ) -> Result<String, SealError> {
        let Some(key) = &self.current else {
            return Ok(plain.to_owned());
        };
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: owner,
        };
        // Fails only for messages beyond 256 GiB; never stores the plain text instead.
        let sealed = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| SealError::Encrypt)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The secret in a stored value of the webhook `owner`: opened with whichever key sealed
    /// it, or the value itself when it was stored plain.
    pub fn open(&self, stored: &str, owner: &[u8]) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, encoded) = rest.split_once(':').ok_or(SealError::Damaged)?;
        let key = self
            .current
            .iter()
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SealError::Damaged)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealError::Damaged);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: sealed,
            aad: owner,
        };
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SealError::Damaged)
    }

    /// Whether a stored value is already as [`Sealer::seal`] would store it now: sealed under
    /// the current key, or plain when there is none.
    pub fn is_current(&self, stored: &str) -> bool {
        match (&self.current, stored.strip_prefix(SEALED_PREFIX)) {
            (None, None) => true,
            (Some(key), Some(rest)) => rest.split_once(':').is_some_and(|(id, _)| id == key.id),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SealingKey {
        SealingKey::from_bytes([n; 32])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_owner() {
        let sealer = Sealer::new(Some(key(1)), vec![]);
        let stored = sealer
            .seal("whsec_abc", b"webhook-1", [9; NONCE_BYTES])
            .unwrap();
        assert!(stored.starts_with(SEALED_PREFIX), "{stored}");
        assert!(!stored.contains("whsec_abc"));
        assert_eq!(sealer.open(&stored, b"webhook-1").unwrap(), "whsec_abc");
        assert_eq!(
            sealer.open(&stored, b"webhook-2"),
            Err(SealError::Damaged),
            "moved to another webhook's row"
        );
        let other = Sealer::new(Some(key(2)), vec![]);
        assert_eq!(
            other.open(&stored, b"webhook-1"),
            Err(SealError::UnknownKey(key(1).id().to_owned()))
        );
        let mut tampered = stored.clone();
        tampered.pop();
        tampered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(sealer.open(&tampered, b"webhook-1").is_err());
        assert_eq!(
            sealer.open("hookrelay-sealed:v1:nocolon", b"w"),
            Err(SealError::Damaged)
        );
    }

    #[test]
    fn rotation_opens_with_old_keys_and_plain_values_pass() {
        let before = Sealer::new(Some(key(1)), vec![]);
        let stored = before.seal("s3cret", b"w", [1; NONCE_BYTES]).unwrap();
        let after = Sealer::new(Some(key(2)), vec![key(1)]);
        assert_eq!(after.open(&stored, b"w").unwrap(), "s3cret");
        assert!(!after.is_current(&stored));
        let resealed = after.seal("s3cret", b"w", [2; NONCE_BYTES]).unwrap();
        assert!(after.is_current(&resealed));
        assert_eq!(
            after.open("plain-from-before", b"w").unwrap(),
            "plain-from-before"
        );
        assert!(!after.is_current("plain-from-before"));
        // Without a current key, values are stored plain, and old keys still open.
        let off = Sealer::new(None, vec![key(1)]);
        assert_eq!(
            off.seal("s3cret", b"w", [3; NONCE_BYTES]).unwrap(),
            "s3cret"
        );
        assert_eq!(off.open(&stored, b"w").unwrap(), "s3cret");
        assert!(off.is_current("s3cret") && !off.is_current(&stored));
    }

    #[test]
    fn keys_parse_from_base64_and_never_show() {
        let raw = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let k = SealingKey::parse(&raw).unwrap();
        assert_eq!(k.id().len(), 8);
        assert_eq!(format!("{k:?}"), format!("SealingKey({})", k.id()));
        assert!(!format!("{k:?}").contains(&raw));
        for bad in ["", "not base64!", "AAAA"] {
            assert_eq!(
                SealingKey::parse(bad).unwrap_err().code,
                "invalid_key",
                "{bad}"
            );
        }
    }
}
