//! Built-in CNI delegates (bridge, macvlan, ipvlan, vxlan) run in-process over rtnetlink, the
//! netns/netlink helpers they share, and in-process IPAM.
//!
//! Delegates see one plugin conf and a container; they never see Kubernetes or Plexus's own
//! conf. Each is also shipped as a standalone CNI binary (`src/bin/`).

pub mod bridge;
pub mod error;
pub mod exec_ipam;
pub mod ipam;
pub mod ipam_select;
pub mod ipvlan;
pub mod kind;
pub mod link;
pub mod macvlan;
pub mod masq;
pub mod netns;
pub mod nftables;
pub mod owned;
pub mod request;
pub mod route;
pub mod standalone;
pub mod verify;
pub mod veth;
pub mod vxlan;

pub use error::DelegateError;
pub use ipam_select::BuiltinIpam;
pub use kind::Kind;
pub use link::remove_links_batched;
pub use owned::{Added, OwnedLink};
pub use request::{Ipam, Request};

/// Checks everything ADD would check before it creates anything: the conf's `dns`, the
/// kind's own keys, and its IPAM's conf (in-process) or binary (exec'd). No side effects.
pub fn validate(kind: Kind, req: &Request) -> Result<(), DelegateError> {
    request::conf_dns(req.conf)?;
    (kind.delegate().validate)(req)?;
    req.ipam_validate()
}

/// Runs ADD for a built-in kind: the result, and the links it created for the caller to
/// journal. The result's `dns` is the conf's `dns`, in every result version, as the
/// reference bridge, macvlan and ipvlan report it: it replaces whatever the IPAM plugin
/// returned (an absent `dns` gives an empty one).
pub fn add(kind: Kind, req: &Request) -> Result<Added, DelegateError> {
    // Read before anything is created: a bad `dns` must not leave a link to undo.
    let dns = request::conf_dns(req.conf)?;
    let mut added = (kind.delegate().add)(req)?;
    added.result.dns = dns;
    Ok(added)
}

/// Runs DEL: idempotent; with the netns absent or gone it still releases the IPAM
/// reservation. Removes only links this attachment created (see [`owned`]). A conf that
/// fails validation fails DEL with that [`DelegateError::Config`] after everything that
/// needs no conf was done: ADD refused the same conf before creating anything, so callers
/// treat it as done ([`DelegateError::is_refused_conf`]).
pub fn del(kind: Kind, req: &Request) -> Result<(), DelegateError> {
    (kind.delegate().del)(req)
}

/// Runs CHECK against the `prevResult` in the conf.
pub fn check(kind: Kind, req: &Request) -> Result<(), DelegateError> {
    (kind.delegate().check)(req)
}
