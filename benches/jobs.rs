//! `bench/run jobs`: throughput of the job runtime (claim with SKIP LOCKED, run a no-op
//! handler, record the outcome) against the physical limit measured in the same run on
//! the same cluster: a bare SQL loop popping rows from an equivalent queue table with
//! `DELETE … FOR UPDATE SKIP LOCKED RETURNING`, at the same concurrency.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

mod common;

use loopline::{
    clock::{Clock, SystemClock},
    jobs::{JobContext, JobRegistry, JobRunner},
};
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 5_000 } else { 50_000 };
    let bench = common::start("jobs", (CONCURRENCY + 4) as u32).await?;
    let pool = bench.pool.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // Ours: the real runner with a no-op handler.
    let ours = {
        sqlx::query("INSERT INTO jobs (kind, payload, run_at) SELECT 'bench.noop', jsonb_build_object('i', i), now() FROM generate_series(1, $1) i")
            .bind(n as i64)
            .execute(&pool)
            .await?;
        sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
        let done = Arc::new(AtomicUsize::new(0));
        let all_done = Arc::new(tokio::sync::Notify::new());
        let (d, a) = (done.clone(), all_done.clone());
        let registry = JobRegistry::new().register("bench.noop", move |_ctx: JobContext| {
            let (d, a) = (d.clone(), a.clone());
            async move {
                if d.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    a.notify_one();
                }
                Ok(())
            }
        });
        let runner = JobRunner::new(pool.clone(), clock.clone(), registry, CONCURRENCY);
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let worker = tokio::spawn(runner.run(shutdown.clone(), Duration::from_secs(10)));
        tokio::time::timeout(Duration::from_secs(600), all_done.notified()).await?;
        // The last outcomes are being recorded; wait for every row to say done.
        loop {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status <> 'done'")
                .fetch_one(&pool)
                .await?;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        shutdown.cancel();
        worker.await??;
        n as f64 / secs
    };

    // The limit: the textbook minimal queue pop, same concurrency, same cluster.
    let limit = {
        sqlx::query("CREATE TABLE bare_queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)").execute(&pool).await?;
        sqlx::query("INSERT INTO bare_queue (payload) SELECT jsonb_build_object('i', i) FROM generate_series(1, $1) i").bind(n as i64).execute(&pool).await?;
        sqlx::query("VACUUM ANALYZE bare_queue")
            .execute(&pool)
            .await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut popped = 0usize;
                loop {
                    let row: Option<i64> = sqlx::query_scalar(
                        "DELETE FROM bare_queue WHERE id = (SELECT id FROM bare_queue ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
                    )
                    .fetch_optional(&pool)
                    .await?;
                    match row {
                        Some(_) => popped += 1,
                        None => {
                            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM bare_queue").fetch_one(&pool).await?;
                            if left == 0 {
                                return Ok::<usize, anyhow::Error>(popped);
                            }
                        }
                    }
                }
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        assert_eq!(total, n);
        n as f64 / started.elapsed().as_secs_f64()
    };

    bench.stop().await;

    println!("jobs: {n} no-op jobs, concurrency {CONCURRENCY}, durable cluster (fsync on)");
    println!("  loopline job runtime : {ours:>10.0} jobs/s");
    println!("  bare SQL queue loop  : {limit:>10.0} jobs/s");
    println!(
        "{}",
        serde_json::json!({ "name": "jobs", "unit": "jobs/s", "ours": ours.round(), "limit": limit.round(), "ratio": (ours / limit * 100.0).round() / 100.0 })
    );
    Ok(())
}
