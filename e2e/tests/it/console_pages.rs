//! The console's edit form, GitOps pages, drift overview and dashboard in
//! headless Chromium against `pgplane up` with real instances and a real git
//! repository, and the same pages attacked over plain HTTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::json;

use crate::console::{endpoint_and_token, plain_http, Api, Browser, HttpSession, WAIT};
use crate::support::*;

fn manifest(name: &str, work_mem: &str) -> String {
    format!(
        "apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\nspec:\n  config:\n    work_mem: {work_mem}\n"
    )
}

/// A bare "remote" with `instances/<name>.yaml` pushed, and its clone.
struct Repo {
    url: String,
    work: PathBuf,
}

impl Repo {
    fn new(up: &Embedded, name: &str, work_mem: &str) -> Repo {
        let remote = up.path("remote.git");
        let work = up.path("work");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        git(
            remote.parent().unwrap(),
            &["clone", "-q", remote.to_str().unwrap(), "work"],
        );
        git(&work, &["checkout", "-q", "-b", "main"]);
        let repo = Repo {
            url: format!("file://{}", remote.display()),
            work,
        };
        repo.push(name, &manifest(name, work_mem), &format!("add {name}"));
        repo
    }

    fn push(&self, name: &str, content: &str, message: &str) {
        let dir = self.work.join("instances");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.yaml")), content).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
    }
}

async fn sign_in(b: &Browser, endpoint: &str, token: &str) {
    b.client.goto(&format!("{endpoint}/login")).await.unwrap();
    b.find("#token").await.send_keys(token).await.unwrap();
    b.find("form[action='/login'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_path(|p| p == "/instances").await;
}

/// Replaces an input's text.
async fn fill(b: &Browser, css: &str, text: &str) {
    let input = b.find(css).await;
    input.clear().await.unwrap();
    if !text.is_empty() {
        input.send_keys(text).await.unwrap();
    }
}

async fn text(b: &Browser, css: &str) -> String {
    b.find(css).await.text().await.unwrap()
}

async fn absent(b: &Browser, css: &str) -> bool {
    b.client
        .find_all(Locator::Css(css))
        .await
        .unwrap()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_edits_an_instance_after_reviewing_it_and_shows_sources_drift_and_activity() {
    let up = Embedded::start();
    let (endpoint, token) = endpoint_and_token(&up);
    let api = Api::new(&endpoint, &token);
    api.call(
        reqwest::Method::POST,
        "/api/v1/instances",
        Some(json!({"name": "shop", "spec": {"config": {"work_mem": "8MB"}}})),
    )
    .await;
    let b = Browser::start().await;
    sign_in(&b, &endpoint, &token).await;
    b.wait_text("tr[data-name='shop'] [data-role=state]", "Up", WAIT)
        .await;
    let id = api.instance("shop").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The edit form starts from the declared spec.
    b.client
        .goto(&format!("{endpoint}/instances/shop"))
        .await
        .unwrap();
    b.find("#action-edit").await.click().await.unwrap();
    b.wait_path(|p| p.ends_with("/edit")).await;
    assert_eq!(b.value("#config").await.trim(), "work_mem=8MB");

    // A bad value: the error next to its field, the input kept.
    fill(&b, "#config", "work_mem=lots").await;
    fill(&b, "#memory", "lots").await;
    b.find("#edit-review").await.click().await.unwrap();
    let error = text(&b, "#err-config").await;
    assert!(error.contains("work_mem"), "{error}");
    assert!(text(&b, "#err-memory").await.contains("lots"));
    assert_eq!(
        b.find("#config").await.attr("aria-invalid").await.unwrap(),
        Some("true".into())
    );
    assert_eq!(b.value("#config").await, "work_mem=lots");
    assert_eq!(b.value("#memory").await, "lots");
    b.screenshot("edit-refused").await;

    // Reviewing a preload library: the restart is predicted, nothing saved.
    fill(&b, "#memory", "1Gi").await;
    fill(&b, "#extensions", "pg_stat_statements").await;
    fill(
        &b,
        "#config",
        "work_mem=16MB\nshared_preload_libraries=pg_stat_statements",
    )
    .await;
    b.find("#edit-review").await.click().await.unwrap();
    let prediction = text(&b, "#restart-prediction").await;
    assert!(
        prediction.contains("This change restarts Postgres: shared_preload_libraries"),
        "{prediction}"
    );
    assert!(text(&b, "#changes").await.contains("config.work_mem"));
    b.screenshot("edit-review-restart").await;
    assert_eq!(api.instance("shop").await["generation"], 1);
    b.find("#edit-back").await.click().await.unwrap();
    assert!(b
        .value("#config")
        .await
        .contains("shared_preload_libraries"));

    // A reload-only change: reviewed, saved, and followed live to Up.
    fill(&b, "#extensions", "").await;
    fill(&b, "#config", "work_mem=16MB").await;
    b.find("#edit-review").await.click().await.unwrap();
    assert!(text(&b, "#restart-prediction")
        .await
        .contains("Applied without a restart"));
    b.screenshot("edit-review").await;
    b.find("#edit-save").await.click().await.unwrap();
    b.wait_path(|p| p == format!("/instances/{id}")).await;
    b.find("#instance").await;
    b.mark().await;
    b.wait_text("h1 [data-role=state]", "Up", WAIT).await;
    assert!(b.still_marked().await);
    let shop = eventually("work_mem 16MB observed", WAIT, || {
        let v = json(&["instance", "get", "shop"], &up.env());
        (v["observed"]["config"]["work_mem"] == "16MB").then_some(v)
    });
    assert_eq!(shop["generation"], 2);
    assert_eq!(shop["spec"]["resources"]["memory"], "1Gi");
    b.client.refresh().await.unwrap();
    let history = text(&b, "#history").await;
    assert!(history.contains("Configuring"), "{history}");

    // Activity: a client connected, some transactions and a bigger
    // database show in the samples and on the page's charts.
    let uri = api
        .call(
            reqwest::Method::GET,
            "/api/v1/instances/shop/credentials",
            None,
        )
        .await["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let (client, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let first_size = eventually("a first activity sample", WAIT, || {
        let v = json(&["instance", "activity", "shop"], &up.env());
        v["items"].as_array()?.last()?["databaseBytes"].as_i64()
    });
    client
        .batch_execute(
            "create table filler as select g, repeat('x', 200) as pad from generate_series(1, 40000) g",
        )
        .await
        .unwrap();
    for i in 0..50 {
        client
            .execute("insert into filler values ($1, 'y')", &[&i])
            .await
            .unwrap();
    }
    let last = eventually("the workload in the samples", WAIT, || {
        let v = json(&["instance", "activity", "shop"], &up.env());
        let items = v["items"].as_array()?;
        let last = items.last()?.clone();
        let grew = last["databaseBytes"].as_i64()? > first_size + 5_000_000;
        let connected = last["connections"].as_i64()? >= 1;
        // Each chart draws a line: two points at least (a rate needs two
        // samples, so two rates need three).
        let rates = items
            .iter()
            .filter(|i| i["transactionsPerSecond"].as_f64().is_some())
            .count();
        (grew && connected && rates >= 2).then_some(last)
    });
    assert!(last["transactionsPerSecond"].as_f64().is_some(), "{last}");
    b.client
        .goto(&format!("{endpoint}/instances/shop"))
        .await
        .unwrap();
    for chart in ["#connections-chart", "#tps-chart", "#size-chart"] {
        let points: usize = b
            .find(chart)
            .await
            .attr("data-points")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert!(points >= 2, "{chart}: {points} points");
    }
    assert!(text(&b, "#connections-text")
        .await
        .starts_with("Client connections: now "));
    let size = text(&b, "#size-text").await;
    assert!(size.contains("MiB"), "{size}");
    b.screenshot("instance-activity").await;
    drop(client);

    // GitOps: a source, synced now from the page, its history per commit.
    let repo = Repo::new(&up, "orders", "16MB");
    ok(
        &[
            "source",
            "add",
            "prod",
            "--git",
            &repo.url,
            "--branch",
            "main",
            "--path",
            "instances",
        ],
        &up.env(),
    );
    b.client.goto(&format!("{endpoint}/sources")).await.unwrap();
    b.find("tr[data-source='prod']").await;
    b.find("a[href='/sources/prod']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#sync-now").await.click().await.unwrap();
    b.find("#synced").await;
    let syncs = text(&b, "#syncs").await;
    assert!(
        syncs.contains("add orders") && syncs.contains("Ada"),
        "{syncs}"
    );
    assert!(syncs.contains("orders: create"), "{syncs}");
    eventually("orders Up", WAIT, || {
        let v = json(&["instance", "get", "orders"], &up.env());
        (v["state"] == "Up").then_some(())
    });

    // A git-owned instance has no edit actions, and says who owns it.
    b.client
        .goto(&format!("{endpoint}/instances/orders"))
        .await
        .unwrap();
    assert!(text(&b, "#read-only").await.contains("GitOps source"));
    assert!(absent(&b, "#action-edit").await);

    // A failed sync shows the file and line.
    repo.push("orders", &manifest("orders", "lots"), "break work_mem");
    b.client
        .goto(&format!("{endpoint}/sources/prod"))
        .await
        .unwrap();
    b.find("#sync-now").await.click().await.unwrap();
    assert!(text(&b, "#synced").await.contains("rejected"));
    let syncs = text(&b, "#syncs").await;
    assert!(syncs.contains("break work_mem"), "{syncs}");
    assert!(syncs.contains("orders.yaml:7"), "file:line in {syncs}");
    assert_eq!(text(&b, "h1 [data-role=health]").await, "degraded");
    b.screenshot("source").await;
    b.client.goto(&format!("{endpoint}/sources")).await.unwrap();
    assert_eq!(
        text(&b, "tr[data-source='prod'] [data-role=health]").await,
        "degraded"
    );
    b.screenshot("sources").await;

    // The drift overview and the dashboard.
    b.client.goto(&format!("{endpoint}/drift")).await.unwrap();
    b.find("#drift-summary").await;
    assert!(text(&b, "#owners").await.contains("git:prod"));
    b.screenshot("drift").await;
    b.client
        .goto(&format!("{endpoint}/dashboard"))
        .await
        .unwrap();
    let fleet = text(&b, "#fleet-text").await;
    assert!(fleet.contains("2 live instances: 2 Up."), "{fleet}");
    let activity = text(&b, "#activity-text").await;
    assert!(
        activity.contains("state changes in the last 24 hours"),
        "{activity}"
    );
    let bars = b
        .client
        .find_all(Locator::Css("#activity-chart g.hour"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 24);
    b.screenshot("dashboard").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_hide_other_organisations_refuse_forged_posts_and_limit_sign_in() {
    let up = Embedded::start();
    let (endpoint, token) = endpoint_and_token(&up);
    let api = Api::new(&endpoint, &token);
    api.call(
        reqwest::Method::POST,
        "/api/v1/instances",
        Some(json!({"name": "ledger", "spec": {}})),
    )
    .await;
    let repo = Repo::new(&up, "orders", "16MB");
    ok(
        &[
            "source",
            "add",
            "prod",
            "--git",
            &repo.url,
            "--branch",
            "main",
            "--path",
            "instances",
        ],
        &up.env(),
    );
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
    let (me, _) = HttpSession::sign_in(&endpoint, &token).await;
    let (them, _) = HttpSession::sign_in(&endpoint, &other_token).await;
    let csrf = me.csrf().await;
    let their_csrf = them.csrf().await;
    let syncs = || psql(&up.state_url(), "select count(*) from source_syncs");

    // Another organisation sees none of this one's sources, drift or fleet.
    assert_eq!(them.get("/sources/prod").await.0, 404);
    let (status, list) = them.get("/sources").await;
    assert_eq!(status, 200);
    assert!(!list.contains("prod"), "{list}");
    assert_eq!(them.get("/instances/ledger/edit").await.0, 404);
    let (_, drift) = them.get("/drift").await;
    assert!(!drift.contains("ledger"));
    let (_, dashboard) = them.get("/dashboard").await;
    assert!(dashboard.contains("No live instances."), "{dashboard}");
    let before = syncs();
    let (status, _) = them
        .post("/sources/prod/sync", &[("csrf", &their_csrf)], &[])
        .await;
    assert_eq!(status, 404);
    let (status, _) = them
        .post(
            "/instances/ledger/edit",
            &[("csrf", &their_csrf), ("generation", "1"), ("step", "save")],
            &[],
        )
        .await;
    assert_eq!(status, 404);

    // Forged posts: no CSRF token, or another origin.
    let edit = [
        ("generation", "1"),
        ("cpu", "1"),
        ("memory", "1Gi"),
        ("storage", "10Gi"),
        ("config", "work_mem=1MB"),
        ("step", "save"),
    ];
    assert_eq!(me.post("/sources/prod/sync", &[], &[]).await.0, 403);
    assert_eq!(me.post("/instances/ledger/edit", &edit, &[]).await.0, 403);
    let mut with_csrf = edit.to_vec();
    with_csrf.push(("csrf", &csrf));
    let (status, _) = me
        .post(
            "/instances/ledger/edit",
            &with_csrf,
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = me
        .post(
            "/sources/prod/sync",
            &[("csrf", &csrf)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(syncs(), before, "no sync ran");
    let ledger = api.instance("ledger").await;
    assert_eq!(ledger["generation"], 1, "nothing was changed: {ledger}");
    assert!(ledger["spec"]["config"].get("work_mem").is_none());

    // The same edit with the token and from this origin is saved.
    let (status, page) = me
        .post(
            "/instances/ledger/edit",
            &with_csrf,
            &[("origin", &endpoint)],
        )
        .await;
    assert_eq!(status, 303, "{page}");
    assert_eq!(
        api.instance("ledger").await["spec"]["config"]["work_mem"],
        "1MB"
    );

    // Sign-in attempts: a few per second per client; then 429 with
    // Retry-After, even for the right token.
    let http = plain_http();
    let wrong = "pgp_notavalidtokennotavalidtokennotavalid0";
    let mut limited = None;
    for attempt in 0..30 {
        let resp = http
            .post(format!("{endpoint}/login"))
            .form(&[("token", wrong)])
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            limited = Some((attempt, resp));
            break;
        }
        assert_eq!(resp.status(), 401);
    }
    let (attempt, resp) = limited.expect("sign-in attempts are limited");
    assert!(attempt <= 10, "limited after {attempt} attempts");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After: {retry}");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Too many sign-in attempts"));
    let right = http
        .post(format!("{endpoint}/login"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 429);
    assert!(right.headers().get("set-cookie").is_none());
    // Once the bucket refills, the right token opens a session again.
    let start = Instant::now();
    loop {
        let resp = http
            .post(format!("{endpoint}/login"))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        if resp.status() == 303 {
            assert!(resp.headers().get("set-cookie").is_some());
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(start.elapsed() < Duration::from_secs(10), "still limited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&up.log).unwrap();
    assert!(!log.contains(&token));
}
