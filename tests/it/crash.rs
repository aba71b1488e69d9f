//! Crash safety of delivery, with the real binary and a real SMTP server (aiosmtpd):
//!
//! - `kill -9` Loopline (on its embedded PostgreSQL) while 10,000 messages are going out,
//!   then start it again;
//! - PostgreSQL restarted (fast shutdown, as `pg_ctl restart -m fast`) in the middle of a
//!   send, under a Loopline pointed at it with `DATABASE_URL`;
//! - the SMTP server down for a full minute in the middle of a send.
//!
//! Each test compares what the server received (per recipient, per Message-ID) with the
//! outbox rows and their `sent` events: nobody is missing, nothing is marked sent that
//! the server did not receive, and a recipient gets a second copy only if their message
//! was in flight (handed to the server, not yet recorded) when something died. A sender
//! keeps at most `WINDOW_CLAIMS` claims of 4 × SEND_CONCURRENCY messages sent and not
//! yet recorded, so that is the bound.
//! The duplicate counts are printed (`cargo test --test it crash -- --nocapture`).
//! `LOOPLINE_BIN` runs them against another build of the binary (a release build, say).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use loopline::{
    db::{
        self,
        embedded::{EmbeddedOptions, EmbeddedPostgres},
    },
    delivery::{
        outbox::{self, NewBody, NewMessage},
        render::{BodyFormat, Draft},
    },
};
use mailparse::MailHeaderMap;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::json;
use sqlx::{PgPool, postgres::PgConnectOptions};

use crate::harness::{SmtpServer, cluster, free_port, fresh_database, tmp_root};

fn binary() -> String {
    std::env::var("LOOPLINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_loopline").into())
}
const CONCURRENCY: usize = 8;
/// The most messages a sender can have handed to the SMTP server without having
/// recorded them yet.
const IN_FLIGHT: usize = loopline::delivery::sender::WINDOW_CLAIMS * 4 * CONCURRENCY;
/// Short, so mail held by a killed process goes out again soon.
const LEASE_SECS: &str = "10";

/// The `loopline` binary, serving, with its output in a log file.
struct Loopline {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Loopline {
    /// Starts `loopline serve` in `dir` (its data directory is `dir/data`) with a clean
    /// environment plus `env`, and waits until `/readyz` answers 200.
    async fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let log = dir.join(format!("loopline-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOOPLINE_DATA_DIR", dir.join("data"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_LEVEL", "info")
            .env("SHUTDOWN_GRACE_SECS", "5")
            .env("MAIL_FROM", "news@example.kr")
            .env("SEND_CONCURRENCY", CONCURRENCY.to_string())
            .env("SEND_LEASE_SECS", LEASE_SECS)
            .current_dir(dir);
        if let Ok(bindir) = std::env::var("PG_BINDIR") {
            cmd.env("PG_BINDIR", bindir);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut me = Self { child, port, log };
        me.wait_ready().await;
        me
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("loopline exited early ({status}):\n{}", self.output());
            }
            if let Ok(res) = reqwest::get(&url).await
                && res.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "loopline not ready in time:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("loopline exited ({status}):\n{}", self.output());
        }
    }

    /// No cleanup at all: the kernel ends the process mid-whatever.
    fn kill_9(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL).unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait for a clean exit.
    async fn stop(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}:\n{}", self.output());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Loopline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(prefix: &str) -> PathBuf {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = tmp_root().join(format!("{prefix}-{}", &id[..12]));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` active subscribers and one campaign message to each (one body, personalised, with
/// a tracked link), queued in one transaction through the outbox API.
async fn queue(pool: &PgPool, n: usize) {
    let now = chrono::Utc::now();
    let mut tx = pool.begin().await.unwrap();
    let subscribers: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO subscribers (email, name, status, created_at)
         SELECT 'reader' || i || '@example.kr', 'Reader ' || i, 'active'::subscriber_status, now()
         FROM generate_series(1, $1) i
         RETURNING id, email",
    )
    .bind(n as i64)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let body_id = outbox::insert_body(
        &mut tx,
        &NewBody {
            purpose: "campaign".into(),
            draft: Draft {
                subject: "{{ subscriber.first_name }}님, 이번 주 소식".into(),
                preheader: "세 가지 사례".into(),
                body: "안녕하세요 {{ subscriber.name }}님,\n\n\
                       [사례 읽기](https://blog.example.kr/case?id=1 \"topic:marketing\")\n"
                    .into(),
                format: BodyFormat::Markdown,
            },
            from_name: String::new(),
        },
    )
    .await
    .unwrap();
    for (id, email) in subscribers {
        outbox::enqueue(
            &mut tx,
            &NewMessage {
                idempotency_key: format!("crash:{id}"),
                marketing: true,
                body_id,
                subscriber_id: Some(id),
                to_email: email,
                to_name: String::new(),
                data: json!({}),
                run_at: now,
            },
            now,
        )
        .await
        .unwrap()
        .expect("a new message");
    }
    tx.commit().await.unwrap();
}

/// Recipient and Message-ID of every message the server received.
fn received(smtp: &SmtpServer) -> Vec<(String, String)> {
    smtp.messages()
        .iter()
        .map(|raw| {
            let (headers, _) = mailparse::parse_headers(raw).unwrap();
            // aiosmtpd adds the envelope recipient as X-RcptTo.
            let to = headers
                .get_first_value("X-RcptTo")
                .or_else(|| headers.get_first_value("To"))
                .unwrap_or_default();
            let to = to
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_ascii_lowercase();
            let id = headers
                .get_first_value("Message-ID")
                .unwrap_or_default()
                .trim()
                .to_string();
            (to, id)
        })
        .collect()
}

async fn count_sent(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sent'")
        .fetch_one(pool)
        .await
}

async fn statuses(pool: &PgPool) -> Vec<(String, i64)> {
    outbox::counts(pool, chrono::Utc::now()).await.unwrap()
}

/// Polls (tolerating a database that is still coming back) until `n` rows are `sent`.
async fn wait_all_sent(pool: &PgPool, n: usize, within: Duration, app: &mut Loopline) {
    let deadline = Instant::now() + within;
    loop {
        if count_sent(pool).await.ok() == Some(n as i64) {
            return;
        }
        app.assert_running();
        assert!(
            Instant::now() < deadline,
            "not everything was sent in {within:?}: {:?}\n{}",
            statuses(pool).await,
            app.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the server has received `n` messages, or panics with the app's log.
async fn wait_received(smtp: &SmtpServer, n: usize, within: Duration, app: &mut Loopline) {
    let deadline = Instant::now() + within;
    while smtp.count() < n {
        app.assert_running();
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived in {within:?}\n{}",
            smtp.count(),
            app.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Once every row is `sent`: each recipient got exactly one message, or two if theirs
/// was in flight at a crash; nobody got none and nobody else got anything; every row
/// has one `sent` event and a Message-ID that the server received. Returns the number
/// of duplicates.
async fn assert_each_delivered(pool: &PgPool, got: &[(String, String)], n: usize) -> usize {
    let emails: Vec<String> = sqlx::query_scalar("SELECT lower(to_email) FROM messages")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(emails.len(), n);
    let mut per: HashMap<&str, usize> = HashMap::new();
    for (to, _) in got {
        *per.entry(to.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = emails
        .iter()
        .filter(|e| !per.contains_key(e.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} recipients got nothing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let known: HashSet<&str> = emails.iter().map(String::as_str).collect();
    let strangers: Vec<&&str> = per.keys().filter(|to| !known.contains(**to)).collect();
    assert!(
        strangers.is_empty(),
        "mail to unknown recipients: {strangers:?}"
    );
    let thrice: Vec<(&&str, &usize)> = per.iter().filter(|(_, c)| **c > 2).collect();
    assert!(thrice.is_empty(), "more than two copies: {thrice:?}");
    let duplicates: usize = per.values().map(|c| c - 1).sum();

    // A message keeps its Message-ID on every attempt, so a second copy has the first
    // one's (receivers that collapse duplicates by Message-ID show one).
    let ids: HashSet<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(
        ids.len(),
        n,
        "one Message-ID per message, shared by its copies"
    );
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT m.status::text, m.message_id,
                (SELECT count(*) FROM events e WHERE e.message_id = m.id AND e.kind = 'sent')
         FROM messages m",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (status, message_id, sent_events) in &rows {
        assert_eq!(status, "sent");
        assert_eq!(*sent_events, 1, "one `sent` event per message");
        let id = message_id
            .as_deref()
            .expect("a sent row keeps its Message-ID");
        assert!(
            ids.contains(id),
            "{id} is recorded as sent but was never received"
        );
    }
    duplicates
}

/// (a) `kill -9` in the middle of 10,000 messages to a real SMTP server, then restart.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_10000_message_send_loses_nothing_and_repeats_only_what_was_in_flight() {
    const N: usize = 10_000;
    let dir = scratch("crash-kill");
    let smtp = SmtpServer::start();
    let env = [("SMTP_URL", smtp.url())];
    // The embedded default: Loopline runs its own PostgreSQL in dir/data/postgres, which
    // the test reaches over its Unix socket.
    let mut first = Loopline::start(&dir, &env).await;
    let socket = PgConnectOptions::new()
        .socket(dir.join("data/postgres"))
        .username("loopline")
        .database("loopline");
    let pool = db::pool(socket.clone(), 4).await.unwrap();
    let started = Instant::now();
    queue(&pool, N).await;
    let queued = started.elapsed();

    wait_received(&smtp, N / 5, Duration::from_secs(300), &mut first).await;
    // Being sent: queued with a live lease.
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_queue WHERE lease_until > now()")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    first.kill_9();
    let at_kill = smtp.count();
    assert!(
        at_kill < N,
        "the kill came after everything was sent; nothing was tested"
    );

    // Whatever the server still finishes taking from the dead process's connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_restart = smtp.count();

    // The restart takes back the killed process's claims once their lease runs out.
    let mut second = Loopline::start(&dir, &env).await;
    let pool = db::pool(socket, 4).await.unwrap();
    wait_all_sent(&pool, N, Duration::from_secs(600), &mut second).await;
    let got = received(&smtp);
    let duplicates = assert_each_delivered(&pool, &got, N).await;
    // Every second copy is mail that was in flight at the kill: taken by the server
    // from the first process (before the restart), not yet recorded, so claimed again
    // and sent once more by the second. Never two copies from one process.
    let mut first_copy: HashMap<&str, usize> = HashMap::new();
    let mut twice: Vec<String> = Vec::new();
    for (i, (to, _)) in got.iter().enumerate() {
        if let Some(&first) = first_copy.get(to.as_str()) {
            assert!(
                first < before_restart && i >= before_restart,
                "{to}: copies {first} and {i}, restart at {before_restart}"
            );
            twice.push(to.clone());
        } else {
            first_copy.insert(to, i);
        }
    }
    let claimed_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE lower(to_email) = ANY($1) AND attempts >= 2",
    )
    .bind(&twice)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        claimed_twice as usize,
        twice.len(),
        "each was claimed twice"
    );
    println!(
        "crash (a) kill -9: {N} messages (queued in {queued:?}); {at_kill} received before \
         the kill, ~{claimed} claimed just before it; {duplicates} duplicate(s) after the \
         restart (bound {IN_FLIGHT}); all sent after {:?}",
        started.elapsed()
    );
    assert!(
        duplicates <= IN_FLIGHT,
        "{duplicates} duplicates, more than the sender keeps unrecorded ({IN_FLIGHT})"
    );
    pool.close().await;
    second.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn start_postgres(cluster_dir: PathBuf) -> EmbeddedPostgres {
    tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start(&EmbeddedOptions {
            cluster_dir,
            ephemeral: true,
            max_connections: 60,
        })
        .unwrap()
    })
    .await
    .unwrap()
}

/// (b) PostgreSQL restarted under a running send.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_in_the_middle_of_a_send_resumes_and_loses_nothing() {
    const N: usize = 3_000;
    let dir = scratch("crash-pg");
    // A cluster of this test's own (the shared test cluster must stay up for others).
    let cluster_dir = dir.join("pg/cluster");
    let pg = start_postgres(cluster_dir.clone()).await;
    db::ensure_database(pg.connect_options("postgres"), "loopline")
        .await
        .unwrap();
    let url = pg.url("loopline");
    let smtp = SmtpServer::start();
    let mut app = Loopline::start(
        &dir,
        &[
            ("DATABASE_URL", url.clone()),
            ("SMTP_URL", smtp.url()),
            // Slow enough that the restart lands in the middle, whatever the machine.
            ("SEND_RATE_PER_SECOND", "300".into()),
            // Long enough that mail whose outcome was lost with the database would still
            // be waiting for its lease at the end: the test sees only the first copies.
            ("SEND_LEASE_SECS", "60".into()),
        ],
    )
    .await;
    let pool = db::pool(pg.connect_options("loopline"), 4).await.unwrap();
    let started = Instant::now();
    queue(&pool, N).await;
    wait_received(&smtp, N / 6, Duration::from_secs(120), &mut app).await;
    pool.close().await;

    // Fast shutdown, as `pg_ctl restart -m fast`: open transactions roll back, every
    // connection is cut.
    tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.stop().unwrap();
    })
    .await
    .unwrap();
    // Counted from when the server is down (mail recorded while it was shutting down
    // went out legitimately): at most what was already claimed and allowed unrecorded,
    // then nothing at all until it is back.
    let at_stop = smtp.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_down = smtp.count() - at_stop;
    assert!(
        while_down <= IN_FLIGHT,
        "{while_down} messages went out while the database was down"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        smtp.count() - at_stop,
        while_down,
        "mail kept going out while the database was down"
    );
    let pg = start_postgres(cluster_dir).await;
    assert_eq!(pg.url("loopline"), url, "back at the same address");
    app.assert_running();

    let pool = db::pool(pg.connect_options("loopline"), 4).await.unwrap();
    wait_all_sent(&pool, N, Duration::from_secs(300), &mut app).await;
    let got = received(&smtp);
    let duplicates = assert_each_delivered(&pool, &got, N).await;
    let retried = app.output().matches("recording sent mail failed").count();
    println!(
        "crash (b) PostgreSQL restart: {N} messages; {at_stop} received by the time it was down, \
         {while_down} more while it was down (recording retried {retried} time(s)); \
         {duplicates} duplicate(s); all sent after {:?}",
        started.elapsed()
    );
    // The sender kept the outcomes of the mail it had out and recorded them once the
    // database was back, rather than sending that mail again after its lease.
    assert_eq!(duplicates, 0, "mail in flight at the restart went twice");
    assert!(
        app.output().contains("sending round failed")
            || app.output().contains("recording sent mail failed"),
        "the sender noticed the database going away:\n{}",
        app.output()
    );
    pool.close().await;
    app.stop().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// (c) The SMTP server is down for a full minute in the middle of a send.
#[tokio::test(flavor = "multi_thread")]
async fn smtp_down_for_a_minute_mail_waits_without_spending_attempts_and_nothing_unreceived_is_sent()
 {
    const N: usize = 1_000;
    const OUTAGE: Duration = Duration::from_secs(60);
    let dir = scratch("crash-smtp");
    let (pool, name) = fresh_database().await;
    let mut smtp = SmtpServer::start();
    let port = smtp.port;
    let mut app = Loopline::start(
        &dir,
        &[
            ("DATABASE_URL", cluster().url(&name)),
            ("SMTP_URL", smtp.url()),
            // 20 s for all of it: the outage starts well before the end.
            ("SEND_RATE_PER_SECOND", "50".into()),
        ],
    )
    .await;
    let started = Instant::now();
    queue(&pool, N).await;
    wait_received(&smtp, N / 5, Duration::from_secs(120), &mut app).await;

    smtp.kill();
    let down = Instant::now();
    let before = received(&smtp);
    let before_ids: HashSet<String> = before.iter().map(|(_, id)| id.clone()).collect();
    assert!(
        before.len() < N,
        "the outage came after everything was sent"
    );
    let mut polls = 0;
    while down.elapsed() < OUTAGE {
        // Nothing is marked sent that the server did not receive.
        let sent: Vec<Option<String>> =
            sqlx::query_scalar("SELECT message_id FROM messages WHERE status = 'sent'")
                .fetch_all(&pool)
                .await
                .unwrap();
        for id in &sent {
            let id = id.as_deref().expect("a sent row keeps its Message-ID");
            assert!(
                before_ids.contains(id),
                "{id} is marked sent, but the server never received it"
            );
        }
        // Waiting costs no attempts, and nothing gives up. The one exception is mail in
        // the middle of its exchange when the server died (on a just-opened connection,
        // or after the body on any): the server may have taken it, so that attempt
        // counts (at most one per connection). Mail claimed right now has its attempt counted until it is recorded.
        let (gave_up, spent, lost_in_flight): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'sent')),
                    count(*) FILTER (WHERE status = 'queued' AND q.claimed_by IS NULL AND q.attempts > 0
                                     AND smtp_reply NOT LIKE 'connection lost during the message%'),
                    count(*) FILTER (WHERE status = 'queued' AND q.claimed_by IS NULL AND q.attempts > 0
                                     AND smtp_reply LIKE 'connection lost during the message%')
             FROM messages m LEFT JOIN message_queue q ON q.message_id = m.id",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(gave_up, 0, "{:?}", statuses(&pool).await);
        assert_eq!(spent, 0, "attempts were spent on an unreachable server");
        assert!(
            lost_in_flight as usize <= CONCURRENCY,
            "{lost_in_flight} lost mid-message"
        );
        app.assert_running();
        polls += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Settled: what the server acknowledged before it died is recorded. (A message the
    // server wrote to disk but could not acknowledge before being killed is not, and
    // goes again: the in-flight case.)
    let sent = count_sent(&pool).await.unwrap() as usize;
    let unacknowledged = before.len() - sent;
    assert!(
        unacknowledged <= IN_FLIGHT,
        "{sent} marked sent, {} received",
        before.len()
    );
    let (waiting, tried): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE smtp_reply IS NOT NULL)
         FROM messages WHERE status = 'queued'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(waiting > 0, "mail waits for the server");
    assert!(
        tried > 0,
        "the sender kept trying during the outage and handed the mail back"
    );

    let back = SmtpServer::start_on(port);
    wait_all_sent(&pool, N, Duration::from_secs(240), &mut app).await;
    let mut got = before.clone();
    got.extend(received(&back));
    let duplicates = assert_each_delivered(&pool, &got, N).await;
    let (bad_events, lost_at_the_kill, twice_tried): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE kind IN ('failed', 'bounced')
                    OR (kind = 'deferred' AND data->>'reply' NOT LIKE 'connection lost during the message%')),
                (SELECT count(*) FROM events WHERE kind = 'deferred'),
                (SELECT count(*) FROM messages WHERE attempts > 1)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        bad_events, 0,
        "no failure, bounce or deferral for an outage beyond mail caught mid-message"
    );
    assert!(
        lost_at_the_kill as usize <= CONCURRENCY && twice_tried == lost_at_the_kill,
        "only mail in the middle of its exchange at the kill spent an attempt: \
         {lost_at_the_kill} deferred, {twice_tried} tried twice"
    );
    println!(
        "crash (c) SMTP down {OUTAGE:?}: {N} messages; {} received before the outage, {sent} \
         marked sent at its end ({polls} checks, none marked sent unreceived), {tried} handed \
         back untried; {duplicates} duplicate(s) (bound {IN_FLIGHT}); all sent after {:?}",
        before.len(),
        started.elapsed()
    );
    assert!(duplicates <= IN_FLIGHT, "{duplicates} duplicates");
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
