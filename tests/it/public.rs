//! The pages subscribers see, in their language: the stored language of the subscriber a
//! signed link names, else the form's, else `Accept-Language`, else English; and the
//! dashboard in the language each user chooses.

use loopline::{
    accounts::Role,
    audience::{
        forms::{self, NewForm},
        links,
    },
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Page, TestApp, TestClient, location};

const KO_BROWSER: &str = "ko-KR,ko;q=0.9,en;q=0.8";
const EN_BROWSER: &str = "en-US";

async fn form(app: &TestApp, slug: &str, double_opt_in: bool) {
    forms::create(
        &app.pool,
        &NewForm::parse("뉴스레터", slug, double_opt_in, "").unwrap(),
    )
    .await
    .unwrap();
}

/// A request with (or without) an `Accept-Language` header, read as a page.
async fn send(
    c: &TestClient,
    method: reqwest::Method,
    path: &str,
    accept: Option<&str>,
    form: &[(&str, &str)],
) -> Page {
    let mut req = c.http.request(method.clone(), c.url(path));
    if let Some(a) = accept {
        req = req.header("accept-language", a);
    }
    if method != reqwest::Method::GET {
        req = req.form(form);
    }
    Page::from_response(req.send().await.unwrap()).await
}

async fn get(c: &TestClient, path: &str, accept: Option<&str>) -> Page {
    send(c, reqwest::Method::GET, path, accept, &[]).await
}

async fn post(c: &TestClient, path: &str, accept: Option<&str>, form: &[(&str, &str)]) -> Page {
    send(c, reqwest::Method::POST, path, accept, form).await
}

fn lang(page: &Page) -> String {
    page.attr("html", "lang").unwrap_or_default()
}

/// Signs up through the single opt-in form `quick`, with `language` in the form (if
/// any) and no `Accept-Language`; returns the subscriber's id and signed link token.
async fn subscribe(app: &TestApp, email: &str, language: Option<&str>) -> (i64, String) {
    let c = app.client();
    let mut fields = vec![("email", email), ("name", "김하늘")];
    if let Some(l) = language {
        fields.push(("language", l));
    }
    let page = post(&c, "/f/quick", None, &fields).await;
    assert_eq!(page.status, StatusCode::OK);
    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (id, links::subscriber_token(&app.state.keys, id))
}

async fn stored_language(app: &TestApp, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT language FROM subscribers WHERE email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn public_unsubscribe_pages_speak_the_subscribers_language() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false).await;
    let (_, ko_token) = subscribe(&app, "haneul@example.kr", Some("ko")).await;
    let (_, en_token) = subscribe(&app, "sky@example.com", Some("en")).await;
    let c = app.client();

    // Korean subscriber: Korean even from an English browser (their choice comes first).
    let page = get(&c, &format!("/u/{ko_token}"), Some(EN_BROWSER)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(lang(&page), "ko");
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("h1"), vec!["구독 취소"]);
    assert_eq!(
        page.select("#public-question"),
        vec!["haneul@example.kr 주소로 더 이상 메일을 받지 않으시겠습니까?"]
    );
    assert_eq!(page.select("#public-action button"), vec!["구독 취소하기"]);
    assert_eq!(
        page.select("#secondary-link"),
        vec!["구독을 취소하는 대신 수신 설정 바꾸기"]
    );
    let page = post(&c, &format!("/u/{ko_token}"), Some(EN_BROWSER), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(
        page.select("#public-message"),
        vec!["구독이 취소되었습니다. 앞으로 메일을 보내 드리지 않겠습니다."]
    );
    // Coming back later: still Korean.
    let page = get(&c, &format!("/u/{ko_token}"), None).await;
    assert_eq!(
        page.select("#public-message"),
        vec!["이미 구독이 취소된 주소입니다."]
    );

    // English subscriber: English even from a Korean browser.
    let page = get(&c, &format!("/u/{en_token}"), Some(KO_BROWSER)).await;
    assert!(page.exists("html[lang=en]"));
    assert_eq!(page.select("h1"), vec!["Unsubscribe"]);
    assert_eq!(
        page.select("#public-question"),
        vec!["Stop sending mail to sky@example.com?"]
    );
    let page = post(&c, &format!("/u/{en_token}"), Some(KO_BROWSER), &[]).await;
    assert!(page.exists("html[lang=en]"));
    assert_eq!(
        page.select("#public-message"),
        vec!["You are unsubscribed and will not receive any more mail from us."]
    );

    // A link that does not verify names nobody: the browser's language, a 404 page.
    let forged = format!("1.{}", ko_token.split_once('.').unwrap().1);
    for (accept, expected) in [
        (Some(KO_BROWSER), "ko"),
        (Some(EN_BROWSER), "en"),
        (None, "en"),
    ] {
        let page = get(&c, &format!("/u/{forged}x"), accept).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        assert_eq!(lang(&page), expected, "{accept:?}");
    }
    let page = post(&c, &format!("/u/{forged}x"), Some(KO_BROWSER), &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert_eq!(
        page.select("#public-message"),
        vec!["올바르지 않은 링크입니다. 링크 주소가 일부만 복사되었을 수 있습니다."]
    );
}

#[tokio::test]
async fn public_signup_page_follows_accept_language_and_the_choice_sticks() {
    let app = TestApp::spawn().await;
    form(&app, "news", true).await;
    let c = app.client();

    let page = get(&c, "/f/news", Some(KO_BROWSER)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("#signup-form button"), vec!["구독하기"]);
    assert_eq!(page.select("label[for=name]"), vec!["이름 (선택)"]);
    for (accept, expected) in [
        (Some(EN_BROWSER), "en"),
        (Some("de-DE,en;q=0.5,ko;q=0.7"), "ko"),
        (Some("ko;q=0,en"), "en"),
        (Some("fr"), "en"),
        (None, "en"),
    ] {
        let page = get(&c, "/f/news", accept).await;
        assert_eq!(lang(&page), expected, "{accept:?}");
    }
    let page = get(&c, "/f/news", Some(EN_BROWSER)).await;
    assert_eq!(page.select("#signup-form button"), vec!["Subscribe"]);

    // Signing up from the Korean page: a Korean answer, and the language is kept, so
    // the confirmation mail and the confirmation page are Korean too.
    let page = post(
        &c,
        "/f/news",
        Some(KO_BROWSER),
        &[("email", "minji@example.kr"), ("name", "김민지")],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(
        page.select("#signup-result"),
        vec!["거의 다 되었습니다. 방금 보내 드린 메일의 링크를 눌러 구독을 확인해 주세요."]
    );
    assert_eq!(
        stored_language(&app, "minji@example.kr").await.as_deref(),
        Some("ko")
    );
    let (subject, confirm_url): (String, String) = sqlx::query_as(
        "SELECT b.subject, m.data ->> 'confirm_url' FROM messages m JOIN message_bodies b ON b.id = m.body_id
         WHERE m.to_email = 'minji@example.kr'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(subject, "구독을 확인해 주세요");
    let confirm = format!(
        "/{}",
        confirm_url
            .split_once("://")
            .unwrap()
            .1
            .split_once('/')
            .unwrap()
            .1
    );
    let page = get(&c, &confirm, Some(EN_BROWSER)).await;
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("h1"), vec!["구독 확인"]);
    assert_eq!(
        page.select("#public-action button"),
        vec!["네, 구독하겠습니다"]
    );
    let page = post(&c, &confirm, Some(EN_BROWSER), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.select("#public-message"),
        vec!["구독이 완료되었습니다. 감사합니다!"]
    );
    // A mangled confirmation link: the browser's language.
    let page = get(&c, &format!("{confirm}0"), Some(EN_BROWSER)).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.exists("html[lang=en]"));

    // A form's own language wins over the browser's.
    let page = post(
        &c,
        "/f/news",
        Some(KO_BROWSER),
        &[("email", "not an address"), ("language", "en")],
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.exists("html[lang=en]"));
    assert_eq!(
        page.select(".flash-error"),
        vec!["an email address needs one @ with something on both sides"]
    );
    let page = post(
        &c,
        "/f/news",
        Some(KO_BROWSER),
        &[("email", "not an address")],
    )
    .await;
    assert_eq!(
        page.select(".flash-error"),
        vec!["이메일 주소에는 @가 하나 있어야 하고, 그 앞뒤에 내용이 있어야 합니다."]
    );

    // The JSON endpoint: errors in the body's language, else the header's.
    let json = |body: Value, accept: &'static str| {
        c.http
            .post(c.url("/api/v1/forms/news/subscribe"))
            .header("accept-language", accept)
            .json(&body)
            .send()
    };
    let res = json(serde_json::json!({ "email": "nope" }), KO_BROWSER)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "이메일 주소에는 @가 하나 있어야 하고, 그 앞뒤에 내용이 있어야 합니다."
    );
    let res = json(
        serde_json::json!({ "email": "nope", "language": "en" }),
        KO_BROWSER,
    )
    .await
    .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "an email address needs one @ with something on both sides"
    );
    let res = json(serde_json::json!({ "email": "jun@example.kr" }), KO_BROWSER)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["message"],
        "거의 다 되었습니다. 방금 보내 드린 메일의 링크를 눌러 구독을 확인해 주세요."
    );
}

#[tokio::test]
async fn public_preferences_page_switches_language_once_saved() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false).await;
    let (_, token) = subscribe(&app, "yuna@example.kr", None).await;
    assert_eq!(stored_language(&app, "yuna@example.kr").await, None);
    let c = app.client();
    let prefs = format!("/p/{token}");

    let page = get(&c, &prefs, None).await;
    assert!(page.exists("html[lang=en]"));
    assert_eq!(page.select("h1")[0], "Your preferences");
    assert_eq!(
        page.attr("#language option[selected]", "value").as_deref(),
        Some("")
    );

    // Saving Korean: the answer and every page after it are Korean.
    let page = post(&c, &prefs, None, &[("name", "김유나"), ("language", "ko")]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(
        page.select("[role=status]"),
        vec!["수신 설정이 저장되었습니다."]
    );
    assert_eq!(
        stored_language(&app, "yuna@example.kr").await.as_deref(),
        Some("ko")
    );
    let page = get(&c, &prefs, Some(EN_BROWSER)).await;
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("h1")[0], "수신 설정");
    assert_eq!(page.attr("#name", "value").as_deref(), Some("김유나"));
    assert_eq!(
        page.attr("#language option[selected]", "value").as_deref(),
        Some("ko")
    );
    assert_eq!(page.select("#unsubscribe-link"), vec!["구독 취소"]);
    // The other signed-link pages follow too.
    let page = get(&c, &format!("/u/{token}"), Some(EN_BROWSER)).await;
    assert!(page.exists("html[lang=ko]"));
    let page = post(&c, &format!("{prefs}/export"), Some(EN_BROWSER), &[]).await;
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("h1"), vec!["내 정보 내려받기"]);

    // A refused value: shown again in the page's language, nothing saved.
    let page = post(&c, &prefs, None, &[("name", "x"), ("language", "xx")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(
        page.select("[role=alert]"),
        vec!["목록에서 언어를 골라 주세요."]
    );
    assert_eq!(
        stored_language(&app, "yuna@example.kr").await.as_deref(),
        Some("ko")
    );

    // Back to English, then to "automatic": the browser decides again.
    let page = post(&c, &prefs, None, &[("name", "Yuna"), ("language", "en")]).await;
    assert!(page.exists("html[lang=en]"));
    assert_eq!(
        page.select("[role=status]"),
        vec!["Your preferences are saved."]
    );
    post(&c, &prefs, None, &[("name", "Yuna"), ("language", "")]).await;
    assert_eq!(stored_language(&app, "yuna@example.kr").await, None);
    assert!(
        get(&c, &prefs, Some(KO_BROWSER))
            .await
            .exists("html[lang=ko]")
    );
    assert!(
        get(&c, &prefs, Some(EN_BROWSER))
            .await
            .exists("html[lang=en]")
    );
}

#[tokio::test]
async fn public_dashboard_speaks_the_language_each_user_chooses() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false).await;
    subscribe(&app, "active@example.kr", None).await;
    let (mut c, user) = app.signed_in(Role::Editor).await;

    let page = get(&c, "/", None).await;
    assert!(page.exists("html[lang=en]"));
    assert_eq!(page.select("#nav-audience"), vec!["Audience"]);
    // Until the user chooses, the browser's language.
    let page = get(&c, "/", Some(KO_BROWSER)).await;
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("#nav-audience"), vec!["구독자"]);

    // Choosing Korean on the account page, from an English browser.
    c.refresh_csrf("/settings/account").await;
    let csrf = c.csrf.clone().unwrap();
    let res = c
        .http
        .post(c.url("/settings/account/language"))
        .header("accept-language", EN_BROWSER)
        .form(&[("language", "ko"), ("_csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/settings/account?notice=language-saved");
    let stored: Option<String> = sqlx::query_scalar("SELECT language FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("ko"));

    let page = get(
        &c,
        "/settings/account?notice=language-saved",
        Some(EN_BROWSER),
    )
    .await;
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("#nav-audience"), vec!["구독자"]);
    assert_eq!(page.select("#nav-settings"), vec!["설정"]);
    assert_eq!(page.select("[role=status]"), vec!["언어를 저장했습니다."]);
    assert_eq!(
        page.attr("#language option[selected]", "value").as_deref(),
        Some("ko")
    );
    // Status and stage names come from the table too.
    let page = get(&c, "/audience", None).await;
    assert_eq!(page.select("#subscribers-table td.status"), vec!["활성"]);
    assert_eq!(
        page.attr("#subscribers-table td.status", "data-status")
            .as_deref(),
        Some("active")
    );
    assert_eq!(page.select("#subscribers-table td.stage"), vec!["신규"]);
    // Error pages of a signed-in user: their language, not the browser's.
    let page = get(&c, "/audience/subscribers/999999", Some(EN_BROWSER)).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("h1"), vec!["문제가 생겼습니다"]);

    // Another user is not affected; a language Loopline lacks is refused.
    let (other, _) = app.signed_in(Role::Viewer).await;
    assert!(get(&other, "/", None).await.exists("html[lang=en]"));
    let res = c
        .post_form("/settings/account/language", &[("language", "xx")])
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The sign-in page, before anyone is known: the browser's language.
    let anon = app.client();
    let page = get(&anon, "/login", Some(KO_BROWSER)).await;
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(page.select("h1"), vec!["로그인"]);
}
