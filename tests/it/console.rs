//! The web console in real headless Chromium: sign in, create a webhook through the form (a
//! bad URL first), publish an event, watch its log succeed, open its payload (which holds a
//! script tag, shown as text, byte for byte as sent), send a test event; the portal; a
//! webhook's page. Every page is photographed at 1 400 and 390 px into `docs/screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use hookrelay_tests::browser::Browser;
use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::wait_for;
use serde_json::json;

use crate::helpers::{spawn_app, ADMIN_TOKEN};

fn screenshots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
}

/// The page as it stands, at a desktop's width and at a phone's, into `docs/screenshots`
/// (`{name}-1400.png`, `{name}-390.png`); at 390 px the page must not be wider than the
/// screen (tables scroll within themselves). Leaves the window at 1 400 px.
async fn screenshots(browser: &Browser, name: &str) {
    let dir = screenshots_dir();
    browser
        .screenshot(&dir.join(format!("{name}-1400.png")))
        .await;
    browser.resize(390, 844).await;
    let overflow = browser
        .execute("const d = document.documentElement; return d.scrollWidth - d.clientWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(i64::MAX) <= 0,
        "{name} is wider than a phone by {overflow} px"
    );
    browser
        .screenshot(&dir.join(format!("{name}-390.png")))
        .await;
    browser.resize(1400, 900).await;
}

#[tokio::test]
async fn the_console_manages_webhooks_and_shows_their_logs() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    browser.goto(&format!("{}/", app.address)).await;
    screenshots(&browser, "sign-in").await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("#sign-in-button").await;
    browser.wait_for_text("#who", "admin").await;

    // A bad URL: the API's message shows beside the field.
    browser.click("#new-webhook").await;
    browser.fill("#f-account_id", "acc").await;
    browser.fill("#f-url", "not a url").await;
    browser
        .click("#event-boxes input[value='Contact.created']")
        .await;
    browser.click("#save-webhook").await;
    let message = browser.wait_for_text("#err-url", "not a URL").await;
    assert!(browser.text("#err-events").await.is_empty(), "{message}");
    browser.fill("#f-url", &receiver.url).await;
    // A filter: what is wrong with one shows beside it, from the check saving makes, and
    // "Try it" says whether a body would be delivered.
    browser
        .fill("#f-filter", r#"{"data.html": {"$like": "x"}}"#)
        .await;
    browser.click("#try-filter").await;
    browser
        .wait_for_text("#err-filter", "unknown operator `$like`")
        .await;
    browser
        .fill("#f-filter", r#"{"data.html": {"$exist": true}}"#)
        .await;
    browser
        .fill("#f-filter-payload", r#"{"data": {"name": "Ann"}}"#)
        .await;
    browser.click("#try-filter").await;
    browser.wait_for_text("#filter-result", "Refused").await;
    assert!(browser.text("#err-filter").await.is_empty());
    browser
        .fill("#f-filter-payload", r#"{"data": {"html": "<b>hi</b>"}}"#)
        .await;
    browser.click("#try-filter").await;
    browser.wait_for_text("#filter-result", "Passes").await;
    screenshots(&browser, "webhook-form").await;
    browser.fill("#f-rate_limit", "2.5").await;
    browser.click("#save-webhook").await;
    browser
        .wait_for_text("#err-rate_limit", "a whole number")
        .await;
    browser.fill("#f-rate_limit", "20000").await;
    browser.click("#save-webhook").await;
    browser.wait_for_text("#err-rate_limit", "10000").await;
    browser.fill("#f-rate_limit", "50").await;
    browser
        .execute("document.getElementById('f-ordering').value = 'fifo'; return true;")
        .await;
    browser.click("#add-header").await;
    browser.fill("#header-rows .h-name", "X-Api-Key").await;
    browser.fill("#header-rows .h-value", "k_123").await;
    browser.click("#save-webhook").await;
    browser.wait_for_text("#webhooks-notice", "Created.").await;
    browser.wait_for_text("#webhook-rows", &receiver.url).await;
    let listed = app.admin("GET", "/v1/webhooks", None).await;
    assert_eq!(
        listed.body["items"][0]["filter"],
        json!({"data.html": {"$exist": true}}),
        "saved with the webhook"
    );
    assert_eq!(listed.body["items"][0]["rate_limit"], 50);
    assert_eq!(listed.body["items"][0]["ordering"], "fifo");

    // An event whose payload holds a script: delivered, logged, and shown as text.
    let ids = app
        .publish(
            "Contact.created",
            "acc",
            json!({"html": "<script>alert(1)</script>"}),
            1,
        )
        .await;
    let delivered = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(delivered[0].header("x-api-key"), Some("k_123"));
    browser.click("#nav-logs").await;
    wait_for(
        "the log to show succeeded",
        Duration::from_secs(30),
        || async {
            browser.click("#apply-filters").await;
            browser
                .text("#log-rows")
                .await
                .contains("succeeded")
                .then_some(())
        },
    )
    .await;
    screenshots(&browser, "logs").await;
    // The webhook by its URL, and a search by event id finds the log.
    assert!(browser.text("#log-rows").await.contains(&receiver.url));
    browser.fill("#q-event_id", "no-such-event").await;
    browser.click("#apply-filters").await;
    browser
        .wait_for_text("#logs-notice", "No logs match.")
        .await;
    browser.fill("#q-event_id", &ids[0]).await;
    browser.click("#apply-filters").await;
    browser.wait_for_text("#log-rows", "succeeded").await;
    // By keyboard: a log row takes the focus, and Enter opens it.
    browser
        .execute(
            "const row = document.querySelector('#log-rows tr'); row.focus(); \
             row.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})); \
             return document.activeElement === row;",
        )
        .await;
    let payload = browser
        .wait_for_text("#d-payload", "<script>alert(1)</script>")
        .await;
    assert!(payload.contains(&ids[0]), "{payload}");
    assert_eq!(
        browser
            .execute("return document.querySelectorAll('#d-payload *').length")
            .await,
        json!(0),
        "the payload is text, not markup"
    );
    assert_eq!(browser.alert().await, None, "no script ran");
    // Header values are shown masked: users put credentials in them.
    let headers = browser.text("#d-headers").await;
    assert!(headers.contains("X-Api-Key: ********"), "{headers}");
    assert!(!headers.contains("k_123"), "{headers}");
    browser.wait_for_text("#d-attempts", "200").await;
    screenshots(&browser, "log").await;

    // Back to the webhooks: a test event through the pipeline.
    browser.click("#nav-webhooks").await;
    browser.wait_for_text("#webhook-rows", &receiver.url).await;
    screenshots(&browser, "webhooks").await;
    browser
        .click("#webhook-rows button[data-action='test']")
        .await;
    browser
        .wait_for_text("#webhooks-notice", "Test event sent")
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(got.iter().any(|r| r.json()["type"] == "Webhook.test"));

    // A webhook created after an event of its type replays it from its row.
    let late = Receiver::start().await;
    app.create_webhook(json!({"account_id": "acc", "url": late.url,
                              "events": ["Contact.created"]}))
        .await;
    browser.click("#nav-logs").await;
    browser.click("#nav-webhooks").await;
    browser.wait_for_text("#webhook-rows", &late.url).await;
    // The newest webhook's row comes first; the prompt is answered as a person would.
    browser
        .execute("window.prompt = (_, suggested) => suggested; return true")
        .await;
    browser
        .click("#webhook-rows button[data-action='replay']")
        .await;
    browser
        .wait_for_text("#webhooks-notice", "1 event being replayed")
        .await;
    let replayed = late.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(replayed[0].header("webhook-id"), Some(ids[0].as_str()));

    // With an account key, the console is that account's own portal.
    app.create_webhook(
        json!({"account_id": "someone_else", "url": "http://127.0.0.1:9/x",
                               "events": ["Contact.created"]}),
    )
    .await;
    let key = app.api_key("acc").await;
    browser.click("#sign-out").await;
    browser.fill("#token", &key).await;
    browser.click("#sign-in-button").await;
    browser.wait_for_text("#who", "account acc").await;
    let rows = browser.wait_for_text("#webhook-rows", &receiver.url).await;
    assert!(!rows.contains("someone_else"), "{rows}");
    browser.click("#new-webhook").await;
    assert_eq!(
        browser
            .execute("return getComputedStyle(document.getElementById('account-label')).display")
            .await,
        json!("none"),
        "an account key does not choose the account"
    );
    browser.quit().await;
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app().await;
    for path in ["/", "/console/app.js", "/console/app.css"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            response.headers().get("x-content-type-options").unwrap(),
            "nosniff"
        );
    }
    let page = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Every script comes from a file the policy allows: none is inline.
    assert!(!page.contains("<script>"), "no inline script");
    assert!(!page.contains("style="), "no inline style");
    // The token is the only credential, sent as a header: no cookie is ever set.
    let answer = app
        .client
        .get(format!("{}/v1/whoami", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(answer.headers().get("set-cookie").is_none());
    assert_eq!(
        answer.json::<serde_json::Value>().await.unwrap(),
        json!({"role": "admin", "account_id": null, "capabilities": ["read", "manage"]})
    );
}

/// The portal may be framed by the origins `portal_frame_ancestors` lists, and only by
/// them; the console never; an origin that is not one is refused at start.
#[tokio::test]
async fn the_portal_may_be_framed_only_by_the_origins_set() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.portal_frame_ancestors = "https://app.example.com https://admin.example.com:8443".into();
    })
    .await;
    let header = |path: &'static str| {
        let (client, address) = (app.client.clone(), app.address.clone());
        async move {
            let response = client.get(format!("{address}{path}")).send().await.unwrap();
            (
                response.headers()["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
                response.headers().get("x-frame-options").is_some(),
            )
        }
    };
    let (portal, portal_xfo) = header("/portal").await;
    assert!(
        portal.ends_with("frame-ancestors https://app.example.com https://admin.example.com:8443"),
        "{portal}"
    );
    assert!(!portal_xfo, "X-Frame-Options would forbid every frame");
    let (console, console_xfo) = header("/").await;
    assert!(console.contains("frame-ancestors 'none'"), "{console}");
    assert!(console_xfo);
    for bad in [
        "app.example.com",
        "https://app.example.com/path",
        "https://x.com;script-src *",
    ] {
        let settings = hookrelay::settings::Settings {
            portal_frame_ancestors: bad.into(),
            ..Default::default()
        };
        assert!(settings.frame_ancestors().is_err(), "{bad} accepted");
    }
}

#[tokio::test]
async fn the_api_docs_page_renders_under_a_content_security_policy() {
    let app = spawn_app().await;
    for path in ["/docs/", "/docs/swagger-ui-bundle.js", "/openapi.json"] {
        let answer = reqwest::get(format!("{}{path}", app.address))
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 200, "{path}");
        let csp = answer
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp:?}"
        );
    }
    // The page still works under it: Swagger UI draws the API's title and its routes.
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser.goto(&format!("{}/docs/", app.address)).await;
    browser
        .wait_for_text("#swagger-ui", "hookrelay admin API")
        .await;
    browser.wait_for_text("#swagger-ui", "/v1/webhooks").await;
    browser.quit().await;
}

/// A portal session's link, opened in headless Chromium, shows that account's webhooks and
/// nothing of another account's, with the token gone from the address bar. A read session
/// has no create, delete or retry buttons. After revocation, and after expiry, the page's next
/// call answers 401 and the page says the session ended.
#[tokio::test]
async fn a_portal_link_shows_one_account_and_says_when_the_session_ended() {
    let app = spawn_app().await;
    let mine = app
        .webhook(
            "acc_a",
            "https://hooks.example.com/mine",
            &["Contact.created"],
            json!({}),
        )
        .await;
    app.webhook(
        "acc_b",
        "https://hooks.example.com/theirs",
        &["Contact.created"],
        json!({}),
    )
    .await;
    let opened = app
        .portal_session(json!({"account_id": "acc_a", "capabilities": ["read"]}))
        .await;
    let token = opened["token"].as_str().unwrap();
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser
        .goto(&format!("{}/portal#token={token}", app.address))
        .await;
    browser.wait_for_text("#who", "account acc_a").await;
    browser
        .wait_for_text("#webhook-rows", "hooks.example.com/mine")
        .await;
    let rows = browser.text("#webhook-rows").await;
    assert!(
        !rows.contains("theirs"),
        "another account's webhook shown: {rows}"
    );
    let address = browser.execute("return location.href;").await;
    assert!(
        !address.as_str().unwrap_or_default().contains(token),
        "the token stayed in the address bar: {address}"
    );
    screenshots(&browser, "portal-webhooks").await;
    // Read-only: no button that changes anything.
    let visible = |css: &str| {
        format!(
            "return !!document.querySelector('{css}') && !document.querySelector('{css}').hidden;"
        )
    };
    assert_eq!(
        browser.execute(&visible("#new-webhook")).await,
        json!(false)
    );
    assert_eq!(
        browser
            .execute("return document.querySelectorAll('#webhook-rows button[data-action=\"delete\"]').length;")
            .await,
        json!(0)
    );
    browser.goto(&format!("{}/portal#/logs", app.address)).await;
    browser.wait_for_text("#who", "account acc_a").await;
    assert_eq!(browser.execute(&visible("#retry-log")).await, json!(false));
    screenshots(&browser, "portal-logs").await;

    let revoked = app
        .admin("DELETE", "/v1/portal-sessions?account_id=acc_a", None)
        .await;
    assert_eq!(revoked.status, 204);
    browser.click("#nav-webhooks").await;
    browser
        .wait_for_text("#session-ended", "Your session has ended")
        .await;

    // A session that expires while its page is open: the next call after its end answers
    // 401, and the page says so.
    let token = app
        .portal_token("acc_a", chrono::Duration::seconds(3))
        .await;
    // Another page first: a link that differs only after `#` would not load the page anew.
    browser.goto("about:blank").await;
    browser
        .goto(&format!("{}/portal#token={token}", app.address))
        .await;
    browser
        .wait_for_text("#webhook-rows", "hooks.example.com/mine")
        .await;
    wait_for(
        "the page to say the session ended",
        Duration::from_secs(30),
        || async {
            let ended = browser
                .execute("return !document.getElementById('session-ended').hidden;")
                .await;
            if ended == json!(true) {
                return Some(());
            }
            // Back and forth between the two pages, as a person would: each loads anew.
            browser
                .execute(
                    "document.getElementById(location.hash === '#/logs' \
                     ? 'nav-webhooks' : 'nav-logs').click(); return true;",
                )
                .await;
            None
        },
    )
    .await;
    let _ = mine;
    browser.quit().await;
}

/// A webhook's page after a burst with failures, in headless Chromium at 1 400 and 390 px:
/// its chart shows the attempts (failed ones among them), its health and settings, its recent
/// failures; the page fits a phone's width. Screenshots go to `docs/`.
#[tokio::test]
async fn a_webhooks_page_charts_its_last_day_at_desktop_and_phone_widths() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.retry_schedule = "1h".parse().expect("a schedule");
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script((0..6).map(|_| hookrelay_tests::receiver::Behaviour::Status(500)));
    let id = app
        .webhook(
            "acc",
            &receiver.url,
            &["Contact.created"],
            json!({"description": "CRM sync"}),
        )
        .await;
    app.publish("Contact.created", "acc", json!({"n": 1}), 30)
        .await;
    receiver.wait_for(30, Duration::from_secs(30)).await;
    wait_for(
        "every attempt on record",
        Duration::from_secs(30),
        || async {
            let stats = app
                .admin("GET", &format!("/v1/webhooks/{id}/stats?window=24h"), None)
                .await;
            (stats.body["attempts"] == 30 && stats.body["failures"] == 6).then_some(())
        },
    )
    .await;

    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser.goto(&format!("{}/", app.address)).await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("#sign-in-button").await;
    browser.wait_for_text("#who", "admin").await;
    browser.click("#webhook-rows a.webhook-link").await;
    browser.wait_for_text("#wp-url", &receiver.url).await;
    browser
        .wait_for_text("#wp-summary", "30 attempts, 6 failed")
        .await;
    let bars = |class: &str| {
        format!("return document.querySelectorAll('#wp-chart svg rect.{class}').length;")
    };
    assert!(browser.execute(&bars("ok")).await.as_u64().unwrap_or(0) >= 1);
    assert!(browser.execute(&bars("failed")).await.as_u64().unwrap_or(0) >= 1);
    let failures = browser
        .wait_for_text("#wp-failures", "Contact.created")
        .await;
    assert!(
        failures.contains("ago") || failures.contains("just now"),
        "{failures}"
    );
    browser
        .wait_for_text("#wp-settings", "Contact.created")
        .await;
    browser.wait_for_text("#wp-health", "Breaker").await;
    screenshots(&browser, "webhook-page").await;
    browser.resize(390, 844).await;
    assert!(browser.execute(&bars("failed")).await.as_u64().unwrap_or(0) >= 1);
    browser.quit().await;
}

/// A portal session that may manage: on a webhook's page, "Send an example" sends the chosen
/// type's example to that webhook, and the page names the log.
#[tokio::test]
async fn a_portal_session_sends_an_example_from_a_webhooks_page() {
    let app = spawn_app().await;
    let example = json!({"invoice_id": "in_7", "amount": 12});
    let created = app
        .admin(
            "POST",
            "/v1/event-types",
            Some(
                json!({"name": "Invoice.sent", "description": "An invoice went out.",
                        "example": example}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let receiver = Receiver::start().await;
    let id = app
        .webhook("acc", &receiver.url, &["Invoice.sent"], json!({}))
        .await;
    let opened = app.portal_session(json!({"account_id": "acc"})).await;
    let token = opened["token"].as_str().unwrap();

    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser
        .goto(&format!("{}/portal#token={token}", app.address))
        .await;
    browser.wait_for_text("#who", "account acc").await;
    browser.click("#webhook-rows a.webhook-link").await;
    browser.wait_for_text("#wp-url", &receiver.url).await;
    assert_eq!(
        browser
            .execute("return document.getElementById('wp-example-type').value;")
            .await,
        json!("Invoice.sent")
    );
    browser.click("#wp-send-example").await;
    let notice = browser
        .wait_for_text("#wp-notice", "Example of Invoice.sent sent")
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    let body = got[0].json();
    assert_eq!(body["type"], "Invoice.sent");
    assert_eq!(body["data"], example);
    let logs = app
        .admin("GET", &format!("/v1/logs?webhook_id={id}"), None)
        .await;
    let log_id = logs.body["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(notice.contains(&log_id), "{notice}");
    browser.quit().await;
}

/// A reverse proxy that serves `target` under `/hooks/` on its own port, as a platform would
/// mount hookrelay on a path of its domain; answers its address and the paths asked of it
/// outside `/hooks/`.
struct PrefixProxy {
    address: String,
    strays: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PrefixProxy {
    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        (listener, address)
    }

    fn serve(listener: tokio::net::TcpListener, address: String, target: String) -> Self {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::Response;

        let strays = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = reqwest::Client::new();
        let seen = strays.clone();
        let forward = move |request: Request| {
            let (client, target, seen) = (client.clone(), target.clone(), seen.clone());
            async move {
                let path = request.uri().path().to_owned();
                let Some(rest) = path.strip_prefix("/hooks") else {
                    seen.lock().unwrap().push(path);
                    return Response::builder().status(404).body(Body::empty()).unwrap();
                };
                let query = request
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                let mut outgoing = client.request(
                    request.method().clone(),
                    format!(
                        "{target}{}{query}",
                        if rest.is_empty() { "/" } else { rest }
                    ),
                );
                for name in ["authorization", "content-type"] {
                    if let Some(value) = request.headers().get(name) {
                        outgoing = outgoing.header(name, value);
                    }
                }
                let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let answer = outgoing.body(body).send().await.unwrap();
                let mut response = Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    if !["content-length", "transfer-encoding", "connection"]
                        .contains(&name.as_str())
                    {
                        response = response.header(name.as_str(), value.as_bytes());
                    }
                }
                response
                    .body(Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        };
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(forward))
                .await
                .unwrap()
        });
        Self { address, strays }
    }
}

/// Mounted under a path of the platform's domain (`public_url` with a path), the portal link
/// points there, and the page loads its files and calls the API below that path only.
#[tokio::test]
async fn the_portal_works_under_a_path_prefix_of_the_public_url() {
    let (listener, proxy_address) = PrefixProxy::bind().await;
    let public_url = format!("{proxy_address}/hooks");
    let app = crate::helpers::spawn_app_with(|s| {
        s.public_url = Some(public_url.parse().unwrap());
    })
    .await;
    let proxy = PrefixProxy::serve(listener, proxy_address, app.address.clone());
    let receiver = Receiver::start().await;
    app.webhook("acc", &receiver.url, &["Contact.created"], json!({}))
        .await;
    let opened = app.portal_session(json!({"account_id": "acc"})).await;
    let url = opened["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/hooks/portal#token=", proxy.address)),
        "{url}"
    );

    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser.goto(url).await;
    browser.wait_for_text("#who", "account acc").await;
    browser.wait_for_text("#webhook-rows", &receiver.url).await;
    assert_eq!(
        browser
            .execute("return location.pathname + location.hash;")
            .await,
        json!("/hooks/portal#/webhooks"),
        "the token is out of the address bar, the page where it was"
    );
    // The admin's console under the same prefix: its script ran (the sign-in form is shown,
    // hidden until then).
    browser
        .execute("sessionStorage.clear(); return null;")
        .await;
    browser.goto(&format!("{}/hooks/", proxy.address)).await;
    browser.wait_for_text("#sign-in", "Sign in").await;
    assert_eq!(
        *proxy.strays.lock().unwrap(),
        Vec::<String>::new(),
        "nothing asked outside /hooks"
    );
    browser.quit().await;
}
