//! The segment count index must count exactly what SQL counts: random segments over
//! random subscribers, checked again after each round of random changes (updates,
//! inserts, single and bulk deletes, a deleted tag), and a change committed by a
//! transaction that was open during a catch-up.

use std::time::Duration;

use loopline::{
    audience::{
        count_index::CountIndex,
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
async fn agree(pool: &PgPool, index: &CountIndex, rng: &mut Rng, tags: &[i64], n: usize) {
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
        let indexed = index.count(pool, &cond, &fields).await.unwrap();
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
    let index = CountIndex::with_margin(Duration::ZERO);
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
    sqlx::query("UPDATE subscribers SET status = 'active'")
        .execute(&pool)
        .await
        .unwrap();
    let fields = segments::field_defs(&pool).await.unwrap();
    // No margin: only the horizon keeps the late commit from being missed.
    let index = CountIndex::with_margin(Duration::ZERO);
    index.build_now(&pool, &fields).await.unwrap();
    let active = Condition::Status { is: Status::Active };
    let count = || index.count(&pool, &active, &fields);
    assert_eq!(count().await.unwrap(), Some(50));

    // A transaction starts and changes rows, stamped with its start time...
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE subscribers SET status = 'bounced' WHERE id IN (SELECT id FROM subscribers ORDER BY id LIMIT 3)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM subscribers WHERE id = (SELECT max(id) FROM subscribers)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // ...a catch-up runs while it is open (and cannot see it)...
    assert_eq!(count().await.unwrap(), Some(50));
    // ...then it commits, and the next catch-up must still find its stamps.
    tx.commit().await.unwrap();
    assert_eq!(count().await.unwrap(), Some(46));
}

#[tokio::test]
async fn what_the_index_does_not_hold_is_counted_in_sql() {
    let (pool, _) = fresh_database().await;
    let tags = define_fields(&pool).await;
    let mut rng = Rng(99);
    insert(&pool, &mut rng, &tags, 40).await;
    let fields = segments::field_defs(&pool).await.unwrap();
    let index = CountIndex::with_margin(Duration::ZERO);
    index.build_now(&pool, &fields).await.unwrap();
    let field = |key: &str, op, value: &str| Condition::Field {
        key: key.into(),
        op,
        value: value.into(),
    };

    // Engagement moves with every open and click: SQL.
    let opened = Condition::Opened {
        days: 7,
        negate: false,
    };
    assert_eq!(index.count(&pool, &opened, &fields).await.unwrap(), None);

    // A value whose comparison an f64 or a locale-free lower() cannot reproduce.
    let orders = field("orders", FieldOp::GreaterThan, "5");
    assert!(
        index
            .count(&pool, &orders, &fields)
            .await
            .unwrap()
            .is_some()
    );
    sqlx::query("UPDATE subscribers SET fields = fields || '{\"orders\": 12345678901234567}' WHERE id = (SELECT min(id) FROM subscribers)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(index.count(&pool, &orders, &fields).await.unwrap(), None);
    let city = field("city", FieldOp::Is, "seoul");
    assert!(index.count(&pool, &city, &fields).await.unwrap().is_some());
    sqlx::query("UPDATE subscribers SET fields = fields || '{\"city\": \"Évry\"}' WHERE id = (SELECT max(id) FROM subscribers)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(index.count(&pool, &city, &fields).await.unwrap(), None);
    // Other fields are still answered, and the odd row stops counting once it is fixed.
    let vip = field("vip", FieldOp::Is, "true");
    assert!(index.count(&pool, &vip, &fields).await.unwrap().is_some());
    sqlx::query("UPDATE subscribers SET fields = fields || '{\"city\": \"Evry\"}' WHERE id = (SELECT max(id) FROM subscribers)")
        .execute(&pool)
        .await
        .unwrap();
    let sql = segments::count(&pool, &city, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        index.count(&pool, &city, &fields).await.unwrap(),
        Some(sql as u64)
    );

    // A new field definition: the index is rebuilt (SQL meanwhile), then answers again.
    sqlx::query("INSERT INTO custom_fields (key, label, type) VALUES ('score', 'Score', 'number')")
        .execute(&pool)
        .await
        .unwrap();
    let fields = segments::field_defs(&pool).await.unwrap();
    let score = field("score", FieldOp::IsNotSet, "");
    assert_eq!(index.count(&pool, &score, &fields).await.unwrap(), None);
    let mut answered = None;
    for _ in 0..200 {
        answered = index.count(&pool, &score, &fields).await.unwrap();
        if answered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(answered, Some(40));
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
    let fields = segments::field_defs(&app.pool).await.unwrap();
    app.state
        .count_index
        .build_now(&app.pool, &fields)
        .await
        .unwrap();
    let live = segments::count_live(&app.pool, &app.state.count_index, &cond, now)
        .await
        .unwrap();
    assert_eq!(live, sql);
    // A subscriber joins the segment: the next count sees it.
    sqlx::query("INSERT INTO subscribers (email, status, fields, tag_ids, created_at) VALUES ('new@example.kr', 'active', '{\"orders\": 9}', $1, now())")
        .bind(vec![tags[1]])
        .execute(&app.pool)
        .await
        .unwrap();
    let live = segments::count_live(&app.pool, &app.state.count_index, &cond, now)
        .await
        .unwrap();
    assert_eq!(live, sql + 1);
}
