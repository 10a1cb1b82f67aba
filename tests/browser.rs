//! The status page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs) driven over the W3C WebDriver
//! protocol by chromedriver, against a real `callhook run` child process following a
//! trace this test appends to. The calls appear on the page by its live update, a caller
//! name holding `<script>` shows as text and runs nothing, and the retry button, clicked
//! in the browser, gets a dead job delivered. Screenshots are kept in
//! `target/screenshots/`. Without Chromium the test says so and skips.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Child, Receiver, Trace, append, invite};
use serde_json::{Value, json};

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first of `names` found on PATH.
fn program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver child and one browser session in it.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = Receiver::free_port();
        let driver = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: reqwest::Client::new(),
            runtime,
        };
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
            },
        }}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            match browser.try_call("POST", "/session", &capabilities) {
                Ok(answer) => break answer,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("no browser session: {error}"),
            }
        };
        browser.session = answer["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        };
        self.runtime.block_on(async {
            let answer = request.send().await.map_err(|e| e.to_string())?;
            let status = answer.status();
            let value: Value =
                serde_json::from_str(&answer.text().await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(value["value"].clone())
            } else {
                Err(format!("{status}: {}", value["value"]))
            }
        })
    }

    /// A command in this session.
    fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        self.try_call(method, &format!("/session/{}{path}", self.session), &body)
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).unwrap();
    }

    fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": [] }))
            .unwrap()
    }

    /// The text the page shows (what a user reads).
    fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the first element `css` selects; retried, as the live update replaces
    /// the elements every second.
    fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let clicked = self
                .call("POST", "/element", json!({ "using": "css selector", "value": css }))
                .and_then(|element| {
                    let id = element[ELEMENT].as_str().unwrap_or_default().to_owned();
                    self.call("POST", &format!("/element/{id}/click"), json!({}))
                });
            match clicked {
                Ok(_) => return,
                Err(error) if Instant::now() > deadline => panic!("cannot click {css}: {error}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", Value::Null).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &bytes).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        path
    }

    /// Waits until the page's text holds `what` (at most 15 s).
    fn wait_for_text(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text();
            if text.contains(what) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what:?} never showed; the page says:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_page_in_chromium_shows_calls_as_text_and_its_retry_button_delivers_a_dead_job() {
    let (Some(chromium), Some(chromedriver)) = (
        program(&["chromium", "chromium-browser", "google-chrome"]),
        program(&["chromedriver"]),
    ) else {
        println!(
            "SKIPPED: the browser test needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver; scripts/test does)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    receiver.answers.lock().unwrap().push_back(400); // the first delivery dies
    let trace_path = dir.path().join("phone.log");
    std::fs::write(&trace_path, b"").unwrap();
    let address = format!("127.0.0.1:{}", Receiver::free_port());
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
status: {{ listen: \"{address}\" }}
rules:
  - name: desk
    on: ringing
    webhook: {{ url: \"{}/in\" }}
",
            receiver.url
        ),
    )
    .unwrap();
    let mut daemon = Killed(Some(Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        &trace_path,
        &dir.path().join("state"),
        Some(&config),
    )));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "the status page never listened");
        std::thread::sleep(Duration::from_millis(25));
    }

    let browser = Browser::start(&chromium, &chromedriver);
    browser.open(&format!("http://{address}/"));
    browser.wait_for_text("no calls yet");
    browser.screenshot("status-page-empty");

    // Calls written while the page is open appear by its live update.
    let hostile = "<script>window.pwned=1</script>";
    let mut trace = Trace::new();
    trace.at("09:00:00").sip(
        true,
        &invite(
            "b-1@pbx",
            &format!("\"{hostile}\" <sip:5550123@pbx>"),
            "<sip:101@pbx>",
            1,
        ),
    );
    append(&trace_path, trace.text.as_bytes());
    let text = browser.wait_for_text("desk: dead");
    assert!(text.contains(hostile), "the name shows as text:\n{text}");
    assert!(text.contains("5550123"), "{text}");
    assert_eq!(browser.script("return window.pwned === undefined;"), json!(true));
    assert_eq!(
        browser.script("return document.querySelectorAll('#live script').length;"),
        json!(0)
    );
    browser.screenshot("status-page-dead-job");

    // The retry button, pressed in the browser, sends the job again; now it is delivered.
    browser.click("form[action*='retry'] button");
    let requests = receiver.wait_for(2, 15);
    assert_eq!(requests.len(), 2, "retried from the page and delivered");
    browser.wait_for_text("desk: done");
    assert_eq!(
        browser.script("return document.querySelectorAll(\"form[action*='retry']\").length;"),
        json!(0),
        "no dead job left"
    );
    let shot = browser.screenshot("status-page-retried");
    println!("screenshots in {}", shot.parent().unwrap().display());
    drop(browser);
    daemon.0.take().unwrap().kill();
}

/// Kills the daemon child also when an assertion fails.
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            child.kill();
        }
    }
}
