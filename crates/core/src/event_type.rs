use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// The 14 domain event types every deployment starts with (contract §1), spelled exactly.
pub const SEEDED_EVENT_TYPES: [(&str, &str); 14] = [
    ("Contact.created", "A contact was created."),
    ("Contact.updated", "A contact was updated."),
    ("Contact.mapped", "A contact was mapped."),
    ("Contact.unmapped", "A contact was unmapped."),
    ("Conversation.created", "A conversation was created."),
    ("Conversation.updated", "A conversation was updated."),
    (
        "Conversation.UnAttended",
        "A conversation was left unattended.",
    ),
    (
        "Conversation.Tag.mapped",
        "A tag was mapped to a conversation.",
    ),
    (
        "Conversation.Tag.unmapped",
        "A tag was unmapped from a conversation.",
    ),
    ("Message.received", "A message was received."),
    ("Message.flow.received", "A flow message was received."),
    (
        "Message.WA.status.received",
        "A WhatsApp message status was received.",
    ),
    (
        "Message.WA.status.failed",
        "A WhatsApp message reported a failed status.",
    ),
    ("Template.status", "A template's status changed."),
];

/// hookrelay's own event types (contract §2): published by hookrelay itself.
pub const OWN_EVENT_TYPES: [(&str, &str); 3] = [
    (
        "Webhook.test",
        "A test event sent by hand to one webhook from the admin API.",
    ),
    (
        "Webhook.disabled",
        "A webhook was disabled because its deliveries kept failing.",
    ),
    (
        "Webhook.delivery.failed",
        "A delivery exhausted its retries.",
    ),
];

/// Every type the catalog holds on a fresh database: the seeded ones, then hookrelay's own.
pub const BUILTIN_EVENT_TYPES: [(&str, &str); 17] = {
    let mut all = [("", ""); 17];
    let mut i = 0;
    while i < 14 {
        all[i] = SEEDED_EVENT_TYPES[i];
        i += 1;
    }
    while i < 17 {
        all[i] = OWN_EVENT_TYPES[i - 14];
        i += 1;
    }
    all
};

const MAX_EVENT_TYPE_LEN: usize = 128;

/// An event type name: dot-separated segments of ASCII letters, digits, `_` and `-`
/// (`Message.WA.status.received`). Case-sensitive, as the catalog is.
///
/// This says only that the name is well formed; whether the catalog holds it is the store's
/// question.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(name: &str) -> Result<Self, Invalid> {
        if name.is_empty() {
            return Err(Invalid::new(
                "required",
                "an event type name cannot be empty",
            ));
        }
        if name.len() > MAX_EVENT_TYPE_LEN {
            return Err(Invalid::new(
                "too_long",
                format!("an event type name is at most {MAX_EVENT_TYPE_LEN} characters"),
            ));
        }
        let well_formed = name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !well_formed {
            return Err(Invalid::new(
                "invalid_event_type",
                format!(
                    "`{}` is not an event type name: use dot-separated segments of letters, \
                     digits, `_` and `-`, such as `Contact.created`",
                    name.escape_debug()
                ),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builtin_names_are_well_formed_and_unique() {
        let mut names: Vec<_> = BUILTIN_EVENT_TYPES.iter().map(|(n, _)| *n).collect();
        for name in &names {
            assert!(EventType::parse(name).is_ok(), "{name}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 17);
        assert_eq!(BUILTIN_EVENT_TYPES[14].0, "Webhook.test");
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "",
            ".",
            "Contact.",
            ".Contact",
            "Contact..created",
            "Contact created",
            "Contact.créé",
            "a\nb",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            EventType::parse(&"a".repeat(129)).unwrap_err().code,
            "too_long"
        );
    }

    proptest! {
        #[test]
        fn well_formed_names_round_trip(name in "[A-Za-z0-9_-]{1,10}(\\.[A-Za-z0-9_-]{1,10}){0,4}") {
            let parsed = EventType::parse(&name).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }

        #[test]
        fn parse_never_panics_and_accepts_only_the_alphabet(name in "\\PC{0,40}") {
            if let Ok(t) = EventType::parse(&name) {
                prop_assert!(t.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            }
        }
    }
}
