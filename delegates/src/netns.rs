//! Network namespaces: opening one by path and running netlink work inside it.
//!
//! The rule: netlink work for a netns runs on a dedicated OS thread that `setns`es
//! into it and builds its own current_thread runtime and rtnetlink connection. The thread dies
//! in the target netns, so nothing ever switches back and no shared runtime worker is left in
//! the wrong namespace.

use rtnetlink::Handle;
use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("open netns {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("enter netns {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("start netns thread for {path}")]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build runtime in netns {path}")]
    Runtime {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open netlink connection in netns {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netns thread for {path} panicked")]
    Panicked { path: PathBuf },
    #[error("netlink work in netns {path} still unanswered after {after:?}")]
    TimedOut { path: PathBuf, after: Duration },
}

impl NetNsError {
    /// True when the netns path no longer exists (the pod is gone), which DEL treats as done.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetNsError::Open { source, .. }
            if matches!(source.raw_os_error(), Some(nix::libc::ENOENT) | Some(nix::libc::ESRCH)))
    }
}

/// Which network namespace something lives in, as the kernel names it: the device and inode
/// of its nsfs file. Two paths (a bind mount, `/proc/<pid>/ns/net`) name the same namespace
/// exactly when these match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    /// The namespace a path names now (following the link a `/proc` path is).
    pub fn of_path(path: &Path) -> std::io::Result<NsId> {
        std::fs::metadata(path).map(|m| NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The calling thread's network namespace.
    pub fn current() -> std::io::Result<NsId> {
        NsId::of_path(Path::new("/proc/thread-self/ns/net"))
    }
}

/// An opened network namespace. Holding the file keeps the namespace alive even if the pod's
/// last process exits while we work in it.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
    /// Bound on each job run in it, as a delegate's timeout bounds an exec'd plugin.
    timeout: Option<Duration>,
}

static THREAD_SEQ: AtomicU64 = AtomicU64::new(0);

impl NetNs {
    pub fn open(path: &Path) -> Result<Self, NetNsError> {
        let file = File::open(path).map_err(|source| NetNsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
            timeout: None,
        })
    }

    /// Gives every job run in this namespace at most `timeout`: a netlink request the kernel
    /// does not answer (the rtnl lock held elsewhere) then fails the call with code 11
    /// instead of holding it.
    pub fn bounded(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The namespace this is (from the open file, so it cannot change under us).
    pub fn id(&self) -> Result<NsId, NetNsError> {
        self.file
            .metadata()
            .map(|m| NsId {
                dev: m.dev(),
                ino: m.ino(),
            })
            .map_err(|source| NetNsError::Open {
                path: self.path.clone(),
                source,
            })
    }

    /// The netns of the calling thread. `/proc/self/ns/net` would name the main thread's
    /// netns, which differs from ours whenever a caller (or a test) unshared on its own thread.
    pub fn current() -> Result<Self, NetNsError> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fd to hand to `IFLA_NET_NS_FD` (`setns_by_fd`); valid while `self` lives.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `job` with a netlink handle whose socket lives in this netns.
    pub fn run<F, Fut, T>(&self, job: F) -> Result<T, NetNsError>
    where
        F: FnOnce(Handle) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.on_thread(|_host, pod| job(pod))
    }

    /// Runs `job` with two handles: one in the calling thread's netns ("host") and one in this
    /// netns ("pod"). The host socket is opened before the thread `setns`es, and a netlink
    /// socket stays bound to the netns it was created in, so one runtime drives both.
    pub fn run_with_host<F, Fut, T>(&self, job: F) -> Result<T, NetNsError>
    where
        F: FnOnce(Handle, Handle) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.on_thread(job)
    }

    // The host socket costs one idle socket when unused; cheaper than two code paths.
    fn on_thread<F, Fut, T>(&self, job: F) -> Result<T, NetNsError>
    where
        F: FnOnce(Handle, Handle) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let path = &self.path;
        let fd = self.file.as_fd();
        let timeout = self.timeout;
        let name = format!("netns-{}", THREAD_SEQ.fetch_add(1, Ordering::Relaxed));
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || -> Result<T, NetNsError> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| NetNsError::Runtime {
                            path: path.clone(),
                            source,
                        })?;
                    rt.block_on(async move {
                        let connect = || {
                            rtnetlink::new_connection()
                                .map(|(conn, handle, _)| {
                                    tokio::spawn(conn);
                                    handle
                                })
                                .map_err(|source| NetNsError::Connect {
                                    path: path.clone(),
                                    source,
                                })
                        };
                        let host = connect()?;
                        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |source| NetNsError::Enter {
                                path: path.clone(),
                                source,
                            },
                        )?;
                        let pod = connect()?;
                        match timeout {
                            None => Ok(job(host, pod).await),
                            Some(after) => tokio::time::timeout(after, job(host, pod))
                                .await
                                .map_err(|_| NetNsError::TimedOut {
                                    path: path.clone(),
                                    after,
                                }),
                        }
                    })
                })
                .map_err(|source| NetNsError::Thread {
                    path: path.clone(),
                    source,
                })?;
            worker
                .join()
                .map_err(|_| NetNsError::Panicked { path: path.clone() })?
        })
    }
}
