//! The API paths the fake serves and what each does to the store.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Channel;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::patch::{json_patch, merge_patch};
use super::serve::{Reply, ReplyBody, not_found, status};
use super::{Change, Kind, NAD_API, NAD_PLURAL, Route, Shared};

/// The resource a path names.
pub(super) enum Target {
    Version,
    /// A collection of pods or NADs; `None` namespace means all namespaces.
    Collection(Kind, Option<String>),
    Item(Kind, String, String),
    PodStatus(String, String),
    Events(String),
    Event(String, String),
    /// A path segment that a client building URLs safely would never send.
    Suspicious,
    Unknown,
}

impl Target {
    pub(super) fn parse(segs: &[&str]) -> Target {
        if segs
            .iter()
            .any(|s| s.contains('%') || *s == ".." || *s == ".")
        {
            return Target::Suspicious;
        }
        let s = |x: &str| x.to_string();
        match segs {
            ["version"] => Target::Version,
            ["api", "v1", "pods"] => Target::Collection(Kind::Pod, None),
            ["api", "v1", "namespaces", ns, "pods"] => Target::Collection(Kind::Pod, Some(s(ns))),
            ["api", "v1", "namespaces", ns, "pods", n] => Target::Item(Kind::Pod, s(ns), s(n)),
            ["api", "v1", "namespaces", ns, "pods", n, "status"] => Target::PodStatus(s(ns), s(n)),
            ["apis", "k8s.cni.cncf.io", "v1", NAD_PLURAL] => Target::Collection(Kind::Nad, None),
            [
                "apis",
                "k8s.cni.cncf.io",
                "v1",
                "namespaces",
                ns,
                NAD_PLURAL,
            ] => Target::Collection(Kind::Nad, Some(s(ns))),
            [
                "apis",
                "k8s.cni.cncf.io",
                "v1",
                "namespaces",
                ns,
                NAD_PLURAL,
                n,
            ] => Target::Item(Kind::Nad, s(ns), s(n)),
            ["api", "v1", "namespaces", ns, "events"]
            | ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => Target::Events(s(ns)),
            ["api", "v1", "namespaces", ns, "events", n]
            | ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", n] => {
                Target::Event(s(ns), s(n))
            }
            _ => Target::Unknown,
        }
    }

    pub(super) fn route(&self, method: &str, watch: bool) -> Route {
        match (self, method) {
            (Target::Version, "GET") => Route::Version,
            (Target::Collection(Kind::Pod, _), "GET") if watch => Route::WatchPods,
            (Target::Collection(Kind::Pod, _), "GET") => Route::ListPods,
            (Target::Collection(Kind::Nad, _), "GET") if watch => Route::WatchNads,
            (Target::Collection(Kind::Nad, _), "GET") => Route::ListNads,
            (Target::Item(Kind::Pod, ..), "GET") => Route::GetPod,
            (Target::Item(Kind::Pod, ..), "PATCH") => Route::PatchPod,
            (Target::Item(Kind::Pod, ..) | Target::PodStatus(..), "PUT") => Route::PutPod,
            (Target::PodStatus(..), "PATCH") => Route::PatchPodStatus,
            (Target::PodStatus(..), "GET") => Route::GetPod,
            (Target::Item(Kind::Nad, ..), "GET") => Route::GetNad,
            (Target::Events(_), "POST") => Route::CreateEvent,
            (Target::Event(..), "PATCH") => Route::PatchEvent,
            _ => Route::Other,
        }
    }
}

pub(super) fn dispatch(
    shared: &Shared,
    target: &Target,
    method: &str,
    params: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Reply {
    let plural = |k: Kind| match k {
        Kind::Pod => "pods",
        Kind::Nad => NAD_PLURAL,
    };
    match (target, method) {
        (Target::Suspicious, _) => status(400, "fake apiserver: suspicious path segment"),
        (Target::Version, "GET") => Reply::json(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        ),
        (Target::Collection(kind, ns), "GET") => {
            let selector = params.get("fieldSelector").cloned();
            let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                let since = params
                    .get("resourceVersion")
                    .and_then(|r| r.parse::<u64>().ok())
                    .filter(|r| *r > 0);
                let timeout = params
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok());
                watch_reply(shared, *kind, ns.clone(), selector, since, timeout)
            } else {
                list(shared, *kind, ns.as_deref(), selector.as_deref())
            }
        }
        (Target::Item(kind, ns, name), "GET") => {
            match shared
                .lock()
                .objects
                .get(&(*kind, ns.clone(), name.clone()))
            {
                Some(o) => Reply::json(200, o.clone()),
                None => not_found(plural(*kind), name),
            }
        }
        (Target::PodStatus(ns, name), "GET") => {
            match shared
                .lock()
                .objects
                .get(&(Kind::Pod, ns.clone(), name.clone()))
            {
                Some(o) => Reply::json(200, o.clone()),
                None => not_found("pods", name),
            }
        }
        (Target::Item(Kind::Pod, ns, name), "PATCH") => {
            patch_pod(shared, ns, name, content_type, body, false)
        }
        (Target::PodStatus(ns, name), "PATCH") => {
            patch_pod(shared, ns, name, content_type, body, true)
        }
        (Target::Item(Kind::Pod, ns, name), "PUT") => put_pod(shared, ns, name, body, false),
        (Target::PodStatus(ns, name), "PUT") => put_pod(shared, ns, name, body, true),
        (Target::Events(ns), "POST") => create_event(shared, ns, body),
        (Target::Event(ns, name), "PATCH") => patch_event(shared, ns, name, content_type, body),
        (Target::Unknown, _) => status(404, "the server could not find the requested resource"),
        _ => status(405, format!("method {method} is not allowed here")),
    }
}

fn list(shared: &Shared, kind: Kind, ns: Option<&str>, selector: Option<&str>) -> Reply {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((k, n, _), o)| {
            *k == kind && ns.is_none_or(|ns| ns == n) && super::fields::selects(selector, o)
        })
        .map(|(_, v)| v.clone())
        .collect();
    let (api, list_kind) = match kind {
        Kind::Pod => ("v1", "PodList"),
        Kind::Nad => (NAD_API, "NetworkAttachmentDefinitionList"),
    };
    Reply::json(
        200,
        json!({"apiVersion": api, "kind": list_kind,
               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    )
}

fn matches(c: &Change, kind: Kind, ns: Option<&str>, selector: Option<&str>) -> bool {
    let m = &c.object["metadata"];
    c.kind == kind
        && ns.is_none_or(|ns| m["namespace"] == ns)
        && super::fields::selects(selector, &c.object)
}

/// A watch stream: the history after `since`, or ADDED for every current object when there is
/// no `since`, then live changes, one JSON event per line, until `timeout` or the server stops.
fn watch_reply(
    shared: &Shared,
    kind: Kind,
    ns: Option<String>,
    selector: Option<String>,
    since: Option<u64>,
    timeout: Option<u64>,
) -> Reply {
    let (initial, mut live) = {
        let st = shared.lock();
        let initial: Vec<Change> = match since {
            Some(rv) => st.history.iter().filter(|c| c.rv > rv).cloned().collect(),
            None => st
                .objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(_, o)| Change {
                    kind,
                    rv: 0,
                    kind_of_change: "ADDED",
                    object: o.clone(),
                })
                .collect(),
        };
        (initial, shared.changes.subscribe())
    };
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(16);
    tokio::spawn(async move {
        let line = |c: &Change| {
            let mut s = json!({"type": c.kind_of_change, "object": c.object}).to_string();
            s.push('\n');
            Bytes::from(s)
        };
        let (ns, selector) = (ns.as_deref(), selector.as_deref());
        for c in initial.iter().filter(|c| matches(c, kind, ns, selector)) {
            if tx.send_data(line(c)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout.unwrap_or(3600)));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(c) if matches(&c, kind, ns, selector) => {
                        if tx.send_data(line(&c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut deadline => return,
            }
        }
    });
    Reply {
        code: 200,
        retry_after: None,
        body: ReplyBody::Stream(body),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| status(400, format!("body is not JSON: {e}")))
}

/// Applies a patch by content type; `None` content types the fake does not implement.
fn apply_patch(obj: &mut Value, content_type: &str, patch: &Value) -> Result<(), Reply> {
    match content_type.split(';').next().unwrap_or("").trim() {
        // A strategic merge patch of maps (annotations, labels, status fields) behaves as a
        // merge patch; lists with patch strategies are not something Plexus sends.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(obj, patch);
            Ok(())
        }
        "application/json-patch+json" => json_patch(obj, patch).map_err(|e| status(422, e)),
        other => Err(status(
            415,
            format!("unsupported patch content type {other:?}"),
        )),
    }
}

/// The preconditions an object carries in its metadata, as the apiserver checks them.
fn check_preconditions(
    stored: &Value,
    incoming: &Value,
    what: &str,
    name: &str,
) -> Result<(), Reply> {
    for key in ["resourceVersion", "uid"] {
        if let Some(want) = incoming["metadata"][key].as_str()
            && stored["metadata"][key].as_str() != Some(want)
        {
            return Err(status(
                409,
                format!(
                    "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again"
                ),
            ));
        }
    }
    Ok(())
}

/// Keeps what the write may not change. Through `pods/status` the spec and ownerReferences are
/// kept as well (the pod status strategy), while annotations and labels may change: that is how
/// network-status gets written.
fn restore_fixed(new: &mut Value, old: &Value, status_only: bool) {
    let mut fixed = vec![
        "/metadata/name",
        "/metadata/namespace",
        "/metadata/uid",
        "/metadata/creationTimestamp",
        "/apiVersion",
        "/kind",
    ];
    if status_only {
        fixed.extend(["/spec", "/metadata/ownerReferences"]);
    }
    for pointer in fixed {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let Some(Value::Object(m)) = new.pointer_mut(parent) else {
            continue;
        };
        match old.pointer(pointer) {
            Some(v) => {
                m.insert(key.to_string(), v.clone());
            }
            None => {
                m.shift_remove(key);
            }
        }
    }
}

fn write_pod(
    shared: &Shared,
    ns: &str,
    name: &str,
    f: impl FnOnce(&Value) -> Result<Value, Reply>,
    status_only: bool,
) -> Reply {
    let mut st = shared.lock();
    let key = (Kind::Pod, ns.to_string(), name.to_string());
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found("pods", name);
    };
    let mut new = match f(&old) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if !new["metadata"].is_object() {
        return status(422, "metadata must be an object");
    }
    restore_fixed(&mut new, &old, status_only);
    let rv = st.next_rv();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.store(shared, Kind::Pod, key.1, key.2, new.clone(), rv, "MODIFIED");
    Reply::json(200, new)
}

fn patch_pod(
    shared: &Shared,
    ns: &str,
    name: &str,
    ct: &str,
    body: &[u8],
    status_only: bool,
) -> Reply {
    let patch = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    write_pod(
        shared,
        ns,
        name,
        |old| {
            if patch.is_object() {
                check_preconditions(old, &patch, "pods", name)?;
            }
            let mut new = old.clone();
            apply_patch(&mut new, ct, &patch)?;
            Ok(new)
        },
        status_only,
    )
}

fn put_pod(shared: &Shared, ns: &str, name: &str, body: &[u8], status_only: bool) -> Reply {
    let new = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    write_pod(
        shared,
        ns,
        name,
        |old| {
            check_preconditions(old, &new, "pods", name)?;
            Ok(new.clone())
        },
        status_only,
    )
}

fn create_event(shared: &Shared, ns: &str, body: &[u8]) -> Reply {
    let mut ev = match parse_body(body) {
        Ok(v) if v["metadata"].is_object() => v,
        Ok(_) => return status(422, "an event needs metadata"),
        Err(r) => return r,
    };
    if ev["metadata"]["namespace"]
        .as_str()
        .is_some_and(|n| n != ns)
    {
        return status(
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let mut st = shared.lock();
    let name = match (
        ev["metadata"]["name"].as_str(),
        ev["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) => n.to_string(),
        (None, Some(g)) => {
            st.seq += 1;
            format!("{g}{:05x}", st.seq)
        }
        (None, None) => return status(422, "name or generateName is required"),
    };
    let taken = st
        .events
        .iter()
        .any(|e| e["metadata"]["namespace"] == ns && e["metadata"]["name"] == name.as_str());
    if taken {
        return status(409, format!("events \"{name}\" already exists"));
    }
    let rv = st.next_rv();
    let uid = st.next_uid();
    let m = &mut ev["metadata"];
    m["name"] = json!(name);
    m["namespace"] = json!(ns);
    m["uid"] = json!(uid);
    m["resourceVersion"] = json!(rv.to_string());
    m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    st.events.push(ev.clone());
    Reply::json(201, ev)
}

fn patch_event(shared: &Shared, ns: &str, name: &str, ct: &str, body: &[u8]) -> Reply {
    let patch = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = shared.lock();
    let rv = st.next_rv();
    let Some(ev) = st
        .events
        .iter_mut()
        .find(|e| e["metadata"]["namespace"] == ns && e["metadata"]["name"] == name)
    else {
        return not_found("events", name);
    };
    let mut new = ev.clone();
    if let Err(r) = apply_patch(&mut new, ct, &patch) {
        return r;
    }
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    *ev = new.clone();
    Reply::json(200, new)
}
