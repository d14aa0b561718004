//! Logging: `logFile`, `logLevel`, `logToStderr`, `logFormat` and `logOptions` (rotation).
//! Never stdout — stdout is the CNI result. The log file is created 0600 and opened without
//! following symlinks.

mod rotate;

pub use rotate::LogOptions;

use crate::conf::{LogFormat, PlexusConf};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

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
pub fn init(conf: &PlexusConf) {
    if let (Some(p), Some(opts)) = (&conf.log_file, &conf.log_options)
        && let Err(e) = rotate::rotate(p, opts)
    {
        eprintln!("plexus: cannot rotate log file {}: {e}", p.display());
    }
    let file = conf.log_file.as_ref().and_then(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(p)
            .map_err(|e| eprintln!("plexus: cannot open log file {}: {e}", p.display()))
            .ok()
    });
    let writer: BoxMakeWriter = match (file, conf.log_to_stderr) {
        (Some(f), true) => BoxMakeWriter::new(Mutex::new(f).and(std::io::stderr)),
        (Some(f), false) => BoxMakeWriter::new(Mutex::new(f)),
        (None, true) => BoxMakeWriter::new(std::io::stderr),
        (None, false) => BoxMakeWriter::new(std::io::sink),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level(&conf.log_level))
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    let _ = match conf.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
