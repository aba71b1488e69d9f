//! `bench/run click`: the click redirect (`GET /c/{token}`) under wrk, 200 connections
//! for 30 s (`--quick`: 10 s), served by Loopline's production router on a durable
//! private PostgreSQL, against the limit measured in the same run on the same machine:
//! nginx answering `return 302` under the same wrk load and script.
//!
//! Workload: 4,000 subscribers, one sent message each (four tracked links), two signed
//! click tokens per message: 8,000 distinct URLs, rotated by a wrk Lua script. Each click
//! is verified (HMAC), judged human or machine, stored as a `clicked` event and folded
//! into the subscriber's counters before its 302 goes out. Both servers keep their
//! production logging: Loopline's request log lines (INFO) to a file, nginx's access log.
//!
//! Before the runs the cluster writes and checkpoints ~800 MB of WAL (400 with `--quick`),
//! so the run reuses recycled WAL segments as a server that has been up for a while does,
//! instead of creating a new one on a commit's path every second or so. Before each
//! measured phase the disk is settled (`sync`), and nginx's access log is deleted after
//! its run: the kernel wrote that ~1 GB back 30 s after nginx began, which is during
//! Loopline's run, and its writes held up the WAL's flushes for 50-200 ms.
//!
//! Every response must have its stored event: the `clicked` rows written during the run
//! are counted against the 3xx responses wrk read. Requests still in flight when wrk
//! stops are stored but unanswered (at most one per connection); they are reported, not
//! counted as lost.

mod common;

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use loopline::{
    clock::SystemClock,
    config::Config,
    startup,
    tracking::tokens::{self, Click},
};
use tokio_util::sync::CancellationToken;

const SUBSCRIBERS: i64 = 4_000;
const LINKS_PER_MESSAGE: i64 = 4;
const TOKENS_PER_MESSAGE: i64 = 2;
const CONNECTIONS: u32 = 200;
const THREADS: u32 = 2;
const USER_AGENT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

/// Rotates through the paths in the file named by the first script argument (each
/// thread from its own offset) and prints the summary as one JSON line.
const WRK_SCRIPT: &str = r#"
local threads = {}
function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end
function init(args)
  paths = {}
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  i = offset
end
function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

#[derive(serde::Deserialize, Debug)]
struct WrkResult {
    requests: u64,
    duration_us: u64,
    /// Responses with a status above 399.
    status_errors: u64,
    socket_errors: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl WrkResult {
    fn per_sec(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }
    fn redirects(&self) -> u64 {
        self.requests - self.status_errors
    }
}

fn require(program: &str, version_arg: &str) -> anyhow::Result<()> {
    match Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "`{program}` is not installed; this benchmark needs wrk and nginx: apt-get install -y wrk nginx"
        ),
    }
}

fn wrk(dir: &Path, url: &str, secs: u64) -> anyhow::Result<WrkResult> {
    let script = dir.join("rotate.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let out = Command::new("wrk")
        .args(["-t", &THREADS.to_string(), "-c", &CONNECTIONS.to_string()])
        .args(["-d", &format!("{secs}s"), "--timeout", "5s"])
        .args(["-H", &format!("User-Agent: {USER_AGENT}")])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .arg("--")
        .arg(dir.join("paths.txt"))
        .output()
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .with_context(|| {
            format!(
                "wrk printed no summary: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(serde_json::from_str(line)?)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// nginx with a temporary prefix and config: one `return 302`, default access log.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("tmp"))?;
        let port = free_port()?;
        let p = prefix.display();
        let conf = format!(
            "worker_processes auto;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {p}/access.log;
  client_body_temp_path {p}/tmp/body;
  proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fastcgi;
  uwsgi_temp_path {p}/tmp/uwsgi;
  scgi_temp_path {p}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 302 https://example.com/; }}
  }}
}}
"
        );
        std::fs::write(prefix.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx did not start listening on {port}")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of the master and its workers.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.child.wait();
    }
}

/// Loopline's production log set-up (filter and text format), writing to a file
/// instead of stdout so the benchmark's output stays readable.
fn init_logging(file: &Path) -> anyhow::Result<()> {
    use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let log = std::fs::File::create(file)?;
    tracing_subscriber::registry()
        .with(EnvFilter::new("info,sqlx=warn,tower_http=info,hyper=warn"))
        .with(
            fmt::layer()
                .with_target(false)
                .with_ansi(false)
                .with_writer(Mutex::new(log)),
        )
        .try_init()?;
    Ok(())
}

async fn clicked(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'clicked'")
            .fetch_one(pool)
            .await?,
    )
}

/// Subscribers, one sent message each, and the click paths of their tokens, shuffled.
async fn seed(
    pool: &sqlx::PgPool,
    keys: &loopline::signing::SigningKey,
    paths: &Path,
) -> anyhow::Result<usize> {
    sqlx::query(
        "INSERT INTO subscribers (email, name, status, created_at)
         SELECT 'reader' || i || '@example.com', '구독자 ' || i, 'active', now() - interval '30 days'
         FROM generate_series(1, $1) i",
    )
    .bind(SUBSCRIBERS)
    .execute(pool)
    .await?;
    let body: i64 = sqlx::query_scalar(
        "INSERT INTO message_bodies (purpose, subject, body) VALUES ('campaign', '이번 주 소식', 'body') RETURNING id",
    )
    .fetch_one(pool)
    .await?;
    let messages: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO messages (idempotency_key, marketing, body_id, subscriber_id, to_email, data, status,
                               created_at, sent_at)
         SELECT 'bench:' || s.id, true, $1, s.id, s.email, jsonb_build_object('links', $2::bigint), 'sent',
                now() - interval '1 hour', now() - interval '1 hour'
         FROM subscribers s ORDER BY s.id
         RETURNING id, subscriber_id",
    )
    .bind(body)
    .bind(LINKS_PER_MESSAGE)
    .fetch_all(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    let mut lines = Vec::new();
    for (mid, sid) in messages {
        for position in 1..=TOKENS_PER_MESSAGE {
            let token = tokens::click_token(
                keys,
                &Click {
                    message_id: mid,
                    subscriber_id: Some(sid),
                    position: position as u16,
                    label: Some(
                        if position == 1 {
                            "topic:marketing"
                        } else {
                            "purchase"
                        }
                        .into(),
                    ),
                    url: format!(
                        "https://shop.example.com/p/{mid}?utm_source=loopline&link={position}"
                    ),
                },
            );
            lines.push(format!("/c/{token}"));
        }
    }
    // A fixed shuffle (LCG), so consecutive requests hit different messages.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..lines.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lines.swap(i, (state >> 33) as usize % (i + 1));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(paths)?);
    for l in &lines {
        writeln!(f, "{l}")?;
    }
    f.flush()?;
    Ok(lines.len())
}

/// Deletes `leftover` (if any) and flushes every dirty page, so one phase's writes (and
/// the discards of what it deleted) are not written back during the next phase.
async fn settle_disk(leftover: Option<&Path>) {
    if let Some(path) = leftover {
        let _ = std::fs::remove_file(path);
    }
    let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
    // Discards of freed blocks are issued as the journal commits; give them a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs: u64 = if quick { 10 } else { 30 };
    let warmup: u64 = 2;
    require("wrk", "--version")?;
    require("nginx", "-v")?;

    let config = Config::from_lookup(|k| match k {
        "SECRET_KEY" => Some("bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz".into()),
        _ => None,
    })?;
    let bench = common::start("click", config.db_max_connections).await?;
    let dir: PathBuf = bench.dir.clone();
    init_logging(&dir.join("loopline.log"))?;
    let pool = bench.pool.clone();

    let app = startup::build(
        pool.clone(),
        config,
        Arc::new(SystemClock),
        startup::job_registry(),
    )
    .await?;
    let paths = dir.join("paths.txt");
    let tokens = seed(&pool, &app.state.keys, &paths).await?;
    // A full run writes ~500 MB of WAL.
    common::warm_wal(&pool, if quick { 400 } else { 800 }).await?;

    settle_disk(None).await;

    // The limit first: nginx, same load, same script.
    let limit = {
        let nginx = Nginx::start(&dir)?;
        let url = format!("http://127.0.0.1:{}", nginx.port);
        wrk(&dir, &url, warmup)?;
        let r = wrk(&dir, &url, secs)?;
        drop(nginx);
        r
    };
    // nginx's access log (~1 GB in a full run) sits in the page cache until the kernel
    // writes it back, 30 s after it was first dirtied: in the middle of Loopline's run,
    // where that gigabyte of writes stalled the WAL's flushes for 50-200 ms.
    settle_disk(Some(&dir.join("nginx").join("access.log"))).await;

    // Loopline: the production router, served as `loopline serve` serves it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(startup::serve(
        listener,
        app.router.clone(),
        shutdown.clone(),
        Duration::from_secs(10),
    ));
    let url = format!("http://{addr}");
    let wrk_blocking =
        |d: PathBuf, u: String, s: u64| tokio::task::spawn_blocking(move || wrk(&d, &u, s));
    wrk_blocking(dir.clone(), url.clone(), warmup).await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = clicked(&pool).await?;
    common::reset_statements(&pool).await?;
    let ours = wrk_blocking(dir.clone(), url.clone(), secs).await??;
    // Let requests cut off at wrk's end finish their writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statements = common::top_statements(&pool, 8).await?;
    let stored = clicked(&pool).await? - before;
    let verdicts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT data->>'reason', count(*) FROM events WHERE kind = 'clicked' GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await?;
    shutdown.cancel();
    server.await??;
    let log_bytes = std::fs::metadata(dir.join("loopline.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(app);
    bench.stop().await;

    let answered = ours.redirects();
    let lost = (answered as i64 - stored).max(0);
    let unanswered = (stored - answered as i64).max(0);
    let (o, l) = (ours.per_sec(), limit.per_sec());
    println!(
        "click: GET /c/{{token}}, {tokens} distinct signed tokens ({SUBSCRIBERS} subscribers), wrk -t{THREADS} -c{CONNECTIONS} -d{secs}s, durable cluster (fsync on)"
    );
    println!(
        "  {:<22} {:>10} {:>9} {:>9} {:>9} {:>12} {:>8}",
        "", "req/s", "p50 ms", "p99 ms", "max ms", "responses", "errors"
    );
    for (name, r) in [("loopline /c/{token}", &ours), ("nginx return 302", &limit)] {
        println!(
            "  {:<22} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>12} {:>8}",
            name,
            r.per_sec(),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            r.requests,
            r.status_errors + r.socket_errors
        );
    }
    println!(
        "  events: {stored} clicked rows stored during the run, {answered} 3xx responses read by wrk; lost {lost}, stored but cut off at the end {unanswered}"
    );
    println!(
        "  verdicts (whole run incl. warm-up): {}",
        verdicts
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !statements.is_empty() {
        println!("  PostgreSQL statements during our run (pg_stat_statements, by total time):");
        for line in &statements {
            println!("    {line}");
        }
    }
    println!(
        "  loopline request log written: {:.1} MiB",
        log_bytes as f64 / 1048576.0
    );
    println!(
        "  p99 {:.2} ms, lost {lost}, non-3xx {}, socket errors {}",
        ms(ours.p99_us),
        ours.status_errors,
        ours.socket_errors
    );
    println!(
        "{}",
        serde_json::json!({
            "name": "click", "unit": "req/s", "ours": o.round(), "limit": l.round(),
            "ratio": (o / l * 100.0).round() / 100.0,
            "p99_ms": (ms(ours.p99_us) * 100.0).round() / 100.0, "lost": lost,
        })
    );
    if lost > 0 || ours.status_errors > 0 {
        bail!(
            "{lost} responses without a stored event, {} non-3xx responses",
            ours.status_errors
        );
    }
    Ok(())
}
