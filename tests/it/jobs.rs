//! The job runtime: dedupe, retries with backoff on the injected clock, dead jobs,
//! leases, several workers on one database, NOTIFY wake-up and shutdown.

use std::{sync::Arc, time::Duration};

use loopline::{
    accounts::Role,
    clock::Clock,
    jobs::{self, JobContext, JobError, JobRegistry, JobRunner, NewJob, Outcome},
};
use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::{TestApp, fresh_database, location};

/// A handler that records each run in `job_runs`, failing as the payload asks.
async fn record(ctx: JobContext) -> Result<(), JobError> {
    sqlx::query("INSERT INTO job_runs (job_id, attempt) VALUES ($1, $2)")
        .bind(ctx.job.id)
        .bind(ctx.job.attempts)
        .execute(&ctx.pool)
        .await?;
    match ctx.job.payload["mode"].as_str() {
        Some("fail") => Err(JobError::Retry(anyhow::anyhow!("smtp said 451 try later"))),
        Some("fatal") => Err(JobError::Fatal(anyhow::anyhow!("address is malformed"))),
        Some("panic") => panic!("handler bug"),
        Some("fail-once") if ctx.job.attempts == 1 => Err(anyhow::anyhow!("transient").into()),
        _ => Ok(()),
    }
}

fn registry() -> JobRegistry {
    JobRegistry::new().register("test.record", record)
}

async fn app() -> TestApp {
    let app = TestApp::spawn_with(|_| {}, registry()).await;
    sqlx::query("CREATE TABLE job_runs (job_id bigint NOT NULL, attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())").execute(&app.pool).await.unwrap();
    app
}

async fn runs(app: &TestApp, id: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn status(
    app: &TestApp,
    id: i64,
) -> (String, i32, Option<String>, chrono::DateTime<chrono::Utc>) {
    sqlx::query_as("SELECT status::text, attempts, last_error, run_at FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn enqueue(app: &TestApp, job: NewJob) -> Option<i64> {
    jobs::enqueue(&app.pool, app.clock.now(), job)
        .await
        .unwrap()
}

#[tokio::test]
async fn enqueueing_the_same_unique_key_twice_is_a_no_op() {
    let app = app().await;
    let first = enqueue(
        &app,
        NewJob::new("test.record", json!({})).unique("welcome:42"),
    )
    .await;
    let second = enqueue(
        &app,
        NewJob::new("test.record", json!({})).unique("welcome:42"),
    )
    .await;
    assert!(first.is_some());
    assert_eq!(second, None);
    assert_eq!(app.drain_jobs().await, 1);
    // Still a no-op once the first has run.
    assert_eq!(
        enqueue(
            &app,
            NewJob::new("test.record", json!({})).unique("welcome:42")
        )
        .await,
        None
    );
    assert_eq!(app.drain_jobs().await, 0);
    assert_eq!(runs(&app, first.unwrap()).await, 1);
}

#[tokio::test]
async fn future_jobs_wait_for_the_clock() {
    let app = app().await;
    let at = app.clock.now() + chrono::Duration::days(2);
    let id = enqueue(&app, NewJob::new("test.record", json!({})).run_at(at))
        .await
        .unwrap();
    assert_eq!(app.drain_jobs().await, 0);
    app.advance(chrono::Duration::days(2) - chrono::Duration::seconds(1));
    assert_eq!(app.drain_jobs().await, 0);
    app.advance(chrono::Duration::seconds(1));
    assert_eq!(app.drain_jobs().await, 1);
    assert_eq!(status(&app, id).await.0, "done");
}

#[tokio::test]
async fn failures_back_off_exponentially_then_die_with_the_last_error_and_can_be_retried() {
    let app = app().await;
    let id = enqueue(
        &app,
        NewJob::new("test.record", json!({"mode": "fail"})).max_attempts(3),
    )
    .await
    .unwrap();
    let t0 = app.clock.now();

    assert_eq!(app.drain_jobs().await, 1);
    let (s, attempts, err, run_at) = status(&app, id).await;
    assert_eq!((s.as_str(), attempts), ("queued", 1));
    assert_eq!(err.as_deref(), Some("smtp said 451 try later"));
    assert_eq!(run_at - t0, chrono::Duration::seconds(5));

    assert_eq!(app.drain_jobs().await, 0, "not due yet");
    app.advance(chrono::Duration::seconds(5));
    assert_eq!(app.drain_jobs().await, 1);
    let (_, attempts, _, run_at) = status(&app, id).await;
    assert_eq!(attempts, 2);
    assert_eq!(
        run_at - app.clock.now(),
        chrono::Duration::seconds(10),
        "the pause doubles"
    );

    app.advance(chrono::Duration::seconds(10));
    assert_eq!(app.drain_jobs().await, 1);
    let (s, attempts, err, _) = status(&app, id).await;
    assert_eq!((s.as_str(), attempts), ("dead", 3));
    assert_eq!(err.as_deref(), Some("smtp said 451 try later"));
    app.advance(chrono::Duration::days(1));
    assert_eq!(app.drain_jobs().await, 0, "dead jobs stay dead");
    assert_eq!(runs(&app, id).await, 3);

    // The dashboard shows it; a viewer cannot retry it, an editor can.
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let page = viewer.page("/settings/jobs").await;
    assert_eq!(
        page.attr(&format!("tr[data-job-id='{id}']"), "data-status")
            .as_deref(),
        Some("dead")
    );
    // Worded from its code (a plain failure here), the handler's own words second.
    assert_eq!(
        page.select(&format!("tr[data-job-id='{id}'] .error-text")),
        vec!["The test.record job failed. Stopped after 3 attempts."]
    );
    assert!(
        page.select(&format!("tr[data-job-id='{id}'] .error-detail code"))
            .iter()
            .any(|e| e.contains("451"))
    );
    assert!(!page.exists(&format!("form[action='/settings/jobs/{id}/retry']")));
    assert_eq!(
        viewer
            .post_form(&format!("/settings/jobs/{id}/retry"), &[])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let (editor, _) = app.signed_in(Role::Editor).await;
    let page = editor.page("/settings/jobs").await;
    assert!(page.exists(&format!("form[action='/settings/jobs/{id}/retry']")));
    let res = editor
        .post_form(&format!("/settings/jobs/{id}/retry"), &[])
        .await;
    assert_eq!(location(&res), "/settings/jobs?notice=job-retried");
    let (s, attempts, _, _) = status(&app, id).await;
    assert_eq!((s.as_str(), attempts), ("queued", 0));
    assert_eq!(app.drain_jobs().await, 1);
    assert_eq!(runs(&app, id).await, 4);
}

#[tokio::test]
async fn fatal_errors_and_panics_are_contained() {
    let app = app().await;
    let fatal = enqueue(&app, NewJob::new("test.record", json!({"mode": "fatal"})))
        .await
        .unwrap();
    let panics = enqueue(&app, NewJob::new("test.record", json!({"mode": "panic"})))
        .await
        .unwrap();
    let unknown = enqueue(&app, NewJob::new("test.nobody-handles-this", json!({})))
        .await
        .unwrap();
    let flaky = enqueue(
        &app,
        NewJob::new("test.record", json!({"mode": "fail-once"})),
    )
    .await
    .unwrap();
    assert_eq!(app.drain_jobs().await, 4);
    let (s, attempts, err, _) = status(&app, fatal).await;
    assert_eq!(
        (s.as_str(), attempts, err.as_deref()),
        ("dead", 1, Some("address is malformed"))
    );
    let (s, _, err, _) = status(&app, panics).await;
    assert_eq!(
        (s.as_str(), err.as_deref()),
        ("queued", Some("job handler panicked"))
    );
    let (s, attempts, err, run_at) = status(&app, unknown).await;
    assert_eq!(
        (s.as_str(), attempts),
        ("queued", 0),
        "an unknown kind waits for a Loopline that knows it, attempts unspent"
    );
    assert!(
        err.unwrap()
            .contains("waiting for a Loopline that handles `test.nobody-handles-this`")
    );
    assert_eq!(run_at - app.clock.now(), chrono::Duration::minutes(5));
    app.advance(chrono::Duration::seconds(5));
    app.drain_jobs().await;
    assert_eq!(status(&app, flaky).await.0, "done");
}

#[tokio::test]
async fn two_workers_on_one_database_run_each_job_exactly_once() {
    let (pool_a, db) = fresh_database().await;
    sqlx::query(
        "CREATE TABLE job_runs (job_id bigint NOT NULL, attempt int NOT NULL, worker text)",
    )
    .execute(&pool_a)
    .await
    .unwrap();
    let pool_b = loopline::db::pool(crate::harness::cluster().options(&db), 10)
        .await
        .unwrap();
    let clock: Arc<dyn loopline::clock::Clock> = Arc::new(loopline::clock::SystemClock);
    let mut ids = Vec::new();
    for i in 0..400 {
        ids.push(
            jobs::enqueue(
                &pool_a,
                clock.now(),
                NewJob::new("test.record", json!({ "i": i })),
            )
            .await
            .unwrap()
            .unwrap(),
        );
    }
    let a = JobRunner::new(pool_a.clone(), clock.clone(), registry(), 8);
    let b = JobRunner::new(pool_b.clone(), clock.clone(), registry(), 8);
    let (ra, rb) = tokio::join!(a.run_until_idle(), b.run_until_idle());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra + rb, 400);
    let (total, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT job_id) FROM job_runs")
            .fetch_one(&pool_a)
            .await
            .unwrap();
    assert_eq!((total, distinct), (400, 400), "every job ran, none twice");
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'done'")
        .fetch_one(&pool_a)
        .await
        .unwrap();
    assert_eq!(done, 400);
    println!("worker A ran {ra}, worker B ran {rb}");
}

#[tokio::test]
async fn a_crashed_workers_lease_expires_and_another_worker_finishes_the_job() {
    let app = app().await;
    let id = enqueue(&app, NewJob::new("test.record", json!({})))
        .await
        .unwrap();
    let crashed = JobRunner::new(app.pool.clone(), Arc::new(app.clock.clone()), registry(), 1);
    let claimed = crashed.claim(1).await.unwrap();
    assert_eq!(claimed.len(), 1, "the doomed worker holds it");
    assert_eq!(app.drain_jobs().await, 0, "a held lease is respected");
    app.advance(chrono::Duration::minutes(6));
    assert_eq!(app.drain_jobs().await, 1);
    assert_eq!(status(&app, id).await.0, "done");
    // The crashed worker coming back to record its result changes nothing.
    let outcome = crashed
        .execute(claimed.into_iter().next().unwrap())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::LostLease);
    assert_eq!(status(&app, id).await.0, "done");

    // A job whose worker dies on its last allowed attempt is buried, not retried for ever.
    let doomed = enqueue(&app, NewJob::new("test.record", json!({})).max_attempts(1))
        .await
        .unwrap();
    assert_eq!(crashed.claim(1).await.unwrap().len(), 1);
    app.advance(chrono::Duration::minutes(6));
    assert_eq!(app.drain_jobs().await, 0);
    let (s, attempts, err, _) = status(&app, doomed).await;
    assert_eq!((s.as_str(), attempts), ("dead", 1));
    assert!(err.unwrap().contains("lease ran out"));
    assert_eq!(runs(&app, doomed).await, 0);
}

#[tokio::test]
async fn progress_is_recorded_for_the_dashboard() {
    let registry = JobRegistry::new().register("test.progress", |ctx: JobContext| async move {
        ctx.progress(40, 100).await?;
        Err(JobError::Retry(anyhow::anyhow!("stopped half way")))
    });
    let app = TestApp::spawn_with(|_| {}, registry).await;
    let id = jobs::enqueue(
        &app.pool,
        app.clock.now(),
        NewJob::new("test.progress", json!({})),
    )
    .await
    .unwrap()
    .unwrap();
    app.drain_jobs().await;
    let (viewer, _) = app.signed_in(Role::Viewer).await;
    let page = viewer.page("/settings/jobs").await;
    let sel = format!("tr[data-job-id='{id}'] progress");
    assert_eq!(page.attr(&sel, "value").as_deref(), Some("40"));
    assert_eq!(page.attr(&sel, "max").as_deref(), Some("100"));
    assert_eq!(page.select("#jobs-queued"), vec!["1"]);
}

#[tokio::test]
async fn the_background_worker_wakes_on_notify_and_hands_back_claims_on_shutdown() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let tx = Arc::new(tx);
    let registry = JobRegistry::new()
        .register("test.signal", move |ctx: JobContext| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.job.id);
                Ok(())
            }
        })
        .register("test.hang", |_ctx: JobContext| async move {
            std::future::pending::<()>().await;
            Ok(())
        });
    let (pool, _) = fresh_database().await;
    let clock: Arc<dyn loopline::clock::Clock> = Arc::new(loopline::clock::SystemClock);
    let runner = JobRunner::new(pool.clone(), clock.clone(), registry, 2);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        runner
            .clone()
            .run(shutdown.clone(), Duration::from_millis(300)),
    );

    // Let the worker go idle (it would now sleep 30 s without a notification).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = jobs::enqueue(&pool, clock.now(), NewJob::new("test.signal", json!({})))
        .await
        .unwrap()
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("NOTIFY should wake the idle worker well before its 30 s poll");
    assert_eq!(got, Some(id));

    let hung = jobs::enqueue(&pool, clock.now(), NewJob::new("test.hang", json!({})))
        .await
        .unwrap()
        .unwrap();
    // Wait until it is claimed.
    let mut claimed = false;
    for _ in 0..400 {
        let s: String = sqlx::query_scalar("SELECT status::text FROM jobs WHERE id = $1")
            .bind(hung)
            .fetch_one(&pool)
            .await
            .unwrap();
        if s == "running" {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(claimed, "the worker never picked up the job");
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let (s, attempts, locked_by): (String, i32, Option<String>) =
        sqlx::query_as("SELECT status::text, attempts, locked_by FROM jobs WHERE id = $1")
            .bind(hung)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (s.as_str(), attempts, locked_by),
        ("queued", 0, None),
        "an unfinished job goes back as if never tried"
    );
}
