//! Portal sessions: short-lived tokens that let a platform's customer into its own account's
//! portal, without handing its browser a long-lived API key.
//!
//! A token is `hrp_<claims>.<mac>`: the claims (session id, account, capabilities, issue and
//! expiry times) as base64url JSON, and their HMAC-SHA256 under a key every process shares
//! (`service_keys`). Any process checks one without reading the database; revocation (every
//! session of an account issued before a time) is a small table the API caches.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::Invalid;

/// Portal tokens start with this: one that cannot be a session costs no check.
pub const PORTAL_TOKEN_PREFIX: &str = "hrp_";
/// A session lasts this long unless asked otherwise.
pub const DEFAULT_SESSION_SECS: u64 = 3600;
/// And at most this long.
pub const MAX_SESSION_SECS: u64 = 7 * 24 * 3600;
/// Bytes of a token at most: anything longer is not one of ours.
const MAX_TOKEN_BYTES: usize = 1024;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Read the account's webhooks, logs and statistics.
    pub read: bool,
    /// Create, change, delete, rotate, test, retry, recover and replay (and read what it
    /// changes).
    pub manage: bool,
}

impl Capabilities {
    pub const ALL: Self = Self {
        read: true,
        manage: true,
    };

    /// From their names, `read` and `manage`; at least one.
    pub fn parse(names: &[String]) -> Result<Self, Invalid> {
        let mut caps = Self {
            read: false,
            manage: false,
        };
        for name in names {
            match name.as_str() {
                "read" => caps.read = true,
                "manage" => caps.manage = true,
                other => {
                    return Err(Invalid::new(
                        "invalid_capability",
                        format!(
                            "`{}` is not a capability: use `read` and `manage`",
                            other.escape_debug()
                        ),
                    ))
                }
            }
        }
        if !caps.read && !caps.manage {
            return Err(Invalid::new(
                "invalid_capability",
                "give at least one capability: `read`, `manage`",
            ));
        }
        Ok(caps)
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.read {
            names.push("read");
        }
        if self.manage {
            names.push("manage");
        }
        names
    }

    /// Whether reading is allowed: `manage` reads what it changes.
    pub fn can_read(self) -> bool {
        self.read || self.manage
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalClaims {
    #[serde(rename = "sid")]
    pub session: Uuid,
    #[serde(rename = "acc")]
    pub account_id: String,
    #[serde(rename = "cap")]
    pub capabilities: Capabilities,
    /// Unix milliseconds: a session opened a moment after its account's sessions were
    /// ended must count, one opened a moment before must not.
    #[serde(rename = "iat_ms")]
    pub issued_at_ms: i64,
    /// Unix seconds.
    #[serde(rename = "exp")]
    pub expires_at: i64,
}

/// Why a token does not open the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a portal token, or altered")]
    Invalid,
    #[error("the portal session has expired")]
    Expired,
}

fn mac(key: &[u8], claims: &str) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(b"hookrelay.portal.v1.");
    mac.update(claims.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

impl PortalClaims {
    pub fn expires(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires_at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn issued(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.issued_at_ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The token that carries these claims, signed with `key`.
    pub fn sign(&self, key: &[u8]) -> String {
        // Serialising plain fields cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let claims = URL_SAFE_NO_PAD.encode(json);
        let mac = URL_SAFE_NO_PAD.encode(mac(key, &claims));
        format!("{PORTAL_TOKEN_PREFIX}{claims}.{mac}")
    }

    /// The claims of `token` if `key` signed it and it has not expired at `now`.
    pub fn verify(key: &[u8], token: &str, now: DateTime<Utc>) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let (claims, given) = token
            .strip_prefix(PORTAL_TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(TokenError::Invalid)?;
        let given = URL_SAFE_NO_PAD
            .decode(given)
            .map_err(|_| TokenError::Invalid)?;
        let Ok(mut check) = Hmac::<Sha256>::new_from_slice(key) else {
            return Err(TokenError::Invalid);
        };
        check.update(b"hookrelay.portal.v1.");
        check.update(claims.as_bytes());
        // In constant time: a comparison's timing says nothing about the right MAC.
        check
            .verify_slice(&given)
            .map_err(|_| TokenError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| TokenError::Invalid)?;
        let claims: Self = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if claims.expires() <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_in: i64) -> PortalClaims {
        let now = Utc::now();
        PortalClaims {
            session: Uuid::now_v7(),
            account_id: "acc_1".into(),
            capabilities: Capabilities {
                read: true,
                manage: false,
            },
            issued_at_ms: now.timestamp_millis(),
            expires_at: now.timestamp() + expires_in,
        }
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims() {
        let c = claims(60);
        let token = c.sign(b"key");
        assert!(token.starts_with(PORTAL_TOKEN_PREFIX));
        assert_eq!(PortalClaims::verify(b"key", &token, Utc::now()), Ok(c));
    }

    #[test]
    fn a_token_tampered_with_signed_by_another_key_or_expired_is_refused() {
        let c = claims(60);
        let token = c.sign(b"key");
        assert_eq!(
            PortalClaims::verify(b"other", &token, Utc::now()),
            Err(TokenError::Invalid)
        );
        // Another account in the claims, the MAC kept.
        let (_, mac) = token.split_once('.').unwrap();
        let forged = PortalClaims {
            account_id: "acc_2".into(),
            ..c.clone()
        }
        .sign(b"key");
        let (claims_part, _) = forged.split_once('.').unwrap();
        let tampered = format!("{claims_part}.{mac}");
        assert_eq!(
            PortalClaims::verify(b"key", &tampered, Utc::now()),
            Err(TokenError::Invalid)
        );
        for junk in ["", "hrp_", "hrp_x.y", "hr_abc", &"hrp_a.".repeat(400)] {
            assert_eq!(
                PortalClaims::verify(b"key", junk, Utc::now()),
                Err(TokenError::Invalid),
                "{junk}"
            );
        }
        let old = claims(-1).sign(b"key");
        assert_eq!(
            PortalClaims::verify(b"key", &old, Utc::now()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn capabilities_read_from_their_names() {
        let parse = |names: &[&str]| {
            Capabilities::parse(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(parse(&["read", "manage"]), Ok(Capabilities::ALL));
        let read = parse(&["read"]).unwrap();
        assert!(read.can_read() && !read.manage);
        assert!(parse(&["manage"]).unwrap().can_read());
        assert_eq!(parse(&[]).unwrap_err().code, "invalid_capability");
        assert_eq!(parse(&["admin"]).unwrap_err().code, "invalid_capability");
    }
}
