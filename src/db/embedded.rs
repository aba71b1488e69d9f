//! A private PostgreSQL cluster run from the server binaries installed on the machine.
//!
//! - `initdb` on first start (into a temporary directory, renamed into place, so a crash
//!   during initdb never leaves half a cluster behind);
//! - listens on a Unix socket only, never on TCP;
//! - guarded by a lock file held for the life of the process: a second Loopline on the
//!   same directory stops with a clear message, and the kernel drops the lock on `kill -9`;
//! - a postmaster orphaned by a killed Loopline is shut down before the new start, and a
//!   stale `postmaster.pid` is cleared;
//! - when Loopline runs as root, the cluster runs as the unprivileged `postgres` account
//!   (or `nobody`), because PostgreSQL refuses to run as root;
//! - the postmaster gets its own process group (a terminal's Ctrl-C reaches Loopline only,
//!   which stops PostgreSQL last) and a parent-death signal, so it shuts down if Loopline dies.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{Signal, kill},
    unistd::{Gid, Pid, Uid, User},
};
use sqlx::postgres::PgConnectOptions;

/// The database name Loopline uses inside its private cluster.
pub const APP_DATABASE: &str = "loopline";
const SUPERUSER: &str = "loopline";
const PORT: u16 = 5432;

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The cluster's data directory, e.g. `./data/postgres`.
    pub cluster_dir: PathBuf,
    /// Trade durability for speed (test clusters): no fsync, no initdb sync.
    pub ephemeral: bool,
    pub max_connections: u32,
}

/// A running private cluster. Dropping it stops the cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    pid: Option<i32>,
    /// Fires when the postmaster has exited. (A Mutex only to make the handle `Sync`.)
    exited: std::sync::Mutex<mpsc::Receiver<()>>,
    _lock: Flock<File>,
}

/// The installed server binaries.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// Looks on PATH, then `pg_config --bindir`, then the versioned directories where
    /// Debian/Ubuntu (`/usr/lib/postgresql/N/bin`) and other systems put them.
    pub fn find() -> anyhow::Result<Self> {
        Self::find_in(
            std::env::var_os("PG_BINDIR"),
            std::env::var_os("PATH"),
            &[
                "/usr/lib/postgresql",
                "/usr/local/lib/postgresql",
                "/opt/homebrew/opt",
            ],
            &["/usr/local/pgsql/bin", "/usr/pgsql/bin"],
        )
    }

    fn find_in(
        pg_bindir: Option<std::ffi::OsString>,
        path: Option<std::ffi::OsString>,
        versioned_roots: &[&str],
        fixed: &[&str],
    ) -> anyhow::Result<Self> {
        let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
        if let Some(dir) = pg_bindir.map(PathBuf::from) {
            if has_both(&dir) {
                return Ok(Self { bindir: dir });
            }
            bail!(
                "PG_BINDIR={} does not contain initdb and postgres",
                dir.display()
            );
        }
        if let Some(path) = path.clone() {
            for dir in std::env::split_paths(&path) {
                if has_both(&dir) {
                    // Follow symlinks (e.g. /usr/local/bin/postgres) to the real bindir.
                    let real = fs::canonicalize(dir.join("postgres"))
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                        .filter(|d| has_both(d));
                    return Ok(Self {
                        bindir: real.unwrap_or(dir),
                    });
                }
            }
        }
        let pg_config = path.as_ref().and_then(|p| {
            std::env::split_paths(p)
                .map(|d| d.join("pg_config"))
                .find(|c| c.is_file())
        });
        if let Some(out) = pg_config.and_then(|c| Command::new(c).arg("--bindir").output().ok()) {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_both(&dir) {
                return Ok(Self { bindir: dir });
            }
        }
        let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
        for root in versioned_roots {
            if let Ok(entries) = fs::read_dir(root) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let version = name
                        .trim_start_matches("postgresql@")
                        .trim_start_matches("postgresql");
                    if let Ok(v) = version.split('.').next().unwrap_or("").parse::<u32>() {
                        let bin = e.path().join("bin");
                        if has_both(&bin) {
                            versioned.push((v, bin));
                        }
                    }
                }
            }
        }
        for dir in fixed {
            if has_both(Path::new(dir)) {
                versioned.push((0, dir.into()));
            }
        }
        versioned.sort();
        if let Some((_, bindir)) = versioned.pop() {
            return Ok(Self { bindir });
        }
        bail!(
            "no PostgreSQL server binaries found (looked for `initdb` and `postgres` on PATH, \
             in `pg_config --bindir` and in /usr/lib/postgresql/*/bin). Install the PostgreSQL \
             server (Debian/Ubuntu: `apt-get install postgresql`), or set DATABASE_URL to an \
             existing PostgreSQL server."
        )
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The account the cluster runs as: ourselves, or an unprivileged one when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: Uid,
    gid: Gid,
    name: String,
    home: PathBuf,
}

impl RunAs {
    fn decide() -> anyhow::Result<Option<Self>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let lookup = |name: &str| -> anyhow::Result<Option<Self>> {
            Ok(User::from_name(name)
                .context("looking up system users")?
                .map(|u| Self {
                    uid: u.uid,
                    gid: u.gid,
                    name: u.name,
                    home: u.dir,
                }))
        };
        for name in ["postgres", "loopline"] {
            if let Some(r) = lookup(name)? {
                return Ok(Some(r));
            }
        }
        // No PostgreSQL account on this machine: make a dedicated system account rather
        // than borrow a shared one such as `nobody` (with trust auth on the socket, any
        // process of that account could otherwise reach the database).
        let created = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "loopline",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if created {
            tracing::info!("created the system account `loopline` to run PostgreSQL");
            if let Some(r) = lookup("loopline")? {
                return Ok(Some(r));
            }
        }
        bail!(
            "Loopline runs as root and PostgreSQL refuses to; there is no `postgres` account to \
             run it as and `useradd --system loopline` failed. Create an unprivileged account \
             named postgres or loopline, or run Loopline as an ordinary user."
        )
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid.as_raw())
            .gid(self.gid.as_raw())
            .env("HOME", &self.home)
            .env("USER", &self.name);
    }
}

impl EmbeddedPostgres {
    /// Starts (initialising first if needed) the cluster. Blocking: call it from a thread
    /// that is allowed to block.
    pub fn start(opts: &EmbeddedOptions) -> anyhow::Result<Self> {
        let bins = PgBinaries::find()?;
        let cluster_dir = absolute(&opts.cluster_dir)?;
        let parent = cluster_dir
            .parent()
            .context("the data directory needs a parent directory")?
            .to_path_buf();
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;

        let lock = acquire_lock(&cluster_dir)?;
        let run_as = RunAs::decide()?;
        if let Some(r) = &run_as {
            check_reachable(&parent, r)?;
        }

        if !cluster_dir.join("PG_VERSION").is_file() {
            init_cluster(&bins, &cluster_dir, run_as.as_ref(), opts.ephemeral)?;
        } else if let Some(r) = &run_as {
            chown_tree_if_needed(&cluster_dir, r)?;
        }
        stop_orphan(&cluster_dir)?;

        let socket_dir = socket_dir_for(&cluster_dir, run_as.as_ref())?;
        let log_path = parent.join(format!(
            "{}.log",
            cluster_dir
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "postgres".into())
        ));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;

        let mut cmd = Command::new(bins.bin("postgres"));
        cmd.arg("-D")
            .arg(&cluster_dir)
            .arg("-k")
            .arg(&socket_dir)
            .arg("-p")
            .arg(PORT.to_string());
        let max_conn = opts.max_connections.to_string();
        let memory = MemorySettings::for_total(total_memory_bytes());
        let mut settings: Vec<(&str, &str)> = vec![
            ("listen_addresses", ""),
            ("unix_socket_permissions", "0700"),
            ("max_connections", &max_conn),
            ("shared_buffers", &memory.shared_buffers),
            ("effective_cache_size", &memory.effective_cache_size),
            ("work_mem", "16MB"),
            ("maintenance_work_mem", &memory.maintenance_work_mem),
            // WAL segments kept for reuse however quiet the last hours were (PostgreSQL's
            // default keeps 80 MB once its estimate of the WAL between checkpoints has
            // decayed). A burst after a quiet spell, the clicks after a campaign, then
            // reuses segments instead of creating and zero-filling a new 16 MB one on
            // a commit's path: 16-22 ms for every commit waiting on it, about once a
            // second at full click rate (docs/BENCHMARKS.md, click). Disk is only taken
            // once that much WAL has been written.
            ("min_wal_size", "512MB"),
        ];
        if opts.ephemeral {
            settings.extend([
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ]);
        }
        for (k, v) in settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let Some(r) = &run_as {
            r.apply(&mut cmd);
        }
        // SAFETY: prctl is async-signal-safe; it runs in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
            });
        }

        // The parent-death signal fires when the *thread* that forked the child exits, so
        // the postmaster is spawned by a thread that lives exactly as long as it does.
        let (pid_tx, pid_rx) = mpsc::channel::<std::io::Result<i32>>();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("postgres-supervisor".into())
            .spawn(move || {
                match cmd.spawn() {
                    Ok(mut child) => {
                        let _ = pid_tx.send(Ok(child.id() as i32));
                        let _ = child.wait();
                    }
                    Err(e) => {
                        let _ = pid_tx.send(Err(e));
                    }
                }
                let _ = exit_tx.send(());
            })?;
        let pid = pid_rx
            .recv()
            .context("postgres supervisor thread died")?
            .context("starting postgres")?;
        let mut pg = Self {
            cluster_dir,
            socket_dir,
            pid: Some(pid),
            exited: std::sync::Mutex::new(exit_rx),
            _lock: lock,
        };
        pg.wait_ready(&log_path)?;
        Ok(pg)
    }

    /// Ready when the postmaster reports `ready` in its pid file (line 8, PM_STATUS)
    /// and the socket exists.
    fn wait_ready(&mut self, log_path: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid_file = self.cluster_dir.join("postmaster.pid");
        let socket = self.socket_dir.join(format!(".s.PGSQL.{PORT}"));
        loop {
            if self.exited().try_recv().is_ok() {
                self.pid = None;
                bail!(
                    "PostgreSQL exited during start-up. Last lines of {}:\n{}",
                    log_path.display(),
                    tail(log_path, 15)
                );
            }
            let ready = fs::read_to_string(&pid_file)
                .map(|c| {
                    c.lines().nth(7).is_some_and(|l| l.trim() == "ready")
                        && c.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) == self.pid
                })
                .unwrap_or(false);
            if ready && socket.exists() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL did not become ready within 60 s. Last lines of {}:\n{}",
                    log_path.display(),
                    tail(log_path, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn exited(&self) -> std::sync::MutexGuard<'_, mpsc::Receiver<()>> {
        self.exited.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connection options for a database in this cluster (over the Unix socket).
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `postgresql://` URL for this cluster's socket, e.g. to hand to `DATABASE_URL`.
    pub fn url(&self, database: &str) -> String {
        let host: String = self
            .socket_dir
            .to_string_lossy()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("postgresql://{SUPERUSER}@localhost:{PORT}/{database}?host={host}")
    }

    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Fast shutdown (rolls back open transactions, checkpoints, exits); waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.pid.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        if self.exited().recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            let _ = self.exited().recv_timeout(Duration::from_secs(10));
            bail!("PostgreSQL (pid {pid}) did not stop within 60 s; sent SIGQUIT");
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %format!("{e:#}"), "stopping the embedded PostgreSQL");
        }
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// `<cluster>.lock` beside the cluster, held with `flock` for the life of the process.
fn acquire_lock(cluster_dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = cluster_dir.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked.set_len(0)?;
            write!(&mut *locked, "{}", std::process::id())?;
            Ok(locked)
        }
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another Loopline (pid {}) is already using the database in {}. Stop it first, or \
                 point this one elsewhere with LOOPLINE_DATA_DIR (or DATABASE_URL).",
                holder.trim(),
                cluster_dir.display()
            )
        }
    }
}

/// PostgreSQL, running as `run_as`, must be able to walk down to the data directory.
fn check_reachable(dir: &Path, run_as: &RunAs) -> anyhow::Result<()> {
    for ancestor in dir.ancestors() {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let reachable = mode & 0o001 != 0
            || (meta.uid() == run_as.uid.as_raw() && mode & 0o100 != 0)
            || (meta.gid() == run_as.gid.as_raw() && mode & 0o010 != 0);
        if !reachable {
            bail!(
                "Loopline runs as root, so PostgreSQL runs as the `{}` account, which cannot enter {} \
                 (mode {:o}). Set LOOPLINE_DATA_DIR to a directory it can reach (for example \
                 /var/lib/loopline), or run Loopline as an ordinary user.",
                run_as.name,
                ancestor.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

fn init_cluster(
    bins: &PgBinaries,
    cluster_dir: &Path,
    run_as: Option<&RunAs>,
    ephemeral: bool,
) -> anyhow::Result<()> {
    let tmp = cluster_dir.with_extension("initdb-tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing leftover {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))?;
    if let Some(r) = run_as {
        nix::unistd::chown(&tmp, Some(r.uid), Some(r.gid))?;
    }
    let mut cmd = Command::new(bins.bin("initdb"));
    cmd.arg("-D").arg(&tmp).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
    ]);
    if ephemeral {
        cmd.arg("--no-sync");
    }
    cmd.stdin(Stdio::null());
    if let Some(r) = run_as {
        r.apply(&mut cmd);
        cmd.current_dir(&tmp);
    }
    let out = cmd.output().context("running initdb")?;
    if !out.status.success() {
        bail!(
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::rename(&tmp, cluster_dir)
        .with_context(|| format!("moving the new cluster into {}", cluster_dir.display()))?;
    tracing::info!(dir = %cluster_dir.display(), "initialised a private PostgreSQL cluster");
    Ok(())
}

/// When Loopline moves from an ordinary user to root (or the other way), the data files
/// must belong to the account PostgreSQL runs as.
fn chown_tree_if_needed(dir: &Path, run_as: &RunAs) -> anyhow::Result<()> {
    if fs::metadata(dir)?.uid() == run_as.uid.as_raw() {
        return Ok(());
    }
    tracing::info!(dir = %dir.display(), user = %run_as.name, "handing the data directory to the PostgreSQL account");
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", run_as.uid, run_as.gid))
        .arg(dir)
        .status()
        .context("running chown")?;
    if !status.success() {
        bail!("could not chown {} to {}", dir.display(), run_as.name);
    }
    Ok(())
}

/// We hold the Loopline lock, so a live postmaster on this directory was left behind by
/// a Loopline that was killed: stop it. A dead one's pid file is cleared.
fn stop_orphan(cluster_dir: &Path) -> anyhow::Result<()> {
    let pid_file = cluster_dir.join("postmaster.pid");
    let Ok(content) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let Some(pid) = content
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        let _ = fs::remove_file(&pid_file);
        return Ok(());
    };
    // Ours only if that process is a postmaster whose working directory is this cluster
    // (a reused pid could belong to anything, even the system's own PostgreSQL).
    let ours = fs::canonicalize(format!("/proc/{pid}/cwd")).ok()
        == fs::canonicalize(cluster_dir).ok()
        && fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("postgres"));
    if ours && kill(Pid::from_raw(pid), None).is_ok() {
        tracing::warn!(
            pid,
            "stopping a PostgreSQL left running by a previous Loopline"
        );
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while kill(Pid::from_raw(pid), None).is_ok() {
            if Instant::now() > deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
                std::thread::sleep(Duration::from_secs(2));
                if kill(Pid::from_raw(pid), None).is_ok() {
                    bail!(
                        "a PostgreSQL (pid {pid}) is still running on {} and does not stop; stop it by hand",
                        cluster_dir.display()
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if pid_file.exists() {
        tracing::warn!("removing a stale postmaster.pid");
        fs::remove_file(&pid_file)
            .with_context(|| format!("removing stale {}", pid_file.display()))?;
    }
    Ok(())
}

/// Unix socket paths are limited to ~107 bytes; deep data directories get a short
/// private socket directory under /tmp instead.
fn socket_dir_for(cluster_dir: &Path, run_as: Option<&RunAs>) -> anyhow::Result<PathBuf> {
    if cluster_dir.join(".s.PGSQL.5432.lock").as_os_str().len() < 100 {
        return Ok(cluster_dir.to_path_buf());
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(cluster_dir.as_os_str().as_encoded_bytes());
    let short: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("loopline-pg-{short}"));
    let owner = run_as.map(|r| r.uid).unwrap_or_else(Uid::effective);
    match fs::symlink_metadata(&dir) {
        Ok(meta) => {
            // /tmp is shared: accept only our own private directory, never a symlink or
            // something another account planted.
            if !meta.file_type().is_dir()
                || meta.uid() != owner.as_raw()
                || meta.permissions().mode() & 0o077 != 0
            {
                bail!(
                    "{} exists but is not a private directory of uid {owner}; remove it, or use a \
                     shorter LOOPLINE_DATA_DIR path",
                    dir.display()
                );
            }
        }
        Err(_) => {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            if let Some(r) = run_as {
                nix::unistd::chown(&dir, Some(r.uid), Some(r.gid))?;
            }
        }
    }
    Ok(dir)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Memory settings sized to the machine: PostgreSQL's defaults (128 MB of shared
/// buffers) make a million-subscriber segment count read the table from the kernel's
/// cache on every run. An eighth of memory for buffers (between 128 MB and 4 GB) leaves
/// the rest to Loopline and the OS; PostgreSQL touches buffer pages only as it uses them.
struct MemorySettings {
    shared_buffers: String,
    effective_cache_size: String,
    maintenance_work_mem: String,
}

impl MemorySettings {
    fn for_total(total: Option<u64>) -> Self {
        const MB: u64 = 1024 * 1024;
        let total_mb = total.map(|t| t / MB).unwrap_or(1024);
        let shared = (total_mb / 8).clamp(128, 4096);
        Self {
            shared_buffers: format!("{shared}MB"),
            effective_cache_size: format!("{}MB", (total_mb / 2).max(shared)),
            maintenance_work_mem: format!("{}MB", (total_mb / 32).clamp(64, 1024)),
        }
    }
}

/// Total memory from /proc/meminfo, or the cgroup limit when that is lower.
fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(limit.map_or(kb * 1024, |l| l.min(kb * 1024)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_settings_scale_with_the_machine_within_bounds() {
        let gib = 1024 * 1024 * 1024;
        let small = super::MemorySettings::for_total(Some(512 * 1024 * 1024));
        assert_eq!(small.shared_buffers, "128MB");
        let this = super::MemorySettings::for_total(Some(24 * gib));
        assert_eq!(
            (
                this.shared_buffers.as_str(),
                this.effective_cache_size.as_str()
            ),
            ("3072MB", "12288MB")
        );
        assert_eq!(
            super::MemorySettings::for_total(Some(256 * gib)).shared_buffers,
            "4096MB"
        );
        assert_eq!(
            super::MemorySettings::for_total(None).shared_buffers,
            "128MB"
        );
    }

    use super::*;

    #[test]
    fn without_binaries_the_error_says_what_to_install_or_set() {
        let empty = std::env::temp_dir().join("loopline-no-pg-here");
        let err = PgBinaries::find_in(
            None,
            Some(empty.clone().into_os_string()),
            &[empty.to_str().unwrap()],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn a_wrong_pg_bindir_is_named() {
        let err = PgBinaries::find_in(Some("/nowhere/bin".into()), None, &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PG_BINDIR=/nowhere/bin"), "{err}");
    }
}
