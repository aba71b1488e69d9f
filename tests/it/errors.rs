//! One error type: HTML pages for the dashboard, JSON under /api, readable 4xx for
//! constraint violations, opaque 500s.

use axum::{Router, routing::get};
use loopline::{
    AppError,
    accounts::{self, NewPassword, Role},
    address::EmailAddress,
    web,
};
use reqwest::StatusCode;

use crate::harness::{PASSWORD, Page, TestApp};

#[tokio::test]
async fn unknown_pages_render_html_and_unknown_api_routes_answer_json() {
    let app = TestApp::spawn().await;
    let c = app.client();
    let res = c.get("/no/such/page").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = Page {
        status: StatusCode::NOT_FOUND,
        html: scraper::Html::parse_document(&res.text().await.unwrap()),
    };
    assert_eq!(
        page.attr("main.error-page", "data-status").as_deref(),
        Some("404")
    );
    assert_eq!(page.select("#error-message"), vec!["not found"]);

    let res = c.get("/api/v1/nothing-here").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["status"], 404);
    assert_eq!(body["error"]["message"], "not found");
}

#[tokio::test]
async fn framework_rejections_become_error_pages_too() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    // A path parameter that is not a number.
    let res = editor
        .post_form("/settings/jobs/not-a-number/retry", &[])
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // Retrying a job that does not exist is a conflict with a message, not a 500.
    let res = editor.post_form("/settings/jobs/999999/retry", &[]).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("not in the failed state")
    );
}

#[tokio::test]
async fn constraint_violations_map_to_conflicts_with_a_readable_message() {
    let app = TestApp::spawn().await;
    app.create_user("Someone@Example.com", Role::Editor).await;
    let dup = EmailAddress::parse("someone@example.com").unwrap();
    let err = accounts::create_user(
        &app.pool,
        &dup,
        NewPassword::parse(PASSWORD.into(), None).unwrap(),
        Role::Viewer,
    )
    .await
    .unwrap_err();
    match err {
        AppError::Conflict(msg) => assert!(msg.to_string().contains("already exists"), "{msg}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn internal_errors_are_opaque_to_the_client() {
    async fn boom() -> Result<(), AppError> {
        Err(AppError::Internal(
            anyhow::anyhow!("password=hunter2 in /etc/secret").context("loading things"),
        ))
    }
    let router: Router = Router::new()
        .route("/boom", get(boom))
        .route("/api/boom", get(boom))
        .layer(axum::middleware::from_fn(web::errors::render));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    for path in ["/boom", "/api/boom"] {
        let res = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = res.text().await.unwrap();
        assert!(
            !body.contains("hunter2")
                && !body.contains("/etc/secret")
                && !body.contains("loading things"),
            "{body}"
        );
        assert!(body.contains("something went wrong"), "{body}");
    }
}

/// The production router's outer layers reach every kind of response: a page, a
/// redirect, an error page and a click redirect all carry the security headers and a
/// request id (the one the client sent, or a new one).
#[tokio::test]
async fn every_response_carries_the_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    app.create_user("owner@example.kr", Role::Owner).await;
    let c = app.client();
    let mut seen = std::collections::HashSet::new();
    for (path, status) in [
        ("/login", StatusCode::OK),
        ("/", StatusCode::SEE_OTHER),
        ("/no/such/page", StatusCode::NOT_FOUND),
        ("/c/forged-token", StatusCode::NOT_FOUND),
    ] {
        let res = c.get(path).await;
        assert_eq!(res.status(), status, "{path}");
        let h = res.headers();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(String::from);
        assert!(
            header("content-security-policy").is_some_and(|v| v.contains("default-src")),
            "{path}: {h:?}"
        );
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(header("referrer-policy").as_deref(), Some("same-origin"));
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
        let id = header("x-request-id").expect("a request id");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{path}: {id}");
        assert!(seen.insert(id), "{path}: a fresh id per request");
    }
    let res = c
        .http
        .get(c.url("/login"))
        .header("x-request-id", "client-chosen-7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-request-id"].to_str().unwrap(),
        "client-chosen-7"
    );
}
