//! The two front doors: CNI mode ([`cni_main`], env + stdin as the runtime gives them) and
//! the command line (`plexus version`, `plexus exec ...`), which builds the same request and
//! makes the same [`flow::run`] call.

mod demo;
mod table;

use crate::conf::PlexusConf;
use crate::flow::{self, Answer, NotReady, Request, Services};
use crate::report::Report;
use crate::store::{Nad, NetworkStore, Pod, StoreError};
use clap::{Parser, Subcommand, ValueEnum};
use cni::Command;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// CNI mode on this process's environment, stdin and stdout. A CNI variable that is not
/// UTF-8 is refused (code 4) rather than read as unset; an answer that cannot be written
/// (stdout closed or full) ends in exit status 1, never a panic, and an ADD whose result was
/// lost that way stays journaled, so the DEL the runtime sends next undoes it.
pub fn cni_process() -> ExitCode {
    let answer = match cni::env::check_utf8(|k| std::env::var_os(k)) {
        Err(e) => flow::refused(e),
        Ok(()) => cni_main(cni::env::process_var, &mut std::io::stdin().lock()),
    };
    if let Some(out) = answer.stdout
        && let Err(e) = crate::output::stdout(format_args!("{out}\n"))
    {
        tracing::error!(error = %e, "writing the answer to stdout failed");
        return ExitCode::from(1);
    }
    ExitCode::from(answer.exit_code)
}

/// Runs one CNI operation. With `daemonSocketDir` in the conf, the node daemon runs it
/// (docs/daemon.md), and this process only forwards it.
pub fn cni_main(get: impl Fn(&str) -> Option<String>, stdin: &mut dyn Read) -> Answer {
    let req = match Request::parse(&get, stdin) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    crate::log::init(&req.conf.log);
    req.log();
    if let Some(dir) = &req.conf.daemon.socket_dir {
        return crate::daemon::shim::forward(dir, &req, &get, || {
            flow::answer(&req, flow::run(&req, &Services::default()))
        });
    }
    flow::answer(&req, flow::run(&req, &Services::default()))
}

/// Runs the request, with the command line's pod in front of the conf's store when
/// `--networks` names the pod's networks.
fn execute(req: &Request, overlay: Option<Overlay>) -> Result<Report, crate::Error> {
    let Some(mut overlay) = overlay else {
        return flow::run(req, &Services::default());
    };
    overlay.inner = match crate::store::open(&req.conf) {
        Ok(s) => s,
        Err(e) if req.command() == Command::Del => {
            tracing::warn!(error = %e, "store unavailable; DEL works from the journal");
            None
        }
        // STATUS answers in its own codes (50/51), whatever keeps the store from opening.
        Err(e) if req.command() == Command::Status => {
            return Err(NotReady::Store(Box::new(e)).into());
        }
        Err(e) => return Err(e.into()),
    };
    flow::run(
        req,
        &Services {
            store: Some(&overlay),
        },
    )
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
    let verb = match args.verb {
        Verb::Add => Command::Add,
        Verb::Del => Command::Del,
        Verb::Check => Command::Check,
        Verb::Status => Command::Status,
        Verb::Gc => Command::Gc,
    };
    if matches!(args.verb, Verb::Gc) {
        let valid: Vec<serde_json::Value> = args
            .valid
            .iter()
            .filter_map(|v| v.split_once('/'))
            .map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i}))
            .collect();
        conf.raw.insert(
            cni::netconf::VALID_ATTACHMENTS.into(),
            serde_json::Value::Array(valid),
        );
    }
    let call = ExecCall::of(args, verb);
    crate::log::init(&conf.log);
    let req = Request::with_conf(|k| call.env(k), conf)
        .map_err(|e| crate::Error::from(e).to_object(""))?;
    let overlay = args.networks.as_ref().map(|n| Overlay {
        inner: None,
        pod: Pod {
            namespace: call.pod_ns.clone(),
            name: call.pod_name.clone(),
            uid: None,
            annotations: [(crate::annotations::NETWORKS.to_string(), n.clone())].into(),
        },
    });
    let report = execute(&req, overlay).map_err(|e| e.to_object(&req.conf.cni_version_str))?;
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
            table::render(verb, &call.container_id, &report)
        ))
    }
    .map_err(|e| fail(cni::Code::Io, format!("write to stdout: {e}")))
}

/// The CNI environment `plexus exec` makes up from its arguments.
struct ExecCall {
    verb: Command,
    container_id: String,
    netns: Option<String>,
    ifname: String,
    pod_ns: String,
    pod_name: String,
    cni_args: String,
    cni_path: String,
}

impl ExecCall {
    fn of(args: &ExecArgs, verb: Command) -> ExecCall {
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
        // Without an ID, one derived from the netns: the same pod gets the same ID on DEL.
        let container_id = args.container_id.clone().unwrap_or_else(|| {
            let basis = netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let digest = <sha2::Sha256 as sha2::Digest>::digest(basis.as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("plexus-exec-{hex}")
        });
        ExecCall {
            verb,
            container_id,
            netns: netns.map(|p| p.display().to_string()),
            ifname: args.ifname.clone(),
            cni_args: format!(
                "IgnoreUnknown=true;K8S_POD_NAMESPACE={pod_ns};K8S_POD_NAME={pod_name}"
            ),
            pod_ns,
            pod_name,
            cni_path: args.cni_path.clone(),
        }
    }

    fn env(&self, k: &str) -> Option<String> {
        match k {
            "CNI_COMMAND" => Some(self.verb.as_str().to_string()),
            "CNI_CONTAINERID" => Some(self.container_id.clone()),
            "CNI_NETNS" => self.netns.clone(),
            "CNI_IFNAME" => Some(self.ifname.clone()),
            "CNI_ARGS" => Some(self.cni_args.clone()),
            "CNI_PATH" => Some(self.cni_path.clone()),
            _ => None,
        }
    }
}
