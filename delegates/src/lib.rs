//! Built-in CNI delegates (bridge, macvlan, ipvlan, vxlan) run in-process over rtnetlink, the
//! netns/netlink helpers they share, and in-process IPAM.
//!
//! Delegates see one plugin conf and a container; they never see Kubernetes or Plexus's own
//! conf. Each is also shipped as a standalone CNI binary (`src/bin/`).

pub mod error;
pub mod exec_ipam;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod request;
pub mod wire;

pub use error::DelegateError;
pub use link::remove_links_batched;
pub use request::{Ipam, Kind, Request, kind_of};
