//! Delivery and tracking end to end: the outbox, a real SMTP server (aiosmtpd) and the
//! MIME that arrives, the local capture store and Outbox page, tracked links and the
//! open pixel with their verdicts, one-click unsubscribe from the header, bounces,
//! deferrals and an unreachable server.

use loopline::{
    accounts::Role,
    clock::Clock,
    config::SmtpConfig,
    delivery::render::{BodyFormat, Draft},
    secrets::Secret,
    startup,
    tracking::{events, tokens},
};
use mailparse::{MailHeaderMap, ParsedMail};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{SmtpServer, TestApp, location};

async fn app_with_smtp(smtp: &SmtpServer) -> TestApp {
    app_with_smtp_slots(smtp, None).await
}

/// With `slots`, that many messages in flight (and SMTP connections) instead of the
/// default.
async fn app_with_smtp_slots(smtp: &SmtpServer, slots: Option<usize>) -> TestApp {
    let url = smtp.url();
    TestApp::spawn_with(
        move |c| {
            c.smtp = Some(SmtpConfig {
                url: Secret::new(url),
            });
            c.mail.from_email = "news@example.kr".into();
            c.mail.from_name = "루프라인 뉴스".into();
            if let Some(n) = slots {
                c.mail.concurrency = n;
            }
        },
        startup::job_registry(),
    )
    .await
}

async fn subscriber(app: &TestApp, email: &str, name: &str, status: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO subscribers (email, name, status, created_at) VALUES ($1, $2, $3::subscriber_status, now()) RETURNING id",
    )
    .bind(email)
    .bind(name)
    .bind(status)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// A subscriber's status.
async fn subscriber_status(app: &TestApp, id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM subscribers WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A message's status, attempts and last SMTP reply (or failure reason).
async fn message_row(app: &TestApp, id: i64) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status::text, attempts, smtp_reply FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A message's status, attempts and the sender holding it, if any.
async fn claim_of(app: &TestApp, id: i64) -> (String, i32, Option<uuid::Uuid>) {
    sqlx::query_as(
        "SELECT m.status::text, coalesce(q.attempts, m.attempts), q.claimed_by
         FROM messages m LEFT JOIN message_queue q ON q.message_id = m.id WHERE m.id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Queues one marketing message to a subscriber, as a campaign would.
async fn queue_marketing(app: &TestApp, subscriber_id: i64, key: &str) -> i64 {
    let draft = Draft {
        subject: "{{ subscriber.name }}님, 이번 주 마케팅 사례".into(),
        preheader: "세 가지 사례".into(),
        body: "안녕하세요 {{ subscriber.name or \"구독자\" }}님,\n\n\
               [사례 읽기](https://blog.example.kr/case?id=1 \"topic:marketing\")\n\n\
               [구매하기](https://shop.example.kr/buy \"purchase\")\n"
            .into(),
        format: BodyFormat::Markdown,
    };
    crate::harness::queue_message(app, subscriber_id, key, draft).await
}

fn part<'a>(mail: &'a ParsedMail<'a>, mime: &str) -> Option<&'a ParsedMail<'a>> {
    if mail.ctype.mimetype == mime {
        return Some(mail);
    }
    mail.subparts.iter().find_map(|p| part(p, mime))
}

fn hrefs(html: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse("a[href]").unwrap();
    doc.select(&sel)
        .filter_map(|a| a.value().attr("href").map(str::to_string))
        .collect()
}

fn path_of(url: &str) -> String {
    let after = url.split_once("://").unwrap().1;
    format!("/{}", after.split_once('/').unwrap().1)
}

async fn events(app: &TestApp, kind: &str) -> Vec<(Option<i64>, Option<i64>, Value)> {
    sqlx::query_as("SELECT subscriber_id, message_id, data FROM events WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signup_confirmation_arrives_over_smtp_in_the_subscribers_language_and_confirms() {
    let smtp = SmtpServer::start();
    let app = app_with_smtp(&smtp).await;
    sqlx::query("INSERT INTO forms (slug, name) VALUES ('news', '주간 뉴스')")
        .execute(&app.pool)
        .await
        .unwrap();
    let visitor = app.client();
    let res = visitor
        .post_form(
            "/f/news",
            &[
                ("email", "user@example.kr"),
                ("name", "홍길동"),
                ("language", "ko"),
                ("website", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.send_mail().await.sent, 1);
    assert_eq!(app.send_mail().await.sent, 0, "sent once");

    let received = smtp.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let mail = mailparse::parse_mail(&received[0]).unwrap();
    let h = &mail.headers;
    assert_eq!(
        h.get_first_value("Subject").as_deref(),
        Some("구독을 확인해 주세요")
    );
    assert!(h.get_first_value("From").unwrap().contains("루프라인 뉴스"));
    assert!(h.get_first_value("To").unwrap().contains("홍길동"));
    assert_eq!(
        h.get_first_value("X-RcptTo").as_deref(),
        Some("user@example.kr")
    );
    assert!(
        h.get_first_value("Message-ID")
            .unwrap()
            .ends_with("@example.kr>")
    );
    let text = part(&mail, "text/plain").unwrap().get_body().unwrap();
    assert!(text.contains("주간 뉴스"), "{text}");
    let html = part(&mail, "text/html").unwrap().get_body().unwrap();
    // The confirmation link is not tracked: it points straight at /confirm.
    let confirm = hrefs(&html)
        .into_iter()
        .find(|h| h.contains("/confirm/"))
        .expect("a confirm link");
    assert!(text.contains(&confirm));
    let page = visitor.page(&path_of(&confirm)).await;
    assert_eq!(page.status, StatusCode::OK);
    let res = visitor.post_form(&path_of(&confirm), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM subscribers WHERE email = 'user@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "active");
    let (reply, sent): (Option<String>, String) =
        sqlx::query_as("SELECT smtp_reply, status::text FROM messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(sent, "sent");
    assert!(reply.unwrap().starts_with("250"));
}

#[tokio::test]
async fn marketing_mail_has_tracked_links_an_open_pixel_and_a_one_click_unsubscribe_header() {
    let smtp = SmtpServer::start();
    let app = app_with_smtp(&smtp).await;
    let sid = subscriber(&app, "reader@example.kr", "김철수", "active").await;
    let mid = queue_marketing(&app, sid, "campaign:1:reader").await;
    let updated_at = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT updated_at FROM subscribers WHERE id = $1",
        )
        .bind(sid)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let record_changed = updated_at(app.pool.clone()).await;
    assert_eq!(app.send_mail().await.sent, 1);
    let mail_bytes = smtp.wait_for(1).await.remove(0);
    let mail = mailparse::parse_mail(&mail_bytes).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("김철수님, 이번 주 마케팅 사례")
    );
    assert_eq!(
        mail.headers
            .get_first_value("List-Unsubscribe-Post")
            .as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let list_unsub = mail.headers.get_first_value("List-Unsubscribe").unwrap();
    assert!(
        list_unsub.contains("mailto:news@example.kr"),
        "{list_unsub}"
    );
    let https = list_unsub
        .split(',')
        .map(|s| s.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|s| s.starts_with("http"))
        .unwrap()
        .to_string();
    // Feedback-ID (Gmail's feedback loop): campaign (body), kind of mail, sender.
    let feedback_id = mail.headers.get_first_value("Feedback-ID").unwrap();
    let body_id: i64 = sqlx::query_scalar("SELECT body_id FROM messages WHERE id = $1")
        .bind(mid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(feedback_id, format!("{body_id}:campaign:loopline"));
    let html = part(&mail, "text/html").unwrap().get_body().unwrap();
    assert!(html.contains("김철수"));
    let links: Vec<String> = hrefs(&html)
        .into_iter()
        .filter(|h| h.contains("/c/"))
        .collect();
    assert_eq!(links.len(), 2, "both body links are tracked: {html}");
    assert!(
        !html.contains("https://shop.example.kr/buy\""),
        "no raw destination left"
    );

    // The subscriber counters: one more unopened mail.
    let (unopened, last_sent): (i32, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT consecutive_unopened, last_sent_at FROM subscribers WHERE id = $1")
            .bind(sid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((unopened, last_sent.is_some()), (1, true));

    // A person clicks a minute later: redirected to the destination, the click stored
    // with its label and verdict, counters updated.
    app.advance(chrono::Duration::minutes(1));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15")
        .build()
        .unwrap();
    let buy = links[1].clone();
    let res = browser.get(&buy).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "https://shop.example.kr/buy");
    let clicks = events(&app, "clicked").await;
    assert_eq!(clicks.len(), 1);
    assert_eq!((clicks[0].0, clicks[0].1), (Some(sid), Some(mid)));
    assert_eq!(clicks[0].2["label"], "purchase");
    assert_eq!(clicks[0].2["position"], 2);
    assert_eq!(clicks[0].2["human"], true);
    assert_eq!(clicks[0].2["reason"], "human");
    let (unopened, clicked): (i32, bool) = sqlx::query_as(
        "SELECT consecutive_unopened, last_click_at IS NOT NULL FROM subscribers WHERE id = $1",
    )
    .bind(sid)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((unopened, clicked), (0, true));
    // The counters moved; the subscriber's record did not change.
    assert_eq!(updated_at(app.pool.clone()).await, record_changed);
    sqlx::query("UPDATE subscribers SET name = '김철수 님' WHERE id = $1")
        .bind(sid)
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(updated_at(app.pool.clone()).await > record_changed);

    // A link checker's HEAD is recorded as a machine; a tampered token goes nowhere.
    let res = browser.head(&links[0]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let clicks = events(&app, "clicked").await;
    assert_eq!(clicks[1].2["human"], false);
    assert_eq!(clicks[1].2["reason"], "head_request");
    let mut forged = buy.clone();
    let at = forged.len() - 12;
    forged.replace_range(
        at..at + 1,
        if &forged[at..at + 1] == "A" { "B" } else { "A" },
    );
    let res = browser.get(&forged).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers().get("location").is_none());
    assert_eq!(
        events(&app, "clicked").await.len(),
        2,
        "nothing recorded for a forged link"
    );

    // The open pixel.
    let doc = scraper::Html::parse_document(&html);
    let pixel = doc
        .select(&scraper::Selector::parse("img[src*='/o/']").unwrap())
        .next()
        .and_then(|i| i.value().attr("src"))
        .unwrap()
        .to_string();
    let res = browser.get(&pixel).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "image/gif");
    let opens = events(&app, "opened").await;
    assert_eq!(opens.len(), 1);
    assert_eq!(
        (opens[0].2["human"].clone(), opens[0].1),
        (json!(true), Some(mid))
    );
    // Stored per the privacy setting (truncated by default).
    assert_eq!(opens[0].2["ip"], "127.0.0.0");

    // One-click unsubscribe from the header: no session, no CSRF.
    let res = reqwest::Client::new()
        .post(&https)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let status = subscriber_status(&app, sid).await;
    assert_eq!(status, "unsubscribed");

    // Marketing queued before they left is stopped at send time.
    let next = queue_marketing(&app, sid, "campaign:2:reader").await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.suppressed), (0, 1));
    let st: String = sqlx::query_scalar("SELECT status::text FROM messages WHERE id = $1")
        .bind(next)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(st, "suppressed");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn hard_bounces_suppress_temporary_failures_retry_and_an_unreachable_server_spends_no_attempt()
 {
    bounces_retries_and_an_unreachable_server(SmtpServer::start(), None).await;
}

/// The same replies when every message rides behind the previous one's body on a single
/// connection (a refused recipient ends that session; the next message opens another).
#[tokio::test]
async fn on_one_connection_each_message_behind_the_last_bounces_and_retries_are_told_apart_alike() {
    bounces_retries_and_an_unreachable_server(SmtpServer::start(), Some(1)).await;
}

/// The same replies when every command waits for its answer (no `PIPELINING`).
#[tokio::test]
async fn without_pipelining_bounces_retries_and_an_unreachable_server_are_told_apart_alike() {
    bounces_retries_and_an_unreachable_server(SmtpServer::start_without_pipelining(), None).await;
}

async fn bounces_retries_and_an_unreachable_server(smtp: SmtpServer, slots: Option<usize>) {
    let app = app_with_smtp_slots(&smtp, slots).await;
    let first = subscriber(&app, "first@example.kr", "", "active").await;
    let bouncer = subscriber(&app, "bounce@example.kr", "", "active").await;
    let busy = subscriber(&app, "later@example.kr", "", "active").await;
    let fine = subscriber(&app, "fine@example.kr", "", "active").await;
    // In this order, on one connection: `fine` rides behind `first` and is sent, `later`
    // rides behind `fine` and is refused for now (ending that session), `bounce` opens
    // its own and is refused for good.
    let f = queue_marketing(&app, first, "c:1").await;
    let ok = queue_marketing(&app, fine, "c:f").await;
    let l = queue_marketing(&app, busy, "c:l").await;
    let b = queue_marketing(&app, bouncer, "c:b").await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.bounced, round.deferred), (2, 1, 1));
    let got = smtp.wait_for(2).await;
    assert_eq!(got.len(), 2, "each accepted message arrived once");
    for id in [f, ok] {
        let (st, _, reply) = message_row(&app, id).await;
        assert_eq!(st, "sent");
        assert!(reply.unwrap().starts_with("250"));
    }
    let row = |id: i64| message_row(&app, id);
    let (st, _, reply) = row(b).await;
    assert_eq!(st, "bounced");
    assert!(reply.unwrap().contains("550"));
    let status = subscriber_status(&app, bouncer).await;
    assert_eq!(status, "bounced", "a hard bounce suppresses the address");
    let bounced = events(&app, "bounced").await;
    assert_eq!(bounced.len(), 1, "one timeline entry: {bounced:?}");
    assert!(bounced[0].1.is_some(), "it names the message");
    let (st, attempts, reply) = row(l).await;
    assert_eq!((st.as_str(), attempts), ("queued", 1));
    assert!(reply.unwrap().contains("451"));
    // Not due yet: nothing happens until the backoff has passed.
    assert_eq!(app.send_mail().await.total(), 0);
    app.advance(chrono::Duration::minutes(5));
    assert_eq!(app.send_mail().await.deferred, 1);
    assert_eq!(row(l).await.1, 2);

    // The server goes away: mail waits without spending attempts, then goes out.
    let mut smtp = smtp;
    smtp.kill();
    let down = subscriber(&app, "down@example.kr", "", "active").await;
    let d = queue_marketing(&app, down, "c:d").await;
    let round = app.send_mail().await;
    assert_eq!(round.sent, 0);
    assert!(round.unreachable >= 1, "{round:?}");
    let (st, attempts, _) = row(d).await;
    assert_eq!((st.as_str(), attempts), ("queued", 0));
    let back = smtp.restart();
    app.advance(chrono::Duration::minutes(1));
    let round = app.send_mail().await;
    assert_eq!(round.sent, 1, "{round:?}");
    assert_eq!(row(d).await.0, "sent");
    let got = back.wait_for(1).await;
    assert_eq!(got.len(), 1);
}

/// A permanent refusal suppresses the address only when it says the address is bad
/// (the enhanced status code: `554 5.1.1` is, `550 5.7.1` refused as spam is not), and
/// a message the server keeps deferring is tried `max_attempts` times with growing
/// waits (30 s at least, then doubling), then marked failed and never retried again.
#[tokio::test]
async fn a_refusal_suppresses_only_a_bad_address_and_retries_end_in_failure() {
    let smtp = SmtpServer::start();
    let app = app_with_smtp(&smtp).await;
    let gone = subscriber(&app, "gone@example.kr", "", "active").await;
    let spam = subscriber(&app, "spam@example.kr", "", "active").await;
    let busy = subscriber(&app, "later-always@example.kr", "", "active").await;
    let g = queue_marketing(&app, gone, "r:g").await;
    let s = queue_marketing(&app, spam, "r:s").await;
    let l = queue_marketing(&app, busy, "r:l").await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.bounced, round.deferred), (0, 2, 1));

    let bounce = |id: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT (data->>'hard')::bool FROM events WHERE kind = 'bounced' AND message_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(message_row(&app, g).await.0, "bounced");
    assert!(bounce(g).await, "554 5.1.1 is a bad address");
    assert_eq!(subscriber_status(&app, gone).await, "bounced");
    assert_eq!(message_row(&app, s).await.0, "bounced");
    assert!(!bounce(s).await, "550 5.7.1 is about the message");
    assert_eq!(subscriber_status(&app, spam).await, "active");

    // Deferred again and again: each retry waits longer than the one before.
    let mut waits = Vec::new();
    loop {
        let (status, attempts, _) = message_row(&app, l).await;
        if status != "queued" {
            assert_eq!((status.as_str(), attempts), ("failed", 8));
            break;
        }
        let (run_at, now): (chrono::DateTime<chrono::Utc>, _) = (
            sqlx::query_scalar("SELECT run_at FROM message_queue WHERE message_id = $1")
                .bind(l)
                .fetch_one(&app.pool)
                .await
                .unwrap(),
            app.clock.now(),
        );
        waits.push((run_at - now).num_seconds());
        // Not before its time.
        assert_eq!(app.send_mail().await.total(), 0);
        app.clock.set(run_at);
        let round = app.send_mail().await;
        assert_eq!(round.deferred + round.failed, 1, "{round:?}");
    }
    assert_eq!(waits.len(), 7, "{waits:?}");
    // At least 30 s, then doubling.
    assert!(waits.iter().all(|&w| w >= 30), "{waits:?}");
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
    assert_eq!(waits[6], 2 * waits[5], "{waits:?}");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM events WHERE message_id = $1 ORDER BY id")
            .bind(l)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut expected = vec!["deferred".to_string(); 7];
    expected.push("failed".into());
    assert_eq!(kinds, expected);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM message_queue")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, 0, "nothing left to retry");
    app.advance(chrono::Duration::days(2));
    assert_eq!(app.send_mail().await.total(), 0);
    assert_eq!(subscriber_status(&app, busy).await, "active");
    assert_eq!(smtp.count(), 0, "nothing was delivered");
}

/// aiosmtpd does not offer SMTPUTF8: mail to an address with a non-ASCII local part
/// cannot go through it, so it fails at once (no retries, no pause, the address is not
/// suppressed) while the rest of the queue goes out.
#[tokio::test]
async fn mail_the_server_cannot_take_fails_once_without_holding_up_the_queue() {
    let smtp = SmtpServer::start();
    let app = app_with_smtp(&smtp).await;
    let korean = subscriber(&app, "홍길동@example.kr", "홍길동", "active").await;
    let fine = subscriber(&app, "fine@example.kr", "", "active").await;
    let k = queue_marketing(&app, korean, "c:k").await;
    queue_marketing(&app, fine, "c:f").await;
    let round = app.send_mail().await;
    assert_eq!(
        (round.sent, round.failed, round.unreachable),
        (1, 1, 0),
        "{round:?}"
    );
    let (status, attempts, reason) = message_row(&app, k).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    assert!(reason.unwrap_or_default().contains("SMTPUTF8"));
    let st = subscriber_status(&app, korean).await;
    assert_eq!(st, "active", "the address is not at fault");
    app.advance(chrono::Duration::hours(1));
    assert_eq!(app.send_mail().await.total(), 0, "nothing is retried");
    assert_eq!(smtp.wait_for(1).await.len(), 1);
}

/// The sender fetches and compiles each body once and keeps it: messages of several
/// bodies in one claim each get their own, and a body that does not compile fails its
/// own messages (with the template's error) and nobody else's.
#[tokio::test]
async fn each_message_gets_its_own_body_and_a_body_that_does_not_compile_fails_only_its_mail() {
    let smtp = SmtpServer::start();
    let app = app_with_smtp(&smtp).await;
    let minjun = subscriber(&app, "minjun@example.kr", "김민준", "active").await;
    let ann = subscriber(&app, "ann@example.kr", "Ann", "active").await;
    let draft = |subject: &str, body: &str| Draft {
        subject: subject.into(),
        preheader: String::new(),
        body: body.into(),
        format: BodyFormat::Markdown,
    };
    let broken = crate::harness::queue_message(
        &app,
        ann,
        "c:broken",
        draft("Hi", "Hello\n\n{% if subscriber.name %}no end"),
    )
    .await;
    queue_marketing(&app, ann, "c:first").await;
    crate::harness::queue_message(
        &app,
        minjun,
        "c:second",
        draft(
            "두 번째 소식, {{ subscriber.name }}님",
            "Second body for {{ subscriber.name }}.",
        ),
    )
    .await;
    queue_marketing(&app, minjun, "c:first-again").await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.failed), (3, 1), "{round:?}");
    let (status, attempts, reason) = message_row(&app, broken).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    let reason = reason.unwrap_or_default();
    assert!(reason.starts_with("body, line 3"), "{reason}");

    let mut got: Vec<(String, String, String)> = smtp
        .wait_for(3)
        .await
        .iter()
        .map(|raw| {
            let mail = mailparse::parse_mail(raw).unwrap();
            let text = part(&mail, "text/plain").unwrap().get_body().unwrap();
            (
                mail.headers.get_first_value("To").unwrap(),
                mail.headers.get_first_value("Subject").unwrap(),
                text,
            )
        })
        .collect();
    got.sort();
    let summary: Vec<(&str, &str)> = got
        .iter()
        .map(|(to, subject, _)| (to.as_str(), subject.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("ann@example.kr", "Ann님, 이번 주 마케팅 사례"),
            ("minjun@example.kr", "김민준님, 이번 주 마케팅 사례"),
            ("minjun@example.kr", "두 번째 소식, 김민준님"),
        ]
    );
    assert!(got[2].2.contains("Second body for 김민준."), "{}", got[2].2);
    assert!(got[1].2.contains("사례 읽기"), "{}", got[1].2);
}

#[tokio::test]
async fn without_smtp_a_test_message_is_captured_and_shown_in_the_outbox() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let page = editor.page("/outbox").await;
    assert_eq!(
        page.attr("#outbox-mode", "data-capture").as_deref(),
        Some("true")
    );

    // Preview first: rendered at both widths with sample data, nothing queued.
    let res = editor
        .post_form(
            "/outbox/test",
            &[
                ("action", "preview"),
                ("to", "me@example.kr"),
                ("subject", "{{ subscriber.name }}님께 드리는 소식"),
                ("preheader", "미리보기"),
                ("format", "markdown"),
                (
                    "body",
                    "# 안녕하세요\n\n[블로그](https://blog.example.kr \"topic:marketing\")",
                ),
            ],
        )
        .await;
    let preview = crate::harness::Page::from_response(res).await;
    assert_eq!(
        preview.select("#preview-subject"),
        vec!["홍길동님께 드리는 소식"]
    );
    assert!(
        preview
            .attr("#preview-mobile", "srcdoc")
            .unwrap()
            .contains("안녕하세요")
    );
    assert!(preview.select("#preview-text")[0].contains("https://blog.example.kr"));

    // A template error is shown, not queued.
    let res = editor
        .post_form(
            "/outbox/test",
            &[
                ("action", "send"),
                ("to", "me@example.kr"),
                ("subject", "x"),
                ("body", "{% for %}"),
            ],
        )
        .await;
    let page = crate::harness::Page::from_response(res).await;
    assert!(
        page.select(".flash-error")[0].starts_with("Body, line 1: "),
        "{:?}",
        page.select(".flash-error")
    );

    // The form as rendered, sent twice (a double click): one test message.
    let form = editor.page("/outbox").await;
    let send_key = form
        .attr("#test-form input[name=send_key]", "value")
        .unwrap();
    for notice in ["test-queued", "test-already-queued"] {
        let res = editor
            .post_form(
                "/outbox/test",
                &[
                    ("action", "send"),
                    ("send_key", &send_key),
                    ("to", "me@example.kr"),
                    ("subject", "{{ subscriber.name }}님께 드리는 소식"),
                    ("format", "markdown"),
                    ("body", "# 안녕하세요\n\n[블로그](https://blog.example.kr)"),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), format!("/outbox?notice={notice}"));
    }
    let page = editor.page("/outbox?notice=test-already-queued").await;
    assert!(
        page.select(".flash")
            .iter()
            .any(|f| f.contains("already sent")),
        "{:?}",
        page.select(".flash")
    );
    assert_eq!(app.send_mail().await.sent, 1);
    let bodies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_bodies WHERE purpose = 'test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(bodies, 1, "the second submission's body was rolled back");

    let page = editor.page("/outbox").await;
    assert_eq!(page.select("#outbox-table tbody tr .status"), vec!["sent"]);
    let id = page
        .attr("#outbox-table tbody tr", "data-message-id")
        .unwrap();
    let msg = editor.page(&format!("/outbox/{id}")).await;
    assert_eq!(
        msg.select("#message-subject"),
        vec!["홍길동님께 드리는 소식"]
    );
    // Our own words, in the reader's language, where a server's reply would be.
    assert_eq!(
        msg.select("#message-reply"),
        vec!["Captured here: no SMTP server is set, so nothing was sent."]
    );
    assert!(
        msg.attr("#message-desktop", "srcdoc")
            .unwrap()
            .contains("안녕하세요")
    );
    let raw = editor
        .get(&format!("/outbox/{id}/raw"))
        .await
        .bytes()
        .await
        .unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("홍길동님께 드리는 소식")
    );
    assert_eq!(
        mail.headers.get_first_value("To").as_deref(),
        Some("me@example.kr")
    );
    // Test sends track links too, so the tracked path can be tried end to end.
    let html = part(&mail, "text/html").unwrap().get_body().unwrap();
    assert!(hrefs(&html).iter().any(|h| h.contains("/c/")));
}

/// DKIM: a message signed with an RSA key (made by `openssl genrsa`, as the README
/// tells users) passes dkimpy's verification — the maintained receiver-side
/// implementation — with the TXT record Loopline says to publish, and the one-click
/// unsubscribe headers are covered. A changed subject fails verification.
#[tokio::test]
async fn dkim_signed_mail_verifies_at_the_receiver_with_the_published_record() {
    let dir = crate::harness::tmp_root().join(format!("dkim-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("dkim.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl genrsa failed");
    let config = loopline::config::Config::from_lookup(|k| match k {
        "MAIL_FROM" => Some("news@example.kr".into()),
        "DKIM_SELECTOR" => Some("loop2026".into()),
        "DKIM_PRIVATE_KEY_FILE" => Some(key.to_string_lossy().into()),
        _ => None,
    })
    .unwrap();
    let signer = config.mail.dkim.clone().expect("DKIM configured");
    assert_eq!(signer.dns_name(), "loop2026._domainkey.example.kr");
    let record = signer.dns_record();

    let smtp = SmtpServer::start();
    let url = smtp.url();
    let app = TestApp::spawn_with(
        move |c| {
            c.smtp = Some(SmtpConfig {
                url: Secret::new(url),
            });
            c.mail.from_email = "news@example.kr".into();
            c.mail.from_name = "루프라인 뉴스".into();
            c.mail.dkim = Some(signer);
        },
        startup::job_registry(),
    )
    .await;
    let id = subscriber(&app, "reader@example.com", "홍길동", "active").await;
    queue_marketing(&app, id, "dkim-1").await;
    assert_eq!(app.send_mail().await.sent, 1);
    let raw = smtp.wait_for(1).await.remove(0);
    let mail = mailparse::parse_mail(&raw).unwrap();
    let sig = mail.headers.get_first_value("DKIM-Signature").unwrap();
    assert!(
        sig.contains("a=rsa-sha256") && sig.contains("d=example.kr"),
        "{sig}"
    );
    assert!(
        sig.contains("list-unsubscribe:list-unsubscribe-post"),
        "{sig}"
    );

    // aiosmtpd adds its own headers on top; verification must not care.
    let mail_file = dir.join("mail.eml");
    std::fs::write(&mail_file, &raw).unwrap();
    let mut tampered = raw.clone();
    let at = raw.windows(9).position(|w| w == b"Subject: ").unwrap() + 9;
    tampered.splice(at..at, b"X".iter().copied());
    let tampered_file = dir.join("tampered.eml");
    std::fs::write(&tampered_file, &tampered).unwrap();
    let script = r#"
import sys, dkim
record = sys.argv[1].encode()
def dns(name, timeout=5):
    assert name == b"loop2026._domainkey.example.kr.", name
    return record
for path in sys.argv[2:]:
    print(path.rsplit("/", 1)[-1], dkim.verify(open(path, "rb").read(), dnsfunc=dns))
"#;
    let mut cmd = std::process::Command::new("python3");
    if let Some(p) = crate::harness::python_package("dkim", "dkimpy") {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd
        .args(["-c", script, &record])
        .arg(&mail_file)
        .arg(&tampered_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "mail.eml True\ntampered.eml False");
}

/// A message already sent to `subscriber_id` an hour ago (clock time), with `links`
/// tracked links.
async fn sent_message(app: &TestApp, subscriber_id: i64, links: i64) -> i64 {
    let sent_at = app.clock.now() - chrono::Duration::hours(1);
    let body: i64 = sqlx::query_scalar(
        "INSERT INTO message_bodies (purpose, subject, body) VALUES ('campaign', 's', 'b') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO messages (idempotency_key, marketing, body_id, subscriber_id, to_email, data, status, created_at, sent_at)
         SELECT 'm:' || $1 || ':' || $2, true, $2, s.id, s.email, jsonb_build_object('links', $3::bigint), 'sent', $4, $4
         FROM subscribers s WHERE s.id = $1 RETURNING id",
    )
    .bind(subscriber_id)
    .bind(body)
    .bind(links)
    .bind(sent_at)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn click_of(message_id: i64, subscriber_id: i64, position: u16) -> tokens::Click {
    tokens::Click {
        message_id,
        subscriber_id: Some(subscriber_id),
        position,
        label: Some(format!("link{position}")),
        url: format!("https://example.kr/{message_id}/{position}"),
    }
}

const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

#[tokio::test]
async fn concurrent_clicks_and_opens_are_all_stored_with_their_verdicts_in_group_commits() {
    let app = TestApp::spawn().await;
    let reader = subscriber(&app, "reader@example.kr", "독자", "active").await;
    let scanned = subscriber(&app, "scanned@example.kr", "", "active").await;
    let opener = subscriber(&app, "opener@example.kr", "", "active").await;
    let m_reader = sent_message(&app, reader, 4).await;
    let m_scanned = sent_message(&app, scanned, 5).await;
    let m_opener = sent_message(&app, opener, 1).await;
    let keys = &app.state.keys;

    // A person clicking one link again and again; a scanner following all five links of
    // another message at once; a mail client loading the pixel; a forged link.
    let mut paths = Vec::new();
    for _ in 0..40 {
        paths.push(format!(
            "/c/{}",
            tokens::click_token(keys, &click_of(m_reader, reader, 2))
        ));
    }
    for position in 1..=5 {
        paths.push(format!(
            "/c/{}",
            tokens::click_token(keys, &click_of(m_scanned, scanned, position))
        ));
    }
    for _ in 0..20 {
        paths.push(format!(
            "/o/{}.gif",
            tokens::open_token(keys, m_opener, Some(opener))
        ));
    }
    let good = tokens::click_token(keys, &click_of(m_reader, reader, 1));
    let (payload, tag) = good.split_once('.').unwrap();
    paths.push(format!("/c/{payload}x.{tag}"));

    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(SAFARI)
        .build()
        .unwrap();
    let responses = futures_util::future::join_all(paths.iter().map(|p| {
        let browser = browser.clone();
        let url = format!("{}{p}", app.base);
        async move { browser.get(url).send().await.unwrap().status() }
    }))
    .await;
    let count = |s: StatusCode| responses.iter().filter(|&&r| r == s).count();
    assert_eq!(count(StatusCode::FOUND), 45);
    assert_eq!(count(StatusCode::OK), 20);
    assert_eq!(count(StatusCode::NOT_FOUND), 1);

    // Every answered request has its event, committed before its answer.
    let verdicts = |mid: i64, kind: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (bool, String)>(
                "SELECT (data->>'human')::bool, data->>'reason' FROM events WHERE message_id = $1 AND kind = $2",
            )
            .bind(mid)
            .bind(kind)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let reader_clicks = verdicts(m_reader, "clicked").await;
    assert_eq!(reader_clicks.len(), 40);
    assert!(
        reader_clicks.iter().all(|(h, r)| *h && r == "human"),
        "one link clicked again is no burst: {reader_clicks:?}"
    );
    let scanner_clicks = verdicts(m_scanned, "clicked").await;
    assert_eq!(scanner_clicks.len(), 5);
    assert!(
        scanner_clicks.iter().all(|(h, r)| !*h && r == "link_burst"),
        "every link at once is a scanner, the first clicks judged again: {scanner_clicks:?}"
    );
    let opens = verdicts(m_opener, "opened").await;
    assert_eq!(opens.len(), 20);
    assert!(opens.iter().all(|(h, r)| *h && r == "human"), "{opens:?}");

    // Counters moved for the people.
    let now = app.clock.now();
    let (last_click, unopened): (Option<chrono::DateTime<chrono::Utc>>, i32) =
        sqlx::query_as("SELECT last_click_at, consecutive_unopened FROM subscribers WHERE id = $1")
            .bind(reader)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((last_click, unopened), (Some(now), 0));
    let last_open: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_open_at FROM subscribers WHERE id = $1")
            .bind(opener)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(last_open, Some(now));

    // Written in fewer transactions than requests: group commit.
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM events WHERE kind IN ('clicked', 'opened')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        transactions < 65,
        "{transactions} transactions for 65 events"
    );
}

#[tokio::test]
async fn a_batch_is_judged_as_if_its_reactions_came_one_after_another() {
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "batch@example.kr", "", "active").await;
    let two = sent_message(&app, sid, 2).await;
    let five = sent_message(&app, sid, 5).await;
    let privacy = &app.state.privacy;
    let now = app.clock.now();
    let req = events::Request {
        user_agent: Some(SAFARI.into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        ..Default::default()
    };
    let click = |mid, position, secs: i64| events::Reaction::Click {
        click: click_of(mid, sid, position),
        req: req.clone(),
        at: now + chrono::Duration::seconds(secs),
    };

    // Stored earlier: one click on the five-link message.
    let found = events::record(&app.pool, &[click(five, 1, 0)], privacy)
        .await
        .unwrap();
    assert_eq!(found, [true]);

    // One batch: a double click on one link of the two-link message (no burst), then
    // two more links of the five-link message (the third distinct link: a burst that
    // re-judges the stored click and the one before it in the batch), a click on an
    // unknown message, and, twenty seconds on, a click outside the window.
    let found = events::record(
        &app.pool,
        &[
            click(two, 1, 1),
            click(two, 1, 2),
            click(five, 2, 3),
            click(999_999, 1, 3),
            click(five, 3, 4),
            click(five, 4, 30),
        ],
        privacy,
    )
    .await
    .unwrap();
    assert_eq!(found, [true, true, true, false, true, true]);
    let rows: Vec<(i64, i64, bool, String, bool)> = sqlx::query_as(
        "SELECT message_id, (data->>'position')::bigint, (data->>'human')::bool, data->>'reason',
                coalesce((data->>'rejudged')::bool, false)
         FROM events WHERE kind = 'clicked' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expect =
        |mid, pos, human, reason: &str, rejudged| (mid, pos, human, reason.to_string(), rejudged);
    assert_eq!(
        rows,
        [
            expect(five, 1, false, "link_burst", true),
            expect(two, 1, true, "human", false),
            expect(two, 1, true, "human", false),
            expect(five, 2, false, "link_burst", true),
            expect(five, 3, false, "link_burst", false),
            expect(five, 4, true, "human", false),
        ]
    );
    // The counter follows the latest human click of the batch.
    let last_click: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_click_at FROM subscribers WHERE id = $1")
            .bind(sid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(last_click, Some(now + chrono::Duration::seconds(30)));
}

#[tokio::test]
async fn a_batch_judged_while_its_predecessors_are_unwritten_still_sees_their_clicks() {
    // The recorder judges the next batch while the previous one is being written: the
    // link-burst rule must count the clicks of batches not committed yet, and the
    // burst's re-judging must reach them once they are.
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "pipeline@example.kr", "", "active").await;
    let five = sent_message(&app, sid, 5).await;
    let privacy = &app.state.privacy;
    let now = app.clock.now();
    let click = safari_click(five, sid, now);
    let mut judging = events::Judging::default();
    let mut conn = app.pool.acquire().await.unwrap();
    let a = judging
        .judge(&mut conn, &[click(1, 0)], privacy)
        .await
        .unwrap();
    let b = judging
        .judge(&mut conn, &[click(2, 1)], privacy)
        .await
        .unwrap();
    let c = judging
        .judge(&mut conn, &[click(3, 2)], privacy)
        .await
        .unwrap();
    for batch in [&a, &b, &c] {
        assert_eq!(batch.found(), [true]);
        events::write(&mut conn, batch).await.unwrap();
    }
    let rows: Vec<(i64, bool, String, bool)> = sqlx::query_as(
        "SELECT (data->>'position')::bigint, (data->>'human')::bool, data->>'reason',
                coalesce((data->>'rejudged')::bool, false)
         FROM events WHERE kind = 'clicked' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expect = |pos, rejudged| (pos, false, "link_burst".to_string(), rejudged);
    assert_eq!(rows, [expect(1, true), expect(2, true), expect(3, false)]);

    // A fresh judge (another process, say) sees only what is stored: a click long
    // after the window is human again.
    let mut other = events::Judging::default();
    let d = other
        .judge(&mut conn, &[click(4, 60)], privacy)
        .await
        .unwrap();
    events::write(&mut conn, &d).await.unwrap();
    let last: (bool, String) = sqlx::query_as(
        "SELECT (data->>'human')::bool, data->>'reason' FROM events WHERE kind = 'clicked' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(last, (true, "human".to_string()));
}

/// A scanner that follows a message's links one request at a time: at low traffic each
/// click is a batch of its own, so its first clicks are stored as human (and move the
/// counters) before the burst shows what they were. Once re-judged, the subscriber's
/// counters are as if those clicks had never counted: the last human open stays, the
/// last click goes, and the mail sent since the open is unopened again.
#[tokio::test]
async fn a_burst_that_re_judges_earlier_batches_takes_back_the_counters_they_moved() {
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "scanned-later@example.kr", "", "active").await;
    let older = sent_message(&app, sid, 1).await;
    let five = sent_message(&app, sid, 5).await;
    let privacy = &app.state.privacy;
    let now = app.clock.now();
    // `five` went out ten minutes ago, after the reader opened `older`.
    sqlx::query("UPDATE messages SET sent_at = $2, created_at = $2 WHERE id = $1")
        .bind(five)
        .bind(now - chrono::Duration::minutes(10))
        .execute(&app.pool)
        .await
        .unwrap();
    let req = events::Request {
        user_agent: Some(SAFARI.into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        ..Default::default()
    };
    let opened_at = now - chrono::Duration::minutes(30);
    let found = events::record(
        &app.pool,
        &[events::Reaction::Open {
            message_id: older,
            req: req.clone(),
            at: opened_at,
        }],
        privacy,
    )
    .await
    .unwrap();
    assert_eq!(found, [true]);
    // What the sender did when `five` went out: one more unopened in a row.
    sqlx::query(
        "UPDATE subscribers SET consecutive_unopened = consecutive_unopened + 1 WHERE id = $1",
    )
    .bind(sid)
    .execute(&app.pool)
    .await
    .unwrap();
    type Counters = (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        i32,
    );
    let counters = || async {
        sqlx::query_as::<_, Counters>(
            "SELECT last_open_at, last_click_at, last_engaged_at, consecutive_unopened
             FROM subscribers WHERE id = $1",
        )
        .bind(sid)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(
        counters().await,
        (Some(opened_at), None, Some(opened_at), 1)
    );

    // The scanner: links 1 and 2, each its own batch, both judged human when stored.
    let click = safari_click(five, sid, now);
    for (position, secs) in [(1, 0), (2, 1)] {
        events::record(&app.pool, &[click(position, secs)], privacy)
            .await
            .unwrap();
    }
    let one_second = now + chrono::Duration::seconds(1);
    assert_eq!(
        counters().await,
        (Some(opened_at), Some(one_second), Some(one_second), 0),
        "the first clicks counted as a person's"
    );

    // Link 3: the burst. Both stored clicks are re-judged, and the counters with them.
    events::record(&app.pool, &[click(3, 2)], privacy)
        .await
        .unwrap();
    let verdicts: Vec<(bool, String)> = sqlx::query_as(
        "SELECT (data->>'human')::bool, data->>'reason' FROM events
         WHERE kind = 'clicked' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(verdicts, vec![(false, "link_burst".to_string()); 3]);
    assert_eq!(
        counters().await,
        (Some(opened_at), None, Some(opened_at), 1)
    );

    // A person's click later on counts as before.
    let later = now + chrono::Duration::minutes(5);
    events::record(&app.pool, &[click(1, 300)], privacy)
        .await
        .unwrap();
    assert_eq!(
        counters().await,
        (Some(opened_at), Some(later), Some(later), 0)
    );
}

/// The recount after a burst and a sender recording a send to the same subscriber at the
/// same moment: the recount waits for the send to commit and counts it, and the send's
/// own +1 is not overwritten. (Without the lock taken first, the recount counted from a
/// snapshot taken before the send committed, then wrote over it.)
#[tokio::test]
async fn a_recount_racing_a_send_to_the_same_subscriber_counts_the_send() {
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "racing@example.kr", "", "active").await;
    let five = sent_message(&app, sid, 5).await;
    sqlx::query("UPDATE subscribers SET consecutive_unopened = 1 WHERE id = $1")
        .bind(sid)
        .execute(&app.pool)
        .await
        .unwrap();
    let privacy = app.state.privacy.clone();
    let now = app.clock.now();
    let click = safari_click(five, sid, now);
    for (position, secs) in [(1, 0), (2, 1)] {
        events::record(&app.pool, &[click(position, secs)], &privacy)
            .await
            .unwrap();
    }
    // A sender recording another marketing mail to this subscriber, not committed yet
    // (as `record_sent` does: the message sent, the counter up by one).
    let mut sending = app.pool.begin().await.unwrap();
    let body: i64 = sqlx::query_scalar("SELECT body_id FROM messages WHERE id = $1")
        .bind(five)
        .fetch_one(&mut *sending)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO messages (idempotency_key, marketing, body_id, subscriber_id, to_email, status, created_at, sent_at)
         VALUES ('race:next', true, $1, $2, 'racing@example.kr', 'sent', $3, $3)",
    )
    .bind(body)
    .bind(sid)
    .bind(now + chrono::Duration::seconds(1))
    .execute(&mut *sending)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE subscribers SET consecutive_unopened = consecutive_unopened + 1 WHERE id = $1",
    )
    .bind(sid)
    .execute(&mut *sending)
    .await
    .unwrap();

    // The burst that re-judges the two stored clicks, recorded meanwhile.
    let pool = app.pool.clone();
    let burst = click(3, 2);
    let recording =
        tokio::spawn(async move { events::record(&pool, &[burst], &privacy).await.unwrap() });
    // It waits for the sender's lock on the subscriber.
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10) && !recording.is_finished(),
            "the burst never waited for the sender"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sending.commit().await.unwrap();
    recording.await.unwrap();

    let (last_click, unopened): (Option<chrono::DateTime<chrono::Utc>>, i32) =
        sqlx::query_as("SELECT last_click_at, consecutive_unopened FROM subscribers WHERE id = $1")
            .bind(sid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(last_click, None, "the scanner's clicks no longer count");
    assert_eq!(unopened, 2, "both marketing mails are unopened");
}

/// A human-looking click (Safari, a public address) on `message`'s link `position`,
/// `secs` seconds after `now`.
fn safari_click(
    message: i64,
    sid: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> impl Fn(u16, i64) -> events::Reaction {
    let req = events::Request {
        user_agent: Some(SAFARI.into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        ..Default::default()
    };
    move |position, secs| events::Reaction::Click {
        click: click_of(message, sid, position),
        req: req.clone(),
        at: now + chrono::Duration::seconds(secs),
    }
}

/// Each message's latest click per link, kept for judging, is merged key by key keeping
/// the later time: a batch from another process that commits later with older clicks
/// does not hide a newer one from the burst rule.
#[tokio::test]
async fn the_latest_click_per_link_survives_batches_committed_out_of_order() {
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "merge@example.kr", "", "active").await;
    let five = sent_message(&app, sid, 5).await;
    let privacy = &app.state.privacy;
    let now = app.clock.now();
    let click = safari_click(five, sid, now);
    let stored = |position: u16| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT (recent_clicks->>$2::text)::bigint FROM messages WHERE id = $1",
            )
            .bind(five)
            .bind(i32::from(position))
            .fetch_optional(&pool)
            .await
            .unwrap()
            .flatten()
        }
    };
    let mut conn = app.pool.acquire().await.unwrap();
    // Process A clicks link 1 at +20 s and commits first; process B clicked link 1 at
    // +5 s and link 2 at +6 s, and commits after.
    let a = events::Judging::default()
        .judge(&mut conn, &[click(1, 20)], privacy)
        .await
        .unwrap();
    let b = events::Judging::default()
        .judge(&mut conn, &[click(1, 5), click(2, 6)], privacy)
        .await
        .unwrap();
    events::write(&mut conn, &a).await.unwrap();
    events::write(&mut conn, &b).await.unwrap();
    let ms = |secs: i64| (now + chrono::Duration::seconds(secs)).timestamp_millis();
    assert_eq!(stored(1).await, Some(ms(20)), "the later time stays");
    assert_eq!(stored(2).await, Some(ms(6)));
    // A third process at +22 s: links 1 (at +20) and 3 are within the window with this
    // click on link 4, so four distinct links: a burst, seen through the kept times alone.
    let c = events::Judging::default()
        .judge(&mut conn, &[click(3, 21), click(4, 22)], privacy)
        .await
        .unwrap();
    events::write(&mut conn, &c).await.unwrap();
    let last: (bool, String) = sqlx::query_as(
        "SELECT (data->>'human')::bool, data->>'reason' FROM events WHERE kind = 'clicked' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(last, (false, "link_burst".to_string()));
    // A batch with one link of the message (merged without the general path): an
    // older click keeps the later time, a newer one replaces it, others stay.
    for (secs, expect) in [(8, 20), (30, 30)] {
        let e = events::Judging::default()
            .judge(&mut conn, &[click(1, secs)], privacy)
            .await
            .unwrap();
        events::write(&mut conn, &e).await.unwrap();
        assert_eq!(stored(1).await, Some(ms(expect)), "a click at +{secs} s");
    }
    // A link not kept yet is added beside the others.
    let f = events::Judging::default()
        .judge(&mut conn, &[click(5, 31)], privacy)
        .await
        .unwrap();
    events::write(&mut conn, &f).await.unwrap();
    assert_eq!(stored(5).await, Some(ms(31)));
    assert_eq!(stored(1).await, Some(ms(30)));
    assert_eq!(stored(2).await, Some(ms(6)));
    assert_eq!(stored(4).await, Some(ms(22)));
}

/// Two senders on one database with a 2 s lease, and a server that answers 5 s after it
/// took the message: the sender that claimed it keeps renewing its lease, so the other
/// never takes the message over. One copy arrives, the row is sent once.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_slower_than_the_lease_keeps_its_claim_and_is_not_sent_twice() {
    use loopline::clock::{SharedClock, SystemClock};
    use std::{sync::Arc, time::Duration};

    let smtp = SmtpServer::start();
    let app = app_with_smtp(&smtp).await;
    let sid = subscriber(&app, "slow@example.kr", "느린 독자", "active").await;
    let id = queue_marketing(&app, sid, "slow:1").await;

    // Two Loopline processes' senders on the real clock, with a 2 s lease (below what
    // SEND_LEASE_SECS accepts, to keep the test short).
    let sender = || async {
        let mut config = crate::harness::test_config();
        config.smtp = Some(SmtpConfig {
            url: Secret::new(smtp.url()),
        });
        config.mail.lease = Duration::from_secs(2);
        config.mail.concurrency = 2;
        config.public_url = app.base.clone();
        let clock: SharedClock = Arc::new(SystemClock);
        startup::build(app.pool.clone(), config, clock, startup::job_registry())
            .await
            .unwrap()
            .sender
    };
    let (first, second) = (sender().await, sender().await);
    let sending = tokio::spawn(async move { first.run_until_idle().await.unwrap() });

    let lease = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT (SELECT lease_until FROM message_queue WHERE message_id = $1)",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let started = std::time::Instant::now();
    let first_lease = loop {
        if let Some(l) = lease(app.pool.clone()).await {
            break l;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // While the first sender waits for the server's answer, the second keeps trying.
    let mut latest_lease = first_lease;
    let mut taken = loopline::delivery::sender::Round::default();
    while !sending.is_finished() {
        let r = second.run_until_idle().await.unwrap();
        taken.sent += r.sent;
        taken.deferred += r.deferred;
        if let Some(l) = lease(app.pool.clone()).await {
            latest_lease = latest_lease.max(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let round = sending.await.unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "the server answered quickly; nothing was tested"
    );
    assert_eq!(round.sent, 1, "{round:?}");
    assert_eq!(
        (taken.sent, taken.deferred),
        (0, 0),
        "the second sender took the message over"
    );
    assert!(
        latest_lease - first_lease >= chrono::Duration::seconds(2),
        "the lease was not renewed: {first_lease} → {latest_lease}"
    );

    assert_eq!(smtp.count(), 1, "the recipient got more than one copy");
    let (status, attempts, claimed) = claim_of(&app, id).await;
    assert_eq!((status.as_str(), attempts, claimed), ("sent", 1, None));
    assert_eq!(events(&app, "sent").await.len(), 1);
}

/// A sender that died leaves its claim behind: nobody sends that mail while the lease
/// holds (the Outbox shows it as being sent), and the next sender sends it once the
/// lease has run out, spending a second attempt.
#[tokio::test]
async fn mail_claimed_by_a_sender_that_died_goes_out_once_its_lease_runs_out() {
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "reader@example.kr", "독자", "active").await;
    let id = queue_marketing(&app, sid, "dead:1").await;
    // What a claim of a sender that then died leaves: a queued row with a live lease.
    sqlx::query(
        "UPDATE message_queue SET attempts = 1, claimed_by = gen_random_uuid(), lease_until = $2 WHERE message_id = $1",
    )
    .bind(id)
    .bind(app.clock.now() + chrono::Duration::minutes(2))
    .execute(&app.pool)
    .await
    .unwrap();

    assert_eq!(
        app.send_mail().await.total(),
        0,
        "a held lease is respected"
    );
    let (editor, _) = app.signed_in(Role::Editor).await;
    let page = editor.page("/outbox").await;
    assert_eq!(
        page.select(&format!("tr[data-message-id=\"{id}\"] td.status")),
        vec!["sending"]
    );
    assert!(page.exists("#outbox-counts .badge[data-status=\"sending\"]"));

    app.advance(chrono::Duration::minutes(2) + chrono::Duration::seconds(1));
    let round = app.send_mail().await;
    assert_eq!(round.sent, 1, "{round:?}");
    let (status, attempts, claimed) = claim_of(&app, id).await;
    assert_eq!((status.as_str(), attempts, claimed), ("sent", 2, None));
    assert_eq!(app.send_mail().await.total(), 0);
    let page = editor.page("/outbox").await;
    assert_eq!(
        page.select(&format!("tr[data-message-id=\"{id}\"] td.status")),
        vec!["sent"]
    );
}

/// Under load, a batch whose judging read the database refuses (here a message whose
/// count of links is not a number) is recorded one reaction at a time, on the writer's own
/// connection: the others are stored promptly, only the refused ones fail (the
/// redirect still goes out), and nothing waits for a connection that is never free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_refuses_to_judge_is_recorded_one_by_one_under_load() {
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "load@example.kr", "", "active").await;
    let good = sent_message(&app, sid, 50).await;
    let bad = sent_message(&app, sid, 5).await;
    sqlx::query("UPDATE messages SET data = data || '{\"links\": \"x\"}' WHERE id = $1")
        .bind(bad)
        .execute(&app.pool)
        .await
        .unwrap();
    let now = app.clock.now();
    let req = events::Request {
        user_agent: Some(SAFARI.into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        ..Default::default()
    };
    let tasks: Vec<_> = (0..4000u32)
        .map(|i| {
            let message = if i % 700 == 350 { bad } else { good };
            let reaction = events::Reaction::Click {
                click: click_of(message, sid, (i % 40) as u16 + 1),
                req: req.clone(),
                at: now + chrono::Duration::milliseconds(i64::from(i)),
            };
            let recorder = app.state.recorder.clone();
            tokio::spawn(async move { (message, recorder.record(reaction).await) })
        })
        .collect();
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("the recorder stalled");
    let (mut stored, mut refused) = (0, 0);
    for r in results {
        let (message, result) = r.unwrap();
        match result {
            Ok(found) => {
                assert!(found && message == good);
                stored += 1;
            }
            Err(e) => {
                assert_eq!(message, bad, "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((stored, refused), (3_994, 6));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'clicked'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3_994);
}

/// Many human clicks at once, spread over many messages and subscribers and arriving out
/// of time order, so they are grouped into batches in no particular order: every click
/// is stored once, and the per-message latest click and the per-subscriber counters end
/// at the latest time, whichever batch held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_out_of_order_across_batches_are_all_stored_and_keep_the_latest_times() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let mut targets = Vec::new();
    for i in 0..200 {
        let sid = subscriber(&app, &format!("overlap{i}@example.kr"), "", "active").await;
        targets.push((sid, sent_message(&app, sid, 4).await));
    }
    let req = events::Request {
        user_agent: Some(SAFARI.into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        ..Default::default()
    };
    // Each message's link 1, 15 times, at increasing times in a shuffled order (one
    // link, so no burst).
    let mut clicks: Vec<(usize, i64)> = (0..3000).map(|i| (i % 200, i as i64)).collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..clicks.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        clicks.swap(i, (state >> 33) as usize % (i + 1));
    }
    let tasks: Vec<_> = clicks
        .into_iter()
        .map(|(t, ms)| {
            let (sid, mid) = targets[t];
            let reaction = events::Reaction::Click {
                click: click_of(mid, sid, 1),
                req: req.clone(),
                at: now + chrono::Duration::milliseconds(ms),
            };
            let recorder = app.state.recorder.clone();
            tokio::spawn(async move { recorder.record(reaction).await })
        })
        .collect();
    for r in futures_util::future::join_all(tasks).await {
        assert!(r.unwrap().unwrap(), "every message is known");
    }
    let (rows, human): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE data->>'human' = 'true') FROM events WHERE kind = 'clicked'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((rows, human), (3000, 3000));
    // Target t's clicks were at t, t + 200, …, t + 2800 ms.
    let latest = |t: usize| now + chrono::Duration::milliseconds(t as i64 + 2800);
    for (t, &(sid, mid)) in targets.iter().enumerate() {
        let last_click: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_click_at FROM subscribers WHERE id = $1")
                .bind(sid)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            last_click.map(|t| t.timestamp_millis()),
            Some(latest(t).timestamp_millis())
        );
        let kept: Option<i64> =
            sqlx::query_scalar("SELECT (recent_clicks->>'1')::bigint FROM messages WHERE id = $1")
                .bind(mid)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(kept, Some(latest(t).timestamp_millis()));
    }
}

/// `SEND_RATE_PER_SECOND` and `SEND_RATE_PER_HOUR` hold across every Loopline process on
/// the database: two senders (as two processes would have) share the windows, whether
/// they run one after the other or at the same moment, and a sender held back waits for
/// the window that lets the next message go rather than asking again and again.
#[tokio::test]
async fn the_rate_limits_are_shared_by_every_sender_on_the_database() {
    use chrono::TimeZone;
    use std::{sync::Arc, time::Duration};

    let limits = |c: &mut loopline::config::Config| {
        c.mail.per_second = 3;
        c.mail.per_hour = 5;
    };
    let app = TestApp::spawn_with(limits, startup::job_registry()).await;
    let ten = chrono::Utc
        .with_ymd_and_hms(2026, 11, 26, 10, 0, 0)
        .unwrap();
    app.clock.set(ten);
    let mut ids = Vec::new();
    for i in 0..8 {
        let sid = subscriber(&app, &format!("rate{i}@example.kr"), "", "active").await;
        ids.push(queue_marketing(&app, sid, &format!("rate:{i}")).await);
    }
    let other = {
        let mut config = crate::harness::test_config();
        limits(&mut config);
        config.public_url = app.base.clone();
        startup::build(
            app.pool.clone(),
            config,
            Arc::new(app.clock.clone()),
            startup::job_registry(),
        )
        .await
        .unwrap()
        .sender
    };
    let captured = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM captured_mail")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };

    // 10:00:00 — three a second, whoever sends them.
    let first = app.send_mail().await;
    let second = other.run_until_idle().await.unwrap();
    assert_eq!((first.sent, second.sent), (3, 0));
    assert_eq!(captured().await, 3);
    // Both wait for the next second, not the 20 ms of due mail.
    assert_eq!(app.sender.time_until_due().await, Duration::from_secs(1));
    assert_eq!(other.time_until_due().await, Duration::from_secs(1));

    // 10:00:01 — both at once: the hour's five are reached, not 2 × 3.
    app.advance(chrono::Duration::seconds(1));
    let (a, b) = tokio::join!(app.sender.run_until_idle(), other.run_until_idle());
    assert_eq!(a.unwrap().sent + b.unwrap().sent, 2);
    assert_eq!(captured().await, 5);
    app.advance(chrono::Duration::seconds(1));
    assert_eq!(app.send_mail().await.sent, 0);
    assert_eq!(other.run_until_idle().await.unwrap().sent, 0);
    // The hour is full: look again after the idle wait, no sooner.
    assert_eq!(app.sender.time_until_due().await, Duration::from_secs(30));

    // 11:00:00 — a new hour, three a second again.
    app.clock.set(ten + chrono::Duration::hours(1));
    let (a, b) = tokio::join!(app.sender.run_until_idle(), other.run_until_idle());
    assert_eq!(a.unwrap().sent + b.unwrap().sent, 3);
    assert_eq!(captured().await, 8);

    // Every message went out once, to its own recipient.
    let (sent, recipients): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent'), count(DISTINCT to_email) FROM messages WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((sent, recipients), (8, 8));
    let windows: Vec<(String, chrono::DateTime<chrono::Utc>, i32)> = sqlx::query_as(
        "SELECT scope, start, used FROM send_windows WHERE scope = 'hour' ORDER BY start",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        windows,
        [
            ("hour".to_string(), ten, 5),
            ("hour".to_string(), ten + chrono::Duration::hours(1), 3)
        ]
    );
}

/// An idempotency key makes a message once: enqueueing it again (a retried request, a
/// second process deciding the same thing) creates nothing, in the outbox or the queue.
#[tokio::test]
async fn a_message_is_enqueued_once_per_idempotency_key() {
    use loopline::delivery::outbox::{self, NewMessage};
    let app = TestApp::spawn().await;
    let sid = subscriber(&app, "once@example.kr", "한 번", "active").await;
    let first = queue_marketing(&app, sid, "once:1").await;
    let body: i64 = sqlx::query_scalar("SELECT body_id FROM messages WHERE id = $1")
        .bind(first)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let now = app.clock.now();
    let again = |key: &'static str| {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let queued = outbox::enqueue(
                &mut tx,
                &NewMessage {
                    idempotency_key: key.into(),
                    marketing: true,
                    body_id: body,
                    subscriber_id: Some(sid),
                    to_email: "once@example.kr".into(),
                    to_name: String::new(),
                    data: json!({}),
                    run_at: now,
                },
                now,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            queued
        }
    };
    // The same key twice, the second time from two tasks at once.
    let (a, b) = tokio::join!(again("once:1"), again("once:1"));
    assert_eq!((a, b), (None, None));
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_queue)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, (1, 1));
    // A new key is a new message.
    assert!(again("once:2").await.is_some());
    assert_eq!(app.send_mail().await.sent, 2);
}
