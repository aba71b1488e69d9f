//! Shared set-up for benchmarks: a private, durable PostgreSQL cluster in a temp dir.

#![allow(dead_code)]

use std::path::PathBuf;

use loopline::db::{
    self,
    embedded::{EmbeddedOptions, EmbeddedPostgres},
};
use sqlx::PgPool;

pub struct Bench {
    pub pg: EmbeddedPostgres,
    pub pool: PgPool,
    pub dir: PathBuf,
}

pub async fn start(name: &str, pool_size: u32) -> anyhow::Result<Bench> {
    let dir = std::env::temp_dir().join(format!("loopline-bench-{name}-{}", std::process::id()));
    let opts = EmbeddedOptions {
        cluster_dir: dir.join("postgres"),
        ephemeral: false,
        max_connections: 100,
    };
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&opts)).await??;
    db::ensure_database(pg.connect_options("postgres"), "bench").await?;
    let pool = db::pool(pg.connect_options("bench"), pool_size).await?;
    db::migrate(&pool).await?;
    Ok(Bench { pg, pool, dir })
}

impl Bench {
    pub async fn stop(self) {
        self.pool.close().await;
        drop(self.pg);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
