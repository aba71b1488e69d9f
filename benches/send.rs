//! `bench/run send`: 100,000 personalised messages (merge fields with a fallback, Korean
//! and ASCII names, tracked links with labels, a Markdown body) from the outbox through
//! the real `Sender` (claims, rendering, SMTP through lettre's pool, recorded outcomes)
//! to postfix's `smtp-sink` on loopback. The limit, in the same run, against the same
//! sink: postfix's `smtp-source` sending messages of the same size at the same
//! concurrency over reused connections. `--quick`: 10,000 messages.

mod common;

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use loopline::{
    clock::{SharedClock, SystemClock},
    db,
    delivery::{
        outbox::{self, NewBody, NewMessage},
        render::{BodyFormat, Draft},
        sender::{SendSettings, Sender, Transport},
    },
    signing::SigningKey,
};
use serde_json::json;

const CONCURRENCY: usize = 8;
const SINK: &str = "/usr/sbin/smtp-sink";
const SOURCE: &str = "/usr/sbin/smtp-source";
const SAMPLE: usize = 200;

const SUBJECT: &str = r#"{{ subscriber.first_name | default("friend") }}님, this week at Loopline"#;
const PREHEADER: &str = "Three things worth your time, {{ subscriber.name | default(\"friend\") }}";
const BODY: &str = r#"# Hello {{ subscriber.first_name | default("friend") }},

안녕하세요 **{{ subscriber.name | default("구독자") }}**님! Here is what changed this week.

- [The spring sale](https://shop.example/spring?utm_source=newsletter "purchase") starts Monday
- Read [how we plan content](https://blog.example/posts/content-calendar "topic:marketing")
- Your account: [settings](https://app.example/account)

{% if subscriber.fields.plan == "pro" %}As a **Pro** member you get early access.{% else %}Upgrade to Pro for early access.{% endif %}

> 봄 세일은 3월 31일까지입니다. Questions? Just reply to this mail.

Thanks for reading,
The Loopline team
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 10_000 } else { 100_000 };
    for bin in [SINK, SOURCE] {
        if !Path::new(bin).exists() {
            eprintln!(
                "send: {bin} is missing. It comes with postfix:\n  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n(the postfix service itself is not needed; the bench runs its own smtp-sink on a free loopback port)"
            );
            std::process::exit(1);
        }
    }

    let bench = common::start("send", (CONCURRENCY + 4) as u32).await?;
    let pool = bench.pool.clone();
    let clock: SharedClock = Arc::new(SystemClock);
    let keys = SigningKey::from_bytes(b"bench-send-signing-key-0123456789".to_vec());
    let settings = SendSettings {
        concurrency: CONCURRENCY,
        per_second: 0,
        per_hour: 0,
        lease: chrono::Duration::minutes(2),
        from_email: "news@loopline.example".into(),
        unsubscribe_mailto: "news@loopline.example".into(),
        from_name: "Loopline 뉴스".into(),
        public_url: "https://loopline.example".into(),
        dkim: None,
        echo_to: vec![],
    };

    // Subscribers: a Korean, an ASCII and a blank name (the fallback) in turn.
    let setup = Instant::now();
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, language, fields, created_at, confirmed_at)
         SELECT 'user' || i || '@sink.example',
                CASE i % 3 WHEN 0 THEN (ARRAY['김민준','이서연','박지호','최수아','정하준'])[1 + i % 5] || ' ' || i
                           WHEN 1 THEN (ARRAY['Ann Lee','Bob Stone','Carla Diaz','Dan Wu'])[1 + i % 4] || ' ' || i
                           ELSE '' END,
                'active', CASE i % 3 WHEN 0 THEN 'ko' ELSE 'en' END,
                jsonb_build_object('plan', CASE WHEN i % 4 = 0 THEN 'pro' ELSE 'free' END),
                now(), now()
         FROM generate_series(1, $1) i",
    )
    .bind((n + SAMPLE) as i64)
    .execute(&pool)
    .await?;
    let subscribers: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, email, name FROM subscribers ORDER BY id")
            .fetch_all(&pool)
            .await?;
    let draft = Draft {
        subject: SUBJECT.into(),
        preheader: PREHEADER.into(),
        body: BODY.into(),
        format: BodyFormat::Markdown,
    };
    let new_body = |purpose: &str| NewBody {
        purpose: purpose.into(),
        draft: draft.clone(),
        from_name: String::new(),
    };
    let (sample_body, body) = {
        let mut tx = pool.begin().await?;
        let s = outbox::insert_body(&mut tx, &new_body("campaign-sample")).await?;
        let b = outbox::insert_body(&mut tx, &new_body("campaign")).await?;
        tx.commit().await?;
        (s, b)
    };
    let subscribers_secs = setup.elapsed().as_secs_f64();

    // Enqueue through the real `outbox::enqueue`, 1,000 per transaction (set-up, not measured).
    let enqueue_started = Instant::now();
    let now = chrono::Utc::now();
    let (sample_subs, subs) = subscribers.split_at(SAMPLE);
    for (body_id, list) in [(sample_body, sample_subs), (body, subs)] {
        for chunk in list.chunks(1_000) {
            let mut tx = pool.begin().await?;
            for (id, email, name) in chunk {
                let queued = outbox::enqueue(
                    &mut tx,
                    &NewMessage {
                        idempotency_key: format!("bench:{body_id}:{id}"),
                        marketing: true,
                        body_id,
                        subscriber_id: Some(*id),
                        to_email: email.clone(),
                        to_name: name.clone(),
                        data: json!({}),
                        run_at: now,
                    },
                    now,
                )
                .await?;
                assert!(queued.is_some());
            }
            tx.commit().await?;
        }
    }
    sqlx::query("VACUUM ANALYZE messages, subscribers")
        .execute(&pool)
        .await?;
    let enqueue_secs = enqueue_started.elapsed().as_secs_f64();

    // The size of what we send: a sample through the capture transport (exact bytes),
    // then the sample's rows are moved out of the way.
    let sampler = Sender::new(
        pool.clone(),
        clock.clone(),
        keys.clone(),
        Transport::Capture,
        settings.clone(),
    );
    sqlx::query(
        "UPDATE message_queue q SET run_at = q.run_at + interval '1 day' FROM messages m
         WHERE m.id = q.message_id AND m.body_id = $1",
    )
    .bind(body)
    .execute(&pool)
    .await?;
    let sampled = sampler.run_until_idle().await?;
    assert_eq!(sampled.sent, SAMPLE, "{sampled:?}");
    sqlx::query(
        "UPDATE message_queue q SET run_at = $2 FROM messages m WHERE m.id = q.message_id AND m.body_id = $1",
    )
        .bind(body)
        .bind(now)
        .execute(&pool)
        .await?;
    let (avg_size, min_size, max_size): (f64, i32, i32) = sqlx::query_as(
        "SELECT avg(length(raw))::float8, min(length(raw)), max(length(raw)) FROM captured_mail",
    )
    .fetch_one(&pool)
    .await?;
    let avg_size = avg_size.round() as usize;

    // One sink for both sides; it counts every message it receives ("." received).
    let port = free_port()?;
    let sink = Sink::start(port)?;

    // Ours: the real sender, SMTP pool of CONCURRENCY connections.
    let transport = Transport::from_url(
        &format!("smtp://127.0.0.1:{port}"),
        CONCURRENCY as u32,
        Duration::from_secs(30),
        None,
    )?;
    // The sender gets its own pool, closed after its run: a backend that ends reports
    // its table statistics, so the update counts below are exactly those of our run.
    // The set-up's connections end here for the same reason.
    pool.close().await;
    let pool = db::pool(bench.pg.connect_options("bench"), 4).await?;
    let sender_pool = db::pool(bench.pg.connect_options("bench"), (CONCURRENCY + 4) as u32).await?;
    {
        // Connected before the clock starts, as a running server's pool would be.
        let mut warm = Vec::new();
        for _ in 0..CONCURRENCY + 4 {
            warm.push(sender_pool.acquire().await?);
        }
    }
    let sender = Sender::new(
        sender_pool.clone(),
        clock.clone(),
        keys.clone(),
        transport,
        settings,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages_before = common::table_updates(&pool, "messages").await?;
    let subscribers_before = common::table_updates(&pool, "subscribers").await?;
    common::reset_statements(&pool).await?;
    let started = Instant::now();
    // On a runtime worker, as in the server (not on the bench's main thread).
    let round = tokio::spawn(async move { sender.run_until_idle().await }).await??;
    let ours_secs = started.elapsed().as_secs_f64();
    let ours = n as f64 / ours_secs;
    assert_eq!(round.sent, n, "{round:?}");
    assert_eq!(round.total(), n, "{round:?}");
    let (sent_rows, not_sent): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status <> 'sent') FROM messages WHERE body_id = $1",
    )
    .bind(body)
    .fetch_one(&pool)
    .await?;
    let sent_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN messages m ON m.id = e.message_id WHERE e.kind = 'sent' AND m.body_id = $1",
    )
    .bind(body)
    .fetch_one(&pool)
    .await?;
    assert_eq!((sent_rows, not_sent), (n as i64, 0));
    assert_eq!(sent_events, n as i64);
    let sink_after_ours = sink.received_wait(n)?;
    assert_eq!(sink_after_ours, n, "smtp-sink counted {sink_after_ours}");
    let statements = common::top_statements(&pool, 12).await?;
    sender_pool.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hot = |before: (i64, i64), after: (i64, i64)| {
        let (upd, hot) = (after.0 - before.0, after.1 - before.1);
        format!(
            "{upd} updates, {hot} heap-only ({:.0} %)",
            hot as f64 * 100.0 / upd.max(1) as f64
        )
    };
    let messages_hot = hot(
        messages_before,
        common::table_updates(&pool, "messages").await?,
    );
    let subscribers_hot = hot(
        subscribers_before,
        common::table_updates(&pool, "subscribers").await?,
    );

    // The limit: smtp-source, same sink, same size, same concurrency, connections reused.
    let started = Instant::now();
    let status = Command::new(SOURCE)
        .args(["-d", "-s", &CONCURRENCY.to_string(), "-m", &n.to_string()])
        .args(["-l", &avg_size.to_string()])
        .args(["-f", "news@loopline.example", "-t", "user@sink.example"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .status()?;
    let limit_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "smtp-source failed: {status}");
    let limit = n as f64 / limit_secs;
    let sink_total = sink.received_wait(2 * n)?;
    assert_eq!(sink_total, 2 * n, "smtp-sink counted {sink_total}");
    drop(sink);
    pool.close().await;
    bench.stop().await;

    println!(
        "send: {n} personalised Markdown messages (merge fields with fallbacks, Korean/ASCII/blank names, 3 tracked links + open pixel), concurrency {CONCURRENCY}, smtp-sink on 127.0.0.1"
    );
    println!(
        "  set-up: {} subscribers in {subscribers_secs:.1} s; enqueue (outbox::enqueue, 1,000 per tx) {enqueue_secs:.1} s = {:.0} msg/s (not measured)",
        n + SAMPLE,
        (n + SAMPLE) as f64 / enqueue_secs
    );
    println!(
        "  message size: average {avg_size} bytes (min {min_size}, max {max_size}) over {SAMPLE} captured"
    );
    println!(
        "  loopline sender        : {ours:>8.0} msg/s ({ours_secs:.1} s; all {n} rows sent, {sent_events} sent events, sink counted {sink_after_ours})"
    );
    println!(
        "  smtp-source (-l {avg_size}) : {limit:>8.0} msg/s ({limit_secs:.1} s; sink counted {})",
        sink_total - sink_after_ours
    );
    println!("  during our run: messages {messages_hot}; subscribers {subscribers_hot}");
    if !statements.is_empty() {
        println!("  PostgreSQL statements during our run (pg_stat_statements, by total time):");
        for line in &statements {
            println!("    {line}");
        }
    }
    println!(
        "{}",
        json!({ "name": "send", "unit": "msg/s", "ours": ours.round(), "limit": limit.round(), "ratio": (ours / limit * 100.0).round() / 100.0 })
    );
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running `smtp-sink -c`: its counter line ("sess=… quit=… mesg=N") tells how many
/// messages it received.
struct Sink {
    child: Child,
    out: Arc<std::sync::Mutex<String>>,
}

impl Sink {
    fn start(port: u16) -> anyhow::Result<Self> {
        let mut cmd = Command::new(SINK);
        cmd.arg("-c");
        // smtp-sink refuses to keep root privileges.
        if nix::unistd::geteuid().is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let mut child = cmd
            .args([&format!("127.0.0.1:{port}"), "1024"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdout = child.stdout.take().expect("piped");
        let out = Arc::new(std::sync::Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(k) = stdout.read(&mut buf) {
                if k == 0 {
                    break;
                }
                let mut s = o.lock().unwrap();
                s.push_str(&String::from_utf8_lossy(&buf[..k]));
                // Only the latest counter line matters.
                if s.len() > 1 << 16 {
                    let cut = s.len() - 256;
                    let keep = s.split_off(cut);
                    *s = keep;
                }
            }
        });
        // Wait until it listens.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "smtp-sink did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, out })
    }

    fn received(&self) -> usize {
        let s = self.out.lock().unwrap();
        s.rsplit("mesg=")
            .next()
            .and_then(|t| {
                t.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The counter, once it reaches `want` (it prints after each message; allow a moment).
    fn received_wait(&self, want: usize) -> anyhow::Result<usize> {
        let started = Instant::now();
        while self.received() < want && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.received())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
