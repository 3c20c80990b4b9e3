//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver over the W3C WebDriver protocol against a daemon on
//! the bed. A screenshot of each page is kept in `target/tmp/screenshots/`.
//!
//! The protocol's few calls used here (a session, navigation, a script,
//! cookies, a screenshot, the window's size) are JSON over HTTP, sent with
//! the reqwest pier already builds: a WebDriver client crate would add a
//! second HTTP stack and a Unicode segmenter to every test build.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{
    Bed, Daemon, DaemonOptions, UserRepo, engine, force_remove, head_commit, nodes_yaml,
    remove_stack, stack_replicas, unique,
};

const CONVERGE: Duration = Duration::from_secs(90);
const HOW_TO_FIX: &str = "install Debian's chromium and chromium-driver (tests/run does)";

/// A headless chromium behind its chromedriver, closed when dropped.
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        pier::docker::engine::install_crypto_provider();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): {HOW_TO_FIX}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen: {HOW_TO_FIX}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a browser profile folder");
        let http = reqwest::Client::builder()
            .timeout(CONVERGE)
            .build()
            .expect("an HTTP client");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        } } });
        let created = call(
            &http,
            reqwest::Method::POST,
            &format!("http://127.0.0.1:{port}/session"),
            Some(capabilities),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot start chromium: {e}: {HOW_TO_FIX}"));
        let id = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            http,
            session: format!("http://127.0.0.1:{port}/session/{id}"),
            driver,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.session), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Wait until `script` returns something truthy; returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let value = self.js(script).await;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; the page:\n{}",
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn path(&self) -> String {
        self.js("return location.pathname + location.search")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    async fn shot(&self, name: &str) {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("a PNG");
        let folder = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&folder).expect("the screenshot folder");
        std::fs::write(folder.join(format!("dashboard-{name}.png")), png)
            .expect("a screenshot file");
    }

    async fn sign_in(&self, base: &str, token: &str, name: &str, email: &str) {
        self.goto(&format!("{base}/ui/login")).await;
        let script = format!(
            "const f = document.querySelector('form.login');
             f.token.value = {}; f.name.value = {}; f.email.value = {};
             f.submit();",
            json!(token),
            json!(name),
            json!(email)
        );
        self.js(&script).await;
        self.until(
            "the overview after sign-in",
            "return location.pathname === '/ui/' && document.querySelector('#live') !== null",
        )
        .await;
    }

    /// The session cookie, to send by hand.
    async fn session_cookie(&self) -> String {
        let cookies = self.command(reqwest::Method::GET, "/cookie", None).await;
        let cookie = cookies
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "pier_session")
            .expect("a session cookie");
        assert_eq!(cookie["httpOnly"], true, "the session cookie is HttpOnly");
        format!(
            "pier_session={}",
            cookie["value"].as_str().unwrap_or_default()
        )
    }

    async fn close(self) {
        let _ = call(&self.http, reqwest::Method::DELETE, &self.session, None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call: its `value`, or the error the driver gave.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let value = answer["value"].take();
    if ok {
        Ok(value)
    } else {
        Err(format!("{}: {}", value["error"], value["message"]))
    }
}

/// What `git args…` prints in the repository.
fn git_output(repo: &UserRepo, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(repo.dir.path())
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commits(repo: &UserRepo) -> usize {
    git_output(repo, &["rev-list", "--count", "main"])
        .parse()
        .expect("a count")
}

fn last_author(repo: &UserRepo) -> String {
    git_output(repo, &["log", "-1", "--format=%an <%ae>", "main"])
}

/// The manifest as committed on `main`.
fn committed_manifest(repo: &UserRepo) -> String {
    git_output(repo, &["show", "main:pier/stack.yml"])
}

/// The status document, read with `token`; `None` until it answers.
async fn status_with(daemon: &Daemon, token: &str) -> Option<Value> {
    let bearer = format!("Bearer {token}");
    let (_, body) = daemon
        .request("GET", "/api/v1/status", &[("Authorization", &bearer)], b"")
        .await;
    serde_json::from_str(&body).ok()
}

/// Send a form by hand, with `cookie` if given; the answer's status code.
async fn post_form(daemon: &Daemon, path: &str, cookie: Option<&str>, body: &[u8]) -> u16 {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    headers.extend(cookie.map(|c| ("Cookie", c)));
    daemon.request("POST", path, &headers, body).await.0
}

/// The condition and running count of `web`, as the page shows them.
const WEB_ROW: &str = "const row = document.querySelector('[data-service=web]');
    return row && { condition: row.querySelector('[data-condition]').dataset.condition,
                    running: row.querySelector('[data-running]').dataset.running };";

/// Everything the dashboard promises, in one walk through it: reading
/// needs the status token; the overview follows a deploy and a heal live;
/// a reader cannot act; the slider makes one commit, authored by whoever
/// signed in, and the replicas follow; a form without the session's CSRF
/// token is refused; a failing run's log shows live and masked.
#[tokio::test]
async fn dashboard_in_a_browser() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app", "ci"]]);
    let base_image = bed.base_image.clone();
    let manifest = |script: &str, replicas: u32| {
        format!(
            "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {base_image}\n      env: [DASH_SECRET]\n      script: [{script}]\nservices:\n  web:\n    image: {base_image}\n    command: [\"sh\", \"-c\", \"sleep 2; touch /ready; echo web ready with $$API_TOKEN; exec sleep 3600\"]\n    environment: {{ API_TOKEN: dash-api-token-value }}\n    stop_grace_period: 1s\n    healthcheck: {{ test: [\"CMD\", \"test\", \"-f\", \"/ready\"], interval: 500ms, retries: 20 }}\n    target_num_containers: {replicas}\n    tags: [app]\n"
        )
    };
    let repo = UserRepo::new("dash", &manifest("\"echo ok\"", 1));
    let (act_token, read_token, secret) = (unique("act"), unique("read"), unique("dash-secret"));
    let state = tempfile::tempdir().unwrap();
    let options = DaemonOptions::default()
        .env("PIER_API_TOKEN", &act_token)
        .env("PIER_STATUS_TOKEN", &read_token)
        .env("DASH_SECRET", &secret);
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &options,
    );
    let base = format!("http://{}", daemon.address());
    let browser = Browser::start().await;

    // Reading needs the status token.
    browser.goto(&format!("{base}/ui/")).await;
    assert_eq!(browser.path().await, "/ui/login");
    browser.shot("login").await;
    browser.sign_in(&base, &read_token, "", "").await;
    browser.js("window.pierSamePage = true; return null").await;
    let web = browser
        .until("web Ready with its replica", &format!("const w = (() => {{ {WEB_ROW} }})(); return w && w.condition === 'Ready' && w.running === '1' && w"))
        .await;
    assert_eq!(web["condition"], "Ready");
    assert_eq!(
        browser.js("return window.pierSamePage === true").await,
        true,
        "the overview followed the deploy without a reload"
    );
    browser.shot("overview").await;

    // A reader sees no form to act, and a form sent by hand does nothing.
    browser.goto(&format!("{base}/ui/services")).await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('form.scale').length")
            .await,
        0
    );
    let reader = browser.session_cookie().await;
    let before = commits(&repo);
    let code = post_form(
        &daemon,
        "/ui/scale",
        Some(&reader),
        b"csrf=x&service=web&replicas=5",
    )
    .await;
    assert_eq!(code, 401, "a reader cannot scale");
    let code = post_form(&daemon, "/ui/reconcile", None, b"csrf=").await;
    assert_eq!(code, 401, "nobody signed in cannot act");
    assert_eq!(commits(&repo), before);

    // A removed replica shows as healing, then Ready, on the same page.
    browser.goto(&format!("{base}/ui/")).await;
    browser
        .js("window.pierSamePage = true; window.pierSeen = [];
             new MutationObserver(() => {
               const row = document.querySelector('[data-service=web]');
               if (row) pierSeen.push(row.querySelector('[data-condition]').dataset.condition + ' ' + row.querySelector('td.reason').textContent);
             }).observe(document.getElementById('live'), { childList: true, subtree: true });
             return null")
        .await;
    let replica = stack_replicas(&bed, &repo.stack).await;
    let (node, name) = (replica[0].0.clone(), replica[0].1.clone());
    let docker = engine(
        bed.nodes
            .iter()
            .find(|n| n.name == node)
            .expect("a bed node"),
    )
    .await;
    force_remove(&docker, &name).await;
    let seen = browser
        .until(
            "the heal to show, then Ready",
            "const seen = window.pierSeen || [];
             const healing = seen.findIndex(s => s.startsWith('Progressing') && s.includes('healing'));
             return healing >= 0 && seen.slice(healing).some(s => s.startsWith('Ready')) && seen",
        )
        .await;
    assert_eq!(
        browser.js("return window.pierSamePage === true").await,
        true,
        "{seen}"
    );

    // Someone who may act scales with the slider: one commit, their name.
    browser
        .js("document.querySelector('header form[action=\"/ui/logout\"]').submit(); return null")
        .await;
    browser
        .until("signed out", "return location.pathname === '/ui/login'")
        .await;
    browser
        .sign_in(&base, &act_token, "Dash Board", "dash@bed.test")
        .await;
    browser.goto(&format!("{base}/ui/services")).await;
    browser.shot("services").await;
    let before = commits(&repo);
    browser
        .js(
            "const range = document.querySelector('[data-service=web] input[type=range]');
             range.value = 2;
             range.dispatchEvent(new Event('input', { bubbles: true }));
             range.form.querySelector('button[type=submit]').click();
             return null",
        )
        .await;
    browser
        .until(
            "the commit to be reported",
            "return location.search.includes('done=Committed')",
        )
        .await;
    assert_eq!(commits(&repo), before + 1, "exactly one commit");
    assert_eq!(last_author(&repo), "Dash Board <dash@bed.test>");
    let text = committed_manifest(&repo);
    assert!(text.contains("target_num_containers: 2"), "{text}");
    browser
        .until("the page to show 2 replicas", &format!("const w = (() => {{ {WEB_ROW} }})(); return w && w.running === '2' && w.condition === 'Ready'"))
        .await;
    assert_eq!(stack_replicas(&bed, &repo.stack).await.len(), 2);

    // The same session with a form that lacks its CSRF token: refused.
    let actor = browser.session_cookie().await;
    let before = commits(&repo);
    let code = post_form(
        &daemon,
        "/ui/scale",
        Some(&actor),
        b"csrf=forged&service=web&replicas=5",
    )
    .await;
    assert_eq!(code, 403, "a forged form is refused");
    assert_eq!(commits(&repo), before);

    // Node tags: one commit, and the page shows them once deployed.
    browser.goto(&format!("{base}/ui/nodes")).await;
    let before = commits(&repo);
    browser
        .js(
            "const form = document.querySelector('[data-node=n1] form.tags');
             form.tags.value = 'app edge';
             form.querySelector('button[type=submit]').click();
             return null",
        )
        .await;
    browser
        .until("the tag commit to be reported", "return location.pathname === '/ui/nodes' && location.search.includes('done=Committed')")
        .await;
    assert_eq!(commits(&repo), before + 1, "exactly one commit");
    let text = committed_manifest(&repo);
    assert!(text.contains("tags: [app, edge]"), "{text}");
    browser
        .until(
            "the page to show the new tags",
            "return document.querySelector('[data-node=n1] input[name=tags]').value === 'app edge'",
        )
        .await;

    // Reconcile now: a pass asked for through the page.
    browser.goto(&format!("{base}/ui/")).await;
    browser
        .js("document.querySelector('form[action=\"/ui/reconcile\"]').submit(); return null")
        .await;
    browser
        .until(
            "the pass to be asked for",
            "return location.search.includes('done=')",
        )
        .await;
    crate::support::eventually("a pass triggered from the page", CONVERGE, || async {
        let status = status_with(&daemon, &read_token).await?;
        status["last_pass"]["trigger"]
            .as_str()?
            .contains("api")
            .then_some(())
    })
    .await;

    // What `pier diff` shows now: nothing, once converged.
    browser.goto(&format!("{base}/ui/diff")).await;
    let diff = browser
        .js("return document.querySelector('pre.log').textContent")
        .await;
    assert!(
        diff.as_str()
            .is_some_and(|d| d.starts_with("No changes") && d.contains(&repo.stack)),
        "{diff}"
    );

    for (page, name) in [("nodes", "nodes"), ("history", "history"), ("runs", "runs")] {
        browser.goto(&format!("{base}/ui/{page}")).await;
        browser
            .until(page, "return document.querySelector('main h1') !== null")
            .await;
        browser.shot(name).await;
    }

    // The History page's buttons: hold here and resume, freeze and unfreeze,
    // each named after who signed in.
    browser.goto(&format!("{base}/ui/history")).await;
    browser
        .js("document.querySelector('[data-deployment] form[action=\"/ui/hold\"] button').click(); return null")
        .await;
    browser
        .until(
            "the hold to be reported",
            "return location.search.includes('done=Held')",
        )
        .await;
    let status = status_with(&daemon, &read_token).await.unwrap();
    assert_eq!(
        status["held"]["by"], "Dash Board <dash@bed.test>",
        "{status}"
    );
    browser
        .js("document.querySelector('form[action=\"/ui/resume\"] button').click(); return null")
        .await;
    browser
        .until(
            "the resume to be reported",
            "return location.search.includes('done=Resumed')",
        )
        .await;
    assert!(status_with(&daemon, &read_token).await.unwrap()["held"].is_null());
    browser
        .js(
            "const form = document.querySelector('form[action=\"/ui/freeze\"]');
             form.service.value = 'web'; form.for.value = '1h'; form.reason.value = 'a check';
             form.querySelector('button').click(); return null",
        )
        .await;
    browser
        .until(
            "the freeze to be reported",
            "return location.search.includes('done=Frozen')",
        )
        .await;
    let status = status_with(&daemon, &read_token).await.unwrap();
    assert_eq!(status["frozen"][0]["service"], "web", "{status}");
    assert_eq!(status["frozen"][0]["reason"], "a check", "{status}");
    browser
        .js("document.querySelector('[data-frozen=web] form[action=\"/ui/unfreeze\"] button').click(); return null")
        .await;
    browser
        .until(
            "the unfreeze to be reported",
            "return location.search.includes('done=Unfrozen')",
        )
        .await;
    assert!(status_with(&daemon, &read_token).await.unwrap()["frozen"].is_null());

    // A service's log: every replica's lines, masked, and new ones live.
    browser.goto(&format!("{base}/ui/services/web/logs")).await;
    let shown = browser
        .until(
            "the replicas' lines",
            "const pre = document.getElementById('service-log'); return pre && pre.textContent.includes('web ready with') && pre.textContent",
        )
        .await;
    let shown = shown.as_str().unwrap_or_default().to_string();
    assert!(
        shown.contains("web.1@") && shown.contains("web ready with ***"),
        "{shown}"
    );
    assert!(
        !shown.contains("dash-api-token-value"),
        "a secret shown: {shown}"
    );
    browser.js("window.pierSamePage = true; return null").await;
    let replica = stack_replicas(&bed, &repo.stack).await;
    let node = bed.nodes.iter().find(|n| n.name == replica[0].0).unwrap();
    crate::support::exec(
        &engine(node).await,
        &replica[0].1,
        &["sh", "-c", "echo '<b>live</b> line' > /proc/1/fd/1"],
    )
    .await;
    browser
        .until(
            "the live line, as text",
            "const pre = document.getElementById('service-log'); return pre.textContent.includes('<b>live</b> line') && pre.querySelector('b') === null",
        )
        .await;
    assert_eq!(
        browser.js("return window.pierSamePage === true").await,
        true
    );

    // A failing run: its log shows while it runs, masked, then its end.
    repo.commit(
        &manifest(
            "\"echo start $$DASH_SECRET\", \"sleep 20\", \"echo end\", \"false\"",
            2,
        ),
        "a failing test",
    );
    let failing = head_commit(repo.dir.path());
    let run = crate::support::eventually("the failing run to start", CONVERGE, || async {
        let status = status_with(&daemon, &read_token).await?;
        let pipeline = &status["pipeline"];
        (pipeline["commit"] == failing.as_str() && pipeline["state"] == "running")
            .then(|| pipeline["run"].as_i64())
            .flatten()
    })
    .await;
    browser.goto(&format!("{base}/ui/runs/{run}")).await;
    browser.js("window.pierSamePage = true; return null").await;
    browser
        .until(
            "the log while the run goes on",
            "const log = document.querySelector('[data-stage=test] pre.log');
             const state = document.querySelector('main h1 .badge');
             return log && log.textContent.includes('start ***') && state.textContent === 'running'",
        )
        .await;
    browser
        .until(
            "the run to fail, on the same page",
            "const log = document.querySelector('[data-stage=test] pre.log');
             return document.querySelector('main h1 .badge').textContent === 'failed' && log.textContent.includes('end') && window.pierSamePage === true",
        )
        .await;
    let page = browser.source().await;
    assert!(!page.contains(&secret), "the secret never reaches the page");
    browser.shot("run").await;
    // The raw log is text a container printed: never sniffed, never run.
    let cookie = browser.session_cookie().await;
    let (code, head, log) = daemon
        .request_with_head(
            "GET",
            &format!("/ui/runs/{run}/log/test"),
            &[("Cookie", &cookie)],
            b"",
        )
        .await;
    assert_eq!(code, 200, "{head}{log}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; sandbox"),
        "{head}"
    );
    assert!(log.contains("start ***") && !log.contains(&secret), "{log}");
    // Behind a proxy serving HTTPS, the session cookie is Secure.
    let login = |proto: &'static str| {
        let (daemon, token) = (&daemon, read_token.clone());
        async move {
            let body = format!("token={token}&name=&email=");
            let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
            if !proto.is_empty() {
                headers.push(("X-Forwarded-Proto", proto));
            }
            let (_, head, _) = daemon
                .request_with_head("POST", "/ui/login", &headers, body.as_bytes())
                .await;
            head.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
                .unwrap_or_default()
                .to_string()
        }
    };
    let secure = login("https").await;
    assert!(
        secure.contains("pier_session=") && secure.contains("; Secure;"),
        "{secure}"
    );
    let plain = login("").await;
    assert!(
        plain.contains("pier_session=") && !plain.contains("Secure"),
        "{plain}"
    );

    // Run again: the same commit is tested once more.
    browser
        .js("document.querySelector('form[action$=\"/rerun\"]').submit(); return null")
        .await;
    browser
        .until(
            "the run to be asked for",
            "return location.pathname === '/ui/runs' && location.search.includes('done=')",
        )
        .await;
    crate::support::eventually("a second run of the failing commit", CONVERGE, || async {
        let status = status_with(&daemon, &read_token).await?;
        let pipeline = &status["pipeline"];
        (pipeline["commit"] == failing.as_str()
            && pipeline["run"].as_i64()? > run
            && pipeline["state"] == "failed")
            .then_some(())
    })
    .await;
    // Dark mode: the system's, as the browser reports it.
    browser.goto(&format!("{base}/ui/services")).await;
    browser
        .command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setEmulatedMedia",
                "params": { "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }
            })),
        )
        .await;
    assert_eq!(
        browser
            .js("return getComputedStyle(document.body).backgroundColor")
            .await,
        "rgb(21, 23, 26)",
        "the page follows a dark system"
    );
    browser.shot("services-dark").await;
    browser.resize(390, 844).await;
    browser.goto(&format!("{base}/ui/")).await;
    browser.shot("overview-phone").await;

    browser.close().await;
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}
