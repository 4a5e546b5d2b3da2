//! Helpers shared by the breaker layer tests.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

/// GETs `path`; returns the status and the `Retry-After` header.
pub async fn get_status(app: &Router, path: &str) -> (StatusCode, Option<String>) {
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await
        .expect("axum services do not fail");
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_string());
    (res.status(), retry)
}
