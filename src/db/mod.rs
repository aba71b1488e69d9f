//! The database: connection pool, the embedded private cluster, migrations, readiness.

pub mod copy;
pub mod embedded;

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    Connection, Executor, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{Config, DatabaseConfig};
use embedded::{APP_DATABASE, EmbeddedOptions, EmbeddedPostgres};

/// Migrations are compiled into the binary and applied at start.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The pool, plus the embedded cluster when Loopline runs its own.
pub struct Database {
    pub pool: PgPool,
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects (starting the embedded cluster when `DATABASE_URL` is unset) and migrates.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.database {
            DatabaseConfig::Url(url) => {
                let opts: PgConnectOptions = url
                    .expose()
                    .parse()
                    .context("DATABASE_URL could not be parsed")?;
                (opts, None)
            }
            DatabaseConfig::Embedded => {
                let opts = EmbeddedOptions {
                    cluster_dir: config.data_dir.join("postgres"),
                    ephemeral: false,
                    max_connections: (config.db_max_connections * 2 + 10).max(100),
                };
                let pg =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&opts)).await??;
                ensure_database(pg.connect_options("postgres"), APP_DATABASE).await?;
                (pg.connect_options(APP_DATABASE), Some(pg))
            }
        };
        let pool = pool(options, config.db_max_connections).await?;
        migrate(&pool).await?;
        Ok(Self { pool, embedded })
    }

    /// Closes the pool, then stops the embedded cluster (last, after all users of it).
    pub async fn close(mut self) {
        self.pool.close().await;
        if let Some(mut pg) = self.embedded.take() {
            match tokio::task::spawn_blocking(move || pg.stop()).await {
                Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "stopping embedded PostgreSQL")
                }
                Err(e) => tracing::warn!(error = %e, "stopping embedded PostgreSQL"),
            }
        }
    }
}

/// A connection a pipeline stage keeps while it has work (the click writer, the
/// sender's recorder): the pool checks a connection with a round trip on every acquire,
/// which was a large part of a short statement's time. Released when the stage's
/// queue runs dry and after any error, so a broken connection is never reused.
pub struct Held {
    pool: PgPool,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Held {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    pub async fn get(&mut self) -> sqlx::Result<&mut sqlx::PgConnection> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    pub fn release(&mut self) {
        self.conn = None;
    }
}

/// How every pool of Loopline's is set up (the main one and the event writer's).
pub fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
}

pub async fn pool(options: PgConnectOptions, max: u32) -> anyhow::Result<PgPool> {
    pool_options(max)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// `CREATE DATABASE` unless it exists (connecting through the maintenance database).
pub async fn ensure_database(maintenance: PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(&maintenance)
        .await
        .context("connecting to the maintenance database")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE {}", quote_ident(name));
        conn.execute(sqlx::AssertSqlSafe(sql))
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    conn.close().await?;
    Ok(())
}

/// Quotes an SQL identifier (for the few statements that cannot take parameters).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Readiness: the database answers and every embedded migration is applied.
pub async fn readiness(pool: &PgPool) -> Result<(), String> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| format!("database unreachable: {e}"))?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("migrations not applied: {missing:?}"))
    }
}
