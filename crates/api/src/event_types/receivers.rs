//! The receivers' document: what hookrelay sends, per event type, as the `webhooks` of an
//! OpenAPI 3.1 document. Each type's body is the envelope every delivery has, with the
//! type's schema as `data` (any JSON without one) and its example; the headers are the
//! Standard Webhooks ones. OpenAPI 3.1's schema objects are JSON Schema 2020-12, the draft
//! the schemas are checked under, so they go in as saved.

use hookrelay_store::EventTypeRow;
use serde_json::{json, Map, Value};

/// The document for `types`, by name.
pub fn document(types: &[EventTypeRow]) -> Value {
    let mut webhooks = Map::new();
    let mut schemas = Map::new();
    for t in types {
        let envelope = t.name.clone();
        schemas.insert(envelope.clone(), body_schema(t));
        let mut content = json!({"schema": {"$ref": format!("#/components/schemas/{envelope}")}});
        if let Some(example) = &t.example {
            content["example"] = json!({
                "id": "evt_01J9Z3Q6W3",
                "type": t.name,
                "account_id": "acc_1",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": example,
            });
        }
        let summary = match t.description.as_str() {
            "" => t.name.clone(),
            d => d.to_owned(),
        };
        webhooks.insert(
            t.name.clone(),
            json!({"post": {
                "summary": summary,
                "operationId": operation_id(&t.name),
                "parameters": headers(),
                "requestBody": {"required": true, "content": {"application/json": content}},
                "responses": {
                    "2XX": {"description": "Received. Any other answer, or none within the \
                        request timeout, is retried on the retry schedule."},
                },
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hookrelay webhooks",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The requests hookrelay sends to webhook endpoints, one per event \
                type. Each is signed with Standard Webhooks (HMAC-SHA256 over \
                `{webhook-id}.{webhook-timestamp}.{body}`) when the webhook has a secret.",
        },
        "webhooks": webhooks,
        "components": {"schemas": schemas},
    })
}

/// The body of a delivery of type `t`.
fn body_schema(t: &EventTypeRow) -> Value {
    let data = match &t.schema {
        // Its own `$id`, so that the references inside it resolve against it, not against
        // this document.
        Some(Value::Object(schema)) => {
            let mut schema = schema.clone();
            schema
                .entry("$id")
                .or_insert_with(|| json!(format!("urn:hookrelay:event-type:{}", t.name)));
            Value::Object(schema)
        }
        Some(other) => other.clone(),
        None => json!({"description": "Any JSON: this type has no schema."}),
    };
    json!({
        "type": "object",
        "required": ["id", "type", "account_id", "timestamp", "data"],
        "properties": {
            "id": {"type": "string", "description": "The event's id, also sent as `webhook-id`."},
            "type": {"const": t.name},
            "account_id": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time",
                          "description": "When the event occurred."},
            "data": data,
        },
    })
}

/// An operation id from a type name: its dots as underscores.
fn operation_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn headers() -> Value {
    json!([
        {"name": "webhook-id", "in": "header", "required": true,
         "description": "The event id: the same on every retry.",
         "schema": {"type": "string"}},
        {"name": "webhook-timestamp", "in": "header", "required": true,
         "description": "Unix seconds when this attempt was signed.",
         "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        {"name": "webhook-signature", "in": "header", "required": false,
         "description": "`v1,<base64 HMAC-SHA256>`, one per secret, space-separated; absent \
            when the webhook has no secret.",
         "schema": {"type": "string"}},
    ])
}
