//! The web console of `pgplane up`, in headless Chromium driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/setup.sh`), and attacked over plain HTTP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::*;

/// Long enough for a real Postgres to be created and started.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// A chromedriver on a free port, killed when dropped, and a browser
/// session on it.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        let port = free_port();
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("pgplane-chromedriver-{port}.log")),
        )
        .unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; run scripts/setup.sh)");
        eventually("chromedriver listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    pub(crate) async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?}: {e}"))
    }

    /// Waits until the element's text is `want`, without reloading.
    pub(crate) async fn wait_text(&self, css: &str, want: &str, deadline: Duration) {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if text.trim() == want {
                        return;
                    }
                    last = text;
                }
            }
            assert!(
                start.elapsed() < deadline,
                "{css:?} did not read {want:?} within {deadline:?} (last {last:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Waits until the browser is at a path that `want` accepts.
    pub(crate) async fn wait_path(&self, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let path = self.path().await;
            if want(&path) {
                return path;
            }
            assert!(start.elapsed() < WAIT, "still at {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Marks the loaded document; the mark survives only while the page is
    /// not reloaded.
    pub(crate) async fn mark(&self) {
        self.client
            .execute("window.__notReloaded = 'yes'; return true;", vec![])
            .await
            .unwrap();
    }

    pub(crate) async fn still_marked(&self) -> bool {
        self.client
            .execute("return window.__notReloaded === 'yes';", vec![])
            .await
            .unwrap()
            == json!(true)
    }

    /// A screenshot for a reviewer, under `target/console-screenshots/`.
    pub(crate) async fn screenshot(&self, name: &str) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// `PGPLANE_ENDPOINT` and `PGPLANE_TOKEN` of a `pgplane up`.
pub(crate) fn endpoint_and_token(up: &Embedded) -> (String, String) {
    let env = up.env();
    let get = |k: &str| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
            .unwrap()
    };
    (get("PGPLANE_ENDPOINT"), get("PGPLANE_TOKEN"))
}

/// The control plane's HTTP API, with a bearer token.
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl Api {
    pub(crate) fn new(endpoint: &str, token: &str) -> Api {
        Api {
            http: plain_http(),
            endpoint: endpoint.to_owned(),
            token: token.to_owned(),
        }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.endpoint))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    pub(crate) async fn instance(&self, name: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/instances/{name}"),
            None,
        )
        .await
    }
}

pub(crate) fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_signs_in_creates_watches_live_stops_deletes_and_signs_out() {
    let up = Embedded::start();
    let (endpoint, token) = endpoint_and_token(&up);
    let api = Api::new(&endpoint, &token);
    let b = Browser::start().await;

    // Signing in: `/` sends a signed-out browser to the sign-in form.
    b.client.goto(&format!("{endpoint}/")).await.unwrap();
    b.find("#token").await.send_keys(&token).await.unwrap();
    b.screenshot("sign-in").await;
    b.find("form[action='/login'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_path(|p| p == "/instances").await;
    b.find("#instance-list").await;
    let cookies = b.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "pgplane_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(
        format!("{:?}", session.same_site()),
        "Some(Strict)",
        "{session:?}"
    );
    assert!(!b.client.source().await.unwrap().contains(&token));

    // A bad value: the error next to its field, the input kept.
    b.client
        .goto(&format!("{endpoint}/instances/new"))
        .await
        .unwrap();
    b.find("#name").await.send_keys("web1").await.unwrap();
    b.find("#extensions")
        .await
        .send_keys("hstore")
        .await
        .unwrap();
    b.find("#config")
        .await
        .send_keys("work_mem=lots")
        .await
        .unwrap();
    b.find("#create-submit").await.click().await.unwrap();
    let error = b.find("#err-config").await.text().await.unwrap();
    assert!(error.contains("work_mem"), "{error}");
    assert_eq!(
        b.find("#config").await.attr("aria-invalid").await.unwrap(),
        Some("true".into())
    );
    assert_eq!(b.value("#name").await, "web1");
    assert_eq!(b.value("#extensions").await, "hstore");
    assert_eq!(b.value("#config").await, "work_mem=lots");
    b.screenshot("create-refused").await;
    assert!(
        api.http
            .get(format!("{endpoint}/api/v1/instances/web1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            == 404,
        "nothing was created"
    );

    // Fixed, it is created; the list shows it and turns it Up live.
    let config = b.find("#config").await;
    config.clear().await.unwrap();
    config.send_keys("work_mem=8MB").await.unwrap();
    b.find("#create-submit").await.click().await.unwrap();
    b.find("tr[data-name='web1']").await;
    assert_eq!(b.path().await, "/instances");
    b.mark().await;
    let badge = "tr[data-name='web1'] [data-role=state]";
    b.wait_text(badge, "Up", WAIT).await;
    assert!(b.still_marked().await, "Up arrived without a reload");
    b.screenshot("list").await;

    // Changes made elsewhere (the API) arrive too, still without a reload.
    api.call(reqwest::Method::POST, "/api/v1/instances/web1/stop", None)
        .await;
    b.wait_text(badge, "Stopped", WAIT).await;
    api.call(reqwest::Method::POST, "/api/v1/instances/web1/start", None)
        .await;
    b.wait_text(badge, "Up", WAIT).await;
    assert!(b.still_marked().await, "every change arrived live");

    // The instance page: spec, history, timeline, connection without the
    // password until asked.
    b.find("a[href='/instances/web1']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#history").await;
    let history = b.find("#history").await.text().await.unwrap();
    for word in ["Create", "Stop", "Start", "Created"] {
        assert!(history.contains(word), "{word} in {history}");
    }
    let segments = b
        .client
        .find_all(Locator::Css("#timeline g.segment"))
        .await
        .unwrap();
    assert!(segments.len() >= 3, "Submitted, Up, Stopping, …");
    let desired = b.find("#desired-config").await.text().await.unwrap();
    assert!(
        desired.contains("work_mem") && desired.contains("8MB"),
        "{desired}"
    );
    let connection = b.find("#connection").await.text().await.unwrap();
    assert!(connection.contains("127.0.0.1"), "{connection}");
    let credentials = api
        .call(
            reqwest::Method::GET,
            "/api/v1/instances/web1/credentials",
            None,
        )
        .await;
    let password = credentials["password"].as_str().unwrap().to_owned();
    assert!(!b.client.source().await.unwrap().contains(&password));
    b.screenshot("instance").await;
    b.find("#reveal").await.click().await.unwrap();
    b.wait_text("#password", &password, WAIT).await;
    assert!(!b.client.source().await.unwrap().contains(&token));

    // A refused action says why, in the state machine's words.
    b.find("#action-start").await.click().await.unwrap();
    let refusal = b.find("#refusal").await.text().await.unwrap();
    assert!(refusal.contains("already running"), "{refusal}");

    // Stop: the page follows Stopping → Stopped live.
    b.find("#action-stop").await.click().await.unwrap();
    b.wait_path(|p| !p.ends_with("/start")).await;
    b.find("#instance").await;
    b.mark().await;
    b.wait_text("h1 [data-role=state]", "Stopped", WAIT).await;
    assert!(b.still_marked().await);
    assert_eq!(api.instance("web1").await["state"], "Stopped");

    // Delete needs the name typed: the button waits for it.
    b.client.refresh().await.unwrap();
    let delete = b.find("#action-delete").await;
    assert!(!delete.is_enabled().await.unwrap(), "disabled until typed");
    b.find("#confirm").await.send_keys("web").await.unwrap();
    assert!(!delete.is_enabled().await.unwrap());
    b.find("#confirm").await.send_keys("1").await.unwrap();
    assert!(delete.is_enabled().await.unwrap());
    delete.click().await.unwrap();
    b.find("#instance").await;
    b.wait_text("h1 [data-role=state]", "Deleted", WAIT).await;
    assert_eq!(api.instance("web1").await["state"], "Deleted");
    b.client
        .goto(&format!("{endpoint}/instances"))
        .await
        .unwrap();
    b.find("h1").await;
    assert!(b
        .client
        .find_all(Locator::Css("tr[data-name='web1']"))
        .await
        .unwrap()
        .is_empty());

    // Signed out, no page is reachable.
    b.find("#sign-out").await.click().await.unwrap();
    b.find("#token").await;
    assert_eq!(b.path().await, "/login");
    for page in ["/instances", "/instances/new", "/instances/web1"] {
        b.client.goto(&format!("{endpoint}{page}")).await.unwrap();
        b.find("#token").await;
        assert_eq!(b.path().await, "/login", "{page}");
    }
    b.close().await;
}

/// Form fields or headers.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// A console session over plain HTTP: its cookie and CSRF token.
pub(crate) struct HttpSession {
    http: reqwest::Client,
    endpoint: String,
    pub(crate) cookie: String,
}

impl HttpSession {
    pub(crate) async fn sign_in(endpoint: &str, token: &str) -> (HttpSession, String) {
        let http = plain_http();
        let resp = http
            .post(format!("{endpoint}/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        (
            HttpSession {
                http,
                endpoint: endpoint.to_owned(),
                cookie,
            },
            set_cookie,
        )
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.endpoint))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub(crate) async fn csrf(&self) -> String {
        let (status, page) = self.get("/instances").await;
        assert_eq!(status, 200, "{page}");
        let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        page[at..at + 64].to_owned()
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("cookie", &self.cookie)
            .form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_other_organisations_forged_posts_and_keeps_the_token_out_of_pages() {
    let up = Embedded::start();
    let (endpoint, token) = endpoint_and_token(&up);
    let api = Api::new(&endpoint, &token);
    api.call(
        reqwest::Method::POST,
        "/api/v1/instances",
        Some(json!({"name": "ledger", "spec": {}})),
    )
    .await;
    let other_token = api
        .call(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(json!({"org": "globex"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The cookie: HttpOnly, SameSite=Strict, Path=/, Secure only over TLS;
    // never the token.
    let (me, set_cookie) = HttpSession::sign_in(&endpoint, &token).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert!(!set_cookie.contains(&token));
    let behind_tls = plain_http()
        .post(format!("{endpoint}/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    let tls_cookie = behind_tls.headers()["set-cookie"].to_str().unwrap();
    assert!(tls_cookie.contains("; Secure"), "{tls_cookie}");

    // A wrong token opens nothing and is not echoed.
    let wrong = "pgp_notavalidtokennotavalidtokennotavalid0";
    let resp = plain_http()
        .post(format!("{endpoint}/login"))
        .form(&[("token", wrong)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(!resp.text().await.unwrap().contains(wrong));

    // No page, script or error shows the token.
    for page in [
        "/instances",
        "/instances?q=led&state=Submitted&sort=age&dir=desc",
        "/instances/new",
        "/instances/ledger",
        "/instances/nothing-here",
        "/assets/console.js",
        "/login",
    ] {
        let (_, body) = me.get(page).await;
        assert!(!body.contains(&token), "token in {page}");
    }
    let (status, page) = me.get("/instances/ledger").await;
    assert_eq!(status, 200);
    assert!(page.contains("ledger"));

    // Another organisation sees nothing of this one: 404, as in the API.
    let (them, _) = HttpSession::sign_in(&endpoint, &other_token).await;
    let (status, _) = them.get("/instances/ledger").await;
    assert_eq!(status, 404);
    let (status, list) = them.get("/instances").await;
    assert_eq!(status, 200);
    assert!(!list.contains("ledger"), "{list}");
    let their_csrf = them.csrf().await;
    let (status, _) = them
        .post(
            "/instances/ledger/delete",
            &[("csrf", &their_csrf), ("confirm", "ledger")],
            &[],
        )
        .await;
    assert_eq!(status, 404);
    let id = api.instance("ledger").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = them.get(&format!("/instances/{id}")).await;
    assert_eq!(status, 404, "not by id either");

    // Forged posts change nothing: no CSRF token, a wrong one, another
    // session's, another origin, a cross-site fetch.
    let csrf = me.csrf().await;
    let origin = endpoint.clone();
    let forged: [(&str, Pairs, Pairs); 5] = [
        ("no token", vec![("confirm", "ledger")], vec![]),
        (
            "a wrong token",
            vec![("csrf", "0000"), ("confirm", "ledger")],
            vec![],
        ),
        (
            "another session's token",
            vec![("csrf", &their_csrf), ("confirm", "ledger")],
            vec![],
        ),
        (
            "another origin",
            vec![("csrf", &csrf), ("confirm", "ledger")],
            vec![("origin", "http://evil.example")],
        ),
        (
            "a cross-site fetch",
            vec![("csrf", &csrf), ("confirm", "ledger")],
            vec![("sec-fetch-site", "cross-site")],
        ),
    ];
    for (what, form, headers) in &forged {
        let (status, _) = me.post("/instances/ledger/delete", form, headers).await;
        assert_eq!(status, 403, "{what}");
    }
    let (status, _) = me
        .post(
            "/instances",
            &[("name", "forged"), ("config", "")],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = me.post("/instances", &[("name", "forged")], &[]).await;
    assert_eq!(status, 403, "create without the CSRF token");
    let ledger = api.instance("ledger").await;
    assert_ne!(ledger["state"], "Deleting");
    assert_eq!(ledger["generation"], 1, "nothing was changed: {ledger}");
    let forged_created = plain_http()
        .get(format!("{endpoint}/api/v1/instances/forged"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forged_created.status(), 404);

    // A delete without the name typed is refused, with the reason.
    let (status, page) = me
        .post(
            "/instances/ledger/delete",
            &[("csrf", &csrf), ("confirm", "ledge")],
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(status, 409);
    assert!(page.contains("to confirm the delete"), "{page}");
    assert_eq!(api.instance("ledger").await["generation"], 1);

    // The same post with the token, from this origin, is accepted.
    let (status, _) = me
        .post(
            "/instances/ledger/delete",
            &[("csrf", &csrf), ("confirm", "ledger")],
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(api.instance("ledger").await["generation"], 2);

    // Sign-out ends the session on the server: the old cookie opens nothing.
    let (status, _) = me.post("/logout", &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, 303);
    let (status, _) = me.get("/instances").await;
    assert_eq!(status, 303, "the old cookie is dead");
    let events = me
        .http
        .get(format!("{endpoint}/api/v1/events"))
        .header("cookie", &me.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 401);

    // An expired session opens nothing either.
    psql(
        &up.state_url(),
        "update console_sessions set expires_at = now() - interval '1 second'",
    );
    let (status, _) = them.get("/instances").await;
    assert_eq!(status, 303);

    // The server's log never had the token.
    let log = std::fs::read_to_string(&up.log).unwrap();
    assert!(!log.contains(&token));
    assert!(!log.contains(&other_token));
}

/// An open event stream (a console left open) does not hold `pgplane up`
/// when it is stopped: Ctrl-C ends the stream and the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_end_when_the_control_plane_stops() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    let mut server = crate::walkthrough::up(&data_dir, free_port(), &scratch.path().join("up.log"));
    let env = read_env_file(&data_dir.join("pgplane.env"));
    let (endpoint, token) = (env[0].1.clone(), env[1].1.clone());
    let mut events = plain_http()
        .get(format!("{endpoint}/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: hello"));

    server.signal(nix::sys::signal::Signal::SIGINT);
    let code = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the server");
}
