//! The OpenAPI document: it describes every route the router serves, with
//! its methods, and the copy committed as `openapi.json` (for API users and
//! code generators) is the one the code generates. Run with
//! `PGPLANE_UPDATE_DOCS=1` to rewrite the committed copy.

use std::path::Path;

use axum::http::StatusCode;
use sqlx::PgPool;

use crate::support::test_app;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The `/api/v1` routes of `reconciler/src/http.rs` and their methods, read
/// from its `.route("PATH", get(..).post(..))` calls.
fn served_routes() -> Vec<(String, Vec<&'static str>)> {
    let source = include_str!("../../src/http.rs");
    let router = &source[source.find("pub fn router").expect("router")..];
    let router = &router[..router.find("\n}\n").expect("end of router")];
    router
        .split(".route(")
        .skip(1)
        .filter_map(|call| {
            let path = call.split('"').nth(1)?;
            let handlers = &call[call.find(',')?..];
            let methods = METHODS
                .into_iter()
                .filter(|m| {
                    handlers.match_indices(&format!("{m}(")).any(|(i, _)| {
                        i == 0
                            || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric()
                                && handlers.as_bytes()[i - 1] != b'_'
                    })
                })
                .collect();
            Some((path.to_owned(), methods))
        })
        .filter(|(path, _)| path.starts_with("/api/v1/") && path != "/api/v1/openapi.json")
        .collect()
}

#[sqlx::test(migrations = false)]
async fn the_document_describes_every_route_and_method(pool: PgPool) {
    let t = test_app(pool).await;
    let (status, doc) = t.call_as("", "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let routes = served_routes();
    assert!(routes.len() >= 20, "the router was read: {routes:?}");
    for (path, methods) in routes {
        assert!(!methods.is_empty(), "{path}: no method read");
        let item = doc["paths"]
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is served but not in the OpenAPI document"));
        for m in methods {
            assert!(
                item.get(m).is_some(),
                "{} {path} is served but not in the OpenAPI document",
                m.to_uppercase()
            );
        }
    }
    assert!(doc["components"]["schemas"].get("InstanceSpec").is_some());
}

#[test]
fn the_committed_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&reconciler::http::openapi_document()).unwrap()
    );
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        if std::env::var_os("PGPLANE_UPDATE_DOCS").is_some() {
            std::fs::write(&path, generated).unwrap();
        } else {
            panic!(
                "openapi.json is stale: run `PGPLANE_UPDATE_DOCS=1 cargo test -p reconciler --test it openapi`"
            );
        }
    }
}
