//! The two front doors: CNI mode (`cni_main`, env + stdin as the runtime gives them) and the
//! command line (`plexus version`, `plexus exec ...`), which builds the same invocation and
//! calls the same commands.

mod demo;
mod table;

use crate::commands::{self, NETWORKS_ANNOTATION, Report};
use crate::conf::PlexusConf;
use crate::env::{Command, Invocation};
use crate::store::{Nad, NetworkStore, Pod, StoreError};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// CNI mode on this process's environment, stdin and stdout. A CNI variable that is not
/// UTF-8 is refused (code 4) rather than read as unset; an answer that cannot be written
/// (stdout closed or full) ends in exit status 1, never a panic, and an ADD whose result was
/// lost that way stays journaled, so the DEL the runtime sends next undoes it.
pub fn cni_process() -> ExitCode {
    let (code, stdout) = match crate::env::check_utf8(|k| std::env::var_os(k)) {
        Err(e) => (1, Some(crate::Error::from(e).to_object("").to_json())),
        Ok(()) => cni_main(|k| std::env::var(k).ok(), &mut std::io::stdin().lock()),
    };
    if let Some(out) = stdout
        && let Err(e) = crate::output::stdout(format_args!("{out}\n"))
    {
        tracing::error!(error = %e, "writing the answer to stdout failed");
        return ExitCode::from(1);
    }
    ExitCode::from(code)
}

/// Runs one CNI operation. Returns the exit code and what goes on stdout (a result, a
/// VERSION answer, or an error object). With `daemonSocketDir` in the conf, the node daemon
/// runs it (docs/daemon.md), and this process only forwards it.
pub fn cni_main(
    get: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> (u8, Option<String>) {
    let inv = match Invocation::from_env(&get) {
        Ok(i) => i,
        Err(e) => return env_error(e),
    };
    let mut buf = Vec::new();
    let limit = cni::netconf::MAX_CONF_BYTES as u64 + 1;
    if let Err(e) = stdin.take(limit).read_to_end(&mut buf) {
        let obj = cni::ErrorObject::new(cni::Code::Io, format!("read stdin: {e}"), "");
        return (1, Some(obj.to_json()));
    }
    let conf = match prepare(&inv, &buf) {
        Ok(c) => c,
        Err(out) => return out,
    };
    crate::log::init(&conf);
    log_invoked(&inv, &conf);
    if let Some(dir) = &conf.daemon_socket_dir {
        return crate::daemon::shim::forward(dir, &inv, &conf, &get, &buf, || {
            finish(&inv, &conf, execute(&inv, &conf, None))
        });
    }
    finish(&inv, &conf, execute(&inv, &conf, None))
}

/// What a CNI_* environment that does not hold up prints.
pub fn env_error(e: crate::env::EnvError) -> (u8, Option<String>) {
    (1, Some(crate::Error::from(e).to_object("").to_json()))
}

/// Answers VERSION, or parses the conf: `Err` is the complete answer (VERSION's, or the
/// conf's error object).
pub fn prepare(inv: &Invocation, buf: &[u8]) -> Result<PlexusConf, (u8, Option<String>)> {
    let requested = || {
        cni::netconf::parse_object(buf).ok().and_then(|m| {
            m.get("cniVersion")
                .and_then(|v| v.as_str().map(String::from))
        })
    };
    if inv.command == Command::Version {
        // VERSION must answer even for a conf Plexus could not otherwise use.
        let requested = requested().unwrap_or_else(|| cni::Version::LATEST.to_string());
        return Err((0, Some(cni::Version::version_info(&requested).to_string())));
    }
    PlexusConf::parse(buf).map_err(|e| {
        let version = requested().unwrap_or_default();
        (1, Some(crate::Error::from(e).to_object(&version).to_json()))
    })
}

/// What the runtime sent, in one line: enough to replay the call by hand.
pub fn log_invoked(inv: &Invocation, conf: &PlexusConf) {
    tracing::debug!(
        command = inv.command.as_str(),
        container = inv.container_id(),
        netns = %inv.netns.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        ifname = inv.ifname.as_ref().map(|i| i.as_str()).unwrap_or_default(),
        cni_args = %crate::log::redact_args(&inv.args.to_string()),
        cni_path = %inv.cni_path,
        conf = %crate::log::redact(&serde_json::Value::Object(conf.raw.clone())),
        "invoked"
    );
}

/// A command's outcome as exit code and stdout.
pub fn finish(
    inv: &Invocation,
    conf: &PlexusConf,
    outcome: Result<Report, crate::Error>,
) -> (u8, Option<String>) {
    match outcome {
        Ok(report) => (0, report.stdout.map(|v| v.to_string())),
        Err(e) => {
            tracing::error!(command = inv.command.as_str(), container = inv.container_id(), error = %e, "failed");
            (1, Some(e.to_object(&conf.cni_version_str).to_json()))
        }
    }
}

/// Opens the store the conf names (DEL goes on without one: it works from the journal) and
/// runs the command.
fn execute(
    inv: &Invocation,
    conf: &PlexusConf,
    overlay: Option<&Overlay>,
) -> Result<Report, crate::Error> {
    // DEL and CHECK work from the journal: opening a store (parsing a manifests folder,
    // building an API client) would only slow the hot path. DEL opens one itself in the rare
    // case it must re-resolve an unreadable entry.
    let lazy = matches!(inv.command, Command::Del | Command::Check) && overlay.is_none();
    let store = match if lazy {
        Ok(None)
    } else {
        commands::open_store(conf)
    } {
        Ok(s) => s,
        Err(e) if inv.command == Command::Del => {
            tracing::warn!(error = %e, "store unavailable; DEL works from the journal");
            None
        }
        // STATUS answers in its own codes (50/51), whatever keeps the store from opening.
        Err(e) if inv.command == Command::Status => {
            return Err(crate::Error::NotReady(format!("network store: {e}")));
        }
        Err(e) => return Err(e),
    };
    match overlay {
        Some(o) => {
            let wrapped = Overlay {
                inner: store,
                pod: o.pod.clone(),
            };
            commands::run(inv, conf, Some(&wrapped))
        }
        None => commands::run(inv, conf, store.as_deref()),
    }
}

/// A store whose pod is the one given on the command line (`--pod`, `--networks`), with NADs
/// from the conf's store.
struct Overlay {
    inner: Option<Box<dyn NetworkStore>>,
    pod: Pod,
}

impl NetworkStore for Overlay {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, StoreError> {
        if namespace == self.pod.namespace && name == self.pod.name {
            return Ok(Some(self.pod.clone()));
        }
        match &self.inner {
            Some(s) => s.pod(namespace, name),
            None => Ok(None),
        }
    }
    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, StoreError> {
        match &self.inner {
            Some(s) => s.nad(namespace, name),
            None => Ok(None),
        }
    }
    fn nads(&self, refs: &[(&str, &str)]) -> Vec<Result<Option<Nad>, StoreError>> {
        match &self.inner {
            Some(s) => s.nads(refs),
            None => refs.iter().map(|_| Ok(None)).collect(),
        }
    }
    fn kind(&self) -> &'static str {
        "command-line overlay"
    }
    fn ready(&self) -> Result<(), StoreError> {
        match &self.inner {
            Some(s) => s.ready(),
            None => Ok(()),
        }
    }
    fn publish_status(&self, namespace: &str, name: &str, status: &str) -> Result<(), StoreError> {
        match &self.inner {
            Some(s) => s.publish_status(namespace, name, status),
            None => Ok(()),
        }
    }
    fn event(&self, pod: &Pod, event: &crate::store::PodEvent) -> Result<(), StoreError> {
        match &self.inner {
            Some(s) => s.event(pod, event),
            None => Ok(()),
        }
    }
}

#[derive(Parser)]
#[command(name = "plexus", version, about = "Multi-network CNI meta-plugin")]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Print the plexus version and the CNI versions it speaks.
    Version,
    /// Run a CNI operation by hand, through the same code path as the runtime's (cnitool-like).
    Exec(ExecArgs),
    /// As root: two throwaway pods on a throwaway node, attached through the built-in
    /// delegates and the embedded example manifests; pings, DELs, checks nothing is left.
    Demo {
        /// Leave the namespaces and attachments in place for inspection.
        #[arg(long)]
        keep: bool,
    },
    /// Print a generated manifest on stdout.
    Gen {
        #[arg(value_enum)]
        what: GenWhat,
    },
    /// Wrap the node's primary CNI conf into 00-plexus.conflist in the CNI conf dir.
    GenerateConfig(crate::autoconf::command::GenerateArgs),
    /// Install the binary (atomically), a kubeconfig, and the generated conf: the DaemonSet's init step.
    Install(Box<crate::autoconf::command::InstallArgs>),
    /// The node daemon (thick mode): warm caches of this node's pods and of NADs, a unix
    /// socket the shim forwards CNI calls to, metrics and health (docs/daemon.md). Runs the
    /// `plexus-daemon` binary installed next to this one, with these arguments.
    #[command(disable_help_flag = true)]
    Daemon {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GenWhat {
    /// The NetworkAttachmentDefinition CRD (crds/network-attachment-definition.yaml).
    Crd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Verb {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

#[derive(clap::Args)]
struct ExecArgs {
    verb: Verb,
    /// Network namespace: a name under /run/netns or an absolute path.
    #[arg(long)]
    netns: Option<String>,
    /// The pod, as namespace/name (or just name, in "default").
    #[arg(long)]
    pod: Option<String>,
    /// Overrides the pod's k8s.v1.cni.cncf.io/networks annotation.
    #[arg(long)]
    networks: Option<String>,
    /// The Plexus conf.
    #[arg(long, default_value = "/etc/cni/net.d/00-plexus.conf")]
    conf: PathBuf,
    /// Container ID; derived from the netns when not given.
    #[arg(long)]
    container_id: Option<String>,
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// Delegate search path.
    #[arg(long, env = "CNI_PATH", default_value = "/opt/cni/bin:/usr/lib/cni")]
    cni_path: String,
    /// For GC: the attachments that are still valid, as containerID/ifname.
    #[arg(long = "valid")]
    valid: Vec<String>,
    /// Print JSON instead of the summary table.
    #[arg(long)]
    json: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Version => {
            let versions: Vec<&str> = cni::Version::ALL.iter().map(|v| v.as_str()).collect();
            exit_status(crate::output::stdout(format_args!(
                "plexus {}\nCNI versions: {}\n",
                env!("CARGO_PKG_VERSION"),
                versions.join(", ")
            )))
        }
        CliCommand::Gen { what: GenWhat::Crd } => match crate::crd::crd_yaml() {
            Ok(yaml) => exit_status(crate::output::stdout(format_args!("{yaml}"))),
            Err(e) => {
                crate::output::stderr(format_args!("plexus: {e}\n"));
                ExitCode::from(1)
            }
        },
        CliCommand::GenerateConfig(args) => crate::autoconf::command::run_generate(&args),
        CliCommand::Install(args) => crate::autoconf::command::run_install(&args),
        CliCommand::Daemon { args } => crate::daemon::launch::exec_daemon(args),
        CliCommand::Demo { keep } => demo::run(keep),
        CliCommand::Exec(args) => match exec(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(obj) => {
                if args.json {
                    let _ = crate::output::stdout(format_args!("{}\n", obj.to_json()));
                } else {
                    crate::output::stderr(format_args!(
                        "plexus: error {}: {}\n",
                        obj.code, obj.msg
                    ));
                    if !obj.details.is_empty() {
                        crate::output::stderr(format_args!("  details: {}\n", obj.details));
                    }
                }
                ExitCode::from(1)
            }
        },
    }
}

/// Success, unless what the command printed could not be written.
fn exit_status(written: std::io::Result<()>) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::output::stderr(format_args!("plexus: write to stdout: {e}\n"));
            ExitCode::from(1)
        }
    }
}

fn exec(args: &ExecArgs) -> Result<(), cni::ErrorObject> {
    let fail = |code: cni::Code, msg: String| cni::ErrorObject::new(code, msg, "");
    let bytes = std::fs::read(&args.conf)
        .map_err(|e| fail(cni::Code::Io, format!("read {}: {e}", args.conf.display())))?;
    let mut conf = PlexusConf::parse(&bytes).map_err(|e| crate::Error::from(e).to_object(""))?;
    let netns = args.netns.as_ref().map(|n| {
        if n.starts_with('/') {
            PathBuf::from(n)
        } else {
            PathBuf::from("/run/netns").join(n)
        }
    });
    let (pod_ns, pod_name) = match args.pod.as_deref() {
        Some(p) => match p.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => ("default".to_string(), p.to_string()),
        },
        None => ("default".to_string(), "plexus-exec".to_string()),
    };
    let container_id = args.container_id.clone().unwrap_or_else(|| {
        let basis = netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(basis.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("plexus-exec-{hex}")
    });
    let verb = match args.verb {
        Verb::Add => "ADD",
        Verb::Del => "DEL",
        Verb::Check => "CHECK",
        Verb::Status => "STATUS",
        Verb::Gc => "GC",
    };
    if matches!(args.verb, Verb::Gc) {
        let valid: Vec<serde_json::Value> = args
            .valid
            .iter()
            .filter_map(|v| v.split_once('/'))
            .map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i}))
            .collect();
        conf.raw.insert(
            "cni.dev/valid-attachments".into(),
            serde_json::Value::Array(valid),
        );
    }
    let cni_args = format!("IgnoreUnknown=true;K8S_POD_NAMESPACE={pod_ns};K8S_POD_NAME={pod_name}");
    let netns_str = netns.as_ref().map(|p| p.display().to_string());
    let env = |k: &str| -> Option<String> {
        match k {
            "CNI_COMMAND" => Some(verb.to_string()),
            "CNI_CONTAINERID" => Some(container_id.clone()),
            "CNI_NETNS" => netns_str.clone(),
            "CNI_IFNAME" => Some(args.ifname.clone()),
            "CNI_ARGS" => Some(cni_args.clone()),
            "CNI_PATH" => Some(args.cni_path.clone()),
            _ => None,
        }
    };
    let inv = Invocation::from_env(env).map_err(|e| crate::Error::from(e).to_object(""))?;
    crate::log::init(&conf);
    let overlay = args.networks.as_ref().map(|n| Overlay {
        inner: None,
        pod: Pod {
            namespace: pod_ns.clone(),
            name: pod_name.clone(),
            uid: None,
            annotations: [(NETWORKS_ANNOTATION.to_string(), n.clone())].into(),
        },
    });
    let report =
        execute(&inv, &conf, overlay.as_ref()).map_err(|e| e.to_object(&conf.cni_version_str))?;
    if args.json {
        let out = serde_json::json!({
            "result": report.stdout,
            "attachments": report.attachments,
            "networkStatus": report.network_status,
        });
        crate::output::stdout(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&out).unwrap_or_default()
        ))
    } else {
        crate::output::stdout(format_args!(
            "{}",
            table::render(verb, &container_id, &report)
        ))
    }
    .map_err(|e| fail(cni::Code::Io, format!("write to stdout: {e}")))
}
