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
    signed_up_in_korean(&app, &page, "minji@example.kr").await;
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

/// English UI words that must not reach a Korean dashboard user. Compared as whole
/// words, case-insensitively.
const ENGLISH_UI_WORDS: &[&str] = &[
    "save",
    "delete",
    "cancel",
    "search",
    "subscribers",
    "subscriber",
    "back",
    "next",
    "previous",
    "filter",
    "export",
    "import",
    "status",
    "tags",
    "tag",
    "name",
    "add",
    "remove",
    "create",
    "settings",
    "password",
    "language",
    "choose",
    "select",
    "field",
    "fields",
    "segment",
    "segments",
    "preview",
    "send",
    "count",
    "upload",
    "file",
    "role",
    "users",
    "error",
    "unknown",
    "bytes",
    "row",
    "column",
    "the",
    "must",
    "not",
    "any",
    "match",
    "action",
    "scope",
    "condition",
    "comparison",
    "value",
    "what",
    "skip",
    "stage",
    "days",
    "main",
    "confirmation",
    "subscribed",
    "opened",
    "clicked",
    "yes",
    "choice",
    "text",
    "number",
    "date",
    "found",
    "permission",
    "form",
    "give",
    "least",
    "already",
    "exists",
    "invalid",
    "valid",
    "line",
    "reason",
    "hello",
    "read",
    "post",
];

/// Every English UI word a page shows: its text nodes (outside `script`, `style` and
/// the code-like `code`, `pre`, `textarea`) and its `title`, `aria-label` and
/// `placeholder` attributes. Tokens that are addresses, paths or identifiers (holding
/// `@ . / : _`) and merge fields (`{{ … }}`) are not words; `data` lists words the test
/// put in itself.
fn english_words(page: &Page, data: &[&str]) -> Vec<String> {
    use scraper::Node;
    let mut texts: Vec<String> = Vec::new();
    for node in page.html.tree.nodes() {
        match node.value() {
            Node::Text(t) => {
                let hidden = node.ancestors().any(|a| {
                    a.value().as_element().is_some_and(|e| {
                        matches!(e.name(), "script" | "style" | "code" | "pre" | "textarea")
                    })
                });
                if !hidden {
                    texts.push(t.to_string());
                }
            }
            Node::Element(e) => {
                for a in ["title", "aria-label", "placeholder"] {
                    if let Some(v) = e.attr(a) {
                        texts.push(v.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    texts
        .iter()
        .flat_map(|text| english_words_in(text, data))
        .collect()
}

/// The English UI words in one text (see [`english_words`]).
fn english_words_in(text: &str, data: &[&str]) -> Vec<String> {
    let mut rest = text;
    let mut plain = String::new();
    while let Some(i) = rest.find("{{") {
        plain.push_str(&rest[..i]);
        rest = rest[i..].find("}}").map_or("", |j| &rest[i + j + 2..]);
    }
    plain.push_str(rest);
    let mut found = Vec::new();
    for token in plain.split_whitespace() {
        if token.contains(['@', '.', '/', ':', '_']) && token.len() > 1 {
            continue;
        }
        for word in token.split(|c: char| !c.is_ascii_alphabetic()) {
            let w = word.to_ascii_lowercase();
            if ENGLISH_UI_WORDS.contains(&w.as_str())
                && !data.iter().any(|d| d.eq_ignore_ascii_case(word))
            {
                found.push(format!("{word:?} in {:?}", text.trim()));
            }
        }
    }
    found
}

#[tokio::test]
async fn public_korean_dashboard_shows_no_english_ui_words() {
    let app = TestApp::spawn().await;
    form(&app, "quick", false).await;
    let (sub, _) = subscribe(&app, "haneul@example.kr", Some("ko")).await;
    let (mut c, user) = app.signed_in(Role::Owner).await;
    sqlx::query("UPDATE users SET language = 'ko' WHERE id = $1")
        .bind(user.id)
        .execute(&app.pool)
        .await
        .unwrap();
    c.refresh_csrf("/settings/account").await;
    // Words of the test's own data, shown as data (CSV headers, a field key).
    let data: &[&str] = &["email", "name", "city"];

    // Data for every page to show: a field, a tag, a segment, an import with a report,
    // an outbox message, a failed job.
    let ok = |res: &reqwest::Response| {
        assert!(
            res.status().is_redirection() || res.status().is_success(),
            "{}",
            res.status()
        )
    };
    ok(&c
        .post_form(
            "/audience/fields",
            &[("key", "city"), ("label", "도시"), ("field_type", "text")],
        )
        .await);
    ok(&c
        .post_form(
            "/audience/bulk",
            &[
                ("action", "tag"),
                ("scope", "selected"),
                ("id", &sub.to_string()),
                ("tag", "단골"),
            ],
        )
        .await);
    app.drain_jobs().await;
    ok(&c
        .post_form(
            "/audience/segments",
            &[
                ("name", "활성 구독자"),
                ("c0_kind", "status"),
                ("c0_arg", "active"),
            ],
        )
        .await);
    let csv = "email,name\nhaneul@example.kr,김하늘\n주소아님,이름없음\nhaneul@example.kr,중복\n";
    let res = crate::imports::upload(&c, "구독자.csv", csv.as_bytes().to_vec()).await;
    let done = location(&res);
    let id: i64 = done.rsplit('/').next().unwrap().parse().unwrap();
    crate::imports::start_with_guessed_mapping(&app, &c, id, "add_update", "").await;
    let res = crate::imports::upload(&c, "두번째.csv", csv.as_bytes().to_vec()).await;
    let waiting = location(&res);
    // A file that is not a CSV fails at once; a bulk action whose segment is gone dies.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let failed = location(&crate::imports::upload(&c, "사진.png", png).await);
    let dead = dead_bulk_job(&app, 999_999).await;
    ok(&c
        .post_form(
            "/outbox/test",
            &[
                ("action", "send"),
                ("to", "haneul@example.kr"),
                ("subject", "안녕하세요"),
                ("body", "본문"),
                ("format", "markdown"),
            ],
        )
        .await);
    app.send_mail().await;
    let message: i64 = sqlx::query_scalar("SELECT max(id) FROM messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let segment: i64 = sqlx::query_scalar("SELECT max(id) FROM segments")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let mut pages: Vec<(String, Page)> = Vec::new();
    for path in [
        "/".to_string(),
        "/audience".into(),
        format!("/audience/subscribers/{sub}"),
        "/audience/segments".into(),
        format!("/audience?segment={segment}"),
        "/audience/imports".into(),
        done.clone(),
        waiting.clone(),
        failed.clone(),
        "/audience/fields".into(),
        "/audience/forms".into(),
        "/outbox".into(),
        format!("/outbox/{message}"),
        "/settings".into(),
        "/settings/jobs".into(),
        "/settings/users".into(),
        "/settings/account".into(),
        "/settings/audience".into(),
        "/calendar".into(),
        "/audience/subscribers/999999".into(),
    ] {
        pages.push((path.clone(), get(&c, &path, Some(EN_BROWSER)).await));
    }
    assert!(
        pages[6].1.exists("#report-table"),
        "the import has a report"
    );
    assert!(
        pages[7].1.exists("#mapping-table"),
        "an import waits for its mapping"
    );
    assert_eq!(
        pages[8].1.attr("#import-error", "data-code").as_deref(),
        Some("not_csv")
    );
    // Captured mail (no SMTP server here): where a server's reply would be, our own
    // words, in Korean.
    let captured = "여기에 보관됨: SMTP 서버가 설정되지 않아 실제로 보내지 않았습니다.";
    let outbox = &pages.iter().find(|(p, _)| p == "/outbox").unwrap().1;
    assert_eq!(outbox.select("#outbox-table td.reply")[0], captured);
    assert!(!outbox.exists("#outbox-table td.reply span[lang=en]"));
    let message_path = format!("/outbox/{message}");
    let message_page = &pages.iter().find(|(p, _)| *p == message_path).unwrap().1;
    assert_eq!(message_page.select("#message-reply"), vec![captured]);
    assert!(message_page.exists("html[lang=ko]"));
    // A remote server's reply stays as it came, marked English under a Korean label (the
    // same message, as it would read had it gone through a server).
    sqlx::query("DELETE FROM captured_mail WHERE message_id = $1")
        .bind(message)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE messages SET smtp_reply = '250 2.0.0 Ok: queued as 4F2A1' WHERE id = $1")
        .bind(message)
        .execute(&app.pool)
        .await
        .unwrap();
    let outbox = get(&c, "/outbox", Some(EN_BROWSER)).await;
    assert_eq!(
        outbox.select("#outbox-table td.reply span[lang=en]")[0],
        "250 2.0.0 Ok: queued as 4F2A1"
    );
    let message_page = get(&c, &message_path, Some(EN_BROWSER)).await;
    assert_eq!(
        message_page.select("#message-reply[lang=en]"),
        vec!["250 2.0.0 Ok: queued as 4F2A1"]
    );
    let jobs = &pages.iter().find(|(p, _)| p == "/settings/jobs").unwrap().1;
    assert_eq!(
        jobs.select(&format!("tr[data-job-id='{dead}'] .error-text")),
        vec!["세그먼트 #999999: 삭제되어 찾을 수 없습니다. 1번 시도한 뒤 멈췄습니다."]
    );

    // Pages shown again with what is wrong: each problem in Korean too.
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/settings/users",
            vec![("email", "nope"), ("password", "short"), ("role", "x")],
        ),
        (
            "/settings/account/password",
            vec![
                ("current_password", "x"),
                ("new_password", "short"),
                ("new_password_confirm", "other"),
            ],
        ),
        (
            "/audience/fields",
            vec![("key", "1 bad"), ("label", ""), ("field_type", "x")],
        ),
        ("/audience/forms", vec![("name", ""), ("slug", "-")]),
        (
            "/settings/audience",
            vec![("new_days", "0"), ("active_days", "x"), ("churn_days", "1")],
        ),
        (
            "/audience/segments",
            vec![("name", ""), ("c0_kind", "status"), ("c0_arg", "nope")],
        ),
        (
            "/audience/segments",
            vec![("name", "x"), ("c0_kind", "opened"), ("c0_arg", "many")],
        ),
        (
            "/audience/segments",
            vec![("name", "x"), ("advanced", "{not json")],
        ),
        (
            "/audience/segments",
            vec![
                ("name", "x"),
                (
                    "advanced",
                    r#"{"type":"field","key":"city","op":"greater_than","value":"1"}"#,
                ),
            ],
        ),
        (
            "/audience/bulk",
            vec![("action", "tag"), ("scope", "selected")],
        ),
        (
            "/outbox/test",
            vec![("action", "send"), ("to", "nope"), ("subject", "")],
        ),
        (
            "/outbox/test",
            vec![
                ("action", "preview"),
                ("to", "haneul@example.kr"),
                ("subject", "제목"),
                ("body", "첫 줄\n\n{{ subscriber.name }"),
            ],
        ),
    ];
    let waiting_start = format!("{waiting}/start");
    let mut refused = refused;
    refused.push((&waiting_start, vec![("col0", "name"), ("col1", "name")]));
    for (path, fields) in &refused {
        let page = Page::from_response(c.post_form(path, fields).await).await;
        assert!(
            page.status.is_client_error() || page.exists(".flash-error"),
            "{path}: {}",
            page.status
        );
        assert!(
            page.exists(".flash-error") || page.exists("#error-message"),
            "{path} names no problem"
        );
        pages.push((format!("POST {path} {fields:?}"), page));
    }
    let user_id = user.id.to_string();
    let self_delete = format!("/settings/users/{user_id}/delete");
    let page = Page::from_response(c.post_form(&self_delete, &[]).await).await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    pages.push((self_delete, page));

    let mut problems = Vec::new();
    for (path, page) in &pages {
        assert!(page.exists("html[lang=ko]"), "{path} is not in Korean");
        for w in english_words(page, data) {
            problems.push(format!("{path}: {w}"));
        }
    }
    assert!(
        problems.is_empty(),
        "English on Korean pages:\n{}",
        problems.join("\n")
    );

    // The same pages in English do use those words, so the check can see them.
    sqlx::query("UPDATE users SET language = 'en' WHERE id = $1")
        .bind(user.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let page = get(&c, "/audience", Some(EN_BROWSER)).await;
    assert!(!english_words(&page, data).is_empty());
}

/// Queues a bulk action on a segment that does not exist and runs it: the job dies at
/// once (its failure is final). Returns the job's id.
async fn dead_bulk_job(app: &TestApp, segment: i64) -> i64 {
    use loopline::{
        audience::bulk::{Action, BULK_JOB, Bulk, Scope},
        clock::Clock,
    };
    let bulk = Bulk {
        action: Action::Unsubscribe,
        tag: None,
        scope: Scope::Segment(segment),
    };
    let id = loopline::jobs::enqueue(
        &app.pool,
        app.clock.now(),
        loopline::jobs::NewJob::new(BULK_JOB, bulk),
    )
    .await
    .unwrap()
    .unwrap();
    app.drain_jobs().await;
    id
}

/// A signed-in editor whose dashboard speaks `language`.
async fn user_in(app: &TestApp, language: &str) -> TestClient {
    let (mut c, user) = app.signed_in(Role::Editor).await;
    sqlx::query("UPDATE users SET language = $2 WHERE id = $1")
        .bind(user.id)
        .bind(language)
        .execute(&app.pool)
        .await
        .unwrap();
    c.refresh_csrf("/settings/account").await;
    c
}

#[tokio::test]
async fn public_failed_imports_jobs_and_templates_read_in_each_users_language() {
    let app = TestApp::spawn().await;
    let ko = user_in(&app, "ko").await;
    let en = user_in(&app, "en").await;

    // Not a CSV: failed on upload, with a code; each reader gets their language, and the
    // English detail waits under "technical detail".
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let failed = location(&crate::imports::upload(&ko, "사진.png", png).await);
    let (code, detail): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT error_code, error FROM imports ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(code.as_deref(), Some("not_csv"));
    assert!(detail.unwrap().contains("doesn't look like a CSV"));
    let page = get(&ko, &failed, Some(EN_BROWSER)).await;
    assert_eq!(
        page.attr("#import-error", "data-code").as_deref(),
        Some("not_csv")
    );
    assert!(
        page.select("#import-error").join(" ").starts_with(
            "CSV 파일이 아닌 것 같습니다. 구독자 목록을 CSV로 내보낸 뒤 그 파일을 올려 주세요."
        ),
        "{:?}",
        page.select("#import-error")
    );
    assert_eq!(
        page.select("#import-error details summary"),
        vec!["기술 정보"]
    );
    assert!(
        page.select("#import-error details code[lang=en]")[0].contains("doesn't look like a CSV")
    );
    let page = get(&en, &failed, Some(KO_BROWSER)).await;
    assert!(
        page.select("#import-error")[0]
            .starts_with("This doesn't look like a CSV file. Export your subscribers as CSV")
    );
    assert_eq!(
        page.select("#import-error details summary"),
        vec!["Technical detail"]
    );

    // A file that empties before the job reads it: the job's file check fails it.
    let res = crate::imports::upload(&ko, "목록.csv", b"email\na@example.kr\n".to_vec()).await;
    let emptied = location(&res);
    let id: i64 = emptied.rsplit('/').next().unwrap().parse().unwrap();
    sqlx::query("DELETE FROM import_chunks WHERE import_id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    crate::imports::start_with_guessed_mapping(&app, &ko, id, "add_update", "").await;
    let page = get(&ko, &emptied, None).await;
    assert_eq!(
        page.attr("#import-status", "data-status").as_deref(),
        Some("failed")
    );
    assert_eq!(
        page.attr("#import-error", "data-code").as_deref(),
        Some("empty")
    );
    assert!(page.select("#import-error")[0].starts_with("빈 파일입니다."));
    let page = get(&en, &emptied, None).await;
    assert!(page.select("#import-error")[0].starts_with("The file is empty."));

    // Cancelled: said in each language too, as a notice rather than an error.
    let res = crate::imports::upload(&ko, "취소.csv", b"email\nb@example.kr\n".to_vec()).await;
    let cancelled = location(&res);
    let res = ko.post_form(&format!("{cancelled}/cancel"), &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = get(&ko, &cancelled, None).await;
    assert_eq!(
        page.select("#import-error[role=status]"),
        vec!["가져오기를 취소했습니다. 이미 가져온 행은 그대로 남습니다."]
    );
    let page = get(&en, &cancelled, None).await;
    assert_eq!(
        page.select("#import-error"),
        vec!["The import was cancelled. Rows already imported stay."]
    );

    // The database refuses a row and the import job has no attempts left: the import
    // says so, and its job points at the import.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.email = 'poison@example.kr' THEN RAISE EXCEPTION 'simulated failure'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON subscribers FOR EACH ROW EXECUTE FUNCTION refuse_poison();
         CREATE FUNCTION one_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            NEW.max_attempts := 1; RETURN NEW; END $$;
         CREATE TRIGGER one_attempt BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION one_attempt();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let res = crate::imports::upload(&ko, "독.csv", b"email\npoison@example.kr\n".to_vec()).await;
    let poisoned = location(&res);
    let import_id: i64 = poisoned.rsplit('/').next().unwrap().parse().unwrap();
    crate::imports::start_with_guessed_mapping(&app, &ko, import_id, "add_update", "").await;
    let page = get(&ko, &poisoned, None).await;
    assert_eq!(
        page.attr("#import-error", "data-code").as_deref(),
        Some("database")
    );
    assert!(
        page.select("#import-error")[0]
            .starts_with("데이터베이스 오류로 가져오기가 거듭 실패했습니다."),
        "{:?}",
        page.select("#import-error")
    );
    assert!(page.select("#import-error details code")[0].contains("simulated failure"));
    let page = get(&ko, "/settings/jobs", None).await;
    assert_eq!(
        page.select("tr[data-status=dead] td[data-kind='audience.import'] ~ td .error-text"),
        vec![format!(
            "가져오기 #{import_id}: 중단되었습니다. 이유는 가져오기 화면에서 확인하세요. 1번 시도한 뒤 멈췄습니다."
        )]
    );
    sqlx::raw_sql("DROP TRIGGER one_attempt ON jobs")
        .execute(&app.pool)
        .await
        .unwrap();

    // A job that dies: the kind named, what went wrong, what happens next.
    let dead = dead_bulk_job(&app, 424_242).await;
    let (code, params): (Option<String>, Value) =
        sqlx::query_as("SELECT error_code, error_params FROM jobs WHERE id = $1")
            .bind(dead)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(code.as_deref(), Some("segment_gone"));
    assert_eq!(params, serde_json::json!({ "segment": 424242 }));
    let row = format!("tr[data-job-id='{dead}']");
    let page = get(&ko, "/settings/jobs", None).await;
    assert_eq!(
        page.select(&format!("{row} td[data-kind]")),
        vec!["일괄 처리"]
    );
    assert_eq!(
        page.select(&format!("{row} .error-text")),
        vec!["세그먼트 #424242: 삭제되어 찾을 수 없습니다. 1번 시도한 뒤 멈췄습니다."]
    );
    assert!(
        page.select(&format!("{row} details code[lang=en]"))[0]
            .contains("segment 424242 no longer exists")
    );
    let page = get(&en, "/settings/jobs", None).await;
    assert_eq!(
        page.select(&format!("{row} td[data-kind]")),
        vec!["bulk action"]
    );
    assert_eq!(
        page.select(&format!("{row} .error-text")),
        vec!["Segment #424242 no longer exists. Stopped after 1 attempt."]
    );

    // A template that does not compile: where (part and line) and what, in each
    // language, for a preview and for a test send alike; the engine's words second.
    let broken = |action: &'static str| {
        vec![
            ("action", action),
            ("to", "me@example.kr"),
            ("subject", "제목"),
            ("body", "첫 줄\n\n{{ subscriber.name }"),
        ]
    };
    for action in ["preview", "send"] {
        let page = Page::from_response(ko.post_form("/outbox/test", &broken(action)).await).await;
        let flash = page.select(".flash-error");
        assert_eq!(flash.len(), 1, "{flash:?}");
        assert!(
            flash[0].starts_with(
                "본문 3번째 줄: 치환 태그를 잘못 썼습니다({{ }}와 {% %}를 확인해 주세요)."
            ),
            "{flash:?}"
        );
        assert_eq!(
            page.select(".flash-error details summary"),
            vec!["기술 정보"]
        );
        assert!(page.exists(".flash-error details code[lang=en]"));
        let page = Page::from_response(en.post_form("/outbox/test", &broken(action)).await).await;
        assert!(
            page.select(".flash-error")[0].starts_with(
                "Body, line 3: the merge tags are not written correctly (check {{ }} and {% %})"
            ),
            "{:?}",
            page.select(".flash-error")
        );
    }
    let page = Page::from_response(
        ko.post_form(
            "/outbox/test",
            &[
                ("action", "preview"),
                ("to", "me@example.kr"),
                ("subject", "{{ subscriber.name | shout }}님"),
                ("body", "본문"),
            ],
        )
        .await,
    )
    .await;
    assert!(
        page.select(".flash-error")[0].starts_with("제목 1번째 줄: 없는 필터를 썼습니다."),
        "{:?}",
        page.select(".flash-error")
    );
    assert!(page.select(".flash-error details code")[0].contains("shout"));
}

#[tokio::test]
async fn public_a_form_set_to_korean_speaks_korean_to_any_browser() {
    let app = TestApp::spawn().await;
    let editor = user_in(&app, "en").await;

    // Chosen in the form editor.
    let res = editor
        .post_form(
            "/audience/forms",
            &[
                ("name", "뉴스레터"),
                ("slug", "ko-news"),
                ("language", "ko"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (form_id, stored): (i64, Option<String>) =
        sqlx::query_as("SELECT id, language FROM forms WHERE slug = 'ko-news'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some("ko"));
    // A language Loopline lacks is refused, in the editor's language.
    let res = editor
        .post_form(
            "/audience/forms",
            &[("name", "x"), ("slug", "xx-news"), ("language", "xx")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The forms page: the form's language shown, and its snippet written in it.
    let page = get(&editor, "/audience/forms", None).await;
    let card = "[data-form=ko-news]";
    assert_eq!(
        page.attr(&format!("{card} .form-language"), "data-language")
            .as_deref(),
        Some("ko")
    );
    let snippet = page.select(&format!("{card} .snippet"))[0].clone();
    assert!(
        snippet.contains(r#"name="language" value="ko""#),
        "{snippet}"
    );
    assert!(snippet.contains("이 칸은 비워 두세요"), "{snippet}");
    assert!(snippet.contains("구독하기"), "{snippet}");
    assert!(!snippet.contains("Website"), "{snippet}");

    // The hosted page: Korean without Accept-Language, and even for an English browser;
    // its honeypot label too.
    for accept in [None, Some(EN_BROWSER)] {
        let page = get(&app.client(), "/f/ko-news", accept).await;
        assert!(page.exists("html[lang=ko]"), "{accept:?}");
        assert_eq!(page.select("#signup-form button"), vec!["구독하기"]);
        assert_eq!(
            page.select(".hp label[for=website]"),
            vec!["이 칸은 비워 두세요"]
        );
    }

    // Signing up with no language anywhere but the form's: stored Korean, and the
    // confirmation mail is Korean.
    let visitor = app.client();
    let page = post(
        &visitor,
        "/f/ko-news",
        None,
        &[("email", "seoyeon@example.kr")],
    )
    .await;
    signed_up_in_korean(&app, &page, "seoyeon@example.kr").await;
    assert_eq!(app.send_mail().await.sent, 1);
    let message: i64 =
        sqlx::query_scalar("SELECT id FROM messages WHERE to_email = 'seoyeon@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let raw = loopline::delivery::outbox::captured(&app.pool, message)
        .await
        .unwrap()
        .expect("the confirmation was captured");
    let mail = mailparse::parse_mail(&raw).unwrap();
    use mailparse::MailHeaderMap;
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("구독을 확인해 주세요")
    );
    let text = mail
        .subparts
        .iter()
        .flat_map(|p| std::iter::once(p).chain(p.subparts.iter()))
        .find(|p| p.ctype.mimetype == "text/plain")
        .expect("a text part")
        .get_body()
        .unwrap();
    assert!(text.contains("구독 확인하기"), "{text}");
    assert!(text.contains("링크는 7일 동안 유효합니다"), "{text}");
    assert!(!text.contains("Please confirm"), "{text}");

    // The submission's own language still comes first.
    let page = post(
        &visitor,
        "/f/ko-news",
        Some(KO_BROWSER),
        &[("email", "sky@example.com"), ("language", "en")],
    )
    .await;
    assert!(page.exists("html[lang=en]"));
    assert_eq!(
        stored_language(&app, "sky@example.com").await.as_deref(),
        Some("en")
    );
    let subject: String = sqlx::query_scalar(
        "SELECT b.subject FROM messages m JOIN message_bodies b ON b.id = m.body_id WHERE m.to_email = 'sky@example.com'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(subject, "Please confirm your subscription");

    // Back to "the browser decides": Accept-Language, else English.
    let res = editor
        .post_form(
            &format!("/audience/forms/{form_id}/language"),
            &[("language", "")],
        )
        .await;
    assert_eq!(location(&res), "/audience/forms?notice=settings-saved");
    assert!(
        get(&app.client(), "/f/ko-news", None)
            .await
            .exists("html[lang=en]")
    );
    let page = get(&app.client(), "/f/ko-news", Some(KO_BROWSER)).await;
    assert!(page.exists("html[lang=ko]"));
    let page = get(&app.client(), "/f/ko-news", Some(EN_BROWSER)).await;
    assert_eq!(
        page.select(".hp label[for=website]"),
        vec!["Leave this field empty"]
    );
    let res = editor
        .post_form(
            &format!("/audience/forms/{form_id}/language"),
            &[("language", "xx")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = editor
        .post_form("/audience/forms/999999/language", &[("language", "ko")])
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Set again from the page: the editor's select shows it.
    editor
        .post_form(
            &format!("/audience/forms/{form_id}/language"),
            &[("language", "ko")],
        )
        .await;
    let page = get(&editor, "/audience/forms", None).await;
    assert_eq!(
        page.attr(
            &format!("#form-language-{form_id} option[selected]"),
            "value"
        )
        .as_deref(),
        Some("ko")
    );
}

/// Every failure code, job state and template problem has words in both languages: none
/// empty, the Korean ones Korean with no English UI word, the English ones not Korean.
#[test]
fn public_every_failure_code_is_worded_in_both_languages() {
    use loopline::{
        audience::import::ImportFailure,
        delivery::render::{Part, RenderError, TemplateIssue},
        jobs::{JobFailure, JobRow},
        web::{Lang, strings_for},
    };
    let hangul = |s: &str| s.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c));
    let check = |what: &str, en: String, ko: String| {
        assert!(!en.trim().is_empty() && !ko.trim().is_empty(), "{what}");
        assert_ne!(en, ko, "{what}");
        assert!(hangul(&ko), "{what}: {ko:?} has no Korean");
        assert!(!hangul(&en), "{what}: {en:?} is not English");
        let words = english_words_in(&ko, &[]);
        assert!(words.is_empty(), "{what}: {words:?}");
    };
    let (en, ko) = (strings_for(Lang::En), strings_for(Lang::Ko));

    let failures = ImportFailure::examples();
    assert_eq!(failures.len(), 13);
    for f in &failures {
        check(
            &format!("{f:?}"),
            en.import_failure(f),
            ko.import_failure(f),
        );
        assert_eq!(
            f.to_string(),
            en.import_failure(f),
            "Display is the English text"
        );
    }
    assert_eq!(
        ko.import_failure(&ImportFailure::BadHeader { line: 7 }),
        "7번째 줄의 머리글 행을 읽을 수 없습니다. 따옴표가 제대로 닫혔는지 확인해 주세요."
    );
    assert!(
        ko.import_failure(&ImportFailure::ColumnTwice {
            target: "first_name".into(),
            first: 2,
            second: 4
        })
        .starts_with("2번 열과 4번 열이 모두 ‘이름’")
    );

    for kind in ["audience.import", "audience.bulk", "test.kind"] {
        for f in JobFailure::examples() {
            for (status, attempts) in [("queued", 1), ("running", 2), ("dead", 10)] {
                let row = JobRow {
                    id: 1,
                    kind: kind.into(),
                    status: status.into(),
                    attempts,
                    max_attempts: 10,
                    run_at: chrono::Utc::now(),
                    last_error: Some("technical detail".into()),
                    error_code: Some(f.to_stored().0),
                    error_params: f.to_stored().1,
                    progress_done: None,
                    progress_total: None,
                    updated_at: chrono::Utc::now(),
                };
                check(
                    &format!("{kind} {f:?} {status}"),
                    en.job_error(&row).unwrap(),
                    ko.job_error(&row).unwrap(),
                );
            }
        }
    }
    assert_eq!(ko.job_kind("audience.import"), "가져오기");
    assert_eq!(en.job_kind("some.kind"), "some.kind");

    let mut errors = vec![
        RenderError::Syntax {
            part: Part::Body,
            line: 3,
            message: "syntax error: unexpected end of input".into(),
        },
        RenderError::TooLarge {
            part: Part::Subject,
            limit: 512 * 1024,
        },
        RenderError::OutOfFuel {
            part: Part::Preheader,
        },
        RenderError::Layout("mrml said no".into()),
    ];
    for issue in TemplateIssue::ALL {
        for line in [Some(2), None] {
            errors.push(RenderError::Runtime {
                part: Part::Body,
                line,
                issue,
                message: "the engine's words".into(),
            });
        }
    }
    for e in &errors {
        let (e_en, e_ko) = (en.template_error(e), ko.template_error(e));
        assert!(!e_ko.contains("engine") && !e_ko.contains("mrml"), "{e_ko}");
        check(&format!("{e:?}"), e_en, e_ko);
    }
    assert_eq!(
        ko.template_error(&errors[0]),
        "본문 3번째 줄: 치환 태그를 잘못 썼습니다({{ }}와 {% %}를 확인해 주세요)."
    );
    assert_eq!(
        ko.template_error(&errors[1]),
        "제목: 치환한 뒤의 길이가 512KiB를 넘습니다."
    );
    assert_eq!(
        en.template_error(&errors[1]),
        "Subject: longer than 512 KiB after merging"
    );
}

#[test]
fn public_english_words_are_found_in_text_and_attributes_but_not_in_data() {
    let page = |html: &str| Page {
        status: StatusCode::OK,
        html: scraper::Html::parse_document(html),
    };
    let found = english_words(
        &page(r#"<p>구독자 <b>Save</b></p><input placeholder="Search">"#),
        &[],
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(english_words(&page(r#"<p>a@b.example {{ subscriber.name }}</p><code>status</code><script>save()</script>"#), &[]).is_empty());
    assert!(english_words(&page("<td>Name</td>"), &["name"]).is_empty());
}

/// The signup answered in Korean, and the new subscriber is stored as Korean.
async fn signed_up_in_korean(app: &TestApp, page: &Page, email: &str) {
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.exists("html[lang=ko]"));
    assert_eq!(
        page.select("#signup-result"),
        vec!["거의 다 되었습니다. 방금 보내 드린 메일의 링크를 눌러 구독을 확인해 주세요."]
    );
    assert_eq!(stored_language(app, email).await.as_deref(), Some("ko"));
}
