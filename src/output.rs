//! stdout and stderr without panics. `print!`/`println!` and `eprint!`/`eprintln!` panic when
//! the stream is closed or full (EPIPE, ENOSPC), and the release build aborts on a panic: a
//! runtime that closes its end of the pipe early would get a core dump instead of an exit
//! status. Every binary writes through these instead.

use std::fmt::Arguments;
use std::io::Write;

/// Writes to stdout and flushes, so a closed or full stdout is an error here rather than
/// lost at exit.
pub fn stdout(args: Arguments) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()
}

/// Progress lines of a long-running command: the work they describe is done whether or not
/// anyone reads them, so a closed stdout does not stop it.
pub fn status(args: Arguments) {
    let _ = stdout(args);
}

/// Writes to stderr; one nobody reads is no reason to fail.
pub fn stderr(args: Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.flush();
}
