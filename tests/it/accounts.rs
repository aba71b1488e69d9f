//! Setup, sign-in, sessions, throttling, password changes and user management.

use loopline::accounts::{self, Role};
use reqwest::StatusCode;

use crate::harness::{PASSWORD, TestApp, location};

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn first_run_setup_creates_the_owner_once_and_signs_them_in() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    c.refresh_csrf("/setup").await;

    // Mismatched passwords: shown again with the error, nothing created.
    let res = c
        .post_form(
            "/setup",
            &[
                ("email", "관리자@예시.한국"),
                ("password", PASSWORD),
                ("password_confirm", "something else entirely"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = scraper::Html::parse_document(&res.text().await.unwrap());
    let sel = scraper::Selector::parse(".flash-error").unwrap();
    assert!(
        body.select(&sel)
            .any(|e| e.text().collect::<String>().contains("do not match"))
    );
    assert_eq!(count(&app, "SELECT count(*) FROM users").await, 0);

    // A Korean (internationalised) address survives the whole path.
    let res = c
        .post_form(
            "/setup",
            &[
                ("email", "관리자@예시.한국"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("ll_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Secure"),
        "{cookie}"
    );

    let page = c.page("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("[data-page=dashboard]"));
    assert_eq!(page.select("#current-user"), vec!["관리자@예시.한국"]);
    let role: Role = sqlx::query_scalar("SELECT role FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(role, Role::Owner);

    // Setup is closed for good once an owner exists.
    let mut other = app.client();
    assert_eq!(location(&other.get("/setup").await), "/login");
    other.refresh_csrf("/login").await;
    let res = other
        .post_form(
            "/setup",
            &[
                ("email", "intruder@example.com"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(location(&res), "/login");
    assert_eq!(count(&app, "SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn sign_in_keeps_next_local_and_sign_out_ends_the_session() {
    let app = TestApp::spawn().await;
    app.create_user("marketer@example.com", Role::Editor).await;
    let mut c = app.client();
    assert_eq!(
        location(&c.get("/settings/jobs").await),
        "/login?next=%2Fsettings%2Fjobs"
    );

    c.refresh_csrf("/login?next=/settings/jobs").await;
    let res = c
        .post_form(
            "/login",
            &[
                ("email", "MARKETER@example.com"),
                ("password", PASSWORD),
                ("next", "/settings/jobs"),
            ],
        )
        .await;
    assert_eq!(
        location(&res),
        "/settings/jobs",
        "case-insensitive email, next honoured"
    );

    let mut evil = app.client();
    evil.refresh_csrf("/login").await;
    let res = evil
        .post_form(
            "/login",
            &[
                ("email", "marketer@example.com"),
                ("password", PASSWORD),
                ("next", "//evil.example/phish"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/", "no open redirect");

    c.refresh_csrf("/").await;
    assert_eq!(count(&app, "SELECT count(*) FROM sessions").await, 2);
    let res = c.post_form("/logout", &[]).await;
    assert_eq!(location(&res), "/login?notice=signed-out");
    assert_eq!(count(&app, "SELECT count(*) FROM sessions").await, 1);
    assert!(location(&c.get("/").await).starts_with("/login"));
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_account_and_recover_after_the_window() {
    let app = TestApp::spawn().await;
    app.create_user("target@example.com", Role::Owner).await;
    let mut c = app.client();
    for _ in 0..5 {
        let res = c.login("target@example.com", "wrong password here").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while throttled.
    let res = c.login("target@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("too many failed sign-in attempts")
    );
    assert_eq!(count(&app, "SELECT count(*) FROM sessions").await, 0);

    app.advance(chrono::Duration::minutes(16));
    let res = c.login("target@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        count(&app, "SELECT count(*) FROM login_failures").await,
        0,
        "a success clears the account's failures"
    );
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_ip_across_accounts() {
    let app = TestApp::spawn().await;
    app.create_user("real@example.com", Role::Owner).await;
    let mut c = app.client();
    for i in 0..20 {
        let res = c
            .login(&format!("nobody{i}@example.com"), "wrong password here")
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        c.login("real@example.com", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn changing_the_password_signs_out_other_sessions() {
    let app = TestApp::spawn().await;
    let user = app.create_user("me@example.com", Role::Viewer).await;
    let mut a = app.client();
    let mut b = app.client();
    assert_eq!(
        a.login("me@example.com", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        b.login("me@example.com", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    a.refresh_csrf("/settings/account").await;

    let res = a
        .post_form(
            "/settings/account/password",
            &[
                ("current_password", "not my password"),
                ("new_password", "a brand new passphrase"),
                ("new_password_confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let res = a
        .post_form(
            "/settings/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
                ("new_password_confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/settings/account?notice=password-changed");
    assert_eq!(
        a.page("/").await.status,
        StatusCode::OK,
        "the session that changed it stays"
    );
    assert!(
        location(&b.get("/").await).starts_with("/login"),
        "other sessions are revoked"
    );
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(user.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 1);

    let mut c = app.client();
    assert_eq!(
        c.login("me@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.login("me@example.com", "a brand new passphrase")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
}

#[tokio::test]
async fn sessions_expire_and_cookies_are_secure_over_https() {
    let app = TestApp::spawn().await;
    let (c, _) = app.signed_in(Role::Viewer).await;
    assert_eq!(c.page("/").await.status, StatusCode::OK);
    app.advance(chrono::Duration::days(15));
    assert!(location(&c.get("/").await).starts_with("/login"));

    let https = TestApp::spawn_with(
        |c| c.public_url = "https://loopline.example.kr".into(),
        Default::default(),
    )
    .await;
    https.create_user("s@example.com", Role::Owner).await;
    let mut c = https.client();
    let res = c.login("s@example.com", PASSWORD).await;
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("ll_session="))
        .unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn owners_manage_users_but_never_remove_the_last_owner() {
    let app = TestApp::spawn().await;
    let (owner, me) = app.signed_in(Role::Owner).await;

    let res = owner
        .post_form(
            "/settings/users",
            &[
                ("email", "홍길동@example.kr"),
                ("password", "another long password"),
                ("role", "editor"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/settings/users?notice=user-created");
    let page = owner.page(&location(&res)).await;
    assert!(
        page.select("#users-table td.email")
            .iter()
            .any(|e| e.contains("홍길동@example.kr"))
    );
    assert_eq!(page.select(".flash-ok"), vec!["User added."]);

    // Duplicate (case-insensitively) and invalid input come back as readable errors.
    let res = owner
        .post_form(
            "/settings/users",
            &[
                ("email", "홍길동@EXAMPLE.kr"),
                ("password", "another long password"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("already exists"));
    let res = owner
        .post_form(
            "/settings/users",
            &[
                ("email", "not-an-address"),
                ("password", "short"),
                ("role", "king"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("@") && text.contains("at least 10") && text.contains("choose a role"),
        "{text}"
    );

    let editor = accounts::find_user_by_email(&app.pool, "홍길동@example.kr")
        .await
        .unwrap()
        .unwrap();
    let res = owner
        .post_form(
            &format!("/settings/users/{}/role", editor.id),
            &[("role", "viewer")],
        )
        .await;
    assert_eq!(location(&res), "/settings/users?notice=role-changed");
    let role: Role = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
        .bind(editor.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(role, Role::Viewer);

    // The only owner cannot demote themselves or be removed.
    let res = owner
        .post_form(
            &format!("/settings/users/{}/role", me.id),
            &[("role", "editor")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("at least one owner"));
    let res = owner
        .post_form(&format!("/settings/users/{}/delete", me.id), &[])
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    let res = owner
        .post_form(&format!("/settings/users/{}/delete", editor.id), &[])
        .await;
    assert_eq!(location(&res), "/settings/users?notice=user-deleted");
    assert!(
        accounts::find_user_by_email(&app.pool, "홍길동@example.kr")
            .await
            .unwrap()
            .is_none()
    );
}
