//! Plexus: a multi-network CNI meta-plugin. The runtime execs the `plexus` binary; this
//! library holds everything it does, one concern per module. One call goes through
//! [`flow::run`]: parse → resolve → plan → journal → invoke → report.

pub mod annotations;
pub mod autoconf;
pub mod cli;
pub mod conf;
pub mod crd;
pub mod daemon;
pub mod flow;
pub mod invoke;
pub mod journal;
pub mod log;
pub mod output;
pub mod plan;
pub mod pod;
pub mod report;
pub mod resolve;
pub mod selection;
pub mod store;

pub use flow::Error;
