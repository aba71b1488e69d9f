//! Wiring: database, signing key, router, job worker, signals and the shutdown order
//! (stop accepting → finish in-flight requests → let jobs finish or hand back their
//! claims → close the pool → stop the embedded PostgreSQL last).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::{SharedClock, SystemClock},
    config::Config,
    db::Database,
    delivery::sender::{SendSettings, Sender, Transport},
    jobs::{JobRegistry, JobRunner},
    signing::SigningKey,
    web::{self, AppState},
};

/// Everything a running Loopline is made of, minus the listener.
pub struct App {
    pub state: AppState,
    pub router: Router,
    pub jobs: JobRunner,
    pub sender: Sender,
}

/// Job kinds Loopline knows. Each capability registers its handlers here.
pub fn job_registry() -> JobRegistry {
    use crate::audience::{bulk, imports};
    JobRegistry::new()
        .register(imports::IMPORT_JOB, imports::run_job)
        .register(bulk::BULK_JOB, bulk::run_job)
}

/// Builds the application on an open, migrated pool.
pub async fn build(
    pool: PgPool,
    config: Config,
    clock: SharedClock,
    registry: JobRegistry,
) -> anyhow::Result<App> {
    let keys = SigningKey::load_or_create(&pool, config.secret_key.as_ref())
        .await
        .context("loading the signing key")?;
    let jobs = JobRunner::new(
        pool.clone(),
        clock.clone(),
        registry,
        config.job_concurrency,
    );
    let transport = match &config.smtp {
        Some(smtp) => Transport::from_url(
            smtp.url.expose(),
            config.mail.concurrency as u32,
            config.mail.smtp_timeout,
            config.mail.smtp_ca.as_deref(),
        )?,
        None => Transport::Capture,
    };
    let sender = Sender::new(
        pool.clone(),
        clock.clone(),
        keys.clone(),
        transport,
        SendSettings {
            concurrency: config.mail.concurrency,
            per_second: config.mail.per_second,
            per_hour: config.mail.per_hour,
            lease: chrono::Duration::from_std(config.mail.lease)
                .context("SEND_LEASE_SECS is too large")?,
            from_email: config.mail.from_email.clone(),
            unsubscribe_mailto: config
                .mail
                .unsubscribe_mailto
                .clone()
                .unwrap_or_else(|| config.mail.from_email.clone()),
            from_name: config.mail.from_name.clone(),
            public_url: config.public_url.clone(),
            dkim: config.mail.dkim.clone(),
            echo_to: config.webhooks.echoing(),
        },
    );
    let state = AppState::new(pool, config, clock, keys);
    let router = web::router(state.clone());
    Ok(App {
        state,
        router,
        jobs,
        sender,
    })
}

/// Serves HTTP until `shutdown` fires, then lets in-flight requests finish (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server =
        axum::serve(listener, service).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => r.context("HTTP server failed"),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("in-flight requests did not finish within the shutdown grace; closing");
            Ok(())
        }
    }
}

/// `loopline serve`: the always-on process.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let db = Database::open(&config).await?;
    let shutdown = CancellationToken::new();
    let result = run_on(&db, config, shutdown).await;
    db.close().await;
    result
}

async fn run_on(db: &Database, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let grace = config.shutdown_grace;
    let addr = config.listen_addr;
    let public = config.public_url.clone();
    if let Some(dkim) = &config.mail.dkim {
        tracing::info!(
            algorithm = dkim.algorithm(),
            dns_name = %dkim.dns_name(),
            txt_record = %dkim.dns_record(),
            "DKIM signing is on; publish this TXT record"
        );
    }
    let app = build(db.pool.clone(), config, clock, job_registry()).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (set LISTEN_ADDR to use another address)"))?;
    tracing::info!(%addr, url = %public, "Loopline is listening");

    tokio::spawn(watch_signals(shutdown.clone()));
    tokio::spawn(warm_live_index(app.state.clone()));
    let worker = tokio::spawn(app.jobs.clone().run(shutdown.clone(), grace));
    let sender = tokio::spawn(app.sender.clone().run(shutdown.clone()));
    let served = serve(listener, app.router, shutdown.clone(), grace).await;
    shutdown.cancel();
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "job worker failed"),
        Err(e) => tracing::error!(error = %e, "job worker panicked"),
    }
    if let Err(e) = sender.await {
        tracing::error!(error = %e, "sender panicked");
    }
    tracing::info!("stopped serving");
    served
}

/// Builds the live index in the background, so the first segment previews and searches
/// after a start are answered from memory too (until then they go to SQL).
async fn warm_live_index(state: AppState) {
    let built = async {
        let fields = crate::audience::segments::field_defs(&state.pool).await?;
        state.live_index.build_now(&state.pool, &fields).await
    };
    if let Err(e) = built.await {
        tracing::warn!(error = %e, "building the live index failed; counting and searching in SQL");
    }
}

/// Ctrl-C or SIGTERM begins a graceful shutdown; a second one is left to the OS.
async fn watch_signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}
