//! `plexus daemon`, the node daemon of thick mode: reflector caches of this node's pods and of
//! NADs over one API connection, a unix socket the shim forwards CNI calls to, events off the
//! critical path, Prometheus metrics and health endpoints, and the conf written for the shim.
//!
//! The daemon adds caching and concurrency, never a second implementation: each call goes
//! through the same library entry as the one-shot binary (`call`), with the cached store.
//! Threads: the main thread drives a current-thread runtime (socket, API, metrics); each CNI
//! call runs on a thread of its own that never changes netns (built-in delegates enter the
//! pod's netns on scoped threads of their own, exec'd ones are spawned from the call thread,
//! in the host netns); one thread posts events.
//!
//! The one-shot path only ever touches `protocol` and `shim`, and the `plexus` binary links
//! nothing else of this module: the daemon runs as the `plexus-daemon` binary (`launch`).

mod cache;
mod call;
mod client;
mod confwatch;
mod hotplug;
pub mod launch;
mod metrics;
pub mod protocol;
mod reconcile;
mod server;
pub mod shim;
mod store;

use crate::autoconf::command::GenerateArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the socket goes when `--daemon-socket-dir` is not given.
pub const DEFAULT_SOCKET_DIR: &str = "/run/plexus";

#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// This node's name (the pod's `spec.nodeName`, from the downward API): only its pods are
    /// cached.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The kubeconfig the daemon itself uses; default: the pod's service account (in-cluster).
    /// `--kubeconfig` is the conf key the shim's in-process fallback uses.
    #[arg(long)]
    pub api_kubeconfig: Option<PathBuf>,
    /// Prometheus `/metrics`, `/healthz` and `/readyz`; `off` serves none.
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub metrics_address: String,
    /// CNI calls run at once; more wait for a slot.
    #[arg(long, default_value_t = 16)]
    pub max_calls: usize,
    /// How long a call waits for a slot before it gets code 11.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub queue_wait: u64,
    /// Events waiting to be posted; when full, new ones are dropped (and counted).
    #[arg(long, default_value_t = 256)]
    pub event_queue: usize,
    /// On SIGTERM, how long calls in flight may still take.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// `error`, `warning`, `info` or `debug`; logs go to stderr.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Do not write the conf (it is written by other means): readiness then waits for
    /// caches only, and the GC reconciler does not run.
    #[arg(long)]
    pub no_conf: bool,
    /// How often the GC reconciler walks the journal; 0 turns it off.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub gc_interval: u64,
    /// How long a pod must have been gone from the API before the reconciler removes its
    /// attachments.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub gc_grace: u64,
    /// Do not hot-plug: a change of a running pod's networks annotation is left alone.
    #[arg(long)]
    pub no_hotplug: bool,
    /// `CNI_PATH` of the DELs the reconciler runs and of hot-plug (the conf's `binDir` is
    /// searched first).
    #[arg(long, default_value = "/opt/cni/bin")]
    pub gc_cni_path: String,
    #[command(flatten)]
    pub generate: GenerateArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("socket dir {}: {reason}", dir.display())]
    SocketDir { dir: PathBuf, reason: String },
    #[error("socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another plexus daemon listens on {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("metrics address {address:?}: {reason}")]
    Metrics { address: String, reason: String },
    #[error("API client: {0}")]
    Client(#[from] crate::store::StoreError),
    #[error("runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What readiness depends on, shared by the socket server and `/readyz`.
#[derive(Default)]
pub struct Health {
    pub conf_written: AtomicBool,
    pub shutting_down: AtomicBool,
}

pub fn run(args: DaemonArgs) -> ExitCode {
    init_logging(&args.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&DaemonError::Runtime(e)),
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &DaemonError) -> ExitCode {
    tracing::error!(error = %e, "plexus daemon stops");
    eprintln!("plexus: error: {e}");
    ExitCode::from(1)
}

fn init_logging(level: &str) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warning" | "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

async fn serve(args: DaemonArgs) -> Result<(), DaemonError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let health = Arc::new(Health::default());
    let socket_dir = args
        .generate
        .daemon_socket_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR));
    let cni_dir = args
        .generate
        .cni_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::conf::DEFAULT_CNI_DIR));

    let opts = crate::store::KubeOptions::default();
    let (config, origin) = crate::store::load_config(args.api_kubeconfig.as_deref()).await?;
    let config = crate::store::checked_config(config, &origin, &opts)?;
    let client = client::build(&config, &origin, metrics.clone())?;
    let api =
        crate::store::KubeStore::shared(client.clone(), tokio::runtime::Handle::current(), opts);
    cache::first_contact(&client).await;
    // Hot-plug runs with the conf the daemon writes, as the reconciler does.
    let changed =
        (!args.no_conf && !args.no_hotplug).then(|| Arc::new(hotplug::Pending::default()));
    let caches = Arc::new(cache::Caches::start(
        client,
        &args.node_name,
        &metrics,
        changed.clone(),
    ));
    let events = store::EventQueue::start(args.event_queue, metrics.clone());
    let daemon = Arc::new(store::DaemonStore::new(
        caches.clone(),
        api,
        events,
        metrics.clone(),
    ));

    let listener = server::bind(&socket_dir)?;
    let socket_path = socket_dir.join(protocol::SOCKET_NAME);
    tracing::info!(socket = %socket_path.display(), node = %args.node_name, api = %origin, "plexus daemon listening");

    let endpoints = metrics::Endpoints {
        metrics: metrics.clone(),
        caches: caches.clone(),
        health: health.clone(),
        cni_dir: cni_dir.clone(),
        needs_conf: !args.no_conf,
    };
    start_endpoints(&args.metrics_address, endpoints).await?;
    if args.no_conf {
        health.conf_written.store(true, Ordering::Relaxed);
    } else {
        start_conf(&args, &socket_dir, &daemon, &metrics, &health, changed)?;
    }

    let ctx = Arc::new(server::Context {
        daemon,
        metrics: metrics.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(args.max_calls.max(1))),
        max_calls: args.max_calls.max(1),
        queue_wait: Duration::from_secs(args.queue_wait),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let accept = tokio::spawn(server::serve(listener, ctx.clone(), stop_rx));

    wait_for_signal().await;
    tracing::info!("stopping: no new calls; the conf stays");
    health.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = accept.await;
    // Shims now find no socket and run DEL (and, by default, the rest) in-process.
    let _ = std::fs::remove_file(&socket_path);
    ctx.drain(Duration::from_secs(args.shutdown_grace)).await;
    Ok(())
}

/// The metrics and health endpoints, unless `address` is `off`.
async fn start_endpoints(address: &str, state: metrics::Endpoints) -> Result<(), DaemonError> {
    let Some(addr) = metrics_address(address)? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::Metrics {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics and health endpoints");
    tokio::spawn(metrics::serve(listener, Arc::new(state)));
    Ok(())
}

/// The threads that keep the shim's conf written, hot-plug unless turned off, and, with a GC
/// interval, the reconciler.
fn start_conf(
    args: &DaemonArgs,
    socket_dir: &std::path::Path,
    daemon: &Arc<store::DaemonStore>,
    metrics: &Arc<metrics::Metrics>,
    health: &Arc<Health>,
    changed: Option<Arc<hotplug::Pending>>,
) -> Result<(), DaemonError> {
    let mut opts = args.generate.options();
    opts.daemon_socket_dir = Some(socket_dir.to_path_buf());
    if let Some(pending) = changed {
        let hotplugger = hotplug::Hotplugger {
            daemon: daemon.clone(),
            metrics: metrics.clone(),
            pending,
            conf_file: opts.conf_dir.join(&opts.output),
            cni_path: args.gc_cni_path.clone(),
        };
        std::thread::Builder::new()
            .name("hotplug".into())
            .spawn(move || hotplugger.run())
            .map_err(DaemonError::Runtime)?;
    }
    if args.gc_interval > 0 {
        let reconciler = reconcile::Reconciler {
            daemon: daemon.clone(),
            metrics: metrics.clone(),
            conf_file: opts.conf_dir.join(&opts.output),
            cni_path: args.gc_cni_path.clone(),
            interval: Duration::from_secs(args.gc_interval),
            grace: Duration::from_secs(args.gc_grace),
        };
        std::thread::Builder::new()
            .name("gc-reconciler".into())
            .spawn(move || reconciler.run())
            .map_err(DaemonError::Runtime)?;
    }
    let health = health.clone();
    std::thread::Builder::new()
        .name("conf".into())
        .spawn(move || confwatch::run(opts, &health))
        .map_err(DaemonError::Runtime)?;
    Ok(())
}

fn metrics_address(text: &str) -> Result<Option<SocketAddr>, DaemonError> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| DaemonError::Metrics {
        address: text.to_string(),
        reason: format!("{e}"),
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch SIGTERM/SIGINT; running until killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
