//! The command-line faces of this module: `plexus generate-config` and `plexus install`, as
//! clap argument structs and the functions the CLI calls with them.

use super::generate::{DEFAULT_OUTPUT, GenerateOptions, Generated};
use super::install::{InstallOptions, KubeconfigOptions};
use super::{AutoconfError, atomic::Written, kubeconfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The runtime's CNI conf dir: the primary is read from it and the conflist written to it.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// Use this file in the conf dir as the primary instead of the lexically first.
    #[arg(long, value_name = "FILE NAME")]
    pub primary: Option<String>,
    /// Name of the conflist written in the conf dir.
    #[arg(long, default_value = DEFAULT_OUTPUT, value_name = "FILE NAME")]
    pub output: String,
    /// Keep looking for a usable primary conf this long before failing (the primary CNI may
    /// still be starting).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub primary_timeout: u64,
    /// Conf key `kubeconfig`: the Kubernetes API store.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Conf key `manifests`: a folder of Pod and NAD manifests instead of the API.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Conf key `cniDir`: where the journal lives.
    #[arg(long)]
    pub cni_dir: Option<PathBuf>,
    /// Conf key `readinessindicatorfile`: ADD and GC wait for this file to exist.
    #[arg(long)]
    pub readiness_indicator_file: Option<PathBuf>,
    /// Conf key `readinessTimeout`: how long ADD and GC wait for it (default 45).
    #[arg(long, value_name = "SECONDS")]
    pub readiness_timeout: Option<u64>,
    /// Conf key `multusNamespace`.
    #[arg(long)]
    pub multus_namespace: Option<String>,
    /// Conf key `namespaceIsolation`.
    #[arg(long)]
    pub namespace_isolation: bool,
    /// Conf key `globalNamespaces` (comma-separated).
    #[arg(long)]
    pub global_namespaces: Option<String>,
    /// Conf key `daemonSocketDir`: the binary forwards every call to the node daemon
    /// listening there (`plexus daemon`).
    #[arg(long)]
    pub daemon_socket_dir: Option<PathBuf>,
    /// Conf key `daemonFallback`: whether ADD, CHECK, GC and STATUS run in-process while the
    /// daemon is down (DEL always does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub daemon_fallback: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// The CNI bin dir the runtime execs plugins from.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The binary to install (default: this one).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Write a kubeconfig here (and point the conf at it unless --kubeconfig says otherwise).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// The kubeconfig user's tokenFile, as the host sees it; re-read on every invocation.
    #[arg(long, default_value_t = format!("{}/token", kubeconfig::SERVICE_ACCOUNT_DIR))]
    pub token_file: String,
    /// Copy this token (the pod's projected service-account token) on every run, for hosts
    /// that cannot see the pod's /var/run/secrets.
    #[arg(long)]
    pub token_source: Option<PathBuf>,
    /// Where the copy is written, as this container sees --token-file (default: --token-file).
    #[arg(long, requires = "token_source")]
    pub token_out: Option<PathBuf>,
    /// After installing, stay up and redo the kubeconfig (token copy) and the conf every
    /// this many seconds: the DaemonSet's long-running container. Nothing is removed on exit.
    #[arg(long, value_name = "SECONDS")]
    pub refresh: Option<u64>,
    /// API server URL (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).
    #[arg(long)]
    pub server: Option<String>,
    /// CA bundle embedded in the kubeconfig.
    #[arg(long, default_value_t = format!("{}/ca.crt", kubeconfig::SERVICE_ACCOUNT_DIR))]
    pub ca_file: String,
    #[command(flatten)]
    pub generate: GenerateArgs,
}

impl GenerateArgs {
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            conf_dir: self.conf_dir.clone(),
            primary: self.primary.clone(),
            output: self.output.clone(),
            kubeconfig: self.kubeconfig.clone(),
            manifests: self.manifests.clone(),
            cni_dir: self.cni_dir.clone(),
            readiness_indicator_file: self.readiness_indicator_file.clone(),
            readiness_timeout: self.readiness_timeout.map(Duration::from_secs),
            multus_namespace: self.multus_namespace.clone(),
            namespace_isolation: self.namespace_isolation,
            global_namespaces: self.global_namespaces.clone(),
            primary_timeout: Duration::from_secs(self.primary_timeout),
            daemon_socket_dir: self.daemon_socket_dir.clone(),
            daemon_fallback: self.daemon_fallback,
        }
    }
}

impl InstallArgs {
    pub fn options(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<InstallOptions, AutoconfError> {
        let source = match &self.source {
            Some(s) => s.clone(),
            None => std::env::current_exe().map_err(|e| AutoconfError::Read {
                what: "running executable",
                path: PathBuf::from("/proc/self/exe"),
                source: e,
            })?,
        };
        let mut generate = self.generate.options();
        let kubeconfig = match &self.kubeconfig_out {
            Some(out) => {
                let server = match &self.server {
                    Some(s) => s.clone(),
                    None => kubeconfig::in_cluster_server(env).ok_or(AutoconfError::NoServer)?,
                };
                if generate.kubeconfig.is_none() {
                    generate.kubeconfig = Some(out.clone());
                }
                Some(KubeconfigOptions {
                    out: out.clone(),
                    token_file: PathBuf::from(&self.token_file),
                    token_copy: self.token_source.clone().map(|src| {
                        let dest = self
                            .token_out
                            .clone()
                            .unwrap_or_else(|| PathBuf::from(&self.token_file));
                        (src, dest)
                    }),
                    server,
                    ca_file: PathBuf::from(&self.ca_file),
                })
            }
            None => None,
        };
        Ok(InstallOptions {
            bin_dir: self.bin_dir.clone(),
            source,
            kubeconfig,
            generate,
        })
    }
}

pub fn run_generate(args: &GenerateArgs) -> ExitCode {
    match super::generate(&args.options()) {
        Ok(g) => {
            report_generated(&g);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub fn run_install(args: &InstallArgs) -> ExitCode {
    let opts = match args.options(|k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    // Blocked before any thread exists, so every thread inherits the mask and the waiter
    // below is the only one to take SIGTERM. A blocked signal also reaches a container's
    // PID 1, which drops signals it has no handler for.
    let stop = match args.refresh {
        Some(secs) if secs > 0 => match stop_channel() {
            Ok(rx) => Some((rx, Duration::from_secs(secs))),
            Err(e) => {
                crate::output::stderr(format_args!("plexus: error: block SIGTERM/SIGINT: {e}\n"));
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    match super::install(&opts) {
        Ok(i) => {
            crate::output::status(format_args!(
                "plexus: {} {}\n",
                verb(i.binary_written),
                i.binary.display()
            ));
            if let Some((path, w)) = &i.kubeconfig {
                crate::output::status(format_args!("plexus: {} {}\n", verb(*w), path.display()));
            }
            report_generated(&i.generated);
        }
        Err(e) => return fail(&e),
    }
    let Some((rx, every)) = stop else {
        return ExitCode::SUCCESS;
    };
    // Keeps the token copy fresh and the conf in step with the primary. Errors are logged
    // and retried next round (no waiting for a primary within a round): the files already
    // written stay, a conf is never removed.
    let mut generate = opts.generate.clone();
    generate.primary_timeout = Duration::ZERO;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
        if let Some(k) = &opts.kubeconfig {
            match super::install::write_kubeconfig(k) {
                Ok(Written::Replaced) => {
                    crate::output::status(format_args!("plexus: wrote {}\n", k.out.display()))
                }
                Ok(Written::Unchanged) => {}
                Err(e) => crate::output::stderr(format_args!("plexus: error: {e}\n")),
            }
        }
        match super::generate(&generate) {
            Ok(g) if g.written == Written::Replaced => report_generated(&g),
            Ok(_) => {}
            Err(e) => crate::output::stderr(format_args!(
                "plexus: error: {e} (the previous conf stays)\n"
            )),
        }
    }
    crate::output::status(format_args!(
        "plexus: stopping; {} stays\n",
        opts.generate.output
    ));
    ExitCode::SUCCESS
}

/// A channel that receives once SIGTERM or SIGINT arrives.
fn stop_channel() -> nix::Result<std::sync::mpsc::Receiver<()>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            let _ = tx.send(());
        }
    });
    Ok(rx)
}

fn report_generated(g: &Generated) {
    for s in &g.skipped {
        crate::output::stderr(format_args!(
            "plexus: warning: skipped {}: {}\n",
            s.file, s.reason
        ));
    }
    if !g.ahead.is_empty() {
        crate::output::stderr(format_args!(
            "plexus: warning: {} sort(s) before {}: the runtime loads the first conf, so it will not use plexus\n",
            g.ahead.join(", "),
            g.output.display()
        ));
    }
    crate::output::status(format_args!(
        "plexus: {} {} (primary {})\n",
        verb(g.written),
        g.output.display(),
        g.primary
    ));
}

fn verb(w: Written) -> &'static str {
    match w {
        Written::Replaced => "wrote",
        Written::Unchanged => "unchanged",
    }
}

fn fail(e: &AutoconfError) -> ExitCode {
    crate::output::stderr(format_args!("plexus: error: {e}\n"));
    ExitCode::from(1)
}
