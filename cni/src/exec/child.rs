//! Supervising one plugin process: feed stdin, drain stdout/stderr, enforce the deadline.
//!
//! The plugin leads its own process group, so one `killpg` reaches everything it forked. The
//! leader is never reaped before we are done signalling the group: while it exists (even as a
//! zombie) its pid, and so the group id, cannot be handed to an unrelated process.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::io::{self, Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for the pipes to close and the leader to die after a SIGKILL. Past this, a
/// process that escaped the group (setsid) still holds a pipe: the reader threads are left
/// behind rather than letting it hold us hostage.
const KILL_GRACE: Duration = Duration::from_secs(1);

pub(super) enum Outcome {
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    TimedOut {
        stderr: Vec<u8>,
    },
    TooLarge,
    Failed {
        step: &'static str,
        source: io::Error,
    },
}

enum Event {
    LeaderExited,
    Stdout(io::Result<Vec<u8>>),
    Stderr(Vec<u8>),
}

pub(super) struct Limits {
    pub deadline: Instant,
    pub stdout_cap: usize,
    pub stderr_tail: usize,
}

pub(super) fn supervise(mut child: Child, input: Vec<u8>, limits: &Limits) -> Outcome {
    // pid_t is an i32 and the kernel's pid_max (at most 2^22) keeps pids far below i32::MAX.
    let group = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    if let Err(source) = start_threads(&mut child, group, input, limits, &tx) {
        kill_group(group);
        let _ = child.wait();
        return Outcome::Failed {
            step: "start pipe threads",
            source,
        };
    }
    drop(tx);

    let mut exited = false;
    let mut stdout = None;
    let mut stderr = None;
    let mut killed_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut too_large = false;
    while !(exited && stdout.is_some() && stderr.is_some()) {
        let until = killed_at.map_or(limits.deadline, |at| at + KILL_GRACE);
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Event::LeaderExited) => {
                exited = true;
                // Whatever the plugin left running in its group is not part of the protocol;
                // killing it also closes pipes a background child may still hold.
                kill_group(group);
            }
            Ok(Event::Stdout(Ok(buf))) if buf.len() > limits.stdout_cap => {
                too_large = true;
                kill_group(group);
                killed_at.get_or_insert_with(Instant::now);
                stdout = Some(Ok(Vec::new()));
            }
            Ok(Event::Stdout(read)) => stdout = Some(read),
            Ok(Event::Stderr(tail)) => stderr = Some(tail),
            Err(RecvTimeoutError::Timeout) if killed_at.is_none() => {
                timed_out = true;
                kill_group(group);
                killed_at = Some(Instant::now());
            }
            // Grace is over: leave the reader threads to whoever holds the pipes.
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    if too_large || timed_out || !exited {
        // Only reap when it cannot block: a leader stuck in the kernel stays a zombie of ours.
        let _ = child.try_wait();
        return if too_large {
            Outcome::TooLarge
        } else {
            Outcome::TimedOut {
                stderr: stderr.unwrap_or_default(),
            }
        };
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(source) => {
            return Outcome::Failed {
                step: "reap plugin",
                source,
            };
        }
    };
    match stdout {
        Some(Ok(stdout)) => Outcome::Exited {
            status,
            stdout,
            stderr: stderr.unwrap_or_default(),
        },
        Some(Err(source)) => Outcome::Failed {
            step: "read stdout",
            source,
        },
        None => Outcome::TimedOut {
            stderr: stderr.unwrap_or_default(),
        },
    }
}

fn start_threads(
    child: &mut Child,
    group: Pid,
    input: Vec<u8>,
    limits: &Limits,
    tx: &Sender<Event>,
) -> io::Result<()> {
    if let Some(mut stdin) = child.stdin.take() {
        thread::Builder::new()
            .name("cni-exec-stdin".into())
            .spawn(move || {
                // EPIPE just means the plugin did not read all of its input; its exit status
                // and output tell the rest.
                let _ = stdin.write_all(&input);
            })?;
    }
    if let Some(stdout) = child.stdout.take() {
        let tx = tx.clone();
        let cap = limits.stdout_cap;
        thread::Builder::new()
            .name("cni-exec-stdout".into())
            .spawn(move || {
                let _ = tx.send(Event::Stdout(read_capped(stdout, cap)));
            })?;
    }
    if let Some(stderr) = child.stderr.take() {
        let tx = tx.clone();
        let keep = limits.stderr_tail;
        thread::Builder::new()
            .name("cni-exec-stderr".into())
            .spawn(move || {
                let _ = tx.send(Event::Stderr(read_tail(stderr, keep)));
            })?;
    }
    let tx = tx.clone();
    thread::Builder::new()
        .name("cni-exec-wait".into())
        .spawn(move || {
            // WNOWAIT leaves the leader a zombie, so its pid stays reserved until the
            // supervisor reaps it (see the module docs).
            while let Err(Errno::EINTR) =
                waitid(Id::Pid(group), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            {}
            let _ = tx.send(Event::LeaderExited);
        })?;
    Ok(())
}

/// Reads at most `cap + 1` bytes: one past the cap is enough to know the output is too large.
fn read_capped(stdout: impl Read, cap: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    stdout.take(cap as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Drains the stream to its end, keeping only the last `keep` bytes.
fn read_tail(mut stderr: impl Read, keep: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(keep * 2);
    let mut chunk = [0u8; 4096];
    loop {
        match stderr.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > keep {
                    tail.drain(..tail.len() - keep);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    tail
}

fn kill_group(group: Pid) {
    // ESRCH (nobody left) is the normal case after a clean exit.
    let _ = killpg(group, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_stops_one_byte_past_the_cap() {
        let data = [b'x'; 100];
        assert_eq!(read_capped(&data[..], 10).unwrap().len(), 11);
        assert_eq!(read_capped(&data[..], 100).unwrap().len(), 100);
    }

    #[test]
    fn read_tail_keeps_the_last_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let tail = read_tail(&data[..], 4096);
        assert_eq!(tail, data[data.len() - 4096..]);
        assert_eq!(read_tail(&b"short"[..], 4096), b"short");
    }
}
