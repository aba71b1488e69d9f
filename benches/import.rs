//! `bench/run import`: a generated CSV of 1,000,000 rows (email, name, 3 custom fields,
//! 2 tags) imported through the same code path as the dashboard (stored upload →
//! inspect → confirm mapping → the import job), against the limit measured in the same
//! run: psql's `\copy` of the same file into a bare table with the same unique email
//! index. `--quick`: 100,000 rows. `IMPORT_BENCH_PG_LOG=path` keeps PostgreSQL's log
//! with every statement's duration.

mod common;

use std::{io::Write, sync::Arc, time::Instant};

use loopline::{
    audience::imports::{self, Mode},
    clock::{Clock, SystemClock},
    jobs::JobRunner,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 100_000 } else { 1_000_000 };
    let bench = common::start("import", 8).await?;
    let pool = bench.pool.clone();
    sqlx::query("INSERT INTO custom_fields (key, label, type) VALUES ('city', 'City', 'text'), ('orders', 'Orders', 'number'), ('joined', 'Joined', 'date')").execute(&pool).await?;

    // The file, written once, used by both sides.
    let file = bench.dir.join("subscribers.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        writeln!(w, "email,name,city,orders,joined,tags")?;
        let cities = ["서울", "부산", "Incheon", "대구", "Daejeon"];
        for i in 0..n {
            writeln!(
                w,
                "user{i}@example.com,구독자 {i},{},{},2024-0{}-1{},\"vip{}, 관심{}\"",
                cities[i % 5],
                i % 97,
                1 + i % 9,
                i % 10,
                i % 7,
                i % 13
            )?;
        }
    }
    let size = std::fs::metadata(&file)?.len();
    // IMPORT_BENCH_PG_LOG=path: log every statement's duration and keep the server log
    // there (for timing a batch statement by statement).
    let pg_log = std::env::var_os("IMPORT_BENCH_PG_LOG");
    if pg_log.is_some() {
        sqlx::query("ALTER SYSTEM SET log_min_duration_statement = 0")
            .execute(&pool)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&pool)
            .await?;
    }

    // Loopline: upload (stored in chunks), inspect, queue, run the job.
    common::reset_statements(&pool).await?;
    let started = Instant::now();
    let mut upload = imports::Upload::begin(&pool, "subscribers.csv", None).await?;
    {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(&file).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = f.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            upload.write(&buf[..k]).await?;
        }
    }
    let (id, _) = upload.finish().await?;
    let upload_secs = started.elapsed().as_secs_f64();
    imports::inspect(&pool, id).await?;
    let imp = imports::get(&pool, id).await?.expect("import row");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    imports::queue(&pool, id, &imp.mapping, Mode::AddUpdate, &[], clock.now()).await?;
    let runner = JobRunner::new(
        pool.clone(),
        clock.clone(),
        loopline::startup::job_registry(),
        1,
    );
    runner.run_until_idle().await?;
    let ours_secs = started.elapsed().as_secs_f64();
    let imp = imports::get(&pool, id).await?.expect("import row");
    anyhow::ensure!(
        imp.status == "done" && imp.added == n as i64,
        "import ended {} with {} added",
        imp.status,
        imp.added
    );
    let peak = common::peak_rss_mib();
    let statements = common::top_statements(&pool, 8).await?;

    // The limit: \copy into a bare table with the same unique email index.
    sqlx::query(
        "CREATE TABLE bare (email text, name text, city text, orders text, joined text, tags text)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("CREATE UNIQUE INDEX bare_email ON bare (lower(email))")
        .execute(&pool)
        .await?;
    let url = bench.pg.url("bench");
    let psql =
        std::path::Path::new(&loopline::db::embedded::PgBinaries::find()?.bindir).join("psql");
    let started = Instant::now();
    let status = std::process::Command::new(psql)
        .arg(&url)
        .arg("-q")
        .arg("-c")
        .arg(format!(
            "\\copy bare FROM '{}' WITH (FORMAT csv, HEADER true)",
            file.display()
        ))
        .status()?;
    anyhow::ensure!(status.success(), "psql \\copy failed");
    let limit_secs = started.elapsed().as_secs_f64();

    let ours = n as f64 / ours_secs;
    let limit = n as f64 / limit_secs;
    if let Some(dest) = pg_log {
        std::fs::copy(bench.dir.join("postgres.log"), dest)?;
    }
    bench.stop().await;
    println!(
        "import: {n} rows ({:.1} MB CSV), 3 custom fields, 2 tags per row",
        size as f64 / 1e6
    );
    println!(
        "  loopline import (upload + job) : {ours:>10.0} rows/s  ({ours_secs:.1} s: upload {upload_secs:.1} s, job {:.1} s), peak RSS {peak:.0} MiB",
        ours_secs - upload_secs
    );
    println!("  psql \\copy into bare table     : {limit:>10.0} rows/s  ({limit_secs:.1} s)");
    if !statements.is_empty() {
        println!("  PostgreSQL statements during our import (pg_stat_statements, by total time):");
        for line in &statements {
            println!("    {line}");
        }
    }
    println!(
        "{}",
        serde_json::json!({ "name": "import", "unit": "rows/s", "ours": ours.round(), "limit": limit.round(), "ratio": (ours / limit * 100.0).round() / 100.0, "peak_rss_mib": peak.round() })
    );
    Ok(())
}
