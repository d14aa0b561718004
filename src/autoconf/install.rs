//! `plexus install`: what the DaemonSet's init container does on every node — put the binary
//! in the CNI bin dir, write the kubeconfig, generate the conf. Every step is idempotent and
//! atomic, and nothing is ever removed: a pod restart or a node reboot finds the same files
//! (no silent fallback to the primary CNI while the conf is missing).

use super::AutoconfError;
use super::atomic::{self, Written};
use super::generate::{self, GenerateOptions, Generated};
use super::kubeconfig;
use std::path::{Path, PathBuf};

pub const BINARY_NAME: &str = "plexus";
const BINARY_MODE: u32 = 0o755;
/// Holds a bearer token's path and the CA; readable by root only like the conf.
const KUBECONFIG_MODE: u32 = 0o600;

#[derive(Debug, Clone)]
pub struct KubeconfigOptions {
    /// Where the kubeconfig is written.
    pub out: PathBuf,
    /// The path written as the user's `tokenFile`, as the host sees it.
    pub token_file: PathBuf,
    /// When set, this token (the pod's projected one) is copied on each run, for hosts that
    /// cannot see the pod's `/var/run/secrets`: `(source, destination)`, the destination
    /// being `token_file` as this process sees it.
    pub token_copy: Option<(PathBuf, PathBuf)>,
    pub server: String,
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub bin_dir: PathBuf,
    /// The binary to install; the CLI defaults it to the running executable.
    pub source: PathBuf,
    pub kubeconfig: Option<KubeconfigOptions>,
    pub generate: GenerateOptions,
}

#[derive(Debug)]
pub struct Installed {
    pub binary: PathBuf,
    pub binary_written: Written,
    pub kubeconfig: Option<(PathBuf, Written)>,
    pub generated: Generated,
}

pub fn install(opts: &InstallOptions) -> Result<Installed, AutoconfError> {
    let binary = install_binary(&opts.source, &opts.bin_dir)?;
    let kubeconfig = match &opts.kubeconfig {
        Some(k) => Some((k.out.clone(), write_kubeconfig(k)?)),
        None => None,
    };
    let generated = generate::generate(&opts.generate)?;
    Ok(Installed {
        binary: binary.0,
        binary_written: binary.1,
        kubeconfig,
        generated,
    })
}

/// Writes `<bin_dir>/plexus` through a temp file and a rename, never by opening the target:
/// the runtime may be executing the old binary right now, and writing into a busy text file
/// fails with ETXTBSY. The old inode lives on until its last process exits.
pub fn install_binary(source: &Path, bin_dir: &Path) -> Result<(PathBuf, Written), AutoconfError> {
    let content = std::fs::read(source).map_err(|e| AutoconfError::Read {
        what: "binary",
        path: source.to_path_buf(),
        source: e,
    })?;
    let target = bin_dir.join(BINARY_NAME);
    let written =
        atomic::replace(&target, &content, BINARY_MODE).map_err(|e| AutoconfError::Write {
            path: target.clone(),
            source: e,
        })?;
    Ok((target, written))
}

pub fn write_kubeconfig(opts: &KubeconfigOptions) -> Result<Written, AutoconfError> {
    let ca = std::fs::read(&opts.ca_file).map_err(|e| AutoconfError::Read {
        what: "CA certificate",
        path: opts.ca_file.clone(),
        source: e,
    })?;
    if !opts.token_file.is_absolute() {
        return Err(AutoconfError::RelativePath {
            what: "token file",
            path: opts.token_file.clone(),
        });
    }
    if let Some((source, dest)) = &opts.token_copy {
        let token = std::fs::read(source).map_err(|e| AutoconfError::Read {
            what: "token",
            path: source.clone(),
            source: e,
        })?;
        create_parent(dest)?;
        atomic::replace(dest, &token, KUBECONFIG_MODE).map_err(|e| AutoconfError::Write {
            path: dest.clone(),
            source: e,
        })?;
    }
    create_parent(&opts.out)?;
    let yaml = kubeconfig::render(&opts.server, &ca, &opts.token_file);
    atomic::replace(&opts.out, yaml.as_bytes(), KUBECONFIG_MODE).map_err(|e| AutoconfError::Write {
        path: opts.out.clone(),
        source: e,
    })
}

fn create_parent(path: &Path) -> Result<(), AutoconfError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| AutoconfError::Write {
            path: dir.to_path_buf(),
            source: e,
        }),
        None => Ok(()),
    }
}
