//! Audience: signup (double and single opt-in), confirmation, unsubscribe (page,
//! button, RFC 8058 one-click), preferences, export and erasure, and the dashboard list.

use loopline::{
    accounts::Role,
    audience::{
        forms::{self, NewForm},
        links,
    },
    clock::Clock,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Page, TestApp, TestClient, location};

async fn form(app: &TestApp, slug: &str, double_opt_in: bool, tags: &str) -> forms::Form {
    forms::create(
        &app.pool,
        &NewForm::parse("뉴스레터", slug, double_opt_in, tags).unwrap(),
    )
    .await
    .unwrap()
}

async fn page_of(res: reqwest::Response) -> Page {
    let status = res.status();
    Page {
        status,
        html: scraper::Html::parse_document(&res.text().await.unwrap()),
    }
}

async fn subscriber(
    app: &TestApp,
    email: &str,
) -> Option<(
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
)> {
    sqlx::query_as("SELECT id, status::text, name, consent_method, consent_form_id, consent_ip FROM subscribers WHERE lower(email) = lower($1)")
        .bind(email)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
}

/// Confirmation mails in the outbox: recipient, name and merge data.
async fn confirmation_jobs(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT jsonb_build_object('to', m.to_email, 'name', m.to_name, 'status', m.status) || m.data
         FROM messages m JOIN message_bodies b ON b.id = m.body_id WHERE b.purpose = 'confirmation' ORDER BY m.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

fn path_of(url: &str) -> String {
    let after_scheme = url.split_once("://").unwrap().1;
    format!("/{}", after_scheme.split_once('/').unwrap().1)
}

#[tokio::test]
async fn double_opt_in_signup_queues_a_confirmation_and_the_link_activates() {
    let app = TestApp::spawn().await;
    let f = form(&app, "news", true, "newsletter, 한국").await;
    let visitor = app.client();

    let page = visitor.page("/f/news").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("form#signup-form input[name=email]"));
    assert!(
        page.exists(".hp input[name=website]"),
        "the honeypot is on the page"
    );

    let res = visitor
        .post_form(
            "/f/news",
            &[
                ("email", "User@Example.kr"),
                ("name", "홍길동"),
                ("website", ""),
            ],
        )
        .await;
    let page = page_of(res).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.select("#signup-result")[0].contains("confirm"),
        "{:?}",
        page.select("#signup-result")
    );

    let (id, status, name, method, form_id, ip) =
        subscriber(&app, "user@example.kr").await.unwrap();
    assert_eq!(
        (
            status.as_str(),
            name.as_str(),
            method.as_deref(),
            form_id,
            ip.as_deref()
        ),
        (
            "unconfirmed",
            "홍길동",
            Some("double_opt_in"),
            Some(f.id),
            Some("127.0.0.1")
        )
    );
    let tags: Vec<String> = sqlx::query_scalar("SELECT t.name FROM subscribers s JOIN tags t ON t.id = ANY(s.tag_ids) WHERE s.id = $1 ORDER BY t.name")
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(tags, vec!["newsletter", "한국"]);

    // The confirmation mail is a job written with the decision; its content is complete.
    let jobs = confirmation_jobs(&app).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["to"], "User@example.kr");
    assert_eq!(jobs[0]["name"], "홍길동");
    let confirm_url = jobs[0]["confirm_url"].as_str().unwrap().to_string();
    assert!(confirm_url.starts_with(&format!("{}/confirm/{id}.", app.base)));

    // Submitting again: same answer, no duplicate subscriber, no second mail this hour.
    let res = visitor
        .post_form(
            "/f/news",
            &[("email", "user@example.kr"), ("name", "홍길동")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(confirmation_jobs(&app).await.len(), 1);
    app.advance(chrono::Duration::hours(2));
    visitor
        .post_form("/f/news", &[("email", "user@example.kr")])
        .await;
    assert_eq!(
        confirmation_jobs(&app).await.len(),
        2,
        "a later retry gets a fresh mail"
    );

    // GET shows a button (a link scanner fetching it confirms nothing); POST confirms.
    let path = path_of(&confirm_url);
    let page = visitor.page(&path).await;
    assert!(page.exists("form#public-action"));
    assert_eq!(
        subscriber(&app, "user@example.kr").await.unwrap().1,
        "unconfirmed"
    );
    let res = visitor.http.post(visitor.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        subscriber(&app, "user@example.kr").await.unwrap().1,
        "active"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM events WHERE subscriber_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        vec!["subscribed", "signup_again", "signup_again", "confirmed"]
    );

    // A tampered token is refused; an expired one says so.
    // Another real subscriber's id with this signature: refused.
    visitor
        .post_form("/f/news", &[("email", "other@example.kr")])
        .await;
    let other = subscriber(&app, "other@example.kr").await.unwrap().0;
    let tampered = path.replace(&format!("/confirm/{id}."), &format!("/confirm/{other}."));
    assert_eq!(visitor.page(&tampered).await.status, StatusCode::NOT_FOUND);
    let res = visitor
        .http
        .post(visitor.url(&tampered))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        subscriber(&app, "other@example.kr").await.unwrap().1,
        "unconfirmed"
    );
    app.advance(chrono::Duration::days(8));
    let page = visitor.page(&path).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.select("#public-message")[0].contains("expired"));
}

#[tokio::test]
async fn single_opt_in_subscribes_at_once_and_never_duplicates_or_reveals() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false, "").await;
    let c = app.client();
    let first = page_of(
        c.post_form(
            "/f/quick",
            &[("email", "kim@example.com"), ("name", "김철수")],
        )
        .await,
    )
    .await;
    let (id, status, _, method, _, _) = subscriber(&app, "kim@example.com").await.unwrap();
    assert_eq!(
        (status.as_str(), method.as_deref()),
        ("active", Some("single_opt_in"))
    );
    assert!(confirmation_jobs(&app).await.is_empty());

    let again = page_of(
        c.post_form(
            "/f/quick",
            &[("email", "KIM@example.com"), ("name", "김철수")],
        )
        .await,
    )
    .await;
    assert_eq!(
        first.select("#signup-result"),
        again.select("#signup-result"),
        "the same words whether or not the address was known"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Once unsubscribed, a single opt-in form cannot bring them back without the mailbox
    // owner's confirmation; the page still reads the same.
    loopline::audience::subscribers::unsubscribe(&app.pool, id, app.clock.now(), "test")
        .await
        .unwrap();
    let back = page_of(
        c.post_form("/f/quick", &[("email", "kim@example.com")])
            .await,
    )
    .await;
    assert_eq!(
        first.select("#signup-result"),
        back.select("#signup-result")
    );
    assert_eq!(
        subscriber(&app, "kim@example.com").await.unwrap().1,
        "unsubscribed"
    );
    assert_eq!(confirmation_jobs(&app).await.len(), 1);
}

#[tokio::test]
async fn bots_and_bad_input_are_turned_away_without_side_effects() {
    let app = TestApp::spawn().await;
    form(&app, "news", true, "").await;
    let c = app.client();
    // Honeypot filled: the same thank-you, nothing stored.
    let res = c
        .post_form(
            "/f/news",
            &[
                ("email", "bot@example.com"),
                ("website", "http://spam.example"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(subscriber(&app, "bot@example.com").await.is_none());
    // Invalid address: the form again with the reason.
    let page = page_of(
        c.post_form("/f/news", &[("email", "not an address"), ("name", "x")])
            .await,
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.exists("form#signup-form") && !page.select(".flash-error").is_empty());
    // Unknown form.
    assert_eq!(c.page("/f/nope").await.status, StatusCode::NOT_FOUND);
    // List bombing from one address is cut off.
    let mut limited = false;
    for i in 0..25 {
        let res = c
            .post_form("/f/news", &[("email", &format!("victim{i}@example.com"))])
            .await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "the per-IP signup limit never kicked in");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(n <= 20, "{n} signups got through");
}

#[tokio::test]
async fn the_json_endpoint_subscribes_and_answers_json_errors() {
    let app = TestApp::spawn().await;
    form(&app, "app", true, "").await;
    let c = app.client();
    let res = c
        .http
        .post(c.url("/api/v1/forms/app/subscribe"))
        .json(&serde_json::json!({ "email": "이순신@example.kr", "name": "이순신" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    assert_eq!(
        subscriber(&app, "이순신@example.kr").await.unwrap().2,
        "이순신"
    );

    let res = c
        .http
        .post(c.url("/api/v1/forms/app/subscribe"))
        .json(&serde_json::json!({ "email": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("@")
    );
    let res = c
        .http
        .post(c.url("/api/v1/forms/missing/subscribe"))
        .json(&serde_json::json!({ "email": "a@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["status"], 404);
}

async fn active_subscriber(app: &TestApp, c: &TestClient, email: &str) -> (i64, String) {
    c.post_form("/f/quick", &[("email", email), ("name", "박영희")])
        .await;
    let id = subscriber(app, email).await.unwrap().0;
    (id, links::subscriber_token(&app.state.keys, id))
}

#[tokio::test]
async fn unsubscribe_needs_a_post_and_honours_one_click() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false, "").await;
    let c = app.client();
    let (a, token_a) = active_subscriber(&app, &c, "a@example.com").await;
    let (b, token_b) = active_subscriber(&app, &c, "b@example.com").await;

    // A scanner following the link changes nothing.
    let page = c.page(&format!("/u/{token_a}")).await;
    assert!(page.exists("form#public-action"));
    assert!(page.select("strong").iter().any(|s| s == "a@example.com"));
    assert_eq!(subscriber(&app, "a@example.com").await.unwrap().1, "active");

    let res = c
        .http
        .post(c.url(&format!("/u/{token_a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        subscriber(&app, "a@example.com").await.unwrap().1,
        "unsubscribed"
    );

    // RFC 8058: the mail client posts List-Unsubscribe=One-Click, no session, no token.
    let res = c
        .http
        .post(c.url(&format!("/u/{token_b}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        subscriber(&app, "b@example.com").await.unwrap().1,
        "unsubscribed"
    );
    let via: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT subscriber_id, data FROM events WHERE kind = 'unsubscribed' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        via,
        vec![
            (a, serde_json::json!({ "via": "link" })),
            (b, serde_json::json!({ "via": "one-click" }))
        ]
    );

    // Forged or altered tokens: 404, nothing changes, no redirect anywhere.
    let (cc, _) = active_subscriber(&app, &c, "c@example.com").await;
    let forged = format!("{cc}.{}", token_a.split_once('.').unwrap().1);
    let res = c
        .http
        .post(c.url(&format!("/u/{forged}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers().get("location").is_none());
    assert_eq!(subscriber(&app, "c@example.com").await.unwrap().1, "active");
}

/// Sends the queued mail (to the capture store) and returns the path of the link with
/// `prefix` in the text part of the newest message to `to`.
async fn mailed_link(app: &TestApp, to: &str, prefix: &str) -> String {
    app.send_mail().await;
    let text: String = sqlx::query_scalar(
        "SELECT c.text FROM captured_mail c JOIN messages m ON m.id = c.message_id
         WHERE m.to_email = $1 ORDER BY m.id DESC LIMIT 1",
    )
    .bind(to)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
    let end = text[at..]
        .find(|c: char| c.is_whitespace() || c == ')' || c == '>')
        .map_or(text.len(), |e| at + e);
    text[at..end].to_string()
}

#[tokio::test]
async fn preferences_export_and_erasure_are_self_service() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false, "").await;
    sqlx::query("INSERT INTO tags (name, is_topic) VALUES ('마케팅', true), ('productivity', true), ('internal', false)").execute(&app.pool).await.unwrap();
    let c = app.client();
    let (id, token) = active_subscriber(&app, &c, "pref@example.com").await;

    let page = c.page(&format!("/p/{token}")).await;
    assert_eq!(page.select("#prefs-email"), vec!["pref@example.com"]);
    assert_eq!(
        page.html
            .select(&scraper::Selector::parse("input[name=topic]").unwrap())
            .count(),
        2,
        "only topics are offered"
    );
    let marketing: i64 = sqlx::query_scalar("SELECT id FROM tags WHERE name = '마케팅'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let body = format!(
        "name=%EB%B0%95%EC%98%81%ED%9D%AC%20%EC%88%98%EC%A0%95&language=ko&timezone=Asia%2FSeoul&topic={marketing}"
    );
    assert!(
        page.html
            .select(
                &scraper::Selector::parse("datalist#timezones option[value='Asia/Seoul']").unwrap()
            )
            .next()
            .is_some(),
        "time zones are offered from PostgreSQL's list"
    );
    let res = c
        .http
        .post(c.url(&format!("/p/{token}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=x&language=ko&timezone=Mars%2FOlympus")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(Page::from_response(res).await.select(".flash-error")[0].contains("Asia/Seoul"));
    let res = c
        .http
        .post(c.url(&format!("/p/{token}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (name, lang): (String, Option<String>) =
        sqlx::query_as("SELECT name, language FROM subscribers WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), lang.as_deref()),
        ("박영희 수정", Some("ko"))
    );
    let tz: Option<String> = sqlx::query_scalar("SELECT timezone FROM subscribers WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tz.as_deref(), Some("Asia/Seoul"));
    let topics: Vec<String> = sqlx::query_scalar(
        "SELECT t.name FROM subscribers s JOIN tags t ON t.id = ANY(s.tag_ids) WHERE s.id = $1",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(topics, vec!["마케팅"]);

    // Export: the preferences link only asks; the download link goes to the address
    // itself and works for an hour.
    let res = c
        .http
        .post(c.url(&format!("/p/{token}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // They chose Korean above, so the page is Korean: "the link works for one hour".
    assert!(Page::from_response(res).await.select("#public-message")[0].contains("1시간"));
    let export_link = mailed_link(&app, "pref@example.com", "/d/export/").await;
    assert_eq!(
        c.get(&format!("/d/export/{token}")).await.status(),
        StatusCode::NOT_FOUND,
        "the long-lived preferences token is not an export link"
    );
    let erase_token = export_link.rsplit_once('/').unwrap().1;
    assert_eq!(
        c.get(&format!("/d/erase/{erase_token}")).await.status(),
        StatusCode::NOT_FOUND,
        "an export link does not erase"
    );
    let export: Value = c.get(&export_link).await.json().await.unwrap();
    assert_eq!(export["subscriber"]["email"], "pref@example.com");
    assert!(
        export["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "preferences_changed")
    );
    app.advance(chrono::Duration::minutes(61));
    let res = c.get(&export_link).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Expired, and in their language: the link was signed for them.
    assert!(Page::from_response(res).await.select("#public-message")[0].contains("유효 기간"));

    // Erasure: asking does nothing by itself; the mailed link shows a button; only the
    // POST erases.
    let res = c
        .http
        .post(c.url(&format!("/p/{token}/erase")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(subscriber(&app, "pref@example.com").await.is_some());
    let erase_link = mailed_link(&app, "pref@example.com", "/d/erase/").await;
    let confirm = c.page(&erase_link).await;
    assert_eq!(
        confirm.attr("#public-action", "action").as_deref(),
        Some(erase_link.as_str())
    );
    assert!(
        subscriber(&app, "pref@example.com").await.is_some(),
        "GET never erases"
    );

    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let res = c.http.post(c.url(&erase_link)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(subscriber(&app, "pref@example.com").await.is_none());
    let (events_after, attached): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(subscriber_id) FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (events_after, attached),
        (events_before + 1, 0),
        "counts survive, detached from the person"
    );
    let leftover: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE data::text LIKE '%pref@example.com%' OR data::text LIKE '%박영희%'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(leftover, 0);
    let suppressed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM suppressions WHERE reason = 'erased'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(suppressed, 1);
    assert_eq!(
        c.page(&format!("/p/{token}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_dashboard_lists_searches_pages_and_profiles_subscribers() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    // Create a form through the dashboard.
    let res = editor
        .post_form(
            "/audience/forms",
            &[("name", "블로그 구독"), ("slug", "blog"), ("tags", "blog")],
        )
        .await;
    assert_eq!(location(&res), "/audience/forms");
    let forms_page = editor.page("/audience/forms").await;
    assert!(
        forms_page
            .select("[data-form=blog] pre.snippet")
            .iter()
            .any(|s| s.contains("/f/blog"))
    );
    let res = editor
        .post_form("/audience/forms", &[("name", "dup"), ("slug", "blog")])
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let now = app.clock.now();
    sqlx::query("INSERT INTO subscribers (email, name, status, created_at) SELECT 'bulk' || i || '@example.com', '구독자 ' || i, 'active', $1 - (i || ' minutes')::interval FROM generate_series(1, 60) i")
        .bind(now)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO subscribers (email, name, status, created_at) VALUES ('gone@example.com', '홍길동', 'unsubscribed', $1)").bind(now).execute(&app.pool).await.unwrap();

    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let page = viewer.page("/audience").await;
    assert_eq!(page.select("#total"), vec!["61"]);
    assert_eq!(page.select("#subscribers-table tbody tr").len(), 50);
    let next = page.attr("#next-page", "href").expect("a next page");
    let page2 = viewer.page(&next).await;
    assert_eq!(page2.select("#subscribers-table tbody tr").len(), 11);
    assert!(!page2.exists("#next-page"));

    let found = viewer.page("/audience?q=%ED%99%8D%EA%B8%B8").await; // "홍길"
    assert_eq!(
        found.select("#subscribers-table td.email"),
        vec!["gone@example.com"]
    );
    let unsub = viewer.page("/audience?status=unsubscribed").await;
    assert_eq!(
        unsub.select("#subscribers-table td.email"),
        vec!["gone@example.com"]
    );
    let new_stage = viewer.page("/audience?stage=new").await;
    assert_eq!(new_stage.select("#subscribers-table tbody tr").len(), 50);
    let wildcard = viewer.page("/audience?q=%25").await;
    assert!(
        wildcard.exists("#no-subscribers"),
        "a % is searched for literally"
    );

    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = 'gone@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let profile = viewer.page(&format!("/audience/subscribers/{id}")).await;
    assert_eq!(profile.select("#subscriber-status"), vec!["unsubscribed"]);
    assert_eq!(profile.select("#subscriber-stage"), vec!["new"]);
    assert!(
        !profile.exists("form[action$='/erase']"),
        "viewers get no erase button"
    );
    assert_eq!(
        viewer
            .post_form(&format!("/audience/subscribers/{id}/erase"), &[])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer.page("/audience/subscribers/999999").await.status,
        StatusCode::NOT_FOUND
    );

    let res = editor
        .post_form(&format!("/audience/subscribers/{id}/erase"), &[])
        .await;
    assert_eq!(location(&res), "/audience?notice=erased");
    assert!(subscriber(&app, "gone@example.com").await.is_none());
}

#[tokio::test]
async fn lifecycle_thresholds_are_owner_settings() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.signed_in(Role::Owner).await;
    let res = owner
        .post_form(
            "/settings/audience",
            &[
                ("new_days", "7"),
                ("active_days", "20"),
                ("churn_days", "60"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/settings/audience?notice=settings-saved");
    let page = owner.page("/settings/audience").await;
    assert_eq!(page.attr("#new_days", "value").as_deref(), Some("7"));
    let res = owner
        .post_form(
            "/settings/audience",
            &[
                ("new_days", "7"),
                ("active_days", "60"),
                ("churn_days", "30"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = owner
        .post_form(
            "/settings/audience",
            &[
                ("new_days", "x"),
                ("active_days", "60"),
                ("churn_days", "90"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let lc = loopline::audience::lifecycle::Lifecycle::load(&app.pool)
        .await
        .unwrap();
    assert_eq!((lc.new_days, lc.active_days, lc.churn_days), (7, 20, 60));
}

#[tokio::test]
async fn fields_and_topics_are_managed_from_the_dashboard() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let res = editor
        .post_form(
            "/audience/fields",
            &[
                ("key", "city"),
                ("label", "도시"),
                ("field_type", "text"),
                ("choices", ""),
            ],
        )
        .await;
    assert_eq!(location(&res), "/audience/fields");
    let res = editor
        .post_form(
            "/audience/fields",
            &[
                ("key", "plan"),
                ("label", "Plan"),
                ("field_type", "choice"),
                ("choices", "free, pro"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/audience/fields");
    for bad in [
        [
            ("key", "city"),
            ("label", "again"),
            ("field_type", "text"),
            ("choices", ""),
        ],
        [
            ("key", "1bad"),
            ("label", "x"),
            ("field_type", "text"),
            ("choices", ""),
        ],
        [
            ("key", "tier"),
            ("label", "Tier"),
            ("field_type", "choice"),
            ("choices", ""),
        ],
        [
            ("key", "x"),
            ("label", "x"),
            ("field_type", "colour"),
            ("choices", ""),
        ],
    ] {
        assert_eq!(
            editor.post_form("/audience/fields", &bad).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad:?}"
        );
    }
    let page = editor.page("/audience/fields").await;
    assert_eq!(page.select("#fields-table code"), vec!["city", "plan"]);
    let choices: Vec<String> =
        sqlx::query_scalar("SELECT unnest(choices) FROM custom_fields WHERE key = 'plan'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(choices, vec!["free", "pro"]);

    let tag: i64 = sqlx::query_scalar("INSERT INTO tags (name) VALUES ('생산성') RETURNING id")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let res = editor
        .post_form(&format!("/audience/tags/{tag}/topic"), &[])
        .await;
    assert_eq!(location(&res), "/audience/fields");
    let topic: bool = sqlx::query_scalar("SELECT is_topic FROM tags WHERE id = $1")
        .bind(tag)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(topic);
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    assert_eq!(
        viewer
            .post_form(&format!("/audience/tags/{tag}/topic"), &[])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bulk_actions_run_as_jobs_on_a_selection_or_a_segment() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    sqlx::query("INSERT INTO subscribers (email, name, status, created_at, fields) SELECT 'b' || i || '@example.com', '', 'active', $1, jsonb_build_object('n', i) FROM generate_series(1, 2500) i")
        .bind(now)
        .execute(&app.pool)
        .await
        .unwrap();
    let (editor, _) = app.signed_in(Role::Editor).await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM subscribers ORDER BY id LIMIT 3")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let res = editor
        .post_form(
            "/audience/bulk",
            &[
                ("scope", "selected"),
                ("action", "tag"),
                ("tag", "VIP 고객"),
                ("id", &a),
                ("id", &b),
            ],
        )
        .await;
    assert_eq!(location(&res), "/settings/jobs?notice=bulk-queued");
    assert_eq!(app.drain_jobs().await, 1);
    let err: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE kind = 'audience.bulk'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(err, None);
    let tagged: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers s JOIN tags t ON t.id = ANY(s.tag_ids) WHERE t.name = 'VIP 고객'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(tagged, 2);

    // A whole segment (2,500 people, several pages), with progress recorded.
    let seg = loopline::audience::segments::save(
        &app.pool,
        "all active",
        &loopline::audience::segments::Condition::Status {
            is: loopline::audience::subscribers::Status::Active,
        },
    )
    .await
    .unwrap();
    let seg_s = seg.to_string();
    editor
        .post_form(
            "/audience/bulk",
            &[
                ("scope", "segment"),
                ("segment", &seg_s),
                ("action", "unsubscribe"),
            ],
        )
        .await;
    app.drain_jobs().await;
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscribers WHERE status = 'active'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(active, 0);
    let (done, total): (Option<i64>, Option<i64>) = sqlx::query_as("SELECT progress_done, progress_total FROM jobs WHERE kind = 'audience.bulk' ORDER BY id DESC LIMIT 1").fetch_one(&app.pool).await.unwrap();
    assert_eq!((done, total), (Some(2500), Some(2500)));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'unsubscribed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 2500);

    // Nothing ticked, or no tag: a clear 422, nothing queued.
    let jobs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        editor
            .post_form(
                "/audience/bulk",
                &[("scope", "selected"), ("action", "delete")]
            )
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        editor
            .post_form(
                "/audience/bulk",
                &[("scope", "selected"), ("action", "tag"), ("id", &a)]
            )
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let jobs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs_before, jobs_after);

    let c = ids[2].to_string();
    editor
        .post_form(
            "/audience/bulk",
            &[("scope", "selected"), ("action", "delete"), ("id", &c)],
        )
        .await;
    app.drain_jobs().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 2499);
}

#[tokio::test]
async fn an_old_confirmation_link_cannot_bring_back_someone_who_left_and_erasure_leaves_no_trace() {
    let app = TestApp::spawn().await;
    form(&app, "news", true, "").await;
    let c = app.client();
    c.post_form(
        "/f/news",
        &[("email", "leaver@example.com"), ("name", "떠난 사람")],
    )
    .await;
    let id = subscriber(&app, "leaver@example.com").await.unwrap().0;
    let confirm = path_of(
        confirmation_jobs(&app).await[0]["confirm_url"]
            .as_str()
            .unwrap(),
    );
    c.http.post(c.url(&confirm)).send().await.unwrap();
    assert_eq!(
        subscriber(&app, "leaver@example.com").await.unwrap().1,
        "active"
    );
    app.advance(chrono::Duration::hours(1));
    loopline::audience::subscribers::unsubscribe(&app.pool, id, app.clock.now(), "link")
        .await
        .unwrap();
    app.advance(chrono::Duration::hours(1));
    let res = c.http.post(c.url(&confirm)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::GONE);
    assert_eq!(
        subscriber(&app, "leaver@example.com").await.unwrap().1,
        "unsubscribed"
    );

    // Signing up again asks for a fresh confirmation; erasure then removes the queued
    // mail too, and a stranger's signup does not lift the suppression.
    c.post_form("/f/news", &[("email", "leaver@example.com")])
        .await;
    assert_eq!(confirmation_jobs(&app).await.len(), 2);
    // The mail they were sent so far, captured locally (no SMTP server in tests).
    assert!(app.send_mail().await.sent >= 1);
    let token = links::subscriber_token(&app.state.keys, id);
    c.http
        .post(c.url(&format!("/p/{token}/erase")))
        .send()
        .await
        .unwrap();
    let erase_link: String = sqlx::query_scalar(
        "SELECT data->>'link' FROM messages WHERE idempotency_key LIKE 'data-erase:%' AND subscriber_id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    c.http
        .post(c.url(&path_of(&erase_link)))
        .send()
        .await
        .unwrap();
    let mentions: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE payload::text LIKE '%leaver@example.com%' AND status <> 'done'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(mentions, 0, "no queued work still carries the address");
    // Nor does any mail they were sent, or its captured copy.
    let (to_them, copies): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE to_email = 'leaver@example.com'),
                (SELECT count(*) FROM captured_mail WHERE convert_from(raw, 'UTF8') LIKE '%leaver@example.com%')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((to_them, copies), (0, 0), "no mail keeps the address");
    c.post_form("/f/news", &[("email", "leaver@example.com")])
        .await;
    let suppressed: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(suppressed, 1, "only the owner's confirmation lifts it");
    let new_confirm = path_of(
        confirmation_jobs(&app).await.last().unwrap()["confirm_url"]
            .as_str()
            .unwrap(),
    );
    c.http.post(c.url(&new_confirm)).send().await.unwrap();
    let suppressed: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(suppressed, 0);
}

#[tokio::test]
async fn viewers_do_not_see_subscriber_links_and_segment_filters_survive_paging() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    sqlx::query("INSERT INTO subscribers (email, name, status, created_at) SELECT 'v' || i || '@example.com', '', CASE WHEN i % 2 = 0 THEN 'active' ELSE 'unsubscribed' END::subscriber_status, $1 FROM generate_series(1, 130) i")
        .bind(now)
        .execute(&app.pool)
        .await
        .unwrap();
    let seg = loopline::audience::segments::save(
        &app.pool,
        "active ones",
        &loopline::audience::segments::Condition::Status {
            is: loopline::audience::subscribers::Status::Active,
        },
    )
    .await
    .unwrap();
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let page = viewer.page(&format!("/audience?segment={seg}")).await;
    assert_eq!(page.select("#subscribers-table tbody tr").len(), 50);
    let next = page.attr("#next-page", "href").unwrap();
    let page2 = viewer.page(&next).await;
    assert!(
        page2
            .select("#subscribers-table td.status")
            .iter()
            .all(|s| s == "active"),
        "page 2 keeps the segment"
    );
    assert_eq!(page2.select("#subscribers-table tbody tr").len(), 15);
    let id: i64 = sqlx::query_scalar("SELECT min(id) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let profile = viewer.page(&format!("/audience/subscribers/{id}")).await;
    assert!(!profile.exists("#preferences-url") && !profile.exists("#unsubscribe-url"));
    let (editor, _) = app.signed_in(Role::Editor).await;
    assert!(
        editor
            .page(&format!("/audience/subscribers/{id}"))
            .await
            .exists("#preferences-url")
    );
}
