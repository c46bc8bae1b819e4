use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use reconciler::{AppState, SourcePolicy};
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

pub struct TestApp {
    pub state: AppState,
    pub app: axum::Router,
    /// Admin token of org `acme`.
    pub token: String,
}

/// The control plane with the default source policy (no local paths,
/// public hosts only), as `pgplane server` runs by default.
pub async fn test_app(pool: PgPool) -> TestApp {
    test_app_with(pool, SourcePolicy::default()).await
}

/// The control plane with `policy` (`SourcePolicy::allow_all()` is how
/// `pgplane up` runs).
pub async fn test_app_with(pool: PgPool, policy: SourcePolicy) -> TestApp {
    let state = AppState::with_source_policy(pool, "local", policy).await;
    test_app_on(state).await
}

/// The control plane on `state`, with an admin token of `acme`.
pub async fn test_app_on(state: AppState) -> TestApp {
    reconciler::prepare_database(&state.pool, "local")
        .await
        .unwrap();
    state.publish_keys().await.unwrap();
    let pool = state.pool.clone();
    let mut conn = pool.acquire().await.unwrap();
    let token = reconciler::auth::create_token(&mut conn, "acme", true, None)
        .await
        .unwrap();
    TestApp {
        app: reconciler::app(state.clone()),
        state,
        token,
    }
}

impl TestApp {
    /// A (non-admin) token of another organisation.
    pub async fn token_for(&self, org: &str) -> String {
        let mut conn = self.state.pool.acquire().await.unwrap();
        reconciler::auth::create_token(&mut conn, org, false, None)
            .await
            .unwrap()
    }

    /// A POST without a token: `headers` and a raw body.
    pub async fn post_raw(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.token.clone(), method, uri, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(token, &[], method, uri, body).await
    }

    /// A call with `token` and extra request `headers`.
    pub async fn call_with(
        &self,
        token: &str,
        headers: &[(&str, &str)],
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// Messages waiting on the local data plane's queue.
    pub async fn queued_events(&self) -> Vec<Value> {
        sqlx::query_scalar("select message from pgmq.q_dp_local order by msg_id")
            .fetch_all(&self.state.pool)
            .await
            .unwrap()
    }
}
