//! The web console in-process: sessions, forms, the list at scale and the
//! event stream, each through the real router and a real database.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use reconciler::AppState;
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceExt;

use crate::support::{test_app_on, TestApp};

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub body: String,
}

pub async fn send(t: &TestApp, req: Request<Body>) -> Page {
    let resp = t.app.clone().oneshot(req).await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let location = header("location");
    let set_cookie = header("set-cookie");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        location,
        set_cookie,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A signed-in browser: its cookie.
pub struct Browser<'a> {
    t: &'a TestApp,
    pub cookie: String,
}

impl<'a> Browser<'a> {
    pub async fn sign_in(t: &'a TestApp, token: &str) -> Browser<'a> {
        let page = send(
            t,
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form_body(&[("token", token)])))
                .unwrap(),
        )
        .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.set_cookie.unwrap();
        Browser {
            t,
            cookie: cookie.split(';').next().unwrap().to_owned(),
        }
    }

    pub async fn get(&self, uri: &str) -> Page {
        send(
            self.t,
            Request::get(uri)
                .header("cookie", &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, uri: &str, fields: &[(&str, &str)]) -> Page {
        send(
            self.t,
            Request::post(uri)
                .header("cookie", &self.cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form_body(fields)))
                .unwrap(),
        )
        .await
    }

    pub async fn csrf(&self) -> String {
        let page = self.get("/instances/new").await;
        let at = page.body.find("name=\"csrf\" value=\"").unwrap() + 19;
        page.body[at..at + 64].to_owned()
    }
}

pub async fn app(pool: PgPool) -> TestApp {
    let mut state = AppState::new(pool, "local").await;
    state.max_instances_per_org = 0;
    test_app_on(state).await
}

#[sqlx::test]
async fn a_session_is_a_hashed_random_id_in_a_strict_http_only_cookie(pool: PgPool) {
    let t = app(pool).await;
    let page = send(&t, Request::get("/instances").body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));

    let b = Browser::sign_in(&t, &t.token).await;
    let id = b.cookie.strip_prefix("pgplane_session=").unwrap();
    assert_eq!(id.len(), 64);
    let stored: Vec<String> = sqlx::query_scalar("select id_hash from console_sessions")
        .fetch_all(&t.state.pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        [reconciler::auth::hash_token(id)],
        "only the hash is kept"
    );
    let page = b.get("/instances").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("acme"));
    assert!(!page.body.contains(&t.token));
    assert!(!page.body.contains(id), "the session id is not in the page");

    let again = Browser::sign_in(&t, &t.token).await;
    assert_ne!(again.cookie, b.cookie, "every sign-in a new id");
    let replaced = send(
        &t,
        Request::post("/login")
            .header("cookie", &again.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form_body(&[("token", &t.token)])))
            .unwrap(),
    )
    .await;
    assert_eq!(replaced.status, StatusCode::SEE_OTHER);
    assert_eq!(
        again.get("/instances").await.status,
        StatusCode::SEE_OTHER,
        "signing in again ends the session held before"
    );

    sqlx::query("update console_sessions set expires_at = now()")
        .execute(&t.state.pool)
        .await
        .unwrap();
    assert_eq!(b.get("/instances").await.status, StatusCode::SEE_OTHER);
}

#[sqlx::test]
async fn the_create_form_puts_each_api_error_next_to_its_input_and_keeps_it(pool: PgPool) {
    let t = app(pool).await;
    let b = Browser::sign_in(&t, &t.token).await;
    let csrf = b.csrf().await;
    let page = b
        .post(
            "/instances",
            &[
                ("csrf", &csrf),
                ("name", "Bad_Name"),
                ("postgres_version", "15"),
                ("cpu", "1"),
                ("memory", "lots"),
                ("storage", "10Gi"),
                ("extensions", "hstore, Not An Extension"),
                ("config", "work_mem=lots\nshared_buffers=128MB"),
            ],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    let after = |id: &str| {
        let at = page
            .body
            .find(&format!("id=\"err-{id}\""))
            .unwrap_or_else(|| panic!("no error for {id}: {}", page.body));
        page.body[at..].split("</ul>").next().unwrap().to_owned()
    };
    assert!(
        after("name").contains("lower-case letters"),
        "{}",
        after("name")
    );
    assert!(after("memory").contains("lots"), "{}", after("memory"));
    assert!(after("extensions").contains("Not An Extension"));
    assert!(after("config").contains("work_mem"), "{}", after("config"));
    assert!(!after("config").contains("shared_buffers"));
    assert!(page.body.contains("value=\"Bad_Name\""));
    assert!(page.body.contains("value=\"lots\""));
    assert!(page.body.contains("work_mem=lots\nshared_buffers=128MB"));
    let (_, list) = t.call("GET", "/api/v1/instances", None).await;
    assert_eq!(list["items"], json!([]), "nothing was created");

    // A line that is not key=value is refused with the rest still checked.
    let page = b
        .post(
            "/instances",
            &[
                ("csrf", &csrf),
                ("name", "Bad_Name"),
                ("config", "work_mem"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"err-config\""));
    assert!(page.body.contains("id=\"err-name\""));

    let page = b
        .post(
            "/instances",
            &[
                ("csrf", &csrf),
                ("name", "orders"),
                ("extensions", "hstore"),
                ("config", "work_mem=16MB"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (status, created) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["spec"]["config"]["work_mem"], "16MB");
    assert_eq!(created["spec"]["extensions"], json!([{"name": "hstore"}]));
    let history: Vec<String> = sqlx::query_scalar("select actor from instance_history order by id")
        .fetch_all(&t.state.pool)
        .await
        .unwrap();
    assert!(
        history[0].starts_with("token:"),
        "acts as the session's token: {history:?}"
    );

    // The same name again: a conflict, shown at the name.
    let page = b
        .post("/instances", &[("csrf", &csrf), ("name", "orders")])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("id=\"err-name\""));
    assert!(page.body.contains("already exists"));
}

#[sqlx::test]
async fn a_refused_action_shows_the_state_machines_reason_and_changes_nothing(pool: PgPool) {
    let t = app(pool).await;
    let (status, _) = t
        .call(
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "orders", "spec": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let b = Browser::sign_in(&t, &t.token).await;
    let csrf = b.csrf().await;
    let page = b
        .post("/instances/orders/restart", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(
        page.body.contains("instance has not been created yet"),
        "{}",
        page.body
    );
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["generation"], 1);

    // A Terraform-owned instance is read-only here.
    t.call(
        "POST",
        "/api/v1/instances",
        Some(json!({"name": "infra", "spec": {}, "owner": "terraform"})),
    )
    .await;
    // A Terraform-owned instance changes here only when told to
    // override its owner, as with the CLI's --override-owner.
    let page = b.get("/instances/infra").await;
    assert!(page.body.contains("managed by Terraform"));
    assert!(page.body.contains("Change it here anyway"), "{}", page.body);
    assert!(
        page.body.contains("name=\"override_owner\" value=\"true\""),
        "{}",
        page.body
    );
    let page = b
        .post(
            "/instances/infra/delete",
            &[("csrf", &csrf), ("confirm", "infra")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    let (_, inst) = t.call("GET", "/api/v1/instances/infra", None).await;
    assert_eq!(inst["state"], "Submitted");
    let page = b.get("/instances/infra/edit").await;
    assert!(page.body.contains("Not changed here."), "{}", page.body);
    let page = b.get("/instances/infra/edit?override_owner=true").await;
    assert!(!page.body.contains("Not changed here."), "{}", page.body);
    let page = b
        .post(
            "/instances/infra/delete",
            &[
                ("csrf", &csrf),
                ("confirm", "infra"),
                ("override_owner", "true"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (_, inst) = t.call("GET", "/api/v1/instances/infra", None).await;
    assert_eq!(inst["state"], "Deleting");
    assert_eq!(inst["owner"], "terraform", "the owner stays");
}

#[sqlx::test]
async fn the_list_reads_one_page_of_ten_thousand(pool: PgPool) {
    let t = app(pool).await;
    sqlx::query(
        "insert into instances (id, org, name, data_plane, owner, state, spec, generation, created_at)
         select gen_random_uuid(), 'acme', format('db-%s', lpad(i::text, 5, '0')), 'local', 'api',
                case when i % 10 = 0 then 'Error' else 'Up' end,
                '{\"postgresVersion\": \"15\", \"extensions\": [{\"name\": \"hstore\"}]}'::jsonb, 1,
                now() - make_interval(secs => i)
         from generate_series(1, 10000) as i",
    )
    .execute(&t.state.pool)
    .await
    .unwrap();
    let b = Browser::sign_in(&t, &t.token).await;
    let rows = |body: &str| body.matches("<tr data-id=").count();

    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let page = b.get("/instances").await;
        times.push(start.elapsed());
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(rows(&page.body), 50);
        assert!(page.body.contains("Showing 1–50 of 10000"));
        assert!(page.body.contains("Page 1 of 200"));
    }
    times.sort();
    eprintln!(
        "list page of 10,000 instances: median {:?}, max {:?}",
        times[2], times[4]
    );

    let last = b.get("/instances?page=200").await;
    assert!(last.body.contains("Showing 9951–10000 of 10000"));
    assert!(last.body.contains("db-10000"));

    // The pager's links read from a place in the order, not an offset.
    let link = |body: &str, rel: &str| -> String {
        let at = body
            .find(&format!("rel=\"{rel}\" href=\""))
            .unwrap_or_else(|| panic!("no {rel} link"));
        let rest = &body[at + rel.len() + 13..];
        rest[..rest.find('"').unwrap()].replace("&amp;", "&")
    };
    let first = b.get("/instances").await;
    let next = link(&first.body, "next");
    assert!(next.contains("after="), "{next}");
    let second = b.get(&next).await;
    assert!(second.body.contains("Showing 51–100 of 10000"), "{next}");
    assert!(second.body.contains("Page 2 of 200"));
    assert!(second.body.contains("db-00051") && second.body.contains("db-00100"));
    assert!(!second.body.contains("db-00050") && !second.body.contains("db-00101"));
    let third = b.get(&link(&second.body, "next")).await;
    assert!(third.body.contains("db-00101") && third.body.contains("Page 3 of 200"));
    let back = b.get(&link(&third.body, "prev")).await;
    assert_eq!(rows(&back.body), 50);
    assert!(back.body.contains("db-00051") && back.body.contains("db-00100"));
    assert!(back.body.contains("Showing 51–100 of 10000"));
    let end = b.get(&link(&first.body, "last")).await;
    assert!(end.body.contains("Showing 9951–10000 of 10000"));
    assert!(end.body.contains("db-09951") && end.body.contains("db-10000"));
    assert!(!end.body.contains("rel=\"next\""));
    let before_end = b.get(&link(&end.body, "prev")).await;
    assert!(before_end.body.contains("db-09901") && before_end.body.contains("db-09950"));
    // Sorted another way, the cursor follows that order.
    let newest = b.get("/instances?sort=age").await;
    let older = b.get(&link(&newest.body, "next")).await;
    assert!(older.body.contains("db-00051") && !older.body.contains("db-00050"));
    let by_state = b.get("/instances?sort=state&dir=desc").await;
    let after_state = b.get(&link(&by_state.body, "next")).await;
    assert_eq!(rows(&after_state.body), 50);
    assert!(after_state.body.contains("Page 2 of 200"));
    // A malformed place or page is a client's error that names it.
    for (query, field) in [
        ("after=yesterday", "after"),
        ("before=1.2.3", "before"),
        ("page=zero", "page"),
    ] {
        let page = b.get(&format!("/instances?{query}")).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(page.body.contains(field), "{query}: {}", page.body);
    }

    let errors = b.get("/instances?state=Error&sort=name&dir=desc").await;
    assert!(errors.body.contains("Showing 1–50 of 1000<"), "every tenth");
    let first = errors.body.find("db-10000").unwrap();
    let second = errors.body.find("db-09990").unwrap();
    assert!(first < second, "descending by name");
    assert!(!errors.body.contains("db-09999"));

    let found = b.get("/instances?q=DB-0012").await;
    assert!(
        found.body.contains("Showing 1–10 of 10<"),
        "db-00120 … db-00129"
    );

    let youngest = b.get("/instances?sort=age").await;
    let at = youngest.body.find("<tbody>").unwrap();
    assert!(youngest.body[at..].find("db-00001") < youngest.body[at..].find("db-00002"));
    let oldest = b.get("/instances?sort=age&dir=desc").await;
    let at = oldest.body.find("<tbody>").unwrap();
    assert!(oldest.body[at..].find("db-10000") < oldest.body[at..].find("db-09999"));
    assert!(!oldest.body.contains("db-00001"));

    // Another organisation's list is its own.
    let other = t.token_for("globex").await;
    let them = Browser::sign_in(&t, &other).await;
    assert!(them
        .get("/instances")
        .await
        .body
        .contains("No instances match."));
}

/// Reads server-sent events until `done` says so, or panics after `deadline`.
async fn read_events(
    body: &mut Body,
    deadline: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let start = Instant::now();
    let mut text = String::new();
    while !done(&text) {
        let left = deadline.saturating_sub(start.elapsed());
        let frame = tokio::time::timeout(left, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {deadline:?}; got:\n{text}"))
            .expect("the stream stays open")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    text
}

#[sqlx::test]
async fn the_event_stream_sends_the_organisations_changes_only(pool: PgPool) {
    let t = app(pool).await;
    let other = t.token_for("globex").await;
    let unauthenticated = send(
        &t,
        Request::get("/api/v1/events").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let (_, doc) = t.call("GET", "/api/v1/openapi.json", None).await;
    let documented = &doc["paths"]["/api/v1/events"]["get"];
    assert!(
        documented["responses"]["200"]["content"]
            .get("text/event-stream")
            .is_some(),
        "{documented}"
    );

    let resp = t
        .app
        .clone()
        .oneshot(
            Request::get("/api/v1/events")
                .header("authorization", format!("Bearer {}", t.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    read_events(&mut body, Duration::from_secs(10), |t| {
        t.contains("event: hello")
    })
    .await;

    // globex's change first: if it leaked, it would arrive first.
    let (status, _) = t
        .call_as(
            &other,
            "POST",
            "/api/v1/instances",
            Some(json!({"name": "theirs", "spec": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    t.call(
        "POST",
        "/api/v1/instances",
        Some(json!({"name": "ours", "spec": {}})),
    )
    .await;
    let text = read_events(&mut body, Duration::from_secs(10), |t| {
        t.contains("\"name\":\"ours\"")
    })
    .await;
    assert!(!text.contains("theirs"), "{text}");
    assert!(text.contains("event: instance"));
    assert!(text.contains("\"state\":\"Submitted\""), "{text}");

    // A state change made by a command arrives too.
    t.call("DELETE", "/api/v1/instances/ours", None).await;
    let text = read_events(&mut body, Duration::from_secs(10), |t| {
        t.contains("\"state\":\"Deleting\"")
    })
    .await;
    assert!(!text.contains("theirs"), "{text}");

    // A console session may listen too, and catch up from a time.
    let b = Browser::sign_in(&t, &t.token).await;
    let resp = t
        .app
        .clone()
        .oneshot(
            Request::get("/api/v1/events?since=2000-01-01T00:00:00Z")
                .header("cookie", &b.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let text = read_events(&mut body, Duration::from_secs(10), |t| {
        t.contains("\"name\":\"ours\"")
    })
    .await;
    assert!(!text.contains("theirs"), "{text}");

    // Closing the broadcaster ends every stream (the server's shutdown).
    t.state.events.close();
    let start = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Ok(None) => break,
            Ok(Some(_)) => assert!(start.elapsed() < Duration::from_secs(10)),
            Err(_) => panic!("the stream did not end"),
        }
    }
}

#[sqlx::test]
async fn forged_posts_are_refused_before_anything_runs(pool: PgPool) {
    let t = app(pool).await;
    t.call(
        "POST",
        "/api/v1/instances",
        Some(json!({"name": "orders", "spec": {}})),
    )
    .await;
    let b = Browser::sign_in(&t, &t.token).await;
    let csrf = b.csrf().await;
    let post = |headers: Vec<(&'static str, String)>, fields: Vec<(&'static str, String)>| {
        let mut req = Request::post("/instances/orders/delete")
            .header("cookie", &b.cookie)
            .header("host", "console.example")
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        req.body(Body::from(form_body(&fields))).unwrap()
    };
    let good = || vec![("csrf", csrf.clone()), ("confirm", "orders".to_owned())];
    let cases = [
        (
            "no CSRF token",
            vec![],
            vec![("confirm", "orders".to_owned())],
        ),
        (
            "another origin",
            vec![("origin", "https://evil.example".to_owned())],
            good(),
        ),
        (
            "a look-alike origin",
            vec![("origin", "http://console.example.evil.example".to_owned())],
            good(),
        ),
        (
            "cross-site",
            vec![("sec-fetch-site", "cross-site".to_owned())],
            good(),
        ),
    ];
    for (what, headers, fields) in cases {
        let page = send(&t, post(headers, fields)).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{what}");
    }
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["generation"], 1, "nothing ran");
    let page = send(
        &t,
        post(
            vec![("origin", "http://console.example".to_owned())],
            good(),
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (_, inst) = t.call("GET", "/api/v1/instances/orders", None).await;
    assert_eq!(inst["state"], "Deleting");
}
