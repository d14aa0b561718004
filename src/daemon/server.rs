//! The daemon's unix socket: a 0700 directory, a 0600 socket, only root peers (SO_PEERCRED),
//! requests capped in size and read within a deadline, and at most `max_calls` calls at once.
//! A call that finds every slot taken waits up to `queue_wait`, then gets code 11; a call
//! still running at its deadline is answered with code 11 while it finishes (its journal lets
//! the runtime's DEL undo it).

use super::protocol::{self, ProtocolError, Response};
use super::{DaemonError, call, metrics::Metrics, store::DaemonStore};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

/// The shim writes its request at once; a peer that dawdles is cut off.
const READ_DEADLINE: Duration = Duration::from_secs(5);
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// The longest deadline a request may ask for.
const MAX_DEADLINE: Duration = Duration::from_secs(600);

pub struct Context {
    pub daemon: Arc<DaemonStore>,
    pub metrics: Arc<Metrics>,
    pub slots: Arc<Semaphore>,
    pub max_calls: usize,
    pub queue_wait: Duration,
}

impl Context {
    /// Waits until no call runs, at most `grace`.
    pub async fn drain(&self, grace: Duration) {
        let started = Instant::now();
        while self.slots.available_permits() < self.max_calls && started.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Makes the socket dir (0700, root's, not a symlink) and binds the socket in it (0600). A
/// socket left by a daemon that died is replaced; one a live daemon answers on is not.
pub fn bind(dir: &Path) -> Result<UnixListener, DaemonError> {
    let bad = |reason: String| DaemonError::SocketDir {
        dir: dir.to_path_buf(),
        reason,
    };
    if !dir.is_absolute() {
        return Err(bad("must be an absolute path".into()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| bad(format!("create: {e}")))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| bad(format!("stat: {e}")))?;
    if !meta.is_dir() {
        return Err(bad("is not a directory (a symlink is refused)".into()));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(bad(format!(
            "is owned by uid {}, not by this daemon",
            meta.uid()
        )));
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| bad(format!("chmod 0700: {e}")))?;
    }
    let path = dir.join(protocol::SOCKET_NAME);
    let socket_err = |source| DaemonError::Socket {
        path: path.clone(),
        source,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(DaemonError::AlreadyRunning { path });
            }
            std::fs::remove_file(&path).map_err(socket_err)?;
        }
        Ok(_) => {
            return Err(socket_err(std::io::Error::other(
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(&path).map_err(socket_err)?;
    // Nobody else can reach the socket before this: the directory is 0700.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(socket_err)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn connection(mut stream: UnixStream, ctx: Arc<Context>) {
    let answer = handle(&mut stream, &ctx).await;
    let _ = tokio::time::timeout(WRITE_DEADLINE, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// The bytes to answer with.
async fn handle(stream: &mut UnixStream, ctx: &Context) -> Vec<u8> {
    match receive(stream, ctx).await {
        Ok(req) => run(req, ctx).await,
        Err(refusal) => refusal,
    }
}

/// The request, read whole, from a root peer, in this protocol; `Err` is the refusal to
/// answer with.
async fn receive(stream: &mut UnixStream, ctx: &Context) -> Result<protocol::Request, Vec<u8>> {
    let refuse = |reason: &'static str, text: String| {
        ctx.metrics.refused(reason);
        tracing::warn!(reason = %text, "call refused");
        protocol::encode_response(&Response::refused(text))
    };
    // Read before any refusal: closing a socket with unread data resets the connection, and
    // the peer would lose the answer saying why.
    let mut bytes = Vec::new();
    let limit = protocol::MAX_REQUEST_BYTES as u64;
    let mut capped = (&mut *stream).take(limit + 1);
    match tokio::time::timeout(READ_DEADLINE, capped.read_to_end(&mut bytes)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(refuse("malformed", format!("read the request: {e}"))),
        Err(_) => {
            return Err(refuse(
                "timeout",
                format!("request not received within {READ_DEADLINE:?}"),
            ));
        }
    }
    if bytes.len() as u64 > limit {
        return Err(refuse("too_large", format!("request over {limit} bytes")));
    }
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            return Err(refuse(
                "peer",
                format!("peer uid {} is not root: only root may call", cred.uid()),
            ));
        }
        Err(e) => return Err(refuse("peer", format!("peer credentials unreadable: {e}"))),
    }
    let req = match protocol::decode_request(&bytes) {
        Ok(r) => r,
        // A peer of another protocol can read nothing but our prefix, which names ours.
        Err(e @ ProtocolError::Protocol { .. }) => {
            ctx.metrics.refused("version");
            tracing::warn!(error = %e, "call refused");
            return Err(protocol::encode_prefix());
        }
        Err(e @ ProtocolError::Version { .. }) => return Err(refuse("version", e.to_string())),
        Err(e) => return Err(refuse("malformed", e.to_string())),
    };
    Ok(req)
}

/// Runs the call on a thread of its own once a slot is free, and answers by its deadline.
async fn run(req: protocol::Request, ctx: &Context) -> Vec<u8> {
    let deadline = Duration::from_millis(req.deadline_ms).min(MAX_DEADLINE);

    ctx.metrics.call_waiting(1);
    let permit = tokio::time::timeout(ctx.queue_wait, ctx.slots.clone().acquire_owned()).await;
    ctx.metrics.call_waiting(-1);
    let Ok(Ok(permit)) = permit else {
        ctx.metrics.busy();
        return busy(&req, ctx);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let daemon = ctx.daemon.clone();
    let metrics = ctx.metrics.clone();
    let command = req.env.get("CNI_COMMAND").cloned().unwrap_or_default();
    let version = conf_version(&req.stdin);
    let spawned = std::thread::Builder::new()
        .name("cni-call".into())
        .spawn(move || {
            metrics.call_started();
            let out = call::answer(&req, &daemon, &metrics);
            metrics.call_finished();
            drop(permit);
            let _ = tx.send(out);
        });
    if let Err(e) = spawned {
        return error(
            cni::Code::TryAgainLater,
            format!("plexus daemon cannot start a thread for the call: {e}"),
            &version,
        );
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(answer)) => {
            protocol::encode_response(&Response::answered(answer.exit_code, answer.stdout))
        }
        Ok(Err(_)) => error(
            cni::Code::TryAgainLater,
            "plexus daemon: the call ended without an answer".into(),
            &version,
        ),
        Err(_) => {
            tracing::warn!(command = %command, ?deadline, "call still running at its deadline; answered code 11");
            error(
                cni::Code::TryAgainLater,
                format!(
                    "plexus daemon: {command} did not finish within {deadline:?}; it goes on, and DEL undoes what it did"
                ),
                &version,
            )
        }
    }
}

fn busy(req: &protocol::Request, ctx: &Context) -> Vec<u8> {
    error(
        cni::Code::TryAgainLater,
        format!(
            "plexus daemon busy: {} calls running, none finished within {:?}",
            ctx.max_calls, ctx.queue_wait
        ),
        &conf_version(&req.stdin),
    )
}

fn error(code: cni::Code, msg: String, version: &str) -> Vec<u8> {
    let obj = cni::ErrorObject::new(code, msg, "").with_version(version.to_string());
    protocol::encode_response(&Response::answered(1, Some(obj.to_json())))
}

/// The conf's `cniVersion`, for the error objects the daemon writes itself.
fn conf_version(stdin: &[u8]) -> String {
    cni::netconf::parse_object(stdin)
        .ok()
        .and_then(|m| {
            m.get("cniVersion")
                .and_then(|v| v.as_str().map(String::from))
        })
        .unwrap_or_default()
}
