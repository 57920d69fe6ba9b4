//! Wiring: configuration → runtime → listeners → tasks, and shutdown.
//!
//! Configuration is loaded and validated before any port is bound; a bad
//! file never leaves a half-started proxy behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::{self, Config, EnvSource};
use crate::proxy::server;
use crate::rollout::controller;
use crate::runtime::Runtime;
use crate::store;

/// A started proxy: its addresses, its shared state and its tasks.
pub struct App {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub runtime: Arc<Runtime>,
    shutdown: CancellationToken,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    controller_task: JoinHandle<()>,
    fleet_task: JoinHandle<()>,
}

impl App {
    /// Binds both listeners and starts serving. `config` must come from `config_path`.
    pub async fn start(
        config: Config,
        config_path: PathBuf,
        env: Arc<dyn EnvSource + Send + Sync>,
        instance_id: Option<String>,
    ) -> anyhow::Result<App> {
        let tls = match &config.server.tls {
            Some(tls) => Some(server::tls_acceptor(tls)?),
            None => None,
        };
        let proxy_listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on server.listen {}", config.server.listen))?;
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen {}", config.admin.listen))?;
        let proxy_addr = proxy_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let instance_id = instance_id.unwrap_or_else(|| default_instance_id(proxy_addr));
        let grace = config.server.shutdown_grace;
        let store = store::open(&config.store.url).await?;
        let shutdown = CancellationToken::new();
        let runtime = Runtime::start(config, instance_id, store, shutdown.clone()).await?;
        crate::fleet::register(&runtime)
            .await
            .context("cannot register this instance in the store")?;
        crate::fleet::restore_own_windows(&runtime).await;
        if runtime.fleet.shared() {
            // A first last known state, should the store be lost before
            // anyone reads (each read is bounded by the fleet's deadline).
            runtime.remember_reads().await;
        }

        let proxy_task = tokio::spawn(server::serve(
            proxy_listener,
            tls,
            runtime.clone(),
            shutdown.clone(),
            grace,
        ));
        let state = Arc::new(AdminState {
            runtime: runtime.clone(),
            config_path,
            env,
        });
        let admin_shutdown = shutdown.clone();
        let router = admin::router(state);
        let admin_task = tokio::spawn(async move {
            let serving = axum::serve(admin_listener, router)
                .with_graceful_shutdown(admin_shutdown.cancelled_owned());
            if let Err(error) = serving.await {
                tracing::error!(%error, "admin listener failed");
            }
        });
        tokio::spawn(prune_store(runtime.clone(), shutdown.clone()));
        tokio::spawn(flush_measure(runtime.clone(), shutdown.clone()));
        let controller_task = controller::spawn(runtime.clone(), shutdown.clone());
        let fleet_task = crate::fleet::spawn(runtime.clone(), shutdown.clone());
        // The configuration is loaded and the store was reached.
        runtime.set_ready();
        tracing::info!(proxy = %proxy_addr, admin = %admin_addr, "strangler is serving");
        Ok(App {
            proxy_addr,
            admin_addr,
            runtime,
            shutdown,
            proxy_task,
            admin_task,
            controller_task,
            fleet_task,
        })
    }

    /// A token whose cancellation starts the shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until both listeners have stopped (after the shutdown token is
    /// cancelled and in-flight requests have drained).
    pub async fn wait(self) {
        let _ = self.proxy_task.await;
        // The admin API stays up while the proxy drains, then stops.
        let _ = self.admin_task.await;
        // The controller saves the windows on its way out.
        let _ = self.controller_task.await;
        // Then the fleet's lead is released, for a quick takeover.
        let _ = self.fleet_task.await;
    }

    /// Cancels and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// Hands the measured traffic to the store every 10 seconds (and once more
/// on the way out), off the request path.
async fn flush_measure(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::measure::BUCKET);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        runtime.flush_measure().await;
        if last {
            return;
        }
    }
}

/// How often old samples and aggregates are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Keeps the store within `store.retention` and `store.max_bytes`.
async fn prune_store(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let config = runtime.snapshot.load().config.clone();
        match runtime
            .store
            .store()
            .prune(config.store.retention, config.store.max_bytes)
            .await
        {
            Ok(stats) if stats.samples + stats.aggregates > 0 => {
                tracing::info!(
                    samples = stats.samples,
                    aggregates = stats.aggregates,
                    bytes = stats.bytes_after,
                    "store pruned"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not prune the store"),
        }
    }
}

fn default_instance_id(proxy_addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", proxy_addr.port())
}

/// Re-reads the configuration and swaps it in when valid. Returns a summary
/// for `POST /api/reload`, or every error found.
pub async fn reload(
    runtime: &Runtime,
    path: &Path,
    env: &(dyn EnvSource + Sync),
) -> Result<serde_json::Value, String> {
    let loaded = config::load(path, env).map_err(|errors| errors.to_string())?;
    let old = runtime.snapshot.load_full();
    let mut notes = Vec::new();
    if loaded.config.server.listen != old.config.server.listen
        || loaded.config.admin.listen != old.config.admin.listen
    {
        notes.push("listen addresses changed: they take effect at the next restart".to_string());
    }
    let routes = loaded.config.routes.len();
    let upstreams = loaded.config.upstreams.len();
    let hash = loaded.config.config_hash.clone();
    runtime
        .install(loaded.config)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(routes, upstreams, config_hash = %hash, "configuration reloaded");
    Ok(serde_json::json!({
        "status": "reloaded",
        "routes": routes,
        "upstreams": upstreams,
        "config_hash": hash,
        "warnings": loaded.warnings.iter().map(ToString::to_string).chain(notes).collect::<Vec<_>>(),
    }))
}

/// `strangler run`: serves until SIGINT/SIGTERM, reloads on SIGHUP.
pub async fn run(config_path: PathBuf, instance_id: Option<String>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let env: Arc<dyn EnvSource + Send + Sync> = Arc::new(config::ProcessEnv);
    let loaded = config::load(&config_path, env.as_ref()).map_err(ConfigFailure)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    match crate::limits::raise_open_files() {
        Ok(files) if files.before != files.now => {
            tracing::info!("open-files limit raised to the hard limit: {files}");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not raise the open-files limit"),
    }
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let app = App::start(loaded.config, config_path.clone(), env.clone(), instance_id).await?;
    let runtime = app.runtime.clone();
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match reload(&runtime, &config_path, env.as_ref()).await {
                    Ok(_) => {}
                    Err(errors) => tracing::error!("reload refused, the running configuration stays:\n{errors}"),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

/// An invalid configuration at startup (exit status 2).
#[derive(Debug)]
pub struct ConfigFailure(pub config::ConfigErrors);

impl std::fmt::Display for ConfigFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration:\n{}", self.0)
    }
}

impl std::error::Error for ConfigFailure {}
