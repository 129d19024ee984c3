//! Real headless Chromium, driven through ChromeDriver's W3C WebDriver protocol: a dozen
//! HTTP calls over the reqwest client the tests use anyway (a WebDriver crate would bring a
//! second HTTP stack for them).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Child;

/// The key under which WebDriver answers an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    driver: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session, or says what is missing.
    pub async fn start() -> Result<Self, String> {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(tool).exists() {
                return Err(format!(
                    "{tool} is missing: `apt-get install chromium chromium-driver` (.ci/run does)"
                ));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        crate::wait_for("chromedriver to answer", Duration::from_secs(20), || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move { http.get(url).send().await.ok().map(|_| ()) }
        })
        .await;
        let profile =
            std::env::temp_dir().join(format!("hookrelay-chromium-{}", uuid::Uuid::new_v4()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,900",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let id = answer["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no WebDriver session: {answer}"))?;
        Ok(Self {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The element `css` selects, if there is one now.
    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits for the element `css` selects to exist.
    pub async fn element(&self, css: &str) -> String {
        crate::wait_for(
            &format!("`{css}` on the page"),
            Duration::from_secs(20),
            || self.find(css),
        )
        .await
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Replaces the value of the input `css` selects with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The rendered text of the element `css` selects ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        let Some(id) = self.find(css).await else {
            return String::new();
        };
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the text of `css` holds `expected`; answers the text.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        crate::wait_for(
            &format!("`{expected}` in `{css}`"),
            Duration::from_secs(20),
            || async {
                let text = self.text(css).await;
                text.contains(expected).then_some(text)
            },
        )
        .await
    }

    /// Sets the window's size, as a phone's (390 wide) or a desktop's.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs `script` in the page; answers what it returns.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of an open `alert()`, if one is open.
    pub async fn alert(&self) -> Option<String> {
        let answer = self.call(reqwest::Method::GET, "/alert/text", None).await;
        answer.as_str().map(str::to_owned)
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot folder");
        }
        std::fs::write(path, bytes).expect("the screenshot written");
    }

    /// Ends the session, then the driver and its browsers (see `Drop`).
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// However the test ends: the driver goes (kill on drop), and so do the browsers it started,
/// found by the profile folder unique to this session in their command line.
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.display().to_string()])
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
