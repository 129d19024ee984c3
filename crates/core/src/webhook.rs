use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{EventType, Invalid};

pub const MAX_DESCRIPTION_CHARS: usize = 1024;
pub const MAX_EVENTS_PER_WEBHOOK: usize = 100;
pub const MAX_HEADERS: usize = 20;
/// The bytes of a webhook's custom headers at most, names and values together: every
/// delivery carries them, and every answer about the webhook.
pub const MAX_HEADERS_BYTES: usize = 8 * 1024;
const MAX_URL_LEN: usize = 2048;
const MAX_ACCOUNT_ID_CHARS: usize = 128;
const MAX_HEADER_NAME_LEN: usize = 128;
const MAX_HEADER_VALUE_LEN: usize = 4096;
const MAX_PLAIN_SECRET_LEN: usize = 512;
/// Standard Webhooks keys are 24 to 64 random bytes once decoded. A plain secret must give at
/// least as many key bytes: a short one could be guessed from a single signed delivery.
const WHSEC_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
pub const MIN_SECRET_KEY_BYTES: usize = 24;

/// Header names a webhook may not set (contract §2): they belong to the HTTP framing or to
/// the signature, and a custom value would break one or the other. Hop-by-hop headers
/// (RFC 9110 §7.6.1) speak to the next hop, not to the receiver: `upgrade` or `expect` could
/// change what the connection does, `te` and `trailer` how the body is framed, and
/// `proxy-*` would hand credentials to whatever proxy sits in between. `webhook-*` and
/// `proxy-*` are refused too.
pub const RESERVED_HEADERS: [&str; 11] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];
const RESERVED_HEADER_PREFIXES: [&str; 2] = ["webhook-", "proxy-"];

/// The tenant a webhook, key or event belongs to: 1 to 128 characters, no control characters
/// and no surrounding white space (which would make two accounts look alike).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid::new("required", "an account id cannot be empty"));
        }
        if raw.chars().count() > MAX_ACCOUNT_ID_CHARS {
            return Err(Invalid::new(
                "too_long",
                format!("an account id is at most {MAX_ACCOUNT_ID_CHARS} characters"),
            ));
        }
        if raw.chars().any(char::is_control) || raw.trim() != raw {
            return Err(Invalid::new(
                "invalid_account_id",
                "an account id cannot hold control characters or surrounding white space",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where deliveries go: an absolute `http` or `https` URL with a host.
///
/// URLs carrying a user name or password are refused: the URL shows up in the admin API and
/// in logs, so credentials belong in a custom header (which is never logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > MAX_URL_LEN {
            return Err(Invalid::new(
                "too_long",
                format!("a webhook URL is at most {MAX_URL_LEN} bytes"),
            ));
        }
        let url = url::Url::parse(raw).map_err(|e| {
            Invalid::new(
                "invalid_url",
                format!("`{}` is not a URL: {e}", raw.escape_debug()),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid::new(
                "invalid_url",
                format!(
                    "a webhook URL must be http or https, not `{}`",
                    url.scheme()
                ),
            ));
        }
        if url.host().is_none() {
            return Err(Invalid::new(
                "invalid_url",
                "a webhook URL must name a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new(
                "invalid_url",
                "a webhook URL cannot carry credentials: send them in a custom header instead",
            ));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host name to resolve, or `None` when the URL holds an IP address literal.
    pub fn domain(&self) -> Option<&str> {
        self.0.domain()
    }

    /// The IP address literal of the URL, if it holds one instead of a name.
    pub fn ip_literal(&self) -> Option<std::net::IpAddr> {
        match self.0.host()? {
            url::Host::Ipv4(ip) => Some(ip.into()),
            url::Host::Ipv6(ip) => Some(ip.into()),
            url::Host::Domain(_) => None,
        }
    }

    pub fn port_or_default(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(443)
    }
}

/// A webhook's custom headers, sent as given with every delivery.
///
/// Names are HTTP tokens, unique regardless of case and none of [`RESERVED_HEADERS`] or
/// `webhook-*`; values are visible ASCII, space and tab (so never CR or LF).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HeaderSet(BTreeMap<String, String>);

impl HeaderSet {
    pub fn parse(raw: BTreeMap<String, String>) -> Result<Self, Invalid> {
        if raw.len() > MAX_HEADERS {
            return Err(Invalid::new(
                "too_large",
                format!("a webhook has at most {MAX_HEADERS} custom headers (max_headers)"),
            ));
        }
        let bytes: usize = raw
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        if bytes > MAX_HEADERS_BYTES {
            return Err(Invalid::new(
                "too_large",
                format!(
                    "a webhook's custom headers take at most {MAX_HEADERS_BYTES} bytes, names and \
                     values together (max_headers_bytes); these take {bytes}"
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &raw {
            check_header(name, value)?;
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(Invalid::new(
                    "invalid_header",
                    format!(
                        "header `{}` is given twice (names are case-insensitive)",
                        name.escape_debug()
                    ),
                ));
            }
        }
        Ok(Self(raw))
    }

    /// Headers as stored, for sending: each one that `parse` would refuse now (a rule added
    /// since it was saved, or an edit by hand) is left out and named in the answer, and the
    /// others still go out.
    pub fn from_stored(raw: BTreeMap<String, String>) -> (Self, Vec<String>) {
        let (kept, dropped): (BTreeMap<_, _>, BTreeMap<_, _>) = raw
            .into_iter()
            .partition(|(name, value)| check_header(name, value).is_ok());
        (Self(kept), dropped.into_keys().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One custom header, on its own: a valid name that is not reserved, and a value of visible
/// ASCII, space and tab.
fn check_header(name: &str, value: &str) -> Result<(), Invalid> {
    let shown = name.escape_debug();
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
        return Err(Invalid::new(
            "invalid_header",
            format!("header name `{shown}` must be 1 to {MAX_HEADER_NAME_LEN} bytes"),
        ));
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(Invalid::new(
            "invalid_header",
            format!("`{shown}` is not a valid HTTP header name"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|prefix| lower.starts_with(prefix))
    {
        return Err(Invalid::new(
            "reserved_header",
            format!(
                "header `{shown}` belongs to hookrelay or to the connection and cannot \
                     be customised (reserved: {}, webhook-*, proxy-*)",
                RESERVED_HEADERS.join(", ")
            ),
        ));
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(Invalid::new(
            "invalid_header",
            format!("the value of header `{shown}` is over {MAX_HEADER_VALUE_LEN} bytes"),
        ));
    }
    // Values are stored sealed, or plain when no key is set: a plain value that looked
    // sealed would be read back as one.
    if value.starts_with(crate::sealing::SEALED_PREFIX) {
        return Err(Invalid::new(
            "invalid_header",
            format!(
                "the value of header `{shown}` may not begin with `{}`",
                crate::sealing::SEALED_PREFIX
            ),
        ));
    }
    // Visible ASCII, space and tab only: no CR, LF, NUL or other control bytes that
    // could split or smuggle a header, and no bytes above 0x7f, which HTTP calls
    // obsolete and receivers decode differently.
    let visible = |b: u8| b == b'\t' || (0x20..0x7f).contains(&b);
    if !value.bytes().all(visible) {
        return Err(Invalid::new(
            "invalid_header",
            format!(
                "the value of header `{shown}` may hold only visible ASCII characters, \
                     spaces and tabs (no CR, LF or other control bytes)"
            ),
        ));
    }
    Ok(())
}

/// A signing secret. Its `Debug` never shows the value, so it cannot leak into logs by
/// accident; it is deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// `whsec_<base64>` (Standard Webhooks) must decode to 24–64 bytes; any other secret is
    /// used as its UTF-8 bytes and must be 24 to 512 bytes without control characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.starts_with(crate::sealing::SEALED_PREFIX) {
            return Err(Invalid::new(
                "invalid_secret",
                format!(
                    "a secret cannot start with `{}`, which marks secrets encrypted at rest",
                    crate::sealing::SEALED_PREFIX
                ),
            ));
        }
        if let Some(encoded) = raw.strip_prefix("whsec_") {
            let key = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| {
                    Invalid::new(
                        "invalid_secret",
                        "a `whsec_` secret must be followed by standard base64",
                    )
                })?;
            if !WHSEC_KEY_BYTES.contains(&key.len()) {
                return Err(Invalid::new(
                    "invalid_secret",
                    format!(
                        "a `whsec_` secret must decode to {} to {} bytes, not {}",
                        WHSEC_KEY_BYTES.start(),
                        WHSEC_KEY_BYTES.end(),
                        key.len()
                    ),
                ));
            }
        } else {
            if raw.len() < MIN_SECRET_KEY_BYTES {
                return Err(Invalid::new(
                    "secret_too_short",
                    format!(
                        "a secret must give at least {MIN_SECRET_KEY_BYTES} bytes of key, this \
                         one gives {}: a short key can be guessed from one signed delivery \
                         (Standard Webhooks); omit the secret to have one generated",
                        raw.len()
                    ),
                ));
            }
            if raw.len() > MAX_PLAIN_SECRET_LEN {
                return Err(Invalid::new(
                    "invalid_secret",
                    format!("a secret is at most {MAX_PLAIN_SECRET_LEN} bytes"),
                ));
            }
            if raw.chars().any(char::is_control) {
                return Err(Invalid::new(
                    "invalid_secret",
                    "a secret cannot hold control characters",
                ));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// A secret as stored, for signing: any non-empty value. One saved before a rule was
    /// added (a plain secret shorter than 24 bytes) keeps signing; `parse` holds new ones to
    /// the rules.
    pub fn from_stored(raw: &str) -> Option<Self> {
        (!raw.is_empty()).then(|| Self(raw.to_owned()))
    }

    /// A new Standard Webhooks secret from 32 random bytes the caller drew.
    pub fn from_random_bytes(bytes: [u8; 32]) -> Self {
        Self(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The HMAC key (contract §2): base64-decoded after `whsec_`, else the UTF-8 bytes.
    pub fn key(&self) -> Vec<u8> {
        match self.0.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                // `parse` checked the encoding; a value loaded from the database that was
                // edited by hand into bad base64 signs with its raw bytes instead of failing.
                .unwrap_or_else(|_| self.0.as_bytes().to_vec()),
            None => self.0.as_bytes().to_vec(),
        }
    }

    /// The secret itself, for storing and for answering it once after a rotation.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A free-text note, at most [`MAX_DESCRIPTION_CHARS`] characters, without control characters
/// but tab and line breaks (PostgreSQL refuses NUL in text, and the rest only garbles output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(Invalid::new(
                "too_large",
                format!(
                    "a description is at most {MAX_DESCRIPTION_CHARS} characters \
                     (max_description_chars)"
                ),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(Invalid::new(
                "invalid_text",
                "a description cannot hold control characters other than tab and line breaks",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event types a webhook subscribes to: at least one, at most
/// [`MAX_EVENTS_PER_WEBHOOK`], duplicates folded, order kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EventList(Vec<EventType>);

impl EventList {
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid::new(
                "required",
                "a webhook must subscribe to at least one event type",
            ));
        }
        if raw.len() > MAX_EVENTS_PER_WEBHOOK {
            return Err(Invalid::new(
                "too_many",
                format!("a webhook subscribes to at most {MAX_EVENTS_PER_WEBHOOK} event types"),
            ));
        }
        let mut out: Vec<EventType> = Vec::with_capacity(raw.len());
        for name in raw {
            let t = EventType::parse(name.as_ref())?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(Self(out))
    }

    pub fn as_slice(&self) -> &[EventType] {
        &self.0
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|t| t.as_str().to_owned()).collect()
    }
}

/// The order a webhook's deliveries go out in. `Unordered`: as many at once as its limits
/// allow, a failing one retried later while the next go on. `Fifo`: one at a time, in the
/// order its account's events were published, a failing one holding the line until it
/// succeeds or fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    Unordered,
    Fifo,
}

impl std::fmt::Display for Ordering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unordered => "unordered",
            Self::Fifo => "fifo",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "unordered" => Ok(Self::Unordered),
            "fifo" => Ok(Self::Fifo),
            other => Err(Invalid::new(
                "invalid_ordering",
                format!(
                    "`{}` is not an ordering: use `unordered` or `fifo`",
                    other.escape_debug()
                ),
            )),
        }
    }

    pub fn is_fifo(self) -> bool {
        self == Self::Fifo
    }
}

/// Whether a webhook receives deliveries. A disabled webhook's deliveries wait in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    Active,
    Disabled,
}

impl std::fmt::Display for WebhookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            other => Err(Invalid::new(
                "invalid_status",
                format!(
                    "`{}` is not a webhook status: use `active` or `disabled`",
                    other.escape_debug()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_ordering_reads_back_what_it_writes() {
        for o in [Ordering::Unordered, Ordering::Fifo] {
            assert_eq!(Ordering::parse(o.as_str()), Ok(o));
        }
        let e = Ordering::parse("lifo").expect_err("not an ordering");
        assert_eq!(e.code, "invalid_ordering");
        assert_eq!(Ordering::default(), Ordering::Unordered);
    }

    #[test]
    fn urls() {
        for ok in [
            "https://example.com/hook",
            "http://127.0.0.1:8080/x?y=1",
            "https://[::1]/",
        ] {
            assert!(WebhookUrl::parse(ok).is_ok(), "{ok}");
        }
        for (bad, code) in [
            ("not a url", "invalid_url"),
            ("ftp://example.com/", "invalid_url"),
            ("file:///etc/passwd", "invalid_url"),
            ("https://user:pw@example.com/", "invalid_url"),
            ("mailto:a@example.com", "invalid_url"),
        ] {
            assert_eq!(WebhookUrl::parse(bad).unwrap_err().code, code, "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(WebhookUrl::parse(&long).unwrap_err().code, "too_long");
    }

    #[test]
    fn url_ip_literals() {
        let u = WebhookUrl::parse("http://10.0.0.1/").unwrap();
        assert_eq!(u.ip_literal(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(u.domain(), None);
        let u = WebhookUrl::parse("https://example.com/").unwrap();
        assert_eq!(u.ip_literal(), None);
        assert_eq!(u.domain(), Some("example.com"));
        assert_eq!(u.port_or_default(), 443);
    }

    #[test]
    fn header_sets() {
        assert!(HeaderSet::parse(headers(&[
            ("X-Api-Key", "abc 123"),
            ("Authorization", "Bearer t")
        ]))
        .is_ok());
        let cases = [
            (("X-A", "a\r\nX-Evil: 1"), "invalid_header"),
            (("X-A", "a\nb"), "invalid_header"),
            (("X-A", "nul\0"), "invalid_header"),
            (("X-A", "é"), "invalid_header"),
            (("X A", "v"), "invalid_header"),
            (("X-A\r\n", "v"), "invalid_header"),
            (("", "v"), "invalid_header"),
            (("Content-Type", "text/plain"), "reserved_header"),
            (("HOST", "x"), "reserved_header"),
            (("user-agent", "x"), "reserved_header"),
            (("Content-Length", "1"), "reserved_header"),
            (("Transfer-Encoding", "chunked"), "reserved_header"),
            (("Connection", "close"), "reserved_header"),
            (("Webhook-Signature", "v1,x"), "reserved_header"),
            (("webhook-anything", "x"), "reserved_header"),
            (("Upgrade", "websocket"), "reserved_header"),
            (("TE", "trailers"), "reserved_header"),
            (("Keep-Alive", "timeout=5"), "reserved_header"),
            (("Expect", "100-continue"), "reserved_header"),
            (("Proxy-Authorization", "Basic eA=="), "reserved_header"),
            (("proxy-anything", "x"), "reserved_header"),
            (("Trailer", "X-A"), "reserved_header"),
            (("X-A", "hookrelay-sealed:v1:k:AAAA"), "invalid_header"),
        ];
        for ((name, value), code) in cases {
            let err = HeaderSet::parse(headers(&[(name, value)])).unwrap_err();
            assert_eq!(err.code, code, "{name:?}: {value:?}");
        }
        let dup = HeaderSet::parse(headers(&[("X-A", "1"), ("x-a", "2")])).unwrap_err();
        assert!(dup.message.contains("twice"), "{}", dup.message);
        let many: BTreeMap<_, _> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".into()))
            .collect();
        assert_eq!(HeaderSet::parse(many).unwrap_err().code, "too_large");
        let big: BTreeMap<String, String> = (0..3)
            .map(|i| (format!("X-H{i}"), "v".repeat(3000)))
            .collect();
        assert_eq!(HeaderSet::parse(big).unwrap_err().code, "too_large");
        let at_the_limit: BTreeMap<String, String> = (0..2)
            .map(|i| (format!("X-H{i}"), "v".repeat(MAX_HEADERS_BYTES / 2 - 4)))
            .collect();
        assert!(HeaderSet::parse(at_the_limit).is_ok());
    }

    #[test]
    fn secrets() {
        let key = [7u8; 32];
        let s = Secret::from_random_bytes(key);
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(Secret::parse(s.expose()).unwrap().key(), key.to_vec());
        let plain = "a-plain-secret-of-24-byte";
        assert_eq!(
            Secret::parse(plain).unwrap().key(),
            plain.as_bytes().to_vec()
        );
        for short in ["", "x", "plain", &plain[..23]] {
            assert_eq!(Secret::parse(short).unwrap_err().code, "secret_too_short");
        }
        assert!(Secret::parse("whsec_%%%").is_err());
        assert!(
            Secret::parse("whsec_AAAA").is_err(),
            "3 bytes is too short a key"
        );
        assert!(Secret::parse("a-plain-secret-of-24-by\nb").is_err());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn event_lists() {
        let l =
            EventList::parse(&["Contact.created", "Contact.created", "Message.received"]).unwrap();
        assert_eq!(l.names(), vec!["Contact.created", "Message.received"]);
        assert_eq!(EventList::parse::<&str>(&[]).unwrap_err().code, "required");
        assert!(EventList::parse(&["bad name"]).is_err());
    }

    #[test]
    fn account_ids_and_descriptions() {
        assert!(AccountId::parse("acc_1").is_ok());
        for bad in ["", " acc", "acc\n", "a\u{0}"] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AccountId::parse(&"é".repeat(128)).is_ok());
        assert!(AccountId::parse(&"a".repeat(129)).is_err());
        assert!(Description::parse(&"é".repeat(MAX_DESCRIPTION_CHARS)).is_ok());
        assert!(Description::parse("two\nlines\tand a tab").is_ok());
        assert_eq!(
            Description::parse("nul\0").unwrap_err().code,
            "invalid_text"
        );
        assert_eq!(
            Description::parse(&"a".repeat(MAX_DESCRIPTION_CHARS + 1))
                .unwrap_err()
                .code,
            "too_large"
        );
    }

    proptest! {
        /// Whatever the input, an accepted header set never carries a byte that could end a
        /// header line.
        #[test]
        fn accepted_headers_never_hold_line_breaks(name in "\\PC{0,12}|[\r\n -~]{0,12}", value in "[\\x00-\\x7f]{0,20}|\\PC{0,20}") {
            let mut raw = BTreeMap::new();
            raw.insert(name, value);
            if let Ok(set) = HeaderSet::parse(raw) {
                for (n, v) in set.iter() {
                    prop_assert!(!n.contains(['\r', '\n']) && !v.contains(['\r', '\n', '\0']));
                }
            }
        }

        #[test]
        fn whsec_keys_round_trip(key in proptest::collection::vec(any::<u8>(), 24..=64)) {
            let raw = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
            prop_assert_eq!(Secret::parse(&raw).unwrap().key(), key);
        }

        /// Host labels never hold `--`: `xn--…` is the punycode prefix, and a label like
        /// `xn--` is rightly refused by the URL parser (proptest found it).
        #[test]
        fn http_urls_with_hosts_are_accepted(host in "[a-z]([a-z0-9]{0,10}-?[a-z0-9]{1,10})?(\\.[a-z]{2,6}){1,2}", path in "(/[a-zA-Z0-9_-]{0,8}){0,4}") {
            let raw = format!("https://{host}{path}");
            prop_assert!(WebhookUrl::parse(&raw).is_ok(), "{}", raw);
        }
    }
}
