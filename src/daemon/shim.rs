//! The shim: the `plexus` binary the runtime execs, when its conf names `daemonSocketDir`,
//! forwards the call to the node daemon and prints its answer. When the daemon cannot take the
//! call, the shim decides, command by command, whether to run it in-process instead
//! (docs/daemon.md has the table):
//!
//! - the daemon is down, unreachable or refused the call (another version, a peer that is not
//!   root): DEL always runs in-process, so a node can tear pods down while its daemon
//!   restarts; ADD, CHECK, GC and STATUS do too unless `daemonFallback` is false;
//! - the connection broke or the answer did not come in time after the request went out: the
//!   daemon may have run the call. DEL, CHECK, GC and STATUS are safe to repeat and run
//!   in-process (unless `daemonFallback` is false, DEL excepted); ADD is not and gets code 11:
//!   the journal lets the runtime's DEL undo whatever the daemon did.
//!
//! Plain blocking `std` socket I/O with timeouts: no async runtime in the one-shot path.

use super::protocol::{self, Outcome, Request};
use crate::flow::{Answer, Request as Call};
use cni::Command;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long after its own deadline the shim still waits for the daemon's answer: the daemon
/// answers at the deadline, and its answer needs a moment to arrive.
const ANSWER_GRACE: Duration = Duration::from_secs(5);
/// Writing the request to a daemon that reads it at once.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the daemon did not answer the call.
#[derive(Debug)]
enum Failure {
    /// The daemon did not run the call: no socket, nobody listening, or it refused.
    NotRun(String),
    /// The request went out; the call may have run.
    Lost(String),
}

/// Forwards the call, or runs it through `in_process` when the table above says so.
pub fn forward(
    dir: &Path,
    call: &Call,
    get: &dyn Fn(&str) -> Option<String>,
    in_process: impl FnOnce() -> Answer,
) -> Answer {
    let socket = dir.join(protocol::SOCKET_NAME);
    let daemon = &call.conf.daemon;
    let request = Request {
        version: protocol::VERSION.to_string(),
        env: protocol::CNI_VARS
            .iter()
            .filter_map(|k| get(k).map(|v| (k.to_string(), v)))
            .collect(),
        deadline_ms: daemon.timeout.as_millis() as u64,
        stdin: call.stdin.clone(),
    };
    let failure = match exchange(&socket, &request, daemon.timeout) {
        Ok(answer) => return answer,
        Err(f) => f,
    };
    let command = call.command();
    let (run_here, reason) = match &failure {
        Failure::NotRun(r) => (command == Command::Del || daemon.fallback, r),
        Failure::Lost(r) => (
            command == Command::Del || (daemon.fallback && command != Command::Add),
            r,
        ),
    };
    if run_here {
        tracing::warn!(command = command.as_str(), socket = %socket.display(), reason = %reason, "plexus daemon did not take the call; running it in-process");
        return in_process();
    }
    tracing::error!(command = command.as_str(), socket = %socket.display(), reason = %reason, "plexus daemon did not take the call");
    let (code, msg) = unanswered(&socket, &failure, command, reason);
    let obj = cni::ErrorObject::new(code, msg, "").with_version(call.conf.cni_version_str.clone());
    Answer {
        exit_code: 1,
        stdout: Some(obj.to_json()),
    }
}

/// The error a call gets that neither the daemon nor this process runs.
fn unanswered(
    socket: &Path,
    failure: &Failure,
    command: Command,
    reason: &str,
) -> (cni::Code, String) {
    match (failure, command) {
        (_, Command::Status) => (
            cni::Code::NotAvailable,
            format!(
                "plexus daemon at {} unavailable: {reason}",
                socket.display()
            ),
        ),
        (Failure::Lost(_), Command::Add) => (
            cni::Code::TryAgainLater,
            format!(
                "plexus daemon at {} did not answer the ADD: {reason}; it may have started it, DEL undoes it",
                socket.display()
            ),
        ),
        _ => (
            cni::Code::TryAgainLater,
            format!(
                "plexus daemon at {} unavailable and daemonFallback is false: {reason}",
                socket.display()
            ),
        ),
    }
}

fn exchange(socket: &Path, request: &Request, deadline: Duration) -> Result<Answer, Failure> {
    let mut stream = connect(socket)?;
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_read_timeout(Some(deadline + ANSWER_GRACE));
    // The daemon runs nothing before it has the whole request: a failed write means the call
    // did not run. It may still have answered why it closed early (a refusal), so read on.
    let sent = stream
        .write_all(&protocol::encode_request(request))
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let answer = protocol::read_capped(
        &mut stream,
        6 + 4 + protocol::MAX_HEADER_BYTES + protocol::MAX_STDIN_BYTES,
    );
    let bytes = match (answer, &sent) {
        (Ok(b), _) if !b.is_empty() => b,
        (_, Err(e)) => return Err(Failure::NotRun(format!("send the request: {e}"))),
        (Ok(_), Ok(())) => return Err(Failure::Lost("connection closed without an answer".into())),
        (Err(e), Ok(())) if is_timeout(&e) => {
            return Err(Failure::Lost(format!(
                "no answer within {:?}",
                deadline + ANSWER_GRACE
            )));
        }
        (Err(e), Ok(())) => return Err(Failure::Lost(format!("read the answer: {e}"))),
    };
    match protocol::decode_response(&bytes) {
        Ok(resp) => match resp.outcome {
            Outcome::Answered { exit_code, stdout } => Ok(Answer { exit_code, stdout }),
            Outcome::Refused { reason } => Err(Failure::NotRun(format!("refused: {reason}"))),
        },
        Err(e) if e.is_skew() => Err(Failure::NotRun(format!("version skew: {e}"))),
        Err(e) if sent.is_err() => Err(Failure::NotRun(format!("unreadable answer: {e}"))),
        Err(e) => Err(Failure::Lost(format!("unreadable answer: {e}"))),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A non-blocking connect, so a daemon whose listen backlog is full (alive but not
/// accepting) shows as EAGAIN instead of blocking the shim; then blocking I/O with timeouts.
fn connect(path: &Path) -> Result<UnixStream, Failure> {
    let not_run = |what: &str, e: Errno| Failure::NotRun(format!("{what} {}: {e}", path.display()));
    let addr = UnixAddr::new(path).map_err(|e| not_run("socket path", e))?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| not_run("create a socket for", e))?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .map_err(|e| not_run("connect to", e))?;
    let stream = UnixStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| Failure::NotRun(format!("socket {}: {e}", path.display())))?;
    Ok(stream)
}
