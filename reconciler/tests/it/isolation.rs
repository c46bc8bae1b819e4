//! GitOps sources between organisations that do not trust each other: each
//! test performs an attack through the HTTP API and checks it fails.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use reconciler::sources::{SourceKey, FETCH_FAILED};
use reconciler::{AppState, SourcePolicy};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::sources::{commit, git, manifest};
use crate::support::{test_app, test_app_on, test_app_with, TestApp};

/// A public address literal: accepted by the default policy without any
/// lookup. Nothing here fetches from it (the sync loop does not run in
/// these tests).
const PUBLIC_URL: &str = "https://140.82.121.4/o/r.git";

fn repo(files: &[(&str, String)], message: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    let files: Vec<(&str, Option<String>)> =
        files.iter().map(|(f, c)| (*f, Some(c.clone()))).collect();
    commit(dir.path(), &files, message);
    dir
}

fn url_of(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

async fn add(t: &TestApp, token: &str, name: &str, url: &str) -> (StatusCode, Value) {
    t.call_as(
        token,
        "POST",
        "/api/v1/sources",
        Some(json!({"name": name, "url": url, "intervalSeconds": 3600})),
    )
    .await
}

/// Adds a source without reading its repository first.
async fn add_unverified(t: &TestApp, token: &str, name: &str, url: &str) -> (StatusCode, Value) {
    t.call_as(
        token,
        "POST",
        "/api/v1/sources",
        Some(json!({"name": name, "url": url, "intervalSeconds": 3600, "verify": false})),
    )
    .await
}

async fn sync(t: &TestApp, token: &str, name: &str) -> Value {
    let (status, body) = t
        .call_as(token, "POST", &format!("/api/v1/sources/{name}/sync"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn instances(t: &TestApp, token: &str) -> Vec<(String, String)> {
    let (_, list) = t.call_as(token, "GET", "/api/v1/instances", None).await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["owner"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn field(body: &Value) -> &str {
    body["fields"][0]["path"].as_str().unwrap_or_default()
}

/// No connection ever reached `listener`.
fn never_connected(listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "something connected to {}",
        listener.local_addr().unwrap()
    );
}

#[sqlx::test(migrations = false)]
async fn another_organisations_repository_on_the_machine_cannot_be_added(pool: PgPool) {
    let t = test_app(pool.clone()).await;
    let victim = repo(
        &[("orders.yaml", manifest("orders", "4MB"))],
        "acme: orders",
    );
    let globex = t.token_for("globex").await;
    let path = victim.path().to_str().unwrap().to_owned();
    for url in [url_of(victim.path()), path.clone(), format!("{path}/.git")] {
        let (status, body) = add(&t, &globex, "steal", &url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(field(&body), "url", "{body}");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains("local paths and file:// URLs are not allowed"),
            "{body}"
        );
    }
    let (_, list) = t.call_as(&globex, "GET", "/api/v1/sources", None).await;
    assert_eq!(list["items"], json!([]));
    assert!(instances(&t, &globex).await.is_empty());

    // Where the operator allows local sources, the same request is accepted.
    let local = SourcePolicy {
        allow_local: true,
        ..SourcePolicy::default()
    };
    let open = test_app_on(AppState::with_source_policy(pool, "local", local).await).await;
    let (status, body) = add(&open, &globex, "steal", &url_of(victim.path())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[sqlx::test(migrations = false)]
async fn private_hosts_are_refused_and_open_ports_look_like_closed_ones(pool: PgPool) {
    let t = test_app(pool).await;
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (s1, to_open) = add(
        &t,
        &t.token,
        "probe",
        &format!("https://127.0.0.1:{open_port}/x.git"),
    )
    .await;
    let (s2, to_closed) = add(
        &t,
        &t.token,
        "probe",
        &format!("https://127.0.0.1:{closed_port}/x.git"),
    )
    .await;
    assert_eq!(s1, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!((s1, &to_open), (s2, &to_closed), "the same answer");
    assert_eq!(field(&to_open), "url");

    for url in [
        "https://localhost/x.git",
        "https://[::1]/x.git",
        "https://[::ffff:127.0.0.1]/x.git",
        "http://2130706433/x.git",
        "http://0x7f.0.0.1/x.git",
        "http://127.1/x.git",
        "https://10.0.0.8/x.git",
        "https://172.16.3.4/x.git",
        "https://192.168.0.1/x.git",
        "https://100.64.0.1/x.git",
        "http://169.254.169.254/latest/meta-data",
        "https://[fd00::1]/x.git",
        "https://[fe80::1]/x.git",
        "git://224.0.0.1/x.git",
        "https://0.0.0.0/x.git",
        "ssh://git@localhost:22/x.git",
        "git@127.0.0.1:x.git",
        "https://evil.example#@127.0.0.1/x.git",
        "https://%31%32%37.0.0.1/x.git",
        "HTTPS://127.0.0.1/x.git",
        "ftp://127.0.0.1/x.git",
    ] {
        let (status, body) = add(&t, &t.token, "probe", url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(field(&body), "url", "{url}: {body}");
        assert!(
            !body.to_string().contains("loopback"),
            "which kind of address is not told: {body}"
        );
    }
    never_connected(&open);
}

/// An HTTP server answering every request with `response`, or closing the
/// connection at once when it is empty.
fn http_server(response: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if response.is_empty() {
                continue;
            }
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

#[sqlx::test(migrations = false)]
async fn fetch_errors_read_the_same_whatever_the_remote_did(pool: PgPool) {
    // The operator allows private hosts, so these are fetched from.
    let t = test_app_with(pool, SourcePolicy::allow_all()).await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let not_found =
        http_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let server_error =
        http_server("HTTP/1.1 500 Oops\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno");
    let hangs_up = http_server("");
    let garbage = http_server("SSH-2.0-OpenSSH_9.2\r\n");
    let mut seen = Vec::new();
    let mut refusals = Vec::new();
    for (name, port) in [
        ("closed", closed),
        ("not-found", not_found),
        ("server-error", server_error),
        ("hangs-up", hangs_up),
        ("garbage", garbage),
    ] {
        let url = format!("http://127.0.0.1:{port}/x.git");
        // Added with the check, the refusal reads the same too.
        let (status, refused) = add(&t, &t.token, name, &url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(field(&refused), "url", "{refused}");
        refusals.push((name, refused["fields"].clone()));
        let (status, body) = add_unverified(&t, &t.token, name, &url).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let record = sync(&t, &t.token, name).await;
        assert_eq!(record["outcome"], "fetch-failed", "{name}: {record}");
        let (_, status) = t
            .call("GET", &format!("/api/v1/sources/{name}"), None)
            .await;
        assert_eq!(status["syncs"][0]["errors"], record["errors"], "{name}");
        seen.push((name, record["errors"].clone()));
    }
    for (name, errors) in &seen {
        assert_eq!(errors, &json!([FETCH_FAILED]), "{name}");
    }
    for (name, fields) in &refusals {
        assert_eq!(fields, &refusals[0].1, "{name}");
    }
}

#[sqlx::test(migrations = false)]
async fn the_policy_is_checked_again_before_every_fetch(pool: PgPool) {
    // Added while the operator allowed everything…
    let open = test_app_with(pool.clone(), SourcePolicy::allow_all()).await;
    let victim = repo(&[("orders.yaml", manifest("orders", "4MB"))], "orders");
    assert_eq!(
        add(&open, &open.token, "local", &url_of(victim.path()))
            .await
            .0,
        StatusCode::CREATED
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lan = format!(
        "http://127.0.0.1:{}/x.git",
        listener.local_addr().unwrap().port()
    );
    assert_eq!(
        add_unverified(&open, &open.token, "lan", &lan).await.0,
        StatusCode::CREATED
    );

    // …then run with the default policy (as when a host's addresses change
    // after the source was added): nothing is fetched.
    let strict = test_app_on(AppState::new(pool.clone(), "local").await).await;
    let local = sync(&strict, &strict.token, "local").await;
    assert_eq!(local["outcome"], "fetch-failed");
    assert!(
        local["errors"][0]
            .as_str()
            .unwrap()
            .contains("local paths and file:// URLs are not allowed"),
        "{local}"
    );
    let lan = sync(&strict, &strict.token, "lan").await;
    assert_eq!(lan["outcome"], "fetch-failed");
    assert!(
        lan["errors"][0]
            .as_str()
            .unwrap()
            .contains("does not resolve to a public address"),
        "{lan}"
    );
    never_connected(&listener);
    assert!(instances(&strict, &strict.token).await.is_empty());
    assert_eq!(crate::sources::events(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn two_organisations_may_each_have_a_source_named_prod(pool: PgPool) {
    let t = test_app_with(pool, SourcePolicy::allow_all()).await;
    let globex = t.token_for("globex").await;
    let acme_repo = repo(
        &[("orders.yaml", manifest("orders", "4MB"))],
        "acme: orders",
    );
    // No metadata.org: the instances belong to the source's organisation.
    let globex_repo = repo(
        &[("billing.yaml", manifest("billing", "8MB"))],
        "globex: billing",
    );
    let (status, body) = add(&t, &t.token, "prod", &url_of(acme_repo.path())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["webhookPath"],
        "/api/v1/orgs/acme/sources/prod/webhook"
    );
    let (status, body) = add(&t, &globex, "prod", &url_of(globex_repo.path())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["webhookPath"],
        "/api/v1/orgs/globex/sources/prod/webhook"
    );
    let (status, body) = add(&t, &globex, "prod", &url_of(globex_repo.path())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already exists in this organisation"),
        "{body}"
    );

    // acme syncs first, then globex: neither sees the other's.
    assert_eq!(sync(&t, &t.token, "prod").await["outcome"], "applied");
    let globex_sync = sync(&t, &globex, "prod").await;
    assert_eq!(globex_sync["outcome"], "applied", "{globex_sync}");
    assert!(!globex_sync.to_string().contains("acme"), "{globex_sync}");
    assert_eq!(
        instances(&t, &t.token).await,
        [("orders".to_owned(), "git:prod".to_owned())]
    );
    assert_eq!(
        instances(&t, &globex).await,
        [("billing".to_owned(), "git:prod".to_owned())]
    );
    let (_, status) = t
        .call_as(&globex, "GET", "/api/v1/sources/prod", None)
        .await;
    assert_eq!(status["source"]["org"], "globex");
    let messages: Vec<&str> = status["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["globex: billing"]);
    assert!(!status.to_string().contains("acme"), "{status}");
}

#[sqlx::test(migrations = false)]
async fn a_deleted_source_name_stays_its_organisations(pool: PgPool) {
    let t = test_app_with(pool, SourcePolicy::allow_all()).await;
    let globex = t.token_for("globex").await;
    let acme_repo = repo(
        &[("orders.yaml", manifest("orders", "4MB"))],
        "acme: orders",
    );
    let globex_repo = repo(&[("billing.yaml", manifest("billing", "8MB"))], "globex");
    add(&t, &t.token, "prod", &url_of(acme_repo.path())).await;
    assert_eq!(sync(&t, &t.token, "prod").await["outcome"], "applied");
    let (_, orders) = t.call("GET", "/api/v1/instances/orders", None).await;
    crate::reports::report(&t, orders["id"].as_str().unwrap(), 1, "Created").await;

    // acme deletes its source; globex takes the name.
    let (status, _) = t.call("DELETE", "/api/v1/sources/prod", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        add(&t, &globex, "prod", &url_of(globex_repo.path()))
            .await
            .0,
        StatusCode::CREATED
    );
    let globex_sync = sync(&t, &globex, "prod").await;
    assert_eq!(globex_sync["outcome"], "applied", "{globex_sync}");
    assert!(!globex_sync.to_string().contains("acme"), "{globex_sync}");

    // acme's instance is still its source's, and acme can add it back.
    let (status, body) = t.call("DELETE", "/api/v1/instances/orders", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("managed by git:prod"),
        "{body}"
    );
    let (status, body) = add(&t, &t.token, "prod", &url_of(acme_repo.path())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    commit(
        acme_repo.path(),
        &[("orders.yaml", Some(manifest("orders", "8MB")))],
        "acme: more memory",
    );
    let resumed = sync(&t, &t.token, "prod").await;
    assert_eq!(resumed["outcome"], "applied", "{resumed}");
    assert_eq!(resumed["results"][0]["name"], "orders");
    assert_eq!(resumed["results"][0]["error"], Value::Null, "{resumed}");

    // Deleting one organisation's source leaves the other's alone.
    let (status, _) = t
        .call_as(&globex, "DELETE", "/api/v1/sources/prod", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t.call("GET", "/api/v1/sources/prod", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sync(&t, &t.token, "prod").await["outcome"], "unchanged");
}

fn signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn add_with_secret(t: &TestApp, token: &str, name: &str, secret: &str) -> Value {
    let (status, body) = t
        .call_as(
            token,
            "POST",
            "/api/v1/sources",
            Some(
                json!({"name": name, "url": PUBLIC_URL, "webhookSecret": secret, "verify": false}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[sqlx::test(migrations = false)]
async fn the_webhook_does_not_tell_which_sources_exist(pool: PgPool) {
    let t = test_app(pool).await;
    let globex = t.token_for("globex").await;
    let created = add_with_secret(&t, &t.token, "prod", "s3cret").await;
    assert!(created.get("webhookSecret").is_none(), "{created}");
    add_with_secret(&t, &globex, "prod", "globex-secret").await;
    let body = r#"{"ref":"refs/heads/main"}"#;
    let signed = |secret: &str| signature(secret, body);
    let hook = |org: &str, name: &str| format!("/api/v1/orgs/{org}/sources/{name}/webhook");
    let header = "x-hub-signature-256";

    let unknown = t
        .post_raw(&hook("acme", "nope"), &[(header, &signed("s3cret"))], body)
        .await;
    let unknown_org = t
        .post_raw(
            &hook("initech", "prod"),
            &[(header, &signed("s3cret"))],
            body,
        )
        .await;
    let unsigned = t.post_raw(&hook("acme", "prod"), &[], body).await;
    let wrong = t
        .post_raw(&hook("acme", "prod"), &[(header, &signed("guess"))], body)
        .await;
    let other_orgs_secret = t
        .post_raw(
            &hook("globex", "prod"),
            &[(header, &signed("s3cret"))],
            body,
        )
        .await;
    assert_eq!(unknown.0, StatusCode::UNAUTHORIZED, "{}", unknown.1);
    for other in [&unknown_org, &unsigned, &wrong, &other_orgs_secret] {
        assert_eq!(other, &unknown, "the same status and body");
    }
    let (status, _) = t
        .post_raw(&hook("acme", "prod"), &[(header, &signed("s3cret"))], body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = t
        .post_raw(
            &hook("globex", "prod"),
            &[(header, &signed("globex-secret"))],
            body,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The path without the organisation is gone, for every name alike.
    let old_known = t.post_raw("/api/v1/sources/prod/webhook", &[], body).await;
    let old_unknown = t.post_raw("/api/v1/sources/nope/webhook", &[], body).await;
    assert_eq!(old_known.0, StatusCode::NOT_FOUND);
    assert_eq!(old_known, old_unknown);
}

#[sqlx::test(migrations = false)]
async fn a_source_added_without_a_secret_gets_one_shown_once(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, created) = t
        .call(
            "POST",
            "/api/v1/sources",
            Some(json!({"name": "auto", "url": PUBLIC_URL, "verify": false})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["webhookSecret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    for (uri, pointer) in [
        ("/api/v1/sources/auto", "/source"),
        ("/api/v1/sources", "/items/0"),
    ] {
        let (_, body) = t.call("GET", uri, None).await;
        let source = body.pointer(pointer).unwrap();
        assert_eq!(source["name"], "auto");
        assert!(source.get("webhookSecret").is_none(), "{body}");
        assert!(!body.to_string().contains(&secret), "{body}");
    }
    let body = "{}";
    let hook = "/api/v1/orgs/acme/sources/auto/webhook";
    let (status, _) = t.post_raw(hook, &[], body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "unsigned");
    let (status, _) = t
        .post_raw(
            hook,
            &[("x-hub-signature-256", &signature(&secret, body))],
            body,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (status, body) = t
        .call(
            "POST",
            "/api/v1/sources",
            Some(json!({"name": "empty", "url": PUBLIC_URL, "webhookSecret": "", "verify": false})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field(&body), "webhookSecret");
}

#[sqlx::test(migrations = false)]
async fn a_flood_of_webhook_calls_costs_one_fetch(pool: PgPool) {
    let t = test_app(pool).await;
    add_with_secret(&t, &t.token, "prod", "s3cret").await;
    let prod = SourceKey::new("acme", "prod");
    let far = Instant::now() + Duration::from_secs(3600);
    assert_eq!(
        t.state.gitops.take_due(far),
        std::slice::from_ref(&prod),
        "the new source's first sync"
    );

    let body = "{}";
    let hook = "/api/v1/orgs/acme/sources/prod/webhook";
    for _ in 0..20 {
        let (status, _) = t.post_raw(hook, &[], body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(
        t.state.gitops.take_due(far).is_empty(),
        "unsigned calls request nothing"
    );
    let sig = signature("s3cret", body);
    for _ in 0..20 {
        let (status, _) = t
            .post_raw(hook, &[("x-hub-signature-256", &sig)], body)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    assert_eq!(
        t.state.gitops.take_due(far),
        [prod],
        "twenty calls, one sync"
    );
    assert!(t.state.gitops.take_due(far).is_empty());
}

#[sqlx::test(migrations = false)]
async fn intervals_below_the_minimum_are_refused(pool: PgPool) {
    let t = test_app(pool).await;
    for (interval, want) in [
        (0, StatusCode::UNPROCESSABLE_ENTITY),
        (1, StatusCode::UNPROCESSABLE_ENTITY),
        (9, StatusCode::UNPROCESSABLE_ENTITY),
        (86_401, StatusCode::UNPROCESSABLE_ENTITY),
        (10, StatusCode::CREATED),
    ] {
        let (status, body) = t
            .call(
                "POST",
                "/api/v1/sources",
                Some(json!({"name": "prod", "url": PUBLIC_URL, "intervalSeconds": interval, "verify": false})),
            )
            .await;
        assert_eq!(status, want, "{interval}: {body}");
        if want != StatusCode::CREATED {
            assert_eq!(field(&body), "intervalSeconds", "{body}");
            assert!(
                body["fields"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("between 10 and 86400"),
                "{body}"
            );
        }
    }
}

#[sqlx::test(migrations = false)]
async fn clients_may_set_only_their_own_owners(pool: PgPool) {
    let t = test_app(pool).await;
    for owner in ["git:prod", "git:../../etc", "root", "", "API"] {
        let (status, body) = t
            .call(
                "POST",
                "/api/v1/instances",
                Some(json!({"name": "orders", "owner": owner})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{owner:?}: {body}"
        );
        assert_eq!(field(&body), "owner", "{body}");
        let message = body["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains("one of api, terraform"), "{message}");
    }
    assert!(t.queued_events().await.is_empty(), "nothing enqueued");
    for (name, owner, want) in [
        ("a", Some("terraform"), "terraform"),
        ("b", Some("api"), "api"),
        ("c", None, "api"),
    ] {
        let (status, body) = t
            .call(
                "POST",
                "/api/v1/instances",
                Some(json!({"name": name, "owner": owner})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["owner"], want);
    }
    // What Terraform created changes through Terraform: the API is told
    // who owns it, and may override only when it says so.
    let (status, body) = t.call("DELETE", "/api/v1/instances/a", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "owned_elsewhere", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("managed by terraform") && message.contains("--override-owner"),
        "{message}"
    );
    for (method, uri) in [
        ("POST", "/api/v1/instances/a/stop"),
        ("POST", "/api/v1/instances/a/heal"),
    ] {
        let (status, body) = t.call(method, uri, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{uri}: {body}");
    }
    let (status, body) = t
        .call_with(
            &t.token,
            &[("pgplane-owner", "terraform")],
            "DELETE",
            "/api/v1/instances/b",
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "and the other way round: {body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("managed by api"),
        "{body}"
    );
    let (status, body) = t
        .call_with(
            &t.token,
            &[("pgplane-owner", "chef")],
            "DELETE",
            "/api/v1/instances/b",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field(&body), "pgplane-owner", "{body}");
    let (status, _) = t
        .call_with(
            &t.token,
            &[("pgplane-owner", "terraform")],
            "DELETE",
            "/api/v1/instances/a",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "Terraform deletes its own");
    let (status, body) = t
        .call_with(
            &t.token,
            &[
                ("pgplane-override-owner", "true"),
                ("pgplane-owner", "terraform"),
            ],
            "DELETE",
            "/api/v1/instances/b",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "an explicit override: {body}");

    // Handing an instance over (what `terraform import` does) is the
    // owner's decision, or an override; it is recorded.
    let (status, body) = t
        .call_with(
            &t.token,
            &[("pgplane-owner", "terraform")],
            "PUT",
            "/api/v1/instances/c",
            Some(json!({"spec": {}, "owner": "terraform"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = t
        .call_with(
            &t.token,
            &[
                ("pgplane-owner", "terraform"),
                ("pgplane-override-owner", "true"),
            ],
            "PUT",
            "/api/v1/instances/c",
            Some(json!({"spec": {}, "owner": "terraform"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "terraform");
    assert_eq!(body["generation"], 1, "nothing else changed");
    let (_, history) = t.call("GET", "/api/v1/instances/c/history", None).await;
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "Owner", "{history}");
    assert_eq!(last["detail"], "owner: api → terraform", "{history}");
    let (status, body) = t
        .call_with(
            &t.token,
            &[("pgplane-owner", "terraform")],
            "PUT",
            "/api/v1/instances/c",
            Some(json!({"spec": {}, "owner": "git:prod"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field(&body), "owner", "{body}");
}

fn modes_under(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.display().to_string(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

#[sqlx::test(migrations = false)]
async fn the_git_cache_is_private_and_goes_with_its_source(pool: PgPool) {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("git-cache");
    // As an older version left it.
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state =
        AppState::with_sources(pool, "local", cache.clone(), SourcePolicy::allow_all()).await;
    let t = test_app_on(state).await;
    let a = repo(&[("orders.yaml", manifest("orders", "4MB"))], "orders");
    let b = repo(&[("users.yaml", manifest("users", "4MB"))], "users");
    add(&t, &t.token, "prod", &url_of(a.path())).await;
    add(&t, &t.token, "prod-eu", &url_of(b.path())).await;
    assert_eq!(sync(&t, &t.token, "prod").await["outcome"], "applied");
    assert_eq!(sync(&t, &t.token, "prod-eu").await["outcome"], "applied");

    let modes = modes_under(&cache);
    assert!(modes.len() > 10, "{modes:?}");
    for (path, mode) in &modes {
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}");
    }
    assert_eq!(modes[0].1, 0o700, "the cache root");
    assert!(cache.join("acme/prod").is_dir());

    let (status, _) = t.call("DELETE", "/api/v1/sources/prod", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!cache.join("acme/prod").exists(), "removed with its source");
    assert!(
        cache.join("acme/prod-eu").is_dir(),
        "another source's stays"
    );
}

#[sqlx::test(migrations = false)]
async fn existing_sources_keep_their_syncs_and_get_a_secret(pool: PgPool) {
    for sql in [
        include_str!("../../migrations/0001_init.sql"),
        include_str!("../../migrations/0002_sources.sql"),
    ] {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    }
    sqlx::raw_sql(
        "insert into orgs (name) values ('acme'), ('globex');
         insert into sources (name, org, url, branch, webhook_secret)
              values ('prod', 'acme', 'https://example.org/a.git', 'main', null),
                     ('signed', 'globex', 'https://example.org/b.git', 'main', 'kept');
         insert into source_syncs (source, outcome) values ('prod', 'applied'), ('signed', 'applied');",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!("../../migrations/0003_source_isolation.sql"))
        .execute(&pool)
        .await
        .unwrap();

    let secrets: Vec<(String, String, String)> =
        sqlx::query_as("select org, name, webhook_secret from sources order by org")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(secrets[0].1, "prod");
    assert_eq!(secrets[0].2.len(), 64, "generated");
    assert!(secrets[0].2.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(secrets[1].2, "kept");
    let syncs: Vec<(String, String)> =
        sqlx::query_as("select org, source from source_syncs order by org")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        syncs,
        [
            ("acme".to_owned(), "prod".to_owned()),
            ("globex".to_owned(), "signed".to_owned())
        ]
    );
    // The same name in another organisation; deleting one keeps the other's syncs.
    sqlx::raw_sql(
        "insert into sources (name, org, url, branch, webhook_secret)
              values ('prod', 'globex', 'https://example.org/c.git', 'main', 'x');
         insert into source_syncs (org, source, outcome) values ('globex', 'prod', 'applied');
         delete from sources where org = 'acme' and name = 'prod';",
    )
    .execute(&pool)
    .await
    .unwrap();
    let left: i64 = sqlx::query_scalar("select count(*) from source_syncs where source = 'prod'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
}
