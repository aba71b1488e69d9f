//! `bench/run audience-queries`: on 1,000,000 subscribers with tags and fields, p50 and
//! p95 of the subscriber list filtered by tag, a profile page, a three-condition segment
//! count and a search by part of an address, each through the real HTTP stack (router,
//! session, rendering), against the same SQL run bare in the same run (the limit).
//! `--quick`: 100,000 subscribers.

mod common;

use std::{sync::Arc, time::Instant};

use loopline::{
    accounts::{self, NewPassword, Role},
    address::EmailAddress,
    clock::SystemClock,
    config::Config,
    startup,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const SAMPLES: usize = 200;

async fn generate(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO custom_fields (key, label, type) VALUES ('city', 'City', 'text'), ('orders', 'Orders', 'number')").execute(pool).await?;
    sqlx::query("INSERT INTO tags (name) SELECT 'tag' || i FROM generate_series(0, 19) i")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, fields, created_at, last_open_at, last_engaged_at, consecutive_unopened, tag_ids)
         SELECT 'user' || i || '@example.com', '구독자 ' || i,
                CASE WHEN i % 20 = 0 THEN 'unsubscribed' ELSE 'active' END::subscriber_status,
                jsonb_build_object('city', (ARRAY['서울', '부산', '인천'])[1 + i % 3], 'orders', i % 50),
                now() - ((i % 400) || ' days')::interval,
                CASE WHEN i % 3 = 0 THEN now() - ((i % 60) || ' days')::interval END,
                CASE WHEN i % 3 = 0 THEN now() - ((i % 60) || ' days')::interval END,
                i % 5,
                (SELECT array_agg(t.id ORDER BY t.id) FROM tags t WHERE t.name IN ('tag' || (i % 20), 'tag' || ((i * 7 + 3) % 20)))
         FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO events (subscriber_id, kind, at, data) SELECT id, 'subscribed', created_at, '{}' FROM subscribers").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (common::percentile(&v, 0.5), common::percentile(&v, 0.95))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: i64 = if quick { 100_000 } else { 1_000_000 };
    let bench = common::start("queries", 10).await?;
    let pool = bench.pool.clone();
    let t = Instant::now();
    generate(&pool, n).await?;
    eprintln!(
        "generated {n} subscribers in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // The app on a local port, and a signed-in client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = Config::from_lookup(|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.public_url = format!("http://{addr}");
    let app = startup::build(
        pool.clone(),
        config,
        Arc::new(SystemClock),
        startup::job_registry(),
    )
    .await?;
    let state = app.state.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(startup::serve(
        listener,
        app.router,
        shutdown.clone(),
        std::time::Duration::from_secs(1),
    ));
    let email = EmailAddress::parse("bench@example.com").map_err(|e| anyhow::anyhow!("{e}"))?;
    accounts::create_user(
        &pool,
        &email,
        NewPassword::parse("benchmark password".into(), None)?,
        Role::Owner,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("http://{addr}");
    let login_page = client
        .get(format!("{base}/login"))
        .send()
        .await?
        .text()
        .await?;
    let csrf = login_page
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    client
        .post(format!("{base}/login"))
        .form(&[
            ("email", "bench@example.com"),
            ("password", "benchmark password"),
            ("_csrf", &csrf),
        ])
        .send()
        .await?;
    let page = client
        .get(format!("{base}/settings/account"))
        .send()
        .await?
        .text()
        .await?;
    let csrf = page
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let tag_id: i64 = sqlx::query_scalar("SELECT id FROM tags WHERE name = 'tag7'")
        .fetch_one(&pool)
        .await?;

    let mut rng_state = 42u64;
    let mut next_id = move || {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (rng_state >> 33) as i64 % n
    };
    let tag = tag_id.to_string();
    let segment_form = [
        ("_csrf", csrf.as_str()),
        ("match", "all"),
        ("c0_kind", "tag"),
        ("c0_arg", tag.as_str()),
        ("c1_kind", "status"),
        ("c1_arg", "active"),
        ("c2_kind", "field"),
        ("c2_arg", "orders"),
        ("c2_op", "greater_than"),
        ("c2_value", "25"),
    ];

    // A running server builds the live index (segment counts, search) in the background
    // after it starts (SQL answers until then); here the build is waited for and timed.
    let rss_before = common::rss_mib();
    let t = Instant::now();
    let fields = loopline::audience::segments::field_defs(&pool).await?;
    state.live_index.build_now(&pool, &fields).await?;
    let index_build_s = t.elapsed().as_secs_f64();
    let index_mib = common::rss_mib() - rss_before;
    eprintln!("live index: built in {index_build_s:.1} s, ~{index_mib:.0} MiB");

    let (mut list, mut profile, mut segment, mut search) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bare_list, mut bare_profile, mut bare_segment, mut bare_search) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        // Pages deep into the list, like someone paging through.
        let after = if i % 2 == 0 {
            String::new()
        } else {
            format!("&after={}", next_id())
        };
        let t = Instant::now();
        let res = client
            .get(format!("{base}/audience?tag={tag_id}{after}"))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 200, "list page {}", res.status());
        res.bytes().await?;
        list.push(t.elapsed().as_secs_f64() * 1000.0);

        let id = next_id();
        let t = Instant::now();
        let res = client
            .get(format!("{base}/audience/subscribers/{id}"))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 200, "profile page {}", res.status());
        res.bytes().await?;
        profile.push(t.elapsed().as_secs_f64() * 1000.0);

        // Search by part of an address ("user12345" also finds user123450…).
        let needle = format!("user{}", next_id() / 10);
        let t = Instant::now();
        let res = client
            .get(format!("{base}/audience?q={needle}"))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 200, "search page {}", res.status());
        res.bytes().await?;
        search.push(t.elapsed().as_secs_f64() * 1000.0);

        // A record changes before each count (field, tags and status of one
        // subscriber), so every count catches up with a real change first.
        sqlx::query(
            "UPDATE subscribers SET fields = jsonb_set(fields, '{orders}', to_jsonb($2::int)),
                    tag_ids = tag_ids_add(tag_ids, ARRAY[$3::bigint]), status = 'active'
             WHERE id = $1",
        )
        .bind(next_id())
        .bind((i % 50) as i32)
        .bind(tag_id)
        .execute(&pool)
        .await?;
        let t = Instant::now();
        let res = client
            .post(format!("{base}/audience/segments/preview"))
            .form(&segment_form)
            .send()
            .await?;
        anyhow::ensure!(res.status() == 200, "segment preview {}", res.status());
        res.bytes().await?;
        segment.push(t.elapsed().as_secs_f64() * 1000.0);

        // The same SQL, bare.
        let after_id = if after.is_empty() {
            i64::MAX
        } else {
            next_id()
        };
        let t = Instant::now();
        let _: Vec<(i64, String)> = sqlx::query_as(
            "SELECT s.id, s.email FROM subscribers s WHERE s.tag_ids @> ARRAY[$1::bigint] AND s.id < $2 ORDER BY s.id DESC LIMIT 51",
        )
        .bind(tag_id)
        .bind(after_id)
        .fetch_all(&pool)
        .await?;
        bare_list.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let _: Option<(i64, String)> =
            sqlx::query_as("SELECT id, email FROM subscribers WHERE id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await?;
        let _: Vec<(String,)> = sqlx::query_as(
            "SELECT kind FROM events WHERE subscriber_id = $1 ORDER BY at DESC LIMIT 200",
        )
        .bind(id)
        .fetch_all(&pool)
        .await?;
        bare_profile.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let _: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM subscribers s WHERE s.tag_ids @> ARRAY[$1::bigint] AND s.status = 'active' AND (s.fields ->> 'orders')::numeric > 25",
        )
        .bind(tag_id)
        .fetch_one(&pool)
        .await?;
        bare_segment.push(t.elapsed().as_secs_f64() * 1000.0);
        // Search as SQL would do it without the live index (the trigram index is gone).
        let t = Instant::now();
        let _: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, email FROM subscribers WHERE lower(email) LIKE $1 OR lower(name) LIKE $1 ORDER BY id DESC LIMIT 51",
        )
        .bind(format!("%{needle}%"))
        .fetch_all(&pool)
        .await?;
        bare_search.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    shutdown.cancel();

    let rows = [
        ("list page, filtered by tag", stats(list), stats(bare_list)),
        ("profile page", stats(profile), stats(bare_profile)),
        (
            "segment count, 3 conditions",
            stats(segment),
            stats(bare_segment),
        ),
        (
            "search by part of an address",
            stats(search),
            stats(bare_search),
        ),
    ];
    println!("audience-queries: {n} subscribers, {SAMPLES} samples each (ms; p50 / p95)");
    println!(
        "  live index: built in {index_build_s:.1} s, ~{index_mib:.0} MiB; one subscriber changed before each count"
    );
    for (name, (p50, p95), (b50, b95)) in &rows {
        println!(
            "  {name:<30} loopline {p50:>7.1} / {p95:>7.1}   bare SQL {b50:>7.1} / {b95:>7.1}"
        );
    }
    // Headline: the slowest page's p95 against the same query's bare p95.
    let (name, (_, ours), (_, limit)) = rows
        .iter()
        .max_by(|a, b| a.1.1.partial_cmp(&b.1.1).unwrap())
        .unwrap();
    bench.stop().await;
    println!(
        "{}",
        serde_json::json!({
            "name": "audience-queries", "unit": "ms (p95, slowest page)", "ours": (ours * 10.0).round() / 10.0,
            "limit": (limit * 10.0).round() / 10.0, "ratio": ((limit / ours) * 100.0).round() / 100.0, "slowest": name,
            "index_build_s": (index_build_s * 10.0).round() / 10.0, "index_mib": index_mib.round(),
            "p95_ms": { "list": (rows[0].1.1 * 10.0).round() / 10.0, "profile": (rows[1].1.1 * 10.0).round() / 10.0, "segment": (rows[2].1.1 * 10.0).round() / 10.0, "search": (rows[3].1.1 * 10.0).round() / 10.0 }
        })
    );
    Ok(())
}
