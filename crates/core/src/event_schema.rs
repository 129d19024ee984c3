//! An event type's schema: a JSON Schema (draft 2020-12) that every event's `data` of the
//! type must satisfy. Checked and compiled once, when saved and when the fan-out first reads
//! it; then each event's `data` is checked in memory.
//!
//! No schema can make checking slow or reach out: patterns run on the `regex` engine
//! (linear time, no look-around or back-references), with a compiled-size limit, and no
//! `$ref` is fetched (only references inside the schema resolve).

use std::fmt;

use serde_json::Value;

use crate::Invalid;

/// Bytes of a schema, as JSON, at most.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Bytes a pattern of a schema may take compiled, at most.
const MAX_PATTERN_SIZE: usize = 64 * 1024;

/// A compiled schema.
pub struct EventSchema {
    validator: jsonschema::Validator,
}

impl fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSchema")
    }
}

/// Why `data` does not satisfy a schema: the first failing place, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// A JSON pointer into `data` (`""`: `data` itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match self.path.as_str() {
            "" => "/",
            path => path,
        };
        write!(f, "at `{path}`: {}", self.message)
    }
}

/// Checks that `value` can be stored as `jsonb`, which refuses the NUL character in any
/// string or key; and that it takes at most [`MAX_SCHEMA_BYTES`]. For what is saved beside a
/// schema: an example.
pub fn check_storable(value: &Value) -> Result<(), Invalid> {
    let size = serde_json::to_vec(value).map_or(usize::MAX, |b| b.len());
    if size > MAX_SCHEMA_BYTES {
        return Err(Invalid::new(
            "too_large",
            format!("it takes {size} bytes; at most {MAX_SCHEMA_BYTES}"),
        ));
    }
    if has_nul(value) {
        return Err(Invalid::new(
            "invalid_json",
            "it holds the NUL character (\\u0000), which cannot be stored",
        ));
    }
    Ok(())
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

impl EventSchema {
    /// Checks `source` as a draft 2020-12 schema and compiles it; 422 `invalid_schema` says
    /// what is wrong.
    pub fn parse(source: &Value) -> Result<Self, Invalid> {
        let invalid = |message: String| Invalid::new("invalid_schema", message);
        let size = serde_json::to_vec(source).map_or(usize::MAX, |b| b.len());
        if size > MAX_SCHEMA_BYTES {
            return Err(invalid(format!(
                "the schema takes {size} bytes; at most {MAX_SCHEMA_BYTES}"
            )));
        }
        if has_nul(source) {
            return Err(invalid(
                "the schema holds the NUL character (\\u0000), which cannot be stored".into(),
            ));
        }
        if !matches!(source, Value::Object(_) | Value::Bool(_)) {
            return Err(invalid(
                "a schema is a JSON object (or true or false)".into(),
            ));
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(MAX_PATTERN_SIZE))
            .build(source)
            .map_err(|e| invalid(format!("not a valid JSON Schema (draft 2020-12): {e}")))?;
        Ok(Self { validator })
    }

    /// Whether `data` satisfies the schema; if not, the first place it does not.
    pub fn check(&self, data: &Value) -> Result<(), Mismatch> {
        match self.validator.validate(data) {
            Ok(()) => Ok(()),
            Err(e) => Err(Mismatch {
                path: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn contact() -> EventSchema {
        EventSchema::parse(&json!({
            "type": "object",
            "required": ["contact_id"],
            "properties": {
                "contact_id": {"type": "string", "pattern": "^c_[0-9]+$"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        }))
        .expect("a valid schema")
    }

    #[test]
    fn data_that_satisfies_the_schema_passes() {
        let schema = contact();
        assert_eq!(
            schema.check(&json!({"contact_id": "c_1", "tags": ["a"]})),
            Ok(())
        );
    }

    #[test]
    fn a_mismatch_names_the_first_failing_place() {
        let schema = contact();
        let mismatch = schema
            .check(&json!({"contact_id": "c_1", "tags": ["a", 7]}))
            .expect_err("7 is not a string");
        assert_eq!(mismatch.path, "/tags/1");
        assert!(
            mismatch.to_string().starts_with("at `/tags/1`: "),
            "{mismatch}"
        );
        let missing = schema
            .check(&json!({}))
            .expect_err("contact_id is required");
        assert_eq!(missing.path, "");
        assert!(
            missing.message.contains("contact_id"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn a_bad_schema_says_what_is_wrong() {
        for bad in [
            json!({"type": "no-such-type"}),
            json!({"minimum": "five"}),
            json!("a string"),
            json!({"pattern": "(?=lookahead)"}),
            json!({"$ref": "https://example.com/schema.json"}),
        ] {
            let e = EventSchema::parse(&bad).expect_err(&bad.to_string());
            assert_eq!(e.code, "invalid_schema", "{bad}");
        }
        assert_eq!(
            EventSchema::parse(&json!({"const": "a\u{0}b"}))
                .unwrap_err()
                .code,
            "invalid_schema"
        );
        assert_eq!(
            check_storable(&json!({"k\u{0}": 1})).unwrap_err().code,
            "invalid_json"
        );
        assert_eq!(check_storable(&json!({"k": 1})), Ok(()));
        let huge = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(EventSchema::parse(&huge)
            .unwrap_err()
            .message
            .contains("bytes"));
    }
}
