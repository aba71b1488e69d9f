//! The route table is the source of truth: every dashboard route needs a session, and
//! roles are enforced on every route that declares one.

use loopline::{
    accounts::Role,
    web::{self, Access},
};
use reqwest::{Method, StatusCode};

use crate::harness::{TestApp, location};

fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{*path}", "app.css")
        .replace("{provider}", "generic")
}

#[tokio::test]
async fn every_signed_in_route_redirects_to_login_without_a_session() {
    let app = TestApp::spawn().await;
    app.create_user("owner@example.com", Role::Owner).await;
    let anon = app.client();
    let routes = web::routes();
    let signed: Vec<_> = routes
        .iter()
        .filter(|r| matches!(r.access, Access::Signed(_)))
        .collect();
    assert!(
        signed.len() >= 15,
        "the route table lost its dashboard routes"
    );
    for r in signed {
        let path = concrete(r.path);
        let res = anon
            .request(r.method.clone(), &path, &[("_csrf", "forged")])
            .await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{} {path} without a session",
            r.method
        );
        assert!(
            location(&res).starts_with("/login"),
            "{} {path} redirected to {}",
            r.method,
            location(&res)
        );
    }
}

#[tokio::test]
async fn with_no_users_yet_everything_leads_to_setup() {
    let app = TestApp::spawn().await;
    let anon = app.client();
    for path in ["/", "/settings", "/audience"] {
        let res = anon.get(path).await;
        assert_eq!(location(&res), "/setup", "{path}");
    }
    let res = anon.get("/login").await;
    assert_eq!(location(&res), "/setup");
}

#[tokio::test]
async fn roles_are_enforced_on_every_route_that_needs_more_than_viewer() {
    let app = TestApp::spawn().await;
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let (owner, _) = app.signed_in(Role::Owner).await;
    let mut checked_forbidden = 0;
    for r in web::routes() {
        let Access::Signed(min) = r.access else {
            continue;
        };
        let path = concrete(r.path);
        for (client, role) in [
            (&viewer, Role::Viewer),
            (&editor, Role::Editor),
            (&owner, Role::Owner),
        ] {
            if role < min {
                let res = client.request(r.method.clone(), &path, &[]).await;
                assert_eq!(
                    res.status(),
                    StatusCode::FORBIDDEN,
                    "{role:?} reached {} {path}",
                    r.method
                );
                checked_forbidden += 1;
            } else if r.method == Method::GET {
                let res = client.request(Method::GET, &path, &[]).await;
                // Pages about one record answer 404 for the placeholder id; that is fine.
                let expected: &[StatusCode] = if r.path.contains('{') {
                    &[StatusCode::OK, StatusCode::NOT_FOUND]
                } else {
                    &[StatusCode::OK]
                };
                assert!(
                    expected.contains(&res.status()),
                    "{role:?} could not open {path}: {}",
                    res.status()
                );
            }
        }
    }
    assert!(
        checked_forbidden >= 8,
        "expected editor- and owner-only routes to be checked, got {checked_forbidden}"
    );
}

#[tokio::test]
async fn state_changing_forms_need_the_csrf_token() {
    let app = TestApp::spawn().await;
    let (mut owner, _) = app.signed_in(Role::Owner).await;
    let fields = [
        ("email", "new@example.com"),
        ("password", "a long enough password"),
        ("role", "viewer"),
    ];

    let real = owner.csrf.take();
    let res = owner.post_form("/settings/users", &fields).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no token");
    owner.csrf = Some("forged-token".into());
    let res = owner.post_form("/settings/users", &fields).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "forged token");

    // A token from another session is worthless too.
    let (other, _) = app.signed_in(Role::Owner).await;
    owner.csrf = other.csrf.clone();
    let res = owner.post_form("/settings/users", &fields).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "another session's token"
    );

    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'new@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "a rejected form must change nothing");

    owner.csrf = real;
    let res = owner.post_form("/settings/users", &fields).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'new@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // The sign-in form's token is bound to the visitor's cookie.
    let anon = app.client();
    for with_cookie in [false, true] {
        if with_cookie {
            anon.get("/login").await; // receives the anonymous CSRF cookie
        }
        let form = [
            ("email", "x@example.com"),
            ("password", "whatever"),
            ("_csrf", "guess"),
        ];
        let res = anon
            .http
            .post(anon.url("/login"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "cookie present: {with_cookie}"
        );
    }
}

/// Provider webhooks are public (the provider's signature is the authority, not a
/// session or CSRF token), and an unconfigured provider is no endpoint at all.
#[tokio::test]
async fn webhooks_are_public_posts_that_need_no_session_or_csrf() {
    let app = TestApp::spawn().await;
    let webhooks: Vec<_> = web::routes()
        .into_iter()
        .filter(|r| r.path.starts_with("/webhooks/"))
        .collect();
    let paths: Vec<_> = webhooks.iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/webhooks/ses", "/webhooks/{provider}"]);
    for r in &webhooks {
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.access, Access::Public);
        // Without configuration: 404, not a redirect to sign in and not a CSRF refusal.
        let res = app
            .client()
            .http
            .post(app.client().url(&concrete(r.path)))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{}", r.path);
    }
    // `ses` through the generic route is no way around SES's own verification.
    let res = app
        .client()
        .http
        .post(app.client().url("/webhooks/ses"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn static_files_are_cached_and_health_endpoints_are_public() {
    let app = TestApp::spawn().await;
    let c = app.client();
    let res = c.get("/static/app.css").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let again = c
        .http
        .get(c.url("/static/app.css"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let htmx = c.get("/static/vendor/htmx-2.0.11.min.js").await;
    assert_eq!(htmx.status(), StatusCode::OK);
    assert!(htmx.text().await.unwrap().contains("htmx"));
    assert_eq!(
        c.get("/static/../Cargo.toml").await.status(),
        StatusCode::NOT_FOUND
    );

    let health: serde_json::Value = c.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = c.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}
