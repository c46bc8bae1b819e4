use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use reconciler::AppState;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

pub struct TestApp {
    pub state: AppState,
    pub app: axum::Router,
    /// Admin token of org `acme`.
    pub token: String,
}

pub async fn test_app(pool: PgPool) -> TestApp {
    reconciler::prepare_database(&pool, "local").await.unwrap();
    let state = AppState::new(pool.clone(), "local").await;
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
        let mut req = Request::builder().method(method).uri(uri);
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
