//! The CNI protocol as the spec defines it, and nothing about Kubernetes or Plexus:
//! versions and their negotiation, network configurations, results of every version and the
//! conversions between them, the error object, the command and the `CNI_*` environment,
//! `CNI_ARGS`, the naming rules, running a plugin binary, and reading the files a
//! configuration names within bounds.

pub mod args;
pub mod capability;
pub mod command;
pub mod env;
pub mod error;
pub mod exec;
pub mod fault;
pub mod file;
pub mod ifname;
pub mod names;
pub mod netconf;
pub mod result;
pub mod version;

pub use command::Command;
pub use error::{Code, ErrorObject};
pub use ifname::IfName;
pub use result::CniResult;
pub use version::Version;
