//! CSV import through the dashboard (upload → confirm mapping → job → report) and
//! export; bad files, encodings, modes, suppression, and a failed batch rolled back whole.

use loopline::accounts::Role;
use reqwest::{StatusCode, multipart};

use crate::harness::{Page, TestApp, TestClient, location};

pub(crate) async fn upload(c: &TestClient, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(bytes)
            .file_name(name.to_string())
            .mime_str("text/csv")
            .unwrap(),
    );
    let url = c.url(&format!(
        "/audience/imports?_csrf={}",
        c.csrf.as_deref().unwrap()
    ));
    c.http.post(url).multipart(form).send().await.unwrap()
}

/// Uploads, accepts the guessed mapping as shown on the page, starts, drains the job.
async fn import(
    app: &TestApp,
    c: &TestClient,
    name: &str,
    bytes: Vec<u8>,
    mode: &str,
    tags: &str,
) -> (i64, Page) {
    let res = upload(c, name, bytes).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
    let target = location(&res);
    let id: i64 = target.rsplit('/').next().unwrap().parse().unwrap();
    (id, start_with_guessed_mapping(app, c, id, mode, tags).await)
}

/// Accepts the guessed mapping of an uploaded import as shown on its page, starts it,
/// drains the job, and returns the import's page.
pub(crate) async fn start_with_guessed_mapping(
    app: &TestApp,
    c: &TestClient,
    id: i64,
    mode: &str,
    tags: &str,
) -> Page {
    start_guessed(c, id, mode, tags).await;
    app.drain_jobs().await;
    let errors: Vec<Option<String>> =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE last_error IS NOT NULL")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    if !errors.is_empty() {
        eprintln!("job errors: {errors:?}");
    }
    c.page(&format!("/audience/imports/{id}")).await
}

/// Accepts the guessed mapping of an uploaded import as shown on its page and starts it
/// (queues its job).
async fn start_guessed(c: &TestClient, id: i64, mode: &str, tags: &str) {
    let page = c.page(&format!("/audience/imports/{id}")).await;
    let sel = scraper::Selector::parse("#mapping-table select").unwrap();
    let mut fields: Vec<(String, String)> = Vec::new();
    for s in page.html.select(&sel) {
        let name = s.value().attr("name").unwrap().to_string();
        let opt = scraper::Selector::parse("option[selected]").unwrap();
        let chosen = s
            .select(&opt)
            .next()
            .and_then(|o| o.value().attr("value"))
            .unwrap_or("ignore")
            .to_string();
        fields.push((name, chosen));
    }
    fields.push(("mode".into(), mode.into()));
    fields.push(("tags".into(), tags.into()));
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let res = c
        .post_form(&format!("/audience/imports/{id}/start"), &borrowed)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
}

const MAILERLITE: &str = "Subscriber,Name,Last name,Status,Subscribed,Groups\n\
user1@example.kr,길동,홍,active,2024-03-01 10:00:00,\"VIP, 마케팅\"\n\
user2@example.kr,철수,김,unsubscribed,2024-03-02 11:00:00,\n\
not-an-email,영희,박,active,,\n\
USER1@example.kr,duplicate,row,active,,\n\
user3@example.kr,\"bad \"quote\" here\",이,active,,\n\
user4@example.kr,순신,이,active,2024/03/04,생산성\n";

#[tokio::test]
async fn a_mailerlite_export_with_korean_names_and_broken_rows_imports_the_good_rows() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let (id, page) = import(
        &app,
        &editor,
        "mailerlite-export.csv",
        MAILERLITE.as_bytes().to_vec(),
        "add_update",
        "migrated",
    )
    .await;
    assert_eq!(page.select("#import-status"), vec!["done"]);
    assert_eq!(
        page.attr("#import-progress", "value").as_deref(),
        Some("100")
    );
    let added: i64 = page.select("#import-added")[0].parse().unwrap();
    let failed: i64 = page.select("#import-failed")[0].parse().unwrap();
    let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT email, name, status::text, consent_method, source FROM subscribers ORDER BY email",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(added as usize, rows.len());
    let by_email = |e: &str| rows.iter().find(|r| r.0 == e).cloned();
    let u1 = by_email("user1@example.kr").expect("user1 imported");
    assert_eq!(
        (u1.1.as_str(), u1.2.as_str(), u1.3.as_deref(), u1.4.as_str()),
        (
            "홍길동",
            "active",
            Some("import"),
            format!("import:{id}").as_str()
        )
    );
    assert_eq!(
        by_email("user2@example.kr").unwrap().2,
        "unsubscribed",
        "unsubscribed rows stay suppressed"
    );
    assert!(by_email("user4@example.kr").is_some());
    assert!(
        failed >= 2,
        "the invalid address and the in-file duplicate are reported"
    );
    let tags: Vec<String> = sqlx::query_scalar(
        "SELECT t.name FROM subscribers s JOIN tags t ON t.id = ANY(s.tag_ids) WHERE s.email = 'user1@example.kr' ORDER BY t.name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(tags, vec!["VIP", "migrated", "마케팅"]);
    // The profile's timeline shows the import (derived from the source, not an event row).
    let u1_id: i64 =
        sqlx::query_scalar("SELECT id FROM subscribers WHERE email = 'user1@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let profile = editor.page(&format!("/audience/subscribers/{u1_id}")).await;
    assert_eq!(
        profile.select("#timeline li[data-kind=imported] strong"),
        vec!["imported"]
    );

    // The report: one line per row not imported, with the row number and the reason.
    let csv = editor
        .get(&format!("/audience/imports/{id}/report.csv"))
        .await
        .text()
        .await
        .unwrap();
    let csv = csv.trim_start_matches('\u{feff}');
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let lines: Vec<(String, String, String)> = r
        .records()
        .map(|x| x.unwrap())
        .map(|x| (x[0].to_string(), x[1].to_string(), x[2].to_string()))
        .collect();
    assert!(
        lines
            .iter()
            .any(|(l, v, _)| l == "4" && v == "not-an-email"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(l, _, why)| l == "5" && why.contains("duplicate")),
        "{lines:?}"
    );
    let reported: usize =
        (failed + page.select("#import-skipped")[0].parse::<i64>().unwrap()) as usize;
    assert_eq!(lines.len(), reported);
}

#[tokio::test]
async fn euc_kr_and_utf16_files_decode_and_modes_are_respected() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let (bytes, _, _) =
        encoding_rs::EUC_KR.encode("이메일,이름\nkim@example.kr,김철수\nlee@example.kr,이영희\n");
    let (_, page) = import(
        &app,
        &editor,
        "엑셀.csv",
        bytes.into_owned(),
        "add_update",
        "",
    )
    .await;
    assert_eq!(page.select("#import-status"), vec!["done"]);
    let name: String =
        sqlx::query_scalar("SELECT name FROM subscribers WHERE email = 'kim@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(name, "김철수");

    // Someone unsubscribed in Loopline; the file says active. They stay unsubscribed.
    sqlx::query("UPDATE subscribers SET status = 'unsubscribed' WHERE email = 'lee@example.kr'")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    for u in "email,name,status\nlee@example.kr,이영희 (수정),subscribed\nnew@example.kr,새 구독자,subscribed\n".encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    let (_, page) = import(&app, &editor, "utf16.csv", utf16.clone(), "add_only", "").await;
    assert_eq!(
        page.select("#import-skipped"),
        vec!["1"],
        "add new only skips the existing address"
    );
    let (status, name): (String, String) =
        sqlx::query_as("SELECT status::text, name FROM subscribers WHERE email = 'lee@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), name.as_str()), ("unsubscribed", "이영희"));
    let (_, page) = import(&app, &editor, "utf16.csv", utf16, "update_only", "").await;
    assert_eq!(page.select("#import-updated"), vec!["2"]);
    let (status, name): (String, String) =
        sqlx::query_as("SELECT status::text, name FROM subscribers WHERE email = 'lee@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), name.as_str()),
        ("unsubscribed", "이영희 (수정)"),
        "updated, but never re-activated"
    );
}

#[tokio::test]
async fn bad_files_get_clear_errors_and_erased_people_stay_out() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let res = upload(&editor, "empty.csv", vec![]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("empty"));

    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let res = upload(&editor, "photo.png", png).await;
    let page = editor.page(&location(&res)).await;
    assert!(
        !page.select("#import-error").is_empty(),
        "a binary file is refused with a reason"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // No email column chosen: refused before anything is queued.
    let res = upload(&editor, "no-email.csv", b"name,city\nA,Seoul\n".to_vec()).await;
    let target = location(&res);
    let id = target.rsplit('/').next().unwrap();
    let res = editor
        .post_form(
            &format!("/audience/imports/{id}/start"),
            &[("col0", "name"), ("col1", "ignore")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);

    // An address erased at the person's request is not added back by an import.
    // (Erased through the real path, with a non-ASCII address.)
    sqlx::query("INSERT INTO subscribers (email, created_at) VALUES ('Émile@Example.com', now()), ('gone@example.com', now())").execute(&app.pool).await.unwrap();
    for e in ["Émile@Example.com", "gone@example.com"] {
        let sid: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1")
            .bind(e)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        loopline::audience::subscribers::erase(&app.pool, sid, chrono::Utc::now())
            .await
            .unwrap();
    }
    let (id, page) = import(
        &app,
        &editor,
        "list.csv",
        "email\nGone@Example.com\nstay@example.com\némile@example.com\n"
            .as_bytes()
            .to_vec(),
        "add_update",
        "",
    )
    .await;
    assert_eq!(page.select("#import-added"), vec!["1"]);
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM import_report WHERE import_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(reason.contains("erased"));
}

/// Makes the database refuse one row (`poison@example.com`), as a crash mid-batch would.
async fn refuse_poison(app: &TestApp) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.email = 'poison@example.com' THEN RAISE EXCEPTION 'simulated crash'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON subscribers FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn allow_poison(app: &TestApp) {
    sqlx::query("DROP TRIGGER refuse_poison ON subscribers")
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_that_fails_leaves_nothing_half_applied_and_the_import_resumes() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    refuse_poison(&app).await;
    let mut csv = String::from("email,name\n");
    for i in 0..30 {
        csv.push_str(&format!("p{i}@example.com,구독자 {i}\n"));
    }
    csv.push_str("poison@example.com,독\n");
    let (id, page) = import(&app, &editor, "big.csv", csv.into_bytes(), "add_update", "").await;
    assert_eq!(
        page.select("#import-status"),
        vec!["running"],
        "the job failed and will retry"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "no half-applied batch");
    let (done, added): (i64, i64) =
        sqlx::query_as("SELECT lines_done, added FROM imports WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((done, added), (0, 0));

    allow_poison(&app).await;
    app.advance(chrono::Duration::minutes(1));
    app.drain_jobs().await;
    let (status, added): (String, i64) =
        sqlx::query_as("SELECT status::text, added FROM imports WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), added), ("done", 31));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 31, "every row exactly once");
}

#[tokio::test]
async fn batches_in_flight_together_commit_in_file_order_so_a_failure_loses_nothing() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    refuse_poison(&app).await;
    // Three batches of 10,000 rows; the poisoned row is in the second, so the first
    // commits and the third (applied alongside the second) must roll back with it.
    let mut csv = String::from("email,name,tags\n");
    for i in 1..=25_000 {
        if i == 15_000 {
            csv.push_str("poison@example.com,독,\n");
        } else {
            csv.push_str(&format!("b{i}@example.com,구독자 {i},배치\n"));
        }
    }
    let (id, _) = import(
        &app,
        &editor,
        "three-batches.csv",
        csv.into_bytes(),
        "add_update",
        "",
    )
    .await;
    let (done, added, status): (i64, i64, String) =
        sqlx::query_as("SELECT lines_done, added, status::text FROM imports WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((done, added, status.as_str()), (10_001, 10_000, "running"));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 10_000, "only the first batch is applied");

    allow_poison(&app).await;
    app.advance(chrono::Duration::minutes(1));
    app.drain_jobs().await;
    let (status, added): (String, i64) =
        sqlx::query_as("SELECT status::text, added FROM imports WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), added), ("done", 25_000));
    let (n, distinct, tagged): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT lower(email)), count(*) FILTER (WHERE cardinality(tag_ids) = 1) FROM subscribers",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (n, distinct, tagged),
        (25_000, 25_000, 24_999),
        "every row exactly once"
    );
}

/// New addresses go straight in by COPY; a batch holding an address already in the list
/// (here in the second batch) is rolled back to its savepoint and staged instead, and
/// the rows of both paths come out alike, with nobody twice and the erased left out.
#[tokio::test]
async fn new_addresses_go_straight_in_and_known_ones_are_staged_without_duplicates() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    sqlx::raw_sql(
        "INSERT INTO subscribers (email, name, status, created_at) VALUES ('C15000@example.com', '기존', 'unsubscribed', now());
         INSERT INTO suppressions (email_hash, reason, created_at) VALUES (sha256(convert_to('c3@example.com', 'UTF8')), 'erased', now());",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let mut csv = String::from("email,name,status,tags,subscribed_at\n");
    for i in 1..=25_000 {
        csv.push_str(&format!(
            "c{i}@example.com,구독자 {i},subscribed,배치,2024-03-15 09:30:00 +0900\n"
        ));
    }
    let (id, page) = import(
        &app,
        &editor,
        "mixed.csv",
        csv.into_bytes(),
        "add_update",
        "뉴스",
    )
    .await;
    assert_eq!(page.select("#import-status"), vec!["done"]);
    let counts: (i64, i64, i64) =
        sqlx::query_as("SELECT added, updated, skipped FROM imports WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(counts, (24_998, 1, 1));
    let (n, distinct, erased): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT lower(email)), count(*) FILTER (WHERE email = 'c3@example.com') FROM subscribers",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((n, distinct, erased), (24_999, 24_999, 0));
    let (name, status): (String, String) = sqlx::query_as(
        "SELECT name, status::text FROM subscribers WHERE lower(email) = 'c15000@example.com'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), status.as_str()),
        ("구독자 15000", "unsubscribed"),
        "updated, never re-activated"
    );
    // Row 5 went in by COPY (first batch), row 15001 through the stage (its batch
    // failed over); row 24000 either way. They must be alike.
    let shape = |email: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<
                _,
                (
                    String,
                    String,
                    String,
                    String,
                    i32,
                    String,
                    bool,
                    bool,
                    bool,
                ),
            >(
                "SELECT name, status::text, source, consent_method, cardinality(tag_ids),
                        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                        confirmed_at = created_at, consent_at = created_at, unsubscribed_at IS NULL
                 FROM subscribers WHERE email = $1",
            )
            .bind(email)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let source = format!("import:{id}");
    for (email, name) in [
        ("c5@example.com", "구독자 5"),
        ("c15001@example.com", "구독자 15001"),
        ("c24000@example.com", "구독자 24000"),
    ] {
        assert_eq!(
            shape(email).await,
            (
                name.to_string(),
                "active".to_string(),
                source.clone(),
                "import".to_string(),
                2,
                "2024-03-15 00:30:00".to_string(),
                true,
                true,
                true
            ),
            "{email}"
        );
    }
}

/// Which path each batch takes: new addresses by COPY; a batch with an address already
/// in the list is rolled back to its savepoint and staged (nothing twice), and so are
/// the batches after it; an erased address is staged and left out.
#[tokio::test]
async fn batches_copy_new_addresses_and_stage_after_a_known_one() {
    use loopline::audience::imports::{self, Mode, StagedRow};
    use std::{collections::HashMap, sync::atomic::AtomicBool};
    let (pool, _) = crate::harness::fresh_database().await;
    sqlx::raw_sql(
        "INSERT INTO subscribers (email, name, status, created_at) VALUES ('known@example.kr', '기존', 'active', now());
         INSERT INTO suppressions (email_hash, reason, created_at) VALUES (sha256(convert_to('erased@example.kr', 'UTF8')), 'erased', now());",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (import_id, _) = imports::Upload::begin(&pool, "batches.csv", None)
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let row = |line: u64, email: &str| StagedRow {
        line,
        email: email.to_string(),
        name: format!("이름 {line}"),
        status: None,
        subscribed_at: None,
        tags: vec![],
        fields: Default::default(),
    };
    let copy_first = AtomicBool::new(true);
    let apply = |rows: Vec<StagedRow>| {
        let (pool, copy_first) = (pool.clone(), &copy_first);
        async move {
            let mut tx = pool.begin().await.unwrap();
            let stats = imports::apply_batch(
                &mut tx,
                import_id,
                Mode::AddUpdate,
                &[],
                &HashMap::new(),
                &rows,
                &[],
                chrono::Utc::now(),
                copy_first,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            (stats.copied, stats.added, stats.updated, stats.skipped)
        }
    };
    assert_eq!(
        apply(vec![
            row(2, "a@example.kr"),
            row(3, "erased@example.kr"),
            row(4, "b@example.kr")
        ])
        .await,
        (2, 2, 0, 1),
        "new addresses copied, the erased one staged and skipped"
    );
    assert!(copy_first.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(
        apply(vec![row(5, "c@example.kr"), row(6, "KNOWN@example.kr")]).await,
        (0, 1, 1, 0),
        "the COPY failed on the known address: the whole batch was staged"
    );
    assert!(!copy_first.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(
        apply(vec![row(7, "d@example.kr")]).await,
        (0, 1, 0, 0),
        "later batches are staged"
    );
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT lower(email) FROM subscribers ORDER BY lower(email)")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        emails,
        [
            "a@example.kr",
            "b@example.kr",
            "c@example.kr",
            "d@example.kr",
            "known@example.kr"
        ]
    );
}

/// On a database whose `lower()` folds more than Rust's letter-by-letter lowercasing
/// (ICU: `lower('ΑΣ1') = lower('ας1')`, final sigma), the file's duplicate check keeps
/// two addresses apart that the unique index holds to be one. Here they land in two
/// batches applied together: the second batch writes its copy and waits for the first
/// to commit; the first then blocks on the second's uncommitted row. PostgreSQL must see
/// that cycle (the wait for the earlier batch is a lock it knows about) and break it,
/// and the import must then finish with every address once.
#[tokio::test]
async fn addresses_only_the_database_folds_together_in_adjacent_batches_do_not_hang_the_import() {
    // PostgreSQL's deadlock check runs once per wait, `deadlock_timeout` (1 s) after it
    // began: the second batch's, which finds the cycle, so it is rolled back.
    sigma_twins_in_adjacent_batches(std::time::Duration::ZERO).await;
}

/// As above, but the first batch is held past the second batch's deadlock check, so
/// the cycle is found by the first batch's own check (inside its COPY): it is the one
/// rolled back, the second follows it, and both are applied again one at a time.
#[tokio::test]
async fn when_the_earlier_batch_is_the_one_rolled_back_both_are_applied_again() {
    sigma_twins_in_adjacent_batches(std::time::Duration::from_millis(1_500)).await;
}

async fn sigma_twins_in_adjacent_batches(hold_after_wait: std::time::Duration) {
    use sqlx::Connection;
    let (pool, db_name) = crate::harness::fresh_icu_database("und").await;
    let app = TestApp::spawn_on(pool, db_name, |_| {}, loopline::startup::job_registry()).await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    // Batch 1 (lines 2..=10,001) starts with a bad row and ends with three
    // capital-sigma addresses; batch 2 starts with their small-final-sigma twins.
    let mut csv = String::from("email,name\n");
    csv.push_str("not-an-email,처음\n");
    for i in 3..=9_998 {
        csv.push_str(&format!("a{i}@example.com,구독자 {i}\n"));
    }
    for k in 1..=3 {
        csv.push_str(&format!("ΑΣ{k}@example.com,대문자 {k}\n"));
    }
    for k in 1..=3 {
        csv.push_str(&format!("ας{k}@example.com,소문자 {k}\n"));
    }
    for i in 10_005..=15_001 {
        csv.push_str(&format!("b{i}@example.com,구독자 {i}\n"));
    }
    let res = upload(&editor, "sigma.csv", csv.into_bytes()).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let id: i64 = location(&res).rsplit('/').next().unwrap().parse().unwrap();

    // Hold the first batch up at its report of the bad row (an uncommitted row with
    // the same key) until the second batch has written its rows and waits for the
    // first; then let it go on into the sigma rows.
    let mut holder =
        sqlx::PgConnection::connect_with(&crate::harness::cluster().options(&app.db_name))
            .await
            .unwrap();
    let mut hold = holder.begin().await.unwrap();
    sqlx::query("INSERT INTO import_report (import_id, line, value, reason, code) VALUES ($1, 2, 'held', 'held', 'held')")
        .bind(id)
        .execute(&mut *hold)
        .await
        .unwrap();
    start_guessed(&editor, id, "add_update", "").await;
    let release = async {
        let mut waited = 0;
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND NOT granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            waited += 1;
            assert!(
                waited < 600,
                "the second batch never waited for the first where PostgreSQL can see it"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(hold_after_wait).await;
        hold.rollback().await.unwrap();
    };
    let drained = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        tokio::join!(app.drain_jobs(), release)
    })
    .await;
    assert!(drained.is_ok(), "the import hung");

    let (status, added, updated, failed): (String, i64, i64, i64) =
        sqlx::query_as("SELECT status::text, added, updated, failed FROM imports WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "done");
    assert_eq!(
        (added, updated, failed),
        (14_996, 3, 1),
        "three twins update the first of each pair"
    );
    let (n, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT lower(email)) FROM subscribers")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((n, distinct), (14_996, 14_996), "every address once");
    let reported: Vec<String> =
        sqlx::query_scalar("SELECT value FROM import_report WHERE import_id = $1")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(reported, ["not-an-email"]);
    // PostgreSQL found the cycle (its statistics arrive within a second or so).
    let mut deadlocks: i64 = 0;
    for _ in 0..100 {
        deadlocks = sqlx::query_scalar(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if deadlocks > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        deadlocks > 0,
        "the batches never deadlocked: the test did not test anything"
    );
}

#[tokio::test]
async fn an_import_resumes_after_the_last_applied_line() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let res = upload(
        &editor,
        "r.csv",
        b"email\na@example.com\nb@example.com\nc@example.com\n".to_vec(),
    )
    .await;
    let id: i64 = location(&res).rsplit('/').next().unwrap().parse().unwrap();
    editor
        .post_form(
            &format!("/audience/imports/{id}/start"),
            &[("col0", "email")],
        )
        .await;
    // As if a first run applied lines 2–3 and then the process died.
    sqlx::query("UPDATE imports SET status = 'running', lines_done = 3 WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    app.drain_jobs().await;
    let emails: Vec<String> = sqlx::query_scalar("SELECT email FROM subscribers ORDER BY email")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        emails,
        vec!["c@example.com"],
        "only the lines after the mark are applied"
    );

    // Cancelling a queued import stops it before it starts.
    let res = upload(&editor, "x.csv", b"email\nx@example.com\n".to_vec()).await;
    let id: i64 = location(&res).rsplit('/').next().unwrap().parse().unwrap();
    editor
        .post_form(
            &format!("/audience/imports/{id}/start"),
            &[("col0", "email")],
        )
        .await;
    editor
        .post_form(&format!("/audience/imports/{id}/cancel"), &[])
        .await;
    app.drain_jobs().await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscribers WHERE email = 'x@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn export_streams_a_segment_or_everyone_as_csv() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    import(
        &app,
        &editor,
        "m.csv",
        MAILERLITE.as_bytes().to_vec(),
        "add_update",
        "",
    )
    .await;
    let res = editor.get("/audience/export.csv").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = res.text().await.unwrap();
    let mut r = csv::Reader::from_reader(body.trim_start_matches('\u{feff}').as_bytes());
    assert_eq!(
        r.headers().unwrap().iter().take(5).collect::<Vec<_>>(),
        vec!["email", "name", "status", "subscribed_at", "tags"]
    );
    let recs: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recs.len() as i64, count);
    assert!(
        recs.iter()
            .any(|x| &x[1] == "홍길동" && x[4].contains("마케팅"))
    );

    let seg = loopline::audience::segments::save(
        &app.pool,
        "unsubscribed",
        &loopline::audience::segments::Condition::Status {
            is: loopline::audience::subscribers::Status::Unsubscribed,
        },
    )
    .await
    .unwrap();
    let body = editor
        .get(&format!("/audience/export.csv?segment={seg}"))
        .await
        .text()
        .await
        .unwrap();
    let mut r = csv::Reader::from_reader(body.trim_start_matches('\u{feff}').as_bytes());
    let emails: Vec<String> = r.records().map(|x| x.unwrap()[0].to_string()).collect();
    assert_eq!(emails, vec!["user2@example.kr"]);
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    assert_eq!(
        viewer.get("/audience/export.csv").await.status(),
        StatusCode::FORBIDDEN
    );
}
