//! The test harness.
//!
//! - [`cluster`]: one private PostgreSQL for this test process, started with the same
//!   code as the app's embedded default; a template database is migrated once and each
//!   test clones it (`CREATE DATABASE … TEMPLATE`), so tests are isolated and fast.
//! - [`TestApp`]: the real router on 127.0.0.1:0 with a [`ManualClock`], plus the job
//!   runner to drain deterministically.
//! - [`TestClient`]: a cookie-keeping HTTP client that knows its CSRF token.
//! - [`SmtpServer`]: aiosmtpd (a maintained Python SMTP server) in a child process,
//!   writing every message it receives to a Maildir that tests read and parse.

#![allow(dead_code)]

use std::{
    fs,
    io::Read as _,
    net::{SocketAddr, TcpListener as StdListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use loopline::{
    accounts::{self, NewPassword, Role, User},
    address::EmailAddress,
    clock::ManualClock,
    config::Config,
    db::{
        self,
        embedded::{EmbeddedOptions, EmbeddedPostgres},
    },
    jobs::{JobRegistry, JobRunner},
    startup,
    web::AppState,
};
use nix::fcntl::{Flock, FlockArg};
use reqwest::{Method, StatusCode, redirect::Policy};
use scraper::{Html, Selector};
use sqlx::{Connection, Executor, PgPool, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct horse battery staple";
const TEMPLATE_DB: &str = "loopline_template";

/// Scratch space for clusters, data directories and mailboxes. Under the system temp
/// directory rather than target/: when tests run as root, PostgreSQL runs as the
/// `postgres` account, which must be able to reach it wherever the checkout lives.
pub fn tmp_root() -> PathBuf {
    let dir = std::env::temp_dir().join("loopline-tests");
    fs::create_dir_all(&dir).unwrap();
    let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    dir
}

pub struct Cluster {
    pg: EmbeddedPostgres,
}

impl Cluster {
    pub fn options(&self, db: &str) -> PgConnectOptions {
        self.pg.connect_options(db)
    }

    pub fn url(&self, db: &str) -> String {
        self.pg.url(db)
    }
}

/// The test process's private cluster (started on first use, stopped when the process
/// exits: the postmaster has a parent-death signal).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let root = tmp_root().join("pg");
        fs::create_dir_all(&root).unwrap();
        remove_stale_clusters(&root);
        let dir = root.join(format!("run-{}", std::process::id()));
        let pg = EmbeddedPostgres::start(&EmbeddedOptions {
            cluster_dir: dir,
            ephemeral: true,
            max_connections: 400,
        })
        .unwrap_or_else(|e| panic!("starting the test PostgreSQL: {e:#}"));
        let maintenance = pg.connect_options("postgres");
        let template = pg.connect_options(TEMPLATE_DB);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                db::ensure_database(maintenance, TEMPLATE_DB).await.unwrap();
                let pool = db::pool(template, 2).await.unwrap();
                db::migrate(&pool).await.unwrap();
                pool.close().await;
            });
        })
        .join()
        .expect("migrating the template database");
        Cluster { pg }
    })
}

/// Clusters of earlier test runs whose process is gone (their lock is free).
fn remove_stale_clusters(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "lock") {
            let Ok(file) = fs::OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let _ = fs::remove_dir_all(path.with_extension(""));
                let _ = fs::remove_dir_all(path.with_extension("initdb-tmp"));
                let _ = fs::remove_file(path.with_extension("log"));
                let _ = fs::remove_file(&path);
                drop(lock);
            }
        }
    }
}

/// A fresh database cloned from the migrated template.
pub async fn fresh_database() -> (PgPool, String) {
    let cluster = cluster();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect_with(&cluster.options("postgres"))
        .await
        .unwrap();
    // Concurrent clones of one template can trip over each other; take turns.
    conn.execute("SELECT pg_advisory_lock(7345)").await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY"
    )))
    .await
    .unwrap();
    conn.execute("SELECT pg_advisory_unlock(7345)")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let pool = db::pool(cluster.options(&name), 10).await.unwrap();
    (pool, name)
}

/// A fresh, migrated database whose default collation is ICU's `locale`: there
/// `lower()` folds all of Unicode, with context (root locale `und`: `lower('ΑΣ') =
/// 'ας'`; `tr`: `lower('I') = 'ı'`). Unlike the C-locale clusters Loopline starts
/// itself, but what an existing server may have.
pub async fn fresh_icu_database(locale: &str) -> (PgPool, String) {
    assert!(
        locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    );
    let cluster = cluster();
    let name = format!("icu_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect_with(&cluster.options("postgres"))
        .await
        .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' \
         LOCALE_PROVIDER icu ICU_LOCALE '{locale}'"
    )))
    .await
    .unwrap();
    conn.close().await.unwrap();
    let pool = db::pool(cluster.options(&name), 10).await.unwrap();
    db::migrate(&pool).await.unwrap();
    (pool, name)
}

pub fn test_config() -> Config {
    let mut c = Config::from_lookup(|_| None).expect("default config");
    c.shutdown_grace = Duration::from_secs(2);
    c
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub pool: PgPool,
    pub db_name: String,
    pub clock: ManualClock,
    pub jobs: JobRunner,
    pub sender: loopline::delivery::sender::Sender,
    pub state: AppState,
    pub shutdown: CancellationToken,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}, startup::job_registry()).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config), registry: JobRegistry) -> Self {
        let (pool, db_name) = fresh_database().await;
        Self::spawn_on(pool, db_name, tweak, registry).await
    }

    /// On a given (migrated) database, e.g. [`fresh_icu_database`].
    pub async fn spawn_on(
        pool: PgPool,
        db_name: String,
        tweak: impl FnOnce(&mut Config),
        registry: JobRegistry,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = test_config();
        config.listen_addr = addr;
        config.public_url = format!("http://{addr}");
        tweak(&mut config);
        let clock = ManualClock::starting_now();
        let app = startup::build(pool.clone(), config, Arc::new(clock.clone()), registry)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(startup::serve(
            listener,
            app.router,
            shutdown.clone(),
            Duration::from_secs(2),
        ));
        Self {
            addr,
            base: format!("http://{addr}"),
            pool,
            db_name,
            clock,
            jobs: app.jobs,
            sender: app.sender,
            state: app.state,
            shutdown,
        }
    }

    pub fn client(&self) -> TestClient {
        TestClient {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: self.base.clone(),
            csrf: None,
        }
    }

    /// Runs every due job to completion.
    pub async fn drain_jobs(&self) -> usize {
        self.jobs.run_until_idle().await.unwrap()
    }

    /// Sends every due message (to the capture store, or the SMTP server configured).
    pub async fn send_mail(&self) -> loopline::delivery::sender::Round {
        self.sender.run_until_idle().await.unwrap()
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }

    pub async fn create_user(&self, email: &str, role: Role) -> User {
        let email = EmailAddress::parse(email).unwrap();
        accounts::create_user(
            &self.pool,
            &email,
            NewPassword::parse(PASSWORD.into(), None).unwrap(),
            role,
        )
        .await
        .unwrap()
    }

    /// A client signed in through the real login form as a new user with `role`.
    pub async fn signed_in(&self, role: Role) -> (TestClient, User) {
        let email = format!(
            "{}-{}@example.com",
            role.as_str(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let user = self.create_user(&email, role).await;
        let mut client = self.client();
        let res = client.login(&email, PASSWORD).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "login as {role:?} failed"
        );
        client.refresh_csrf("/settings/account").await;
        (client, user)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP client with a cookie jar and the page's CSRF token.
pub struct TestClient {
    pub http: reqwest::Client,
    pub base: String,
    pub csrf: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub html: Html,
}

impl Page {
    pub async fn from_response(res: reqwest::Response) -> Self {
        let status = res.status();
        Page {
            status,
            html: Html::parse_document(&res.text().await.unwrap()),
        }
    }

    pub fn select(&self, css: &str) -> Vec<String> {
        let sel = Selector::parse(css).unwrap();
        self.html
            .select(&sel)
            .map(|e| e.text().collect::<String>().trim().to_string())
            .collect()
    }

    pub fn attr(&self, css: &str, attr: &str) -> Option<String> {
        let sel = Selector::parse(css).unwrap();
        self.html
            .select(&sel)
            .next()
            .and_then(|e| e.value().attr(attr))
            .map(str::to_string)
    }

    pub fn exists(&self, css: &str) -> bool {
        let sel = Selector::parse(css).unwrap();
        self.html.select(&sel).next().is_some()
    }
}

impl TestClient {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn page(&self, path: &str) -> Page {
        let res = self.get(path).await;
        let status = res.status();
        Page {
            status,
            html: Html::parse_document(&res.text().await.unwrap()),
        }
    }

    /// Reads the CSRF token from a page's forms.
    pub async fn refresh_csrf(&mut self, path: &str) {
        let page = self.page(path).await;
        self.csrf = page.attr("input[name=_csrf]", "value");
        assert!(self.csrf.is_some(), "no CSRF field on {path}");
    }

    /// Posts a form with this client's CSRF token added.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if let Some(t) = &self.csrf {
            all.push(("_csrf", t));
        }
        self.http
            .post(self.url(path))
            .form(&all)
            .send()
            .await
            .unwrap()
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if let Some(t) = &self.csrf {
            all.push(("_csrf", t));
        }
        let req = self.http.request(method.clone(), self.url(path));
        let req = if method == Method::GET {
            req
        } else {
            req.form(&all)
        };
        req.send().await.unwrap()
    }

    /// Signs in through the login form (fetching its CSRF token first).
    pub async fn login(&mut self, email: &str, password: &str) -> reqwest::Response {
        self.refresh_csrf("/login").await;
        self.post_form("/login", &[("email", email), ("password", password)])
            .await
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// aiosmtpd's Mailbox handler, answering like a real provider for some recipients:
/// `bounce…@` gets a permanent 550 (no such user), `gone…@` a 554 5.1.1 (no such
/// mailbox), `spam…@` a 550 5.7.1 (refused as spam), `later…@` a temporary 451. It offers
/// `PIPELINING` (aiosmtpd reads commands from a buffered stream, so pipelined commands
/// work; it only does not say so) unless `LOOPLINE_TEST_SMTP_PIPELINING=0`.
const SMTP_HANDLER: &str = r#"
import os
from aiosmtpd.handlers import Mailbox

class Handler(Mailbox):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if os.environ.get('LOOPLINE_TEST_SMTP_PIPELINING') != '0':
            responses.insert(len(responses) - 1, '250-PIPELINING')
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('bounce'):
            return '550 5.1.1 No such user here'
        if address.startswith('gone'):
            return '554 5.1.1 Recipient address rejected: mailbox does not exist'
        if address.startswith('spam'):
            return '550 5.7.1 Message rejected as spam'
        if address.startswith('later'):
            return '451 4.3.0 Mailbox busy, try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    # Mail to `slow…@` is stored at once but answered only 5 s later (lease renewal tests).
    async def handle_DATA(self, server, session, envelope):
        import asyncio
        reply = await super().handle_DATA(server, session, envelope)
        if any(a.startswith('slow') for a in envelope.rcpt_tos):
            await asyncio.sleep(5)
        return reply
"#;

/// A real SMTP server (aiosmtpd) that stores each received message in a Maildir.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
    pipelining: bool,
}

/// Makes `aiosmtpd` importable: the system's, or one pip-installed under the test root.
pub fn aiosmtpd_pythonpath() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| python_package("aiosmtpd", "aiosmtpd"))
        .clone()
}

impl SmtpServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On a given port (to bring a stopped server back where Loopline expects it).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, true)
    }

    /// One that does not offer `PIPELINING`, so Loopline sends command by command.
    pub fn start_without_pipelining() -> Self {
        Self::start_with(free_port(), false)
    }

    /// Brought back on its port, offering what it offered before.
    pub fn restart(self) -> Self {
        let (port, pipelining) = (self.port, self.pipelining);
        drop(self);
        Self::start_with(port, pipelining)
    }

    fn start_with(port: u16, pipelining: bool) -> Self {
        let maildir = tmp_root()
            .join("maildirs")
            .join(uuid::Uuid::new_v4().simple().to_string());
        fs::create_dir_all(maildir.parent().unwrap()).unwrap();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "loopline_test_smtp.Handler",
        ])
        .arg(&maildir);
        let handler_dir = tmp_root().join("smtp-handler");
        fs::create_dir_all(&handler_dir).unwrap();
        let handler = handler_dir.join("loopline_test_smtp.py");
        if fs::read_to_string(&handler).ok().as_deref() != Some(SMTP_HANDLER) {
            let tmp = handler_dir.join(format!("h-{}.py", uuid::Uuid::new_v4().simple()));
            fs::write(&tmp, SMTP_HANDLER).unwrap();
            fs::rename(&tmp, &handler).unwrap();
        }
        let mut path = vec![handler_dir];
        path.extend(aiosmtpd_pythonpath());
        cmd.env("PYTHONPATH", std::env::join_paths(path).unwrap());
        cmd.env(
            "LOOPLINE_TEST_SMTP_PIPELINING",
            if pipelining { "1" } else { "0" },
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                panic!("aiosmtpd exited ({status}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            maildir,
            pipelining,
        }
    }

    /// The `SMTP_URL` that reaches this server.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, raw, in arrival order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|d| fs::read_dir(self.maildir.join(d)).ok())
            .flatten()
            .flatten()
            .map(|e| {
                (
                    e.metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    e.path(),
                )
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| fs::read(p).ok())
            .collect()
    }

    /// How many messages have arrived (cheap: counts files, reads none).
    pub fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .filter_map(|d| fs::read_dir(self.maildir.join(d)).ok())
            .map(|entries| entries.count())
            .sum()
    }

    /// Takes the server down abruptly (SIGKILL), keeping what it received readable.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) until at least `n` messages have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.maildir);
    }
}

/// Makes a maintained Python package importable for a test (e.g. `dkimpy` to verify
/// signatures as a receiver would): the system's, or one pip-installed under the test
/// root. Returns the directory to put on PYTHONPATH, if any.
pub fn python_package(module: &str, package: &str) -> Option<PathBuf> {
    let have = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        return None;
    }
    let target = tmp_root().join(format!("pylib-{package}"));
    let lock_file = fs::File::create(tmp_root().join(format!("pylib-{package}.lock"))).unwrap();
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();
    if !target.join(module).is_dir() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&target)
            .arg(package)
            .status()
            .expect("running pip");
        assert!(
            status.success(),
            "pip install {package} failed; install it with `pip install {package}`"
        );
    }
    Some(target)
}

/// Queues one marketing message with `draft` for a subscriber, as a campaign would, in
/// one transaction; returns the outbox id.
pub async fn queue_message(
    app: &TestApp,
    subscriber_id: i64,
    key: &str,
    draft: loopline::delivery::render::Draft,
) -> i64 {
    use loopline::{
        clock::Clock,
        delivery::outbox::{self, NewBody, NewMessage},
    };
    let now = app.clock.now();
    let mut tx = app.pool.begin().await.unwrap();
    let body_id = outbox::insert_body(
        &mut tx,
        &NewBody {
            purpose: "campaign".into(),
            draft,
            from_name: String::new(),
        },
    )
    .await
    .unwrap();
    let email: String = sqlx::query_scalar("SELECT email FROM subscribers WHERE id = $1")
        .bind(subscriber_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let id = outbox::enqueue(
        &mut tx,
        &NewMessage {
            idempotency_key: key.into(),
            marketing: true,
            body_id,
            subscriber_id: Some(subscriber_id),
            to_email: email,
            to_name: String::new(),
            data: serde_json::json!({}),
            run_at: now,
        },
        now,
    )
    .await
    .unwrap()
    .expect("a new message");
    tx.commit().await.unwrap();
    id
}
