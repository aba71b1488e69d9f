//! Segments compile to one parameterised query; counts are checked against fixtures
//! whose answers are known, through the module API and through the dashboard builder.

use loopline::{
    accounts::Role,
    audience::{
        segments::{self, Condition, FieldOp, Match},
        subscribers::Status,
    },
    clock::Clock,
};
use reqwest::StatusCode;

use crate::harness::{Page, TestApp, location};

/// Ten subscribers with known tags, fields and engagement.
async fn fixture(app: &TestApp) -> (i64, i64) {
    let now = app.clock.now();
    sqlx::query("INSERT INTO custom_fields (key, label, type) VALUES ('city', 'City', 'text'), ('orders', 'Orders', 'number'), ('vip', 'VIP', 'boolean')").execute(&app.pool).await.unwrap();
    // i = 1..10: even → tag marketing; orders = i; city Seoul for i <= 4 else Busan;
    // opened 2 days ago for i <= 3; 3+ unopened in a row for i >= 8; unsubscribed i = 10.
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, fields, created_at, last_open_at, last_engaged_at, consecutive_unopened)
         SELECT 's' || i || '@example.com', '사용자' || i,
                CASE WHEN i = 10 THEN 'unsubscribed'::subscriber_status ELSE 'active' END,
                jsonb_build_object('orders', i, 'city', CASE WHEN i <= 4 THEN 'Seoul' ELSE 'Busan' END, 'vip', i = 1),
                $1 - interval '60 days',
                CASE WHEN i <= 3 THEN $1 - interval '2 days' END,
                CASE WHEN i <= 3 THEN $1 - interval '2 days' END,
                CASE WHEN i >= 8 THEN 3 ELSE 0 END
         FROM generate_series(1, 10) i",
    )
    .bind(now)
    .execute(&app.pool)
    .await
    .unwrap();
    let marketing: i64 =
        sqlx::query_scalar("INSERT INTO tags (name) VALUES ('marketing') RETURNING id")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE subscribers SET tag_ids = ARRAY[$1::bigint] WHERE (regexp_replace(email, '^s([0-9]+)@.*$', '\\1'))::int % 2 = 0")
        .bind(marketing)
        .execute(&app.pool)
        .await
        .unwrap();
    // s5 clicked a purchase link (human), s6 only by a scanner.
    sqlx::query(
        "INSERT INTO events (subscriber_id, kind, at, data)
         SELECT id, 'clicked', $1 - interval '1 day', jsonb_build_object('label', 'purchase', 'human', email = 's5@example.com')
         FROM subscribers WHERE email IN ('s5@example.com', 's6@example.com')",
    )
    .bind(now)
    .execute(&app.pool)
    .await
    .unwrap();
    let tagged: i64 = sqlx::query_scalar("SELECT count(*) FROM subscribers WHERE tag_ids <> '{}'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (marketing, tagged)
}

#[tokio::test]
async fn conditions_select_exactly_the_expected_subscribers() {
    let app = TestApp::spawn().await;
    let (marketing, tagged) = fixture(&app).await;
    assert_eq!(tagged, 5);
    let now = app.clock.now();
    let count = |c: Condition| {
        let pool = app.pool.clone();
        async move { segments::count(&pool, &c, now).await.unwrap() }
    };
    let all = |conditions| Condition::Group {
        r#match: Match::All,
        conditions,
    };
    let any = |conditions| Condition::Group {
        r#match: Match::Any,
        conditions,
    };

    assert_eq!(count(Condition::Status { is: Status::Active }).await, 9);
    assert_eq!(
        count(Condition::Tag {
            tag_id: marketing,
            has: true
        })
        .await,
        5
    );
    assert_eq!(
        count(Condition::Tag {
            tag_id: marketing,
            has: false
        })
        .await,
        5
    );
    assert_eq!(
        count(Condition::Field {
            key: "orders".into(),
            op: FieldOp::GreaterThan,
            value: "6".into()
        })
        .await,
        4
    );
    assert_eq!(
        count(Condition::Field {
            key: "city".into(),
            op: FieldOp::Is,
            value: "seoul".into()
        })
        .await,
        4,
        "text compares case-insensitively"
    );
    assert_eq!(
        count(Condition::Field {
            key: "city".into(),
            op: FieldOp::Contains,
            value: "USA".into()
        })
        .await,
        6
    );
    assert_eq!(
        count(Condition::Field {
            key: "vip".into(),
            op: FieldOp::Is,
            value: "true".into()
        })
        .await,
        1
    );
    assert_eq!(
        count(Condition::Opened {
            days: 7,
            negate: false
        })
        .await,
        3
    );
    assert_eq!(
        count(Condition::Opened {
            days: 7,
            negate: true
        })
        .await,
        7
    );
    assert_eq!(count(Condition::UnopenedInARow { mails: 3 }).await, 3);
    assert_eq!(
        count(Condition::ClickedLabel {
            label: "purchase".into(),
            days: Some(7)
        })
        .await,
        1,
        "the scanner's click does not count"
    );
    assert_eq!(
        count(Condition::Stage {
            is: loopline::audience::lifecycle::Stage::Active
        })
        .await,
        3
    );

    // Three conditions with AND, and a nested OR.
    let three = all(vec![
        Condition::Status { is: Status::Active },
        Condition::Tag {
            tag_id: marketing,
            has: true,
        },
        Condition::Field {
            key: "orders".into(),
            op: FieldOp::GreaterThan,
            value: "2".into(),
        },
    ]);
    assert_eq!(count(three).await, 3, "s4, s6, s8");
    let nested = all(vec![
        Condition::Status { is: Status::Active },
        any(vec![
            Condition::Opened {
                days: 7,
                negate: false,
            },
            Condition::UnopenedInARow { mails: 3 },
        ]),
    ]);
    assert_eq!(
        count(nested).await,
        5,
        "s1–s3 opened, s8–s9 declining (s10 unsubscribed)"
    );

    // Invalid definitions are refused with a reason, before any SQL runs.
    let err = segments::count(
        &app.pool,
        &Condition::Field {
            key: "orders".into(),
            op: FieldOp::Is,
            value: "lots".into(),
        },
        now,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a number"));
}

#[tokio::test]
async fn the_builder_previews_counts_saves_and_filters_the_list() {
    let app = TestApp::spawn().await;
    let (marketing, _) = fixture(&app).await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let tag = marketing.to_string();
    let fields = [
        ("name", "마케팅 관심"),
        ("match", "all"),
        ("c0_kind", "tag"),
        ("c0_arg", tag.as_str()),
        ("c1_kind", "status"),
        ("c1_arg", "active"),
        ("c2_kind", "field"),
        ("c2_arg", "orders"),
        ("c2_op", "greater_than"),
        ("c2_value", "2"),
    ];
    let res = editor
        .post_form("/audience/segments/preview", &fields)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = Page {
        status: StatusCode::OK,
        html: scraper::Html::parse_document(&res.text().await.unwrap()),
    };
    assert_eq!(page.select("#count-value"), vec!["3"]);

    let res = editor.post_form("/audience/segments", &fields).await;
    let target = location(&res);
    assert!(target.starts_with("/audience?segment="), "{target}");
    let list = editor.page(&target).await;
    let mut emails = list.select("#subscribers-table td.email");
    emails.sort();
    assert_eq!(
        emails,
        vec!["s4@example.com", "s6@example.com", "s8@example.com"]
    );
    let seg_page = editor.page("/audience/segments").await;
    assert_eq!(seg_page.select("#segments-table td.count"), vec!["3"]);

    // Bad rows and bad JSON come back as readable errors.
    let res = editor
        .post_form(
            "/audience/segments/preview",
            &[("c0_kind", "opened"), ("c0_arg", "soon")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("not a number of days"));
    let res = editor
        .post_form(
            "/audience/segments/preview",
            &[("advanced", "{\"type\": \"nonsense\"}")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = editor.post_form("/audience/segments", &fields).await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "duplicate name"
    );

    // Viewers may count but not save.
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    assert_eq!(
        viewer
            .post_form("/audience/segments/preview", &fields)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        viewer
            .post_form("/audience/segments", &fields)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}
