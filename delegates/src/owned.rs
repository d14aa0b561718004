//! Ownership of links. Every link a delegate creates carries an alias (`IFLA_IFALIAS`)
//! naming the container and interface it was made for, and its identity (namespace,
//! ifindex, name, MAC) goes back to the caller to journal. DEL and the undo of a failed ADD
//! remove a link only while it is still the one that was created: a link of the same name
//! that someone else made (another pod, the node's admin, the pod itself) is left alone and
//! the reason logged. Names are never enough on their own.

use crate::error::DelegateError;
use crate::link;
use crate::netns::NsId;
use crate::request::Request;
use cni::CniResult;
use rtnetlink::Handle;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use serde::{Deserialize, Serialize};

/// Which side of the attachment a link is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// In the pod's namespace (the interface the pod sees).
    Pod,
    /// In the node's namespace (a veth's host end).
    Node,
}

/// A link as it was when its ADD created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedLink {
    pub side: Side,
    pub name: String,
    pub ifindex: u32,
    pub netns: NsId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a built-in ADD made: the result, and the links to journal with it.
#[derive(Debug, Clone, Default)]
pub struct Added {
    pub result: CniResult,
    pub links: Vec<OwnedLink>,
}

/// The alias of every link created for `ifname` of `container_id`. At most 255 bytes: the
/// container ID is capped by the journal's file names, an ifname by 15 bytes.
pub fn tag(container_id: &str, ifname: &str) -> String {
    format!("plexus:{container_id}/{ifname}")
}

pub fn alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.as_str()),
        _ => None,
    })
}

pub(crate) fn name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub(crate) fn record(side: Side, link: &LinkMessage, netns: NsId) -> OwnedLink {
    OwnedLink {
        side,
        name: name(link).unwrap_or_default().to_string(),
        ifindex: link.header.index,
        netns,
        mac: link::mac(link),
    }
}

/// What DEL knows about a link it may remove. A name alone is never enough: a link is
/// only removed when it carries the tag, or is the journaled link, or has the MAC the
/// cached result reports.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub name: &'a str,
    /// The alias it must carry: the attachment's [`tag`] (links of exec'd plugins have none).
    pub tag: Option<&'a str>,
    /// As journaled at ADD: then it must be that very link (index, name, MAC).
    pub journaled: Option<&'a OwnedLink>,
    /// The MAC the cached result reports, if any.
    pub mac: Option<&'a str>,
}

#[derive(Debug)]
pub enum Found {
    Ours(LinkMessage),
    Gone,
    /// Something is there that this attachment did not create; the reason says what.
    Foreign(String),
}

/// Looks for the link on `h` (the caller has checked the handle's namespace against the
/// journal): by index when journaled, else by name. One lookup either way.
pub async fn find(h: &Handle, e: &Expected<'_>) -> Result<Found, rtnetlink::Error> {
    let found = match e.journaled {
        Some(j) => link::by_index(h, j.ifindex).await?,
        None => link::by_name(h, e.name).await?,
    };
    let Some(l) = found else {
        return Ok(Found::Gone);
    };
    let have_name = name(&l).unwrap_or_default();
    let have_mac = link::mac(&l);
    let have_alias = alias(&l);
    let want_mac = e.journaled.and_then(|j| j.mac.as_deref()).or(e.mac);
    let mac_differs = |m: &str| {
        !have_mac
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(m))
    };
    let why = if let Some(j) = e.journaled.filter(|j| j.name != have_name) {
        format!("index {} is now {have_name}, not {}", j.ifindex, j.name)
    } else if let Some(tag) = e.tag.filter(|t| have_alias != Some(*t)) {
        format!(
            "{have_name} is not tagged {tag:?} (alias {:?})",
            have_alias.unwrap_or("")
        )
    } else if let Some(m) = want_mac.filter(|m| mac_differs(m)) {
        format!(
            "{have_name} has MAC {}, not {m}",
            have_mac.unwrap_or_default()
        )
    } else if e.tag.is_none() && e.journaled.is_none() && want_mac.is_none() {
        format!("nothing but its name says {have_name} is this attachment's")
    } else {
        return Ok(Found::Ours(l));
    };
    Ok(Found::Foreign(why))
}

/// Deletes the link if it is the one this attachment created; otherwise leaves it and logs
/// why. Gone already is success.
pub async fn remove(h: &Handle, e: &Expected<'_>) -> Result<(), DelegateError> {
    match find(h, e)
        .await
        .map_err(|err| DelegateError::netlink(format!("look up {} for removal", e.name), err))?
    {
        Found::Ours(l) => link::delete(h, l.header.index)
            .await
            .map_err(|err| DelegateError::netlink(format!("delete link {}", e.name), err)),
        Found::Gone => Ok(()),
        Found::Foreign(why) => {
            tracing::warn!(link = e.name, reason = %why, "not removing a link this attachment did not create");
            Ok(())
        }
    }
}

/// DEL of the pod end: only in the namespace the ADD used and only the link it created. A
/// `CNI_NETNS` that is another namespace (another pod's, the node's) has nothing removed in
/// it.
pub(crate) fn remove_pod_link(req: &Request) -> Result<(), DelegateError> {
    let Some(path) = req.netns else {
        return Ok(());
    };
    let ns = match req.open_netns(path) {
        Ok(ns) => ns,
        // The link died with its netns.
        Err(e) if e.is_gone() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let journaled = req
        .owned
        .iter()
        .find(|l| l.side == Side::Pod && l.name == req.ifname);
    if let Some(j) = journaled
        && j.netns != ns.id()?
    {
        tracing::warn!(netns = %path.display(), ifname = req.ifname, "CNI_NETNS is not the namespace ADD created the interface in; nothing in it is removed");
        return Ok(());
    }
    let prev = req.cached_result();
    let mac = prev.as_ref().and_then(|r| {
        r.interfaces
            .iter()
            .find(|i| i.name == req.ifname && i.sandbox.is_some())
            .and_then(|i| i.mac.clone())
    });
    let tag = req.tag();
    let e = Expected {
        name: req.ifname,
        tag: Some(&tag),
        journaled,
        mac: mac.as_deref(),
    };
    ns.run(|h| async move { remove(&h, &e).await })?
}

/// DEL of a veth's host end: the journaled one, or, with no journal, those the cached
/// result names outside the pod (except `keep`, shared links such as the bridge) and the
/// first name ADD tries; each of those only if it carries the attachment's tag. Usually gone
/// already with the pod end; then this is one lookup each.
pub(crate) fn remove_node_links(req: &Request, keep: &[&str]) -> Result<(), DelegateError> {
    let journaled: Vec<&OwnedLink> = req.owned.iter().filter(|l| l.side == Side::Node).collect();
    let prev = req.cached_result();
    let mut unjournaled: Vec<(String, Option<String>)> = Vec::new();
    if journaled.is_empty() {
        unjournaled = prev
            .iter()
            .flat_map(|r| r.interfaces.iter())
            .filter(|i| i.sandbox.is_none() && !keep.contains(&i.name.as_str()))
            .map(|i| (i.name.clone(), i.mac.clone()))
            .collect();
        let derived = crate::veth::host_veth_name(req.container_id, req.ifname);
        if !unjournaled.iter().any(|(n, _)| *n == derived) {
            unjournaled.push((derived, None));
        }
    }
    let node = req.node_netns()?;
    let here = node.id()?;
    let tag = req.tag();
    let mut expected: Vec<Expected> = Vec::new();
    for j in journaled {
        if j.netns == here {
            expected.push(Expected {
                name: &j.name,
                tag: Some(&tag),
                journaled: Some(j),
                mac: None,
            });
        } else {
            tracing::warn!(link = %j.name, "recorded in another node namespace; not removed from this one");
        }
    }
    for (name, mac) in &unjournaled {
        expected.push(Expected {
            name,
            tag: Some(&tag),
            journaled: None,
            mac: mac.as_deref(),
        });
    }
    let expected = &expected;
    node.run(|h| async move {
        let mut errors = Vec::new();
        for e in expected {
            if let Err(err) = remove(&h, e).await {
                errors.push(err);
            }
        }
        DelegateError::collect(errors)
    })?
}

/// Removes journaled links without their delegate (whose conf is no longer readable): each
/// only while it is still the recorded link and carries `tag`; pod-side links only in
/// `pod_netns`, and only if that is the namespace they were recorded in.
pub fn remove_recorded(
    pod_netns: Option<&std::path::Path>,
    links: &[OwnedLink],
    tag: &str,
    timeout: std::time::Duration,
) -> Result<(), DelegateError> {
    let mut errors = Vec::new();
    for (side, ns) in [
        (Side::Pod, pod_netns.map(crate::netns::NetNs::open)),
        (Side::Node, Some(crate::netns::NetNs::current())),
    ] {
        let mine: Vec<&OwnedLink> = links.iter().filter(|l| l.side == side).collect();
        let (false, Some(ns)) = (mine.is_empty(), ns) else {
            continue;
        };
        let ns = match ns {
            Ok(ns) => ns.bounded(timeout),
            Err(e) if e.is_gone() => continue,
            Err(e) => {
                errors.push(e.into());
                continue;
            }
        };
        let here = ns.id()?;
        let expected: Vec<Expected> = mine
            .into_iter()
            .filter(|l| l.netns == here)
            .map(|l| Expected {
                name: &l.name,
                tag: Some(tag),
                journaled: Some(l),
                mac: None,
            })
            .collect();
        let expected = &expected;
        let done = ns.run(|h| async move {
            let mut errors = Vec::new();
            for e in expected {
                if let Err(err) = remove(&h, e).await {
                    errors.push(err);
                }
            }
            DelegateError::collect(errors)
        });
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.into()),
        }
    }
    DelegateError::collect(errors)
}
