//! The segment count index must count exactly what SQL counts: random segments over
//! random subscribers, checked again after each round of random changes (updates,
//! inserts, single and bulk deletes, a deleted tag), and a change committed by a
//! transaction that was open during a catch-up.

use std::time::Duration;

use loopline::{
    accounts::Role,
    audience::{
        live_index::{ListFilter, LiveIndex, fold_case},
        segments::{self, Condition, FieldOp, Match},
        subscribers::Status,
    },
    clock::Clock,
};
use serde_json::{Value, json};
use sqlx::{PgPool, types::Json};

use crate::harness::{TestApp, fresh_database};

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const CITIES: [&str; 6] = ["Seoul", "seoul", "Busan", "서울", "부산 Busan", "Incheon"];
const PLANS: [&str; 3] = ["Pro", "Free", "Team"];

fn random_fields(rng: &mut Rng) -> Value {
    let mut f = serde_json::Map::new();
    match rng.below(10) {
        0 | 1 => {}
        2 => {
            f.insert("orders".into(), Value::Null);
        }
        3 => {
            f.insert("orders".into(), json!(rng.below(20) as f64 + 0.5));
        }
        _ => {
            f.insert("orders".into(), json!(rng.below(20)));
        }
    }
    if rng.chance(80) {
        let day = 1 + rng.below(28);
        f.insert("joined".into(), json!(format!("2024-03-{day:02}")));
    }
    if rng.chance(70) {
        f.insert("vip".into(), json!(rng.chance(30)));
    }
    if rng.chance(75) {
        f.insert("city".into(), json!(rng.pick(&CITIES)));
    }
    if rng.chance(60) {
        f.insert("plan".into(), json!(rng.pick(&PLANS)));
    }
    Value::Object(f)
}

fn random_tags(rng: &mut Rng, tags: &[i64]) -> Vec<i64> {
    let mut t: Vec<i64> = tags.iter().copied().filter(|_| rng.chance(30)).collect();
    t.sort_unstable();
    t
}

fn random_status(rng: &mut Rng) -> Status {
    if rng.chance(60) {
        Status::Active
    } else {
        *rng.pick(&Status::ALL)
    }
}

async fn insert(pool: &PgPool, rng: &mut Rng, tags: &[i64], n: usize) {
    for _ in 0..n {
        let k = rng.below(1_000_000_000);
        sqlx::query(
            "INSERT INTO subscribers (email, name, status, fields, tag_ids, created_at)
             VALUES ($1, '구독자', $2, $3, $4, now())",
        )
        .bind(format!("u{k}@example.kr"))
        .bind(random_status(rng))
        .bind(Json(random_fields(rng)))
        .bind(random_tags(rng, tags))
        .execute(pool)
        .await
        .unwrap();
    }
}

fn random_field_condition(rng: &mut Rng) -> Condition {
    use FieldOp::*;
    let (key, op, value) = match rng.below(5) {
        0 => (
            "orders",
            *rng.pick(&[Is, IsNot, GreaterThan, LessThan, IsSet, IsNotSet]),
            rng.pick(&["0", "7", "7.5", "12", "19.5", "3"]).to_string(),
        ),
        1 => (
            "joined",
            *rng.pick(&[Is, IsNot, GreaterThan, LessThan, IsSet, IsNotSet]),
            format!("2024-03-{:02}", 1 + rng.below(28)),
        ),
        2 => (
            "vip",
            *rng.pick(&[Is, IsNot, IsSet, IsNotSet]),
            rng.pick(&["true", "false"]).to_string(),
        ),
        3 => (
            "city",
            *rng.pick(&[Is, IsNot, Contains, IsSet, IsNotSet]),
            rng.pick(&["seoul", "SEOUL", "서울", "busan", "eo", "부산", "x"])
                .to_string(),
        ),
        _ => (
            "plan",
            *rng.pick(&[Is, IsNot, Contains]),
            rng.pick(&["pro", "Free", "ea"]).to_string(),
        ),
    };
    Condition::Field {
        key: key.into(),
        op,
        value,
    }
}

fn random_condition(rng: &mut Rng, tags: &[i64], depth: usize) -> Condition {
    match rng.below(if depth < 3 { 7 } else { 5 }) {
        0 => Condition::Status {
            is: *rng.pick(&Status::ALL),
        },
        1 => Condition::Tag {
            // Now and then a tag no one has (or one deleted).
            tag_id: if rng.chance(10) {
                999_999
            } else {
                *rng.pick(tags)
            },
            has: rng.chance(70),
        },
        2..=4 => random_field_condition(rng),
        _ => Condition::Group {
            r#match: if rng.chance(50) {
                Match::All
            } else {
                Match::Any
            },
            conditions: (0..rng.below(4))
                .map(|_| random_condition(rng, tags, depth + 1))
                .collect(),
        },
    }
}

async fn define_fields(pool: &PgPool) -> Vec<i64> {
    sqlx::query(
        "INSERT INTO custom_fields (key, label, type, choices) VALUES
         ('orders', 'Orders', 'number', '{}'), ('joined', 'Joined', 'date', '{}'),
         ('vip', 'VIP', 'boolean', '{}'), ('city', '도시', 'text', '{}'),
         ('plan', 'Plan', 'choice', '{Pro,Free,Team}')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO tags (name) SELECT '태그' || i FROM generate_series(1, 6) i RETURNING id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Compares the index with SQL on `n` random segments; every one must be answered by
/// the index.
async fn agree(pool: &PgPool, index: &LiveIndex, rng: &mut Rng, tags: &[i64], n: usize) {
    let fields = segments::field_defs(pool).await.unwrap();
    let now = chrono::Utc::now();
    for _ in 0..n {
        let cond = Condition::Group {
            r#match: Match::All,
            conditions: (0..1 + rng.below(3))
                .map(|_| random_condition(rng, tags, 1))
                .collect(),
        };
        let sql = segments::count(pool, &cond, now).await.unwrap();
        let indexed = index.count(pool, &cond, &fields).await;
        assert_eq!(
            indexed,
            Some(sql as u64),
            "index and SQL disagree on {}",
            serde_json::to_string(&cond).unwrap()
        );
    }
}

#[tokio::test]
async fn the_index_counts_what_sql_counts_through_random_changes() {
    let (pool, _) = fresh_database().await;
    let tags = define_fields(&pool).await;
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    insert(&pool, &mut rng, &tags, 300).await;
    let index = LiveIndex::new();
    let fields = segments::field_defs(&pool).await.unwrap();
    index.build_now(&pool, &fields).await.unwrap();
    agree(&pool, &index, &mut rng, &tags, 120).await;

    for round in 0..5 {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM subscribers ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        for _ in 0..30 {
            let id = *rng.pick(&ids);
            match rng.below(5) {
                0 => {
                    sqlx::query("UPDATE subscribers SET status = $2 WHERE id = $1")
                        .bind(id)
                        .bind(random_status(&mut rng))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
                1 => {
                    sqlx::query("UPDATE subscribers SET tag_ids = $2 WHERE id = $1")
                        .bind(id)
                        .bind(random_tags(&mut rng, &tags))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
                2 => {
                    sqlx::query("UPDATE subscribers SET fields = $2 WHERE id = $1")
                        .bind(id)
                        .bind(Json(random_fields(&mut rng)))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
                3 => {
                    sqlx::query(
                        "UPDATE subscribers SET fields = fields - 'orders' - 'city' WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
                _ => {
                    // Engagement counters move without touching `updated_at`.
                    sqlx::query("UPDATE subscribers SET last_open_at = now(), consecutive_unopened = 0 WHERE id = $1")
                        .bind(id)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
        }
        insert(&pool, &mut rng, &tags, 20).await;
        sqlx::query("DELETE FROM subscribers WHERE id = $1")
            .bind(*rng.pick(&ids))
            .execute(&pool)
            .await
            .unwrap();
        // A bulk delete: one statement, many removals.
        sqlx::query("DELETE FROM subscribers WHERE id % 37 = $1")
            .bind(round as i64)
            .execute(&pool)
            .await
            .unwrap();
        if round == 3 {
            // Deleting a tag rewrites its members' arrays.
            sqlx::query("DELETE FROM tags WHERE id = $1")
                .bind(tags[0])
                .execute(&pool)
                .await
                .unwrap();
        }
        agree(&pool, &index, &mut rng, &tags, 60).await;
    }
}

#[tokio::test]
async fn a_transaction_open_during_a_catch_up_is_seen_by_the_next_one() {
    let (pool, _) = fresh_database().await;
    let tags = define_fields(&pool).await;
    let mut rng = Rng(77);
    insert(&pool, &mut rng, &tags, 50).await;
    exec(&pool, "UPDATE subscribers SET status = 'active'").await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let index = LiveIndex::new();
    index.build_now(&pool, &fields).await.unwrap();
    let active = Condition::Status { is: Status::Active };
    let count = || index.count(&pool, &active, &fields);
    assert_eq!(count().await, Some(50));

    // A writer invisible to pg_stat_activity (as another role's session would be)
    // starts a transaction and changes rows...
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL track_activities = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE subscribers SET status = 'bounced' WHERE id IN (SELECT id FROM subscribers ORDER BY id LIMIT 3)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM subscribers WHERE id = (SELECT max(id) FROM subscribers)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // ...catch-ups run while it is open (and cannot see it), and a later transaction
    // commits first...
    assert_eq!(count().await, Some(50));
    exec(&pool, "UPDATE subscribers SET status = 'unsubscribed' WHERE id = (SELECT id FROM subscribers ORDER BY id OFFSET 10 LIMIT 1)").await;
    assert_eq!(count().await, Some(49));
    // ...then it commits, and the next catch-up finds its changes.
    tx.commit().await.unwrap();
    assert_eq!(count().await, Some(45));
}

/// Values PostgreSQL reads differently from a quick `f64` or `lower()`, written by
/// someone other than the app: the index must count them as SQL does, or leave the
/// count to SQL — never give another number, never fail.
#[tokio::test]
async fn values_written_outside_the_app_are_counted_as_sql_counts_them() {
    let (pool, _) = fresh_database().await;
    define_fields(&pool).await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let cases: [(&str, Vec<Condition>); 8] = [
        // Underflows to 0 in an f64; exact in numeric.
        (
            r#"{"orders": 1e-400}"#,
            vec![
                field("orders", FieldOp::Is, "0"),
                field("orders", FieldOp::LessThan, "1e-300"),
                field("orders", FieldOp::GreaterThan, "-1e-300"),
            ],
        ),
        // More digits than an f64 keeps, written as a JSON number.
        (
            r#"{"orders": 0.1000000000000000001}"#,
            vec![
                field("orders", FieldOp::Is, "0.1"),
                field("orders", FieldOp::GreaterThan, "0.1"),
            ],
        ),
        // Beyond the f64 range.
        (
            r#"{"orders": 1e400, "vip": true}"#,
            vec![
                field("vip", FieldOp::Is, "true"),
                field("orders", FieldOp::IsSet, ""),
            ],
        ),
        // A title-case letter, which lower() in the C locale leaves alone.
        (
            r#"{"city": "ǅakovo"}"#,
            vec![
                field("city", FieldOp::Is, "ǆakovo"),
                field("city", FieldOp::Contains, "ǅ"),
                field("city", FieldOp::IsNot, "x"),
            ],
        ),
        (
            r#"{"joined": "2024-3-5"}"#,
            vec![field("joined", FieldOp::Is, "2024-03-05")],
        ),
        // Values that do not cast to the field's type: no match, never a failed query.
        (
            r#"{"orders": "many", "vip": "maybe", "joined": "2023-02-29"}"#,
            vec![
                field("orders", FieldOp::GreaterThan, "0"),
                field("orders", FieldOp::IsNot, "1"),
                field("vip", FieldOp::Is, "true"),
                field("joined", FieldOp::LessThan, "2030-01-01"),
                field("joined", FieldOp::IsNot, "2023-03-01"),
            ],
        ),
        (
            r#"{"orders": {"n": 1}, "vip": [true], "joined": "someday"}"#,
            vec![
                field("orders", FieldOp::LessThan, "5"),
                field("vip", FieldOp::Is, "false"),
                field("joined", FieldOp::GreaterThan, "2000-01-01"),
            ],
        ),
        // Valid, though not as Loopline writes them: a number in a string, a leap day.
        (
            r#"{"orders": " 12 ", "joined": "2024-02-29"}"#,
            vec![
                field("orders", FieldOp::Is, "12"),
                field("joined", FieldOp::Is, "2024-02-29"),
            ],
        ),
    ];
    // (How many of the two rows each case's first condition matches in SQL.)
    let first_matches = [0, 1, 1, 0, 1, 1, 1, 1];
    for (i, (value, conditions)) in cases.iter().enumerate() {
        sqlx::query("INSERT INTO subscribers (email, status, fields, created_at) VALUES ($1, 'active', $2::jsonb, now())")
            .bind(format!("odd{i}@example.kr"))
            .bind(value)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO subscribers (email, status, fields, created_at) VALUES ($1, 'active', '{\"orders\": 0.1, \"city\": \"x\"}', now())")
            .bind(format!("plain{i}@example.kr"))
            .execute(&pool)
            .await
            .unwrap();
        // Built before and caught up after the value arrives: both paths.
        let index = LiveIndex::new();
        for built_after in [false, true] {
            if built_after {
                index.build_now(&pool, &fields).await.unwrap();
            }
            for (j, cond) in conditions.iter().enumerate() {
                let sql = segments::count(&pool, cond, chrono::Utc::now())
                    .await
                    .unwrap();
                if j == 0 {
                    assert_eq!(sql, first_matches[i], "{value}");
                }
                let indexed = index.count(&pool, cond, &fields).await;
                assert!(
                    indexed.is_none_or(|n| n == sql as u64),
                    "{value}: {} index {indexed:?}, SQL {sql}",
                    serde_json::to_string(cond).unwrap()
                );
            }
        }
        exec(&pool, "DELETE FROM subscribers").await;
    }
}

/// Under a Turkish collation `lower('I')` is `ı`, not `i`. The index must notice (it
/// asks `lower()` itself: an ICU locale does not show in `lc_ctype`) and leave text
/// conditions to SQL rather than count another number.
#[tokio::test]
async fn under_a_turkish_collation_text_conditions_are_counted_as_sql_counts_them() {
    let (pool, _) = crate::harness::fresh_icu_database("tr").await;
    define_fields(&pool).await;
    let fields = segments::field_defs(&pool).await.unwrap();
    exec(
        &pool,
        "INSERT INTO subscribers (email, status, fields, created_at) VALUES
         ('ilhan@example.com.tr', 'active', '{\"city\": \"INCHEON\"}', now()),
         ('irmak@example.com.tr', 'active', '{\"city\": \"incheon\"}', now())",
    )
    .await;
    let index = LiveIndex::new();
    index.build_now(&pool, &fields).await.unwrap();
    let now = chrono::Utc::now();
    let is_incheon = field("city", FieldOp::Is, "incheon");
    assert_eq!(
        segments::count(&pool, &is_incheon, now).await.unwrap(),
        1,
        "lower('INCHEON') is 'ıncheon' here"
    );
    for cond in [
        is_incheon,
        field("city", FieldOp::Contains, "in"),
        field("city", FieldOp::IsNot, "INCHEON"),
    ] {
        let sql = segments::count(&pool, &cond, now).await.unwrap();
        let indexed = index.count(&pool, &cond, &fields).await;
        assert!(
            indexed.is_none_or(|n| n == sql as u64),
            "{}: index {indexed:?}, SQL {sql}",
            serde_json::to_string(&cond).unwrap()
        );
    }
}

#[tokio::test]
async fn what_the_index_does_not_hold_is_counted_in_sql() {
    let (pool, _) = fresh_database().await;
    let tags = define_fields(&pool).await;
    let mut rng = Rng(99);
    insert(&pool, &mut rng, &tags, 40).await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let index = LiveIndex::new();
    index.build_now(&pool, &fields).await.unwrap();

    // Engagement moves with every open and click: SQL.
    let opened = Condition::Opened {
        days: 7,
        negate: false,
    };
    assert_eq!(index.count(&pool, &opened, &fields).await, None);

    // A value whose comparison an f64 or a locale-free lower() cannot reproduce.
    let orders = field("orders", FieldOp::GreaterThan, "5");
    assert!(index.count(&pool, &orders, &fields).await.is_some());
    exec(&pool, "UPDATE subscribers SET fields = fields || '{\"orders\": 12345678901234567}' WHERE id = (SELECT min(id) FROM subscribers)").await;
    assert_eq!(index.count(&pool, &orders, &fields).await, None);
    let city = field("city", FieldOp::Is, "seoul");
    assert!(index.count(&pool, &city, &fields).await.is_some());
    exec(&pool, "UPDATE subscribers SET fields = fields || '{\"city\": \"Évry\"}' WHERE id = (SELECT max(id) FROM subscribers)").await;
    assert_eq!(index.count(&pool, &city, &fields).await, None);
    // Other fields are still answered, and the odd row stops counting once it is fixed.
    let vip = field("vip", FieldOp::Is, "true");
    assert!(index.count(&pool, &vip, &fields).await.is_some());
    exec(&pool, "UPDATE subscribers SET fields = fields || '{\"city\": \"Evry\"}' WHERE id = (SELECT max(id) FROM subscribers)").await;
    let sql = segments::count(&pool, &city, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(index.count(&pool, &city, &fields).await, Some(sql as u64));

    // A new field definition: the index is rebuilt (SQL meanwhile), then answers again.
    exec(
        &pool,
        "INSERT INTO custom_fields (key, label, type) VALUES ('score', 'Score', 'number')",
    )
    .await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let score = field("score", FieldOp::IsNotSet, "");
    assert_eq!(index.count(&pool, &score, &fields).await, None);
    assert_eq!(
        count_once_rebuilt(&index, &pool, &score, &fields).await,
        Some(40)
    );
}

#[tokio::test]
async fn the_dashboard_preview_counts_from_the_index_once_built() {
    let app = TestApp::spawn().await;
    let tags = define_fields(&app.pool).await;
    let mut rng = Rng(5);
    insert(&app.pool, &mut rng, &tags, 60).await;
    let cond = Condition::Group {
        r#match: Match::All,
        conditions: vec![
            Condition::Tag {
                tag_id: tags[1],
                has: true,
            },
            Condition::Field {
                key: "orders".into(),
                op: FieldOp::GreaterThan,
                value: "4".into(),
            },
        ],
    };
    let now = app.clock.now();
    let sql = segments::count(&app.pool, &cond, now).await.unwrap();
    build(&app).await;
    let live = segments::count_live(&app.pool, &app.state.live_index, &cond, now)
        .await
        .unwrap();
    assert_eq!(live, sql);
    // A subscriber joins the segment: the next count sees it.
    sqlx::query("INSERT INTO subscribers (email, status, fields, tag_ids, created_at) VALUES ('new@example.kr', 'active', '{\"orders\": 9}', $1, now())")
        .bind(vec![tags[1]])
        .execute(&app.pool)
        .await
        .unwrap();
    let live = segments::count_live(&app.pool, &app.state.live_index, &cond, now)
        .await
        .unwrap();
    assert_eq!(live, sql + 1);
}

async fn exec(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

fn field(key: &str, op: FieldOp, value: &str) -> Condition {
    Condition::Field {
        key: key.into(),
        op,
        value: value.into(),
    }
}

/// The index's count once the rebuild it started in the background has landed (up to
/// two seconds); `None` if it never does.
async fn count_once_rebuilt(
    index: &LiveIndex,
    pool: &PgPool,
    cond: &Condition,
    fields: &[loopline::audience::fields::FieldDef],
) -> Option<u64> {
    for _ in 0..200 {
        if let Some(n) = index.count(pool, cond, fields).await {
            return Some(n);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// What the list's SQL search selects, as ids.
/// Every id the index finds for a search, newest first.
async fn matches(
    index: &LiveIndex,
    pool: &PgPool,
    needle: &str,
    fields: &[loopline::audience::fields::FieldDef],
) -> Vec<i64> {
    let filter = ListFilter {
        needle,
        ..Default::default()
    };
    index
        .page(pool, &filter, fields, None, usize::MAX, false)
        .await
        .unwrap()
}

/// What SQL finds for a search, newest first (as the index pages it).
async fn sql_search(pool: &PgPool, needle: &str) -> Vec<i64> {
    let escaped = fold_case(needle)
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    sqlx::query_scalar(
        "SELECT id FROM subscribers WHERE lower(email) LIKE $1 OR lower(name) LIKE $1 ORDER BY id DESC",
    )
    .bind(format!("%{escaped}%"))
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn search_finds_what_sql_finds_through_renames_and_deletes() {
    let (pool, _) = fresh_database().await;
    define_fields(&pool).await;
    let people = [
        ("hong@example.kr", "홍길동"),
        ("gildong.hong@mail.example.com", "Hong Gil-dong"),
        ("kim_50%@example.kr", "김철수"),
        ("LEE@Example.COM", "이영희 Lee"),
        ("park@example.org", ""),
        ("100_percent@example.kr", "Percent 50% Off"),
    ];
    for (email, name) in people {
        sqlx::query("INSERT INTO subscribers (email, name, status, created_at) VALUES ($1, $2, 'active', now())")
            .bind(email)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
    }
    let mut rng = Rng(3);
    for _ in 0..300 {
        let k = rng.below(100_000);
        sqlx::query("INSERT INTO subscribers (email, name, created_at) VALUES ($1, $2, now())")
            .bind(format!("user{k}@example.net"))
            .bind(format!("구독자 {k}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let fields = segments::field_defs(&pool).await.unwrap();
    let index = LiveIndex::new();
    index.build_now(&pool, &fields).await.unwrap();
    let needles = [
        "hong",
        "HONG",
        "길동",
        "example.kr",
        "_",
        "%",
        "50%",
        "lee",
        "이영희",
        "@",
        "user1",
        "구독자 4",
        "nobody",
        "m@e",
    ];
    let check = |round: &'static str| {
        let (pool, index, fields) = (&pool, &index, &fields);
        async move {
            for needle in needles {
                let found = matches(index, pool, needle, fields).await;
                assert_eq!(found, sql_search(pool, needle).await, "{round}: {needle:?}");
            }
        }
    };
    check("built").await;
    // NUL never matches (the list strips it before searching).
    assert!(matches(&index, &pool, "kr\0x", &fields).await.is_empty());
    assert_eq!(matches(&index, &pool, "홍길동", &fields).await.len(), 1);

    // Renames (new entries, old ones dead), deletes, and enough churn to compact.
    exec(&pool, "UPDATE subscribers SET email = 'renamed@example.kr', name = '새이름' WHERE email = 'hong@example.kr'").await;
    exec(&pool, "DELETE FROM subscribers WHERE email LIKE 'LEE%'").await;
    for i in 0..40 {
        sqlx::query("UPDATE subscribers SET name = name || $1 WHERE email LIKE 'user%'")
            .bind(format!(" {i}"))
            .execute(&pool)
            .await
            .unwrap();
        matches(&index, &pool, "x", &fields).await;
    }
    check("after changes").await;
    assert_eq!(matches(&index, &pool, "새이름", &fields).await.len(), 1);
}

#[tokio::test]
async fn the_list_searches_through_the_index_page_by_page_with_other_filters() {
    let app = TestApp::spawn().await;
    // 2,300 matching addresses (more than one chunk of ids), every third one bounced.
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, created_at)
         SELECT 'match' || i || '@example.kr', '매치 ' || i,
                CASE WHEN i % 3 = 0 THEN 'bounced' ELSE 'active' END::subscriber_status, now()
         FROM generate_series(1, 2300) i",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    exec(&app.pool, "INSERT INTO subscribers (email, name, created_at) SELECT 'other' || i || '@example.kr', '', now() FROM generate_series(1, 500) i").await;
    build(&app).await;
    // A match added after the build is found too (the search catches up first).
    exec(&app.pool, "INSERT INTO subscribers (email, name, status, created_at) VALUES ('late@example.kr', '매치 늦게', 'bounced', now())").await;

    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let mut path = "/audience?q=%EB%A7%A4%EC%B9%98&status=bounced".to_string(); // "매치"
    let mut seen = Vec::new();
    loop {
        let page = viewer.page(&path).await;
        seen.extend(page.select("#subscribers-table td.email"));
        match page.attr("#next-page", "href") {
            Some(next) => path = next,
            None => break,
        }
    }
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT email FROM subscribers WHERE lower(name) LIKE '%매치%' AND status = 'bounced' ORDER BY id DESC",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(expected.len(), 767);
    assert_eq!(seen, expected);
    assert_eq!(seen[0], "late@example.kr");
}

/// A new tag's id.
async fn new_tag(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("INSERT INTO tags (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Builds the app's live index now, for the current field definitions.
async fn build(app: &TestApp) {
    let fields = segments::field_defs(&app.pool).await.unwrap();
    app.state
        .live_index
        .build_now(&app.pool, &fields)
        .await
        .unwrap();
}

/// Pages through the list at `path`, following "next", and returns every address shown.
async fn every_page(viewer: &crate::harness::TestClient, mut path: String) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = viewer.page(&path).await;
        seen.extend(page.select("#subscribers-table td.email"));
        match page.attr("#next-page", "href") {
            Some(next) => path = next,
            None => return seen,
        }
    }
}

/// Without a search, the list's status, tag and segment filters come from the index
/// (there is no SQL index on status or tags any more), page by page through more than one
/// chunk of ids, and agree with SQL after changes made since the build; so do the tags
/// page's counts.
#[tokio::test]
async fn the_list_filters_and_tag_counts_come_from_the_index_and_agree_with_sql() {
    let app = TestApp::spawn().await;
    let tag = new_tag(&app.pool, "고객").await;
    let other = new_tag(&app.pool, "other").await;
    // 6,000 subscribers; 3,000 carry the tag (more than one chunk), every fifth is
    // unsubscribed.
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, tag_ids, created_at)
         SELECT 'f' || i || '@example.kr', '', CASE WHEN i % 5 = 0 THEN 'unsubscribed' ELSE 'active' END::subscriber_status,
                CASE WHEN i % 2 = 0 THEN ARRAY[$1::bigint] WHEN i % 3 = 0 THEN ARRAY[$2::bigint] ELSE '{}' END, now()
         FROM generate_series(1, 6000) i",
    )
    .bind(tag)
    .bind(other)
    .execute(&app.pool)
    .await
    .unwrap();
    build(&app).await;
    // Changes after the build: untagged, re-statused, deleted, added.
    exec(&app.pool, "UPDATE subscribers SET tag_ids = '{}' WHERE email IN ('f2@example.kr', 'f5998@example.kr')").await;
    exec(
        &app.pool,
        "UPDATE subscribers SET status = 'bounced' WHERE email = 'f4@example.kr'",
    )
    .await;
    exec(
        &app.pool,
        "DELETE FROM subscribers WHERE email = 'f6000@example.kr'",
    )
    .await;
    sqlx::query("INSERT INTO subscribers (email, name, status, tag_ids, created_at) VALUES ('late@example.kr', '', 'unsubscribed', ARRAY[$1::bigint], now())")
        .bind(tag)
        .execute(&app.pool)
        .await
        .unwrap();
    let segment = segments::save(
        &app.pool,
        "고객, 구독 중",
        &Condition::Group {
            r#match: Match::All,
            conditions: vec![
                Condition::Tag {
                    tag_id: tag,
                    has: true,
                },
                Condition::Status { is: Status::Active },
            ],
        },
    )
    .await
    .unwrap();

    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let answered = app.state.live_index.answered();
    let sql = |condition: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                "SELECT email FROM subscribers s WHERE {condition} ORDER BY id DESC"
            )))
            .bind(tag)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let by_tag = every_page(&viewer, format!("/audience?tag={tag}")).await;
    assert_eq!(by_tag, sql("s.tag_ids @> ARRAY[$1::bigint]").await);
    // 3,000 tagged, two untagged and one deleted since the build, one added.
    assert_eq!(by_tag.len(), 2_998);
    assert_eq!(by_tag[0], "late@example.kr");
    let left = every_page(&viewer, format!("/audience?status=unsubscribed&tag={tag}")).await;
    assert_eq!(
        left,
        sql("s.tag_ids @> ARRAY[$1::bigint] AND s.status = 'unsubscribed'").await
    );
    assert_eq!(
        every_page(&viewer, format!("/audience?segment={segment}")).await,
        sql("s.tag_ids @> ARRAY[$1::bigint] AND s.status = 'active'").await
    );
    assert_eq!(
        every_page(&viewer, "/audience?status=bounced".to_string()).await,
        vec!["f4@example.kr"]
    );
    // 60 + 15 + 30 + 1 pages, each answered by the index.
    assert!(app.state.live_index.answered() - answered >= 106);
    // With a stage filter (which the index does not hold) and few enough matches, the
    // index still narrows by tag and SQL checks the stage. Here SQL rejects all but the
    // oldest hundred tagged rows, so the page takes chunk after growing chunk.
    assert_eq!(
        every_page(&viewer, format!("/audience?tag={tag}&stage=new")).await,
        by_tag
    );
    exec(&app.pool, "UPDATE subscribers SET created_at = now() - interval '400 days' WHERE id > (SELECT id FROM subscribers WHERE email = 'f200@example.kr')").await;
    let answered = app.state.live_index.answered();
    let new = every_page(&viewer, format!("/audience?tag={tag}&stage=new")).await;
    assert_eq!(
        new,
        sql("s.tag_ids @> ARRAY[$1::bigint] AND s.created_at > now() - interval '1 day'").await
    );
    assert_eq!(new.len(), 99);
    assert!(
        app.state.live_index.answered() - answered >= 4,
        "chunks of 51, 204, 816 and 2,000 ids"
    );

    let answered = app.state.live_index.answered();
    let page = viewer.page("/audience/fields").await;
    assert_eq!(
        app.state.live_index.answered() - answered,
        1,
        "tag counts from the index"
    );
    let count = |id: i64| {
        page.select(&format!(
            "#tags-table tr[data-tag-id=\"{id}\"] td:nth-child(2)"
        ))
    };
    let expected = |id: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM subscribers WHERE tag_ids @> ARRAY[$1::bigint]",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .to_string()
        }
    };
    assert_eq!(count(tag), vec![expected(tag).await]);
    assert_eq!(count(tag), vec!["2998".to_string()]);
    assert_eq!(count(other), vec![expected(other).await]);
    assert_eq!(count(other), vec!["1000".to_string()]);
}

/// A filter most of the list passes is paged by walking the rows newest first (not by
/// sorting every match): the first pages, a page deep in the list and rows added after
/// the build all agree with SQL.
#[tokio::test]
async fn a_filter_most_rows_pass_pages_newest_first_like_sql() {
    let app = TestApp::spawn().await;
    let tag = new_tag(&app.pool, "대부분").await;
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, tag_ids, created_at)
         SELECT 'd' || i || '@example.kr', '', 'active', CASE WHEN i % 10 <> 0 THEN ARRAY[$1::bigint] ELSE '{}' END, now()
         FROM generate_series(1, 30000) i",
    )
    .bind(tag)
    .execute(&app.pool)
    .await
    .unwrap();
    build(&app).await;
    sqlx::query("INSERT INTO subscribers (email, name, status, tag_ids, created_at) SELECT 'late' || i || '@example.kr', '', 'active', ARRAY[$1::bigint], now() FROM generate_series(1, 3) i")
        .bind(tag)
        .execute(&app.pool)
        .await
        .unwrap();
    exec(
        &app.pool,
        "UPDATE subscribers SET tag_ids = '{}' WHERE email = 'd29999@example.kr'",
    )
    .await;
    let expected = |before: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT email FROM subscribers WHERE tag_ids @> ARRAY[$1::bigint] AND id < $2 ORDER BY id DESC LIMIT 50",
            )
            .bind(tag)
            .bind(before)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let answered = app.state.live_index.answered();
    let mut path = format!("/audience?tag={tag}");
    let mut before = i64::MAX;
    for _ in 0..3 {
        let page = viewer.page(&path).await;
        let shown = page.select("#subscribers-table td.email");
        assert_eq!(shown, expected(before).await);
        path = page.attr("#next-page", "href").unwrap();
        before = path.rsplit("after=").next().unwrap().parse().unwrap();
    }
    let deep: i64 =
        sqlx::query_scalar("SELECT id FROM subscribers WHERE email = 'd12345@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let page = viewer
        .page(&format!("/audience?tag={tag}&after={deep}"))
        .await;
    let shown = page.select("#subscribers-table td.email");
    assert_eq!(shown, expected(deep).await);
    assert_eq!(shown[0], "d12344@example.kr");
    assert_eq!(
        app.state.live_index.answered() - answered,
        4,
        "one answer a page"
    );
}

/// A segment the index cannot evaluate (one city with a cased non-ASCII letter makes
/// the whole text column SQL's) over more rows than a few chunks: the list does not walk
/// the index chunk by chunk but answers in one SQL query; with a stage filter and a
/// common tag likewise. Both agree with SQL.
#[tokio::test]
async fn filters_sql_must_narrow_a_lot_are_answered_in_sql() {
    let app = TestApp::spawn().await;
    exec(
        &app.pool,
        "INSERT INTO custom_fields (key, label, type) VALUES ('city', '도시', 'text')",
    )
    .await;
    let tag = new_tag(&app.pool, "흔한").await;
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, tag_ids, fields, created_at)
         SELECT 'z' || i || '@example.kr', '', 'active', ARRAY[$1::bigint],
                jsonb_build_object('city', CASE i WHEN 1 THEN 'Zürich' WHEN 2 THEN 'Zurich' ELSE 'Seoul' END),
                CASE WHEN i % 1000 = 0 THEN now() ELSE now() - interval '400 days' END
         FROM generate_series(1, 25000) i",
    )
    .bind(tag)
    .execute(&app.pool)
    .await
    .unwrap();
    build(&app).await;
    let zurich = segments::save(&app.pool, "Zurich", &field("city", FieldOp::Is, "Zurich"))
        .await
        .unwrap();
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let answered = app.state.live_index.answered();
    assert_eq!(
        every_page(&viewer, format!("/audience?segment={zurich}")).await,
        vec!["z2@example.kr"]
    );
    let new = every_page(&viewer, format!("/audience?tag={tag}&stage=new")).await;
    assert_eq!(new.len(), 25);
    assert_eq!(new[0], "z25000@example.kr");
    assert_eq!(
        app.state.live_index.answered(),
        answered,
        "the index declined both"
    );
}

#[tokio::test]
async fn search_folds_case_one_letter_at_a_time() {
    let (pool, _) = fresh_database().await;
    exec(&pool, "INSERT INTO subscribers (email, name, created_at) VALUES ('a@example.kr', 'İSTANBUL ΟΔΟΣ', now()), ('b@example.kr', 'Émile', now())").await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let index = LiveIndex::new();
    index.build_now(&pool, &fields).await.unwrap();
    let found = |needle: &'static str| {
        let (pool, index, fields) = (&pool, &index, &fields);
        async move { matches(index, pool, needle, fields).await.len() }
    };
    // İ folds to i (not i + a combining dot), a final Σ to σ like any other.
    assert_eq!(found("istanbul").await, 1);
    assert_eq!(found("İstanbul").await, 1);
    assert_eq!(found("οδοσ").await, 1);
    assert_eq!(found("ΟΔΟΣ").await, 1);
    assert_eq!(found("émile").await, 1);
}

#[tokio::test]
async fn a_bulk_change_beyond_the_catch_up_limit_means_a_rebuild() {
    let (pool, _) = fresh_database().await;
    exec(&pool, "INSERT INTO subscribers (email, status, created_at) SELECT 'u' || i || '@example.kr', 'active', now() FROM generate_series(1, 30) i").await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let index = LiveIndex::with_catch_up_limit(10);
    index.build_now(&pool, &fields).await.unwrap();
    let active = Condition::Status { is: Status::Active };
    assert_eq!(index.count(&pool, &active, &fields).await, Some(30));
    exec(
        &pool,
        "UPDATE subscribers SET status = 'bounced' WHERE id % 2 = 0",
    )
    .await;
    // Fifteen changes: over the limit, so SQL answers while the index is rebuilt…
    assert_eq!(index.count(&pool, &active, &fields).await, None);
    // …and the rebuilt index has them.
    assert_eq!(
        count_once_rebuilt(&index, &pool, &active, &fields).await,
        Some(15)
    );
}
