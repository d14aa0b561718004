//! Logging: `logFile`, `logLevel`, `logToStderr`, `logFormat` and `logOptions` (rotation).
//! Never stdout — stdout is the CNI result. The log file is created 0600 and opened without
//! following symlinks.

pub mod redact;
mod rotate;

pub use redact::{redact, redact_args, scrub, secret_values};
pub use rotate::LogOptions;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

/// The conf's logging keys: `logFile`, `logLevel`, `logToStderr`, `logFormat`, `logOptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub file: Option<PathBuf>,
    pub level: String,
    pub to_stderr: bool,
    pub format: LogFormat,
    pub options: Option<LogOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn level(name: &str) -> LevelFilter {
    match name {
        // Multus's "panic" level logs only what stops the plugin.
        "panic" | "error" => LevelFilter::ERROR,
        "warning" | "warn" => LevelFilter::WARN,
        "info" | "verbose" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::ERROR,
    }
}

/// Installs the global subscriber once. A log file that cannot be opened is reported on
/// stderr and otherwise ignored: logging must never fail a CNI operation.
pub fn init(conf: &Settings) {
    if let (Some(p), Some(opts)) = (&conf.file, &conf.options)
        && let Err(e) = rotate::rotate(p, opts)
    {
        crate::output::stderr(format_args!(
            "plexus: cannot rotate log file {}: {e}\n",
            p.display()
        ));
    }
    let file = conf.file.as_ref().and_then(|p| {
        open_log(p)
            .map_err(|e| {
                crate::output::stderr(format_args!(
                    "plexus: not logging to {}: {e}\n",
                    p.display()
                ))
            })
            .ok()
    });
    let writer: BoxMakeWriter = match (file, conf.to_stderr) {
        (Some(f), true) => BoxMakeWriter::new(Mutex::new(f).and(std::io::stderr)),
        (Some(f), false) => BoxMakeWriter::new(Mutex::new(f)),
        (None, true) => BoxMakeWriter::new(std::io::stderr),
        (None, false) => BoxMakeWriter::new(std::io::sink),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level(&conf.level))
        .with_writer(OneLine(writer))
        .with_ansi(false)
        .with_target(false)
        // Its fallback for a failed write is `eprintln!`, which panics when stderr is gone.
        .log_internal_errors(false);
    let _ = match conf.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Opens the log for appending: created 0600, never through a symlink, and only a regular
/// file. A FIFO or a device would block the call or swallow the log, so it is refused, and
/// the open itself cannot block (`O_NONBLOCK`).
fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let not_regular = || std::io::Error::other("not a regular file");
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(not_regular());
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Keeps every event on one line with no terminal control sequences: a delegate's message, a
/// pod's annotation or a NAD name may carry `\n` or `\x1b`, and a log reader must not be
/// fooled into seeing two events or a recoloured terminal. The fmt
/// layer writes each event in one call ending in its newline; everything else that is a
/// control character is written as `\xNN`.
struct OneLine(BoxMakeWriter);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter<<BoxMakeWriter as tracing_subscriber::fmt::MakeWriter<'a>>::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

struct OneLineWriter<W>(W);

impl<W: std::io::Write> std::io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            } else {
                out.push(b);
            }
        }
        if body.len() != buf.len() {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_log(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(open_log(dir.path()).is_err());
        assert!(open_log(std::path::Path::new("/dev/null")).is_err());
        assert!(open_log(&dir.path().join("plexus.log")).is_ok());
    }

    #[test]
    fn events_stay_on_one_line_without_control_characters() {
        let mut out = Vec::new();
        OneLineWriter(&mut out)
            .write_all(b"msg=\"refused\nfake event\x1b[31m\" ok\n")
            .unwrap();
        assert_eq!(out, b"msg=\"refused\\x0afake event\\x1b[31m\" ok\n");
    }
}
