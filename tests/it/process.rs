//! The real binary on its embedded default: first start initialises a private cluster,
//! a second Loopline on the same data directory is refused, `kill -9` is recovered
//! from, data survives restarts, SIGTERM shuts down cleanly (PostgreSQL last), logs are
//! JSON with request ids, and `loopline user create` works.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::harness::{PASSWORD, cluster, free_port, tmp_root};

const BIN: &str = env!("CARGO_BIN_EXE_loopline");

fn loopline(data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOOPLINE_DATA_DIR", data)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "info")
        .env("SHUTDOWN_GRACE_SECS", "5")
        .current_dir(data.parent().unwrap());
    cmd
}

struct Running {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Running {
    fn start(data: &Path, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = data.with_extension(format!("{port}.out"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = loopline(data, port);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut r = Self { child, port, log };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("loopline exited early ({status}):\n{}", self.output());
            }
            if let Ok(res) =
                reqwest::blocking_get(&format!("http://127.0.0.1:{}/readyz", self.port))
                && res == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A tiny blocking GET without pulling in another HTTP client.
mod reqwest {
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    }
}

fn postmaster_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("postgres/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_runs_its_own_postgres_survives_kill_9_and_shuts_down_cleanly() {
    let root = tmp_root().join(format!("proc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let data = root.join("data");

    // `loopline user create` on a fresh directory: initdb, migrate, create, stop.
    let mut create = loopline(&data, free_port())
        .args([
            "user",
            "create",
            "--email",
            "owner@example.kr",
            "--role",
            "owner",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(create.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created owner@example.kr (owner)"));
    assert!(
        data.join("postgres/PG_VERSION").is_file(),
        "initdb ran into the data directory"
    );
    assert!(
        postmaster_pid(&data).is_none(),
        "the command stopped its PostgreSQL"
    );

    // Serve, with JSON logs.
    let mut first = Running::start(&data, &[("LOG_FORMAT", "json")]);
    assert_eq!(http_status(&first.url("/")), 303);
    let pg = postmaster_pid(&data).expect("postmaster running");
    // Unix socket only: PostgreSQL listens on no TCP address.
    let opts = sqlx::postgres::PgConnectOptions::new()
        .socket(data.join("postgres"))
        .username("loopline")
        .database("loopline");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts)
        .await
        .unwrap();
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(listen, "");
    // WAL segments are kept for the next burst (see `db::embedded`).
    let min_wal: String = sqlx::query_scalar("SHOW min_wal_size")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(min_wal, "512MB");
    drop(conn);

    // A request id is on the request's log lines.
    let log_line = request_with_id(&first.url("/login"), "req-test-4242");
    assert_eq!(log_line, 200);
    // A click's path carries a subscriber's token: not logged at the default level.
    let click = request_with_id(&first.url("/c/not-a-real-token"), "req-click-4343");
    assert_eq!(click, 404);

    // A second Loopline on the same directory is refused with a clear message.
    let second = loopline(&data, free_port()).output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already using the database"), "{err}");
    assert!(
        alive(pg),
        "the refused start left the running cluster alone"
    );

    let logs = first.output();
    let tagged: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("req-test-4242"))
        .collect();
    assert!(
        !tagged.is_empty(),
        "no log line carries the request id:\n{logs}"
    );
    for l in &tagged {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"));
        assert_eq!(v["span"]["request_id"], "req-test-4242");
    }
    assert!(
        !logs.contains("req-click-4343") && !logs.contains("not-a-real-token"),
        "a tracking request was logged:\n{logs}"
    );

    // kill -9: no cleanup at all. The next start recovers on its own.
    kill(Pid::from_raw(first.child.id() as i32), Signal::SIGKILL).unwrap();
    first.child.wait().unwrap();
    let mut again = Running::start(&data, &[]);
    assert_eq!(http_status(&again.url("/")), 303);
    let setup = http_status(&again.url("/setup"));
    assert_eq!(
        setup, 303,
        "the owner survived the restart (setup redirects to login)"
    );
    wait_gone(pg);

    // SIGTERM: graceful, exit 0, PostgreSQL stopped too.
    let pg2 = postmaster_pid(&data).expect("postmaster running");
    kill(Pid::from_raw(again.child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = again.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            again.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        again.output()
    );
    assert!(!alive(pg2), "PostgreSQL was stopped with Loopline");
    assert!(
        postmaster_pid(&data).is_none(),
        "clean PostgreSQL shutdown removes its pid file"
    );
    assert!(again.output().contains("embedded PostgreSQL stopped"));

    let _ = std::fs::remove_dir_all(&root);
}

fn http_status(url: &str) -> u16 {
    reqwest::blocking_get(url).unwrap()
}

fn request_with_id(url: &str, id: &str) -> u16 {
    use std::io::Read;
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nx-request-id: {id}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    assert!(
        buf.to_ascii_lowercase()
            .contains(&format!("x-request-id: {id}")),
        "the id is echoed back"
    );
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_database_url_set_that_server_is_used_and_no_cluster_is_started() {
    let name = format!("ext_{}", uuid::Uuid::new_v4().simple());
    loopline::db::ensure_database(cluster().options("postgres"), &name)
        .await
        .unwrap();
    let root = tmp_root().join(format!("ext-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let data = root.join("data");
    let out = loopline(&data, free_port())
        .env("DATABASE_URL", cluster().url(&name))
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    assert!(
        !data.join("postgres").exists(),
        "no private cluster when DATABASE_URL is set"
    );
    let pool = loopline::db::pool(cluster().options(&name), 2)
        .await
        .unwrap();
    assert!(loopline::db::readiness(&pool).await.is_ok());

    // A malformed value stops the start, naming the variable.
    let out = loopline(&data, free_port())
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
    let _ = std::fs::remove_dir_all(&root);
}
