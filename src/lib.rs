//! Plexus: a multi-network CNI meta-plugin. The runtime execs the `plexus` binary; this
//! library holds everything it does, one concern per module.

pub mod annotations;
pub mod autoconf;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod conf;
pub mod crd;
pub mod daemon;
pub mod env;
pub mod error;
pub mod invoke;
pub mod log;
pub mod output;
pub mod plan;
pub mod selection;
pub mod status;
pub mod store;

pub use error::Error;
