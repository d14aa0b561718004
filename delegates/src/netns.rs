//! Network namespaces: opening one by path and running netlink work inside it.
//!
//! The rule: no long-lived thread ever changes its netns. A netlink socket stays bound to the
//! netns it was created in, so a socket for another netns is made on a short-lived thread that
//! `setns`es into it and dies there, and the work itself runs wherever the socket is driven.
//!
//! Inside a [`session`] (one CNI call) the calling thread keeps one current_thread runtime
//! and one rtnetlink connection per netns for the whole call: a pod's sixteen attachments
//! cost one thread and two sockets, not sixteen and thirty-two. Outside one, each job gets
//! a thread of its own that `setns`es, builds its runtime and connections, and dies in the
//! target netns.

use rtnetlink::Handle;
use std::cell::RefCell;
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
        // Taken out while the job runs, so the cell is never borrowed across it; put back
        // after, also when the job failed (a job that panics loses it, and the next job
        // falls back to a thread of its own).
        if let Some(mut session) = SESSION.with(|s| s.borrow_mut().take()) {
            let outcome = session.run(self, job);
            SESSION.with(|s| *s.borrow_mut() = Some(session));
            return outcome;
        }
        self.on_own_thread(job)
    }

    fn on_own_thread<F, Fut, T>(&self, job: F) -> Result<T, NetNsError>
    where
        F: FnOnce(Handle, Handle) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let path = &self.path;
        let fd = self.file.as_fd();
        let timeout = self.timeout;
        on_fresh_thread(path, move || -> Result<T, NetNsError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| NetNsError::Runtime {
                    path: path.clone(),
                    source,
                })?;
            rt.block_on(async move {
                let connect_here = || {
                    connect().map_err(|source| NetNsError::Connect {
                        path: path.clone(),
                        source,
                    })
                };
                let host = connect_here()?;
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetNsError::Enter {
                        path: path.clone(),
                        source,
                    }
                })?;
                let pod = connect_here()?;
                match timeout {
                    None => Ok(job(host, pod).await),
                    Some(after) => {
                        tokio::time::timeout(after, job(host, pod))
                            .await
                            .map_err(|_| NetNsError::TimedOut {
                                path: path.clone(),
                                after,
                            })
                    }
                }
            })
        })
    }
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Runs `f` (one CNI call) with one netlink worker on the calling thread: a current_thread
/// runtime and a connection per netns, made on first use and dropped when `f` returns, so no
/// socket outlives the call to keep a deleted pod's netns alive. Nested sessions share the
/// outer one. Without a runtime (the system refused its epoll or eventfd), the jobs run as
/// outside a session.
pub fn session<R>(f: impl FnOnce() -> R) -> R {
    struct Ends;
    impl Drop for Ends {
        fn drop(&mut self) {
            SESSION.with(|s| s.borrow_mut().take());
        }
    }
    let nested = SESSION.with(|s| s.borrow().is_some());
    if nested {
        return f();
    }
    let started = Session::new().map(|session| SESSION.with(|s| *s.borrow_mut() = Some(session)));
    if let Err(e) = started {
        tracing::debug!(error = %e, "no netlink session; each netns job gets a thread");
        return f();
    }
    let _ends = Ends;
    f()
}

static SESSION_SEQ: AtomicU64 = AtomicU64::new(0);

/// The calling thread's session, as a number no other session of this process had: what a
/// cache of one call's lookups is keyed by. `None` outside a session.
pub fn session_seq() -> Option<u64> {
    SESSION.with(|s| s.borrow().as_ref().map(|s| s.seq))
}

/// The calling thread's netlink worker for one call.
struct Session {
    seq: u64,
    rt: tokio::runtime::Runtime,
    /// The calling thread's netns (the node's), and its connection once made.
    here: NsId,
    host: Option<Handle>,
    /// Connections in other namespaces, by the namespace.
    others: Vec<(NsId, Handle)>,
}

impl Session {
    fn new() -> std::io::Result<Session> {
        Ok(Session {
            seq: SESSION_SEQ.fetch_add(1, Ordering::Relaxed),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            here: NsId::current()?,
            host: None,
            others: Vec::new(),
        })
    }

    fn run<F, Fut, T>(&mut self, ns: &NetNs, job: F) -> Result<T, NetNsError>
    where
        F: FnOnce(Handle, Handle) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let connect_failed = |source| NetNsError::Connect {
            path: ns.path.clone(),
            source,
        };
        let host = match &self.host {
            Some(h) => h.clone(),
            None => {
                let _in_rt = self.rt.enter();
                let h = connect().map_err(connect_failed)?;
                self.host = Some(h.clone());
                h
            }
        };
        let target = ns.id()?;
        let pod = if target == self.here {
            host.clone()
        } else if let Some((_, h)) = self.others.iter().find(|(id, _)| *id == target) {
            h.clone()
        } else {
            let h = self.connect_in(ns)?;
            self.others.push((target, h.clone()));
            h
        };
        match ns.timeout {
            None => Ok(self.rt.block_on(job(host, pod))),
            Some(after) => self
                .rt
                .block_on(async { tokio::time::timeout(after, job(host, pod)).await })
                .map_err(|_| NetNsError::TimedOut {
                    path: ns.path.clone(),
                    after,
                }),
        }
    }

    /// A connection whose socket lives in `ns`: made on a thread that enters `ns` and dies
    /// there, registered with this session's runtime.
    fn connect_in(&self, ns: &NetNs) -> Result<Handle, NetNsError> {
        let rt = self.rt.handle();
        let fd = ns.file.as_fd();
        let path = &ns.path;
        on_fresh_thread(path, move || -> Result<Handle, NetNsError> {
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
                NetNsError::Enter {
                    path: path.clone(),
                    source,
                }
            })?;
            let _in_rt = rt.enter();
            connect().map_err(|source| NetNsError::Connect {
                path: path.clone(),
                source,
            })
        })
    }
}

/// Runs `job` on a thread of its own, for work that `setns`es: that thread dies in the
/// namespace it entered, so no other work ever runs in a netns it did not ask for.
fn on_fresh_thread<T: Send>(
    path: &Path,
    job: impl FnOnce() -> Result<T, NetNsError> + Send,
) -> Result<T, NetNsError> {
    let name = format!("netns-{}", THREAD_SEQ.fetch_add(1, Ordering::Relaxed));
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(name)
            .spawn_scoped(scope, job)
            .map_err(|source| NetNsError::Thread {
                path: path.to_path_buf(),
                source,
            })?
            .join()
            .map_err(|_| NetNsError::Panicked {
                path: path.to_path_buf(),
            })?
    })
}

/// An rtnetlink connection in the calling thread's netns, driven by the runtime entered.
fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}
