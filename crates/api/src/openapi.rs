//! The OpenAPI 3.1 description of `/v1`, generated from the handlers' own annotations and the
//! types they answer with, so that it cannot drift from the code. Served at `/openapi.json`,
//! and rendered at `/docs` by Swagger UI, embedded in the binary (nothing is fetched from the
//! internet).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ErrorBody;
use crate::{api_keys, auth, event_types, logs, portal, stats, test_event, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookrelay admin API",
        description = "Webhooks, their deliveries (the Webhook Logs), event types and API keys. \
            Every call takes `Authorization: Bearer <token>`: the admin token reaches every \
            account, an account API key only its own (another account's resources answer \
            404). Errors answer `{\"error\": {\"code\", \"message\", \"field\"}}`. Lists answer \
            `{\"items\", \"next_cursor\"}`, newest first; pass `next_cursor` as `cursor`.",
    ),
    paths(
        event_types::list,
        event_types::create,
        event_types::update,
        event_types::receivers_document,
        api_keys::create,
        portal::create,
        portal::revoke,
        api_keys::revoke,
        auth::whoami,
        webhooks::list,
        webhooks::create,
        webhooks::read,
        webhooks::update,
        webhooks::delete,
        webhooks::enable,
        webhooks::disable,
        webhooks::rotate_secret,
        webhooks::recover,
        webhooks::replay,
        webhooks::skip,
        webhooks::filter_test,
        stats::stats,
        test_event::send,
        logs::list,
        logs::retry_bulk,
        logs::read,
        logs::attempts,
        logs::payload,
        logs::retry,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// What every operation shares, added in one place rather than on each handler: the bearer
/// token, and the error answers any of them can give.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_id = path.contains("{id}") || path.contains("{name}");
            let operations = [
                (item.get.as_mut(), false),
                (item.post.as_mut(), true),
                (item.patch.as_mut(), true),
                (item.delete.as_mut(), true),
            ];
            for (operation, changes) in operations {
                if let Some(operation) = operation {
                    add_errors(operation, has_id, changes);
                }
            }
        }
    }
}

fn add_errors(operation: &mut Operation, has_id: bool, changes: bool) {
    let mut errors = vec![
        (
            "400",
            "The request is malformed: not JSON, an unknown field, a bad query",
        ),
        (
            "401",
            "No token, a wrong one, or an API key where the admin token is needed",
        ),
        ("422", "A value does not pass validation; `field` names it"),
        (
            "503",
            "The database or the broker cannot be reached now; try again",
        ),
        ("500", "A fault of hookrelay's own, logged with its cause"),
    ];
    if has_id {
        errors.push(("404", "No such resource, or another account's"));
    }
    if changes {
        errors.push(("409", "The change conflicts with what exists"));
    }
    for (status, description) in errors {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_owned(), response.into());
    }
}

/// What the `/docs` page may load: its own files only. Swagger UI sets styles from its
/// script and draws its icons as `data:` images; it runs no inline script, and fetches only
/// `/openapi.json` (and the calls a reader tries out) from this origin.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `/openapi.json` and the `/docs` page, every answer with a content security policy.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let docs: axum::Router<S> = SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into();
    docs.layer(axum::middleware::map_response(
        |mut response: axum::response::Response| async move {
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::CONTENT_SECURITY_POLICY,
                axum::http::HeaderValue::from_static(DOCS_CSP),
            );
            headers.insert(
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                axum::http::HeaderValue::from_static("nosniff"),
            );
            response
        },
    ))
}
