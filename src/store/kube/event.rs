//! The core/v1 Event Plexus records about a pod's networks.

use super::COMPONENT;
use crate::store::{Pod, PodEvent};

/// An event message longer than this is cut: the events API rejects longer ones.
pub(super) const EVENT_MESSAGE_LIMIT: usize = 1024;

pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A core/v1 Event about `pod`, named as kubelet's recorder names them (`<pod>.<nanos hex>`).
pub(super) fn event_object(
    pod: &Pod,
    event: &PodEvent,
    host: &str,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let now = k8s_openapi::jiff::Timestamp::now();
    let suffix = format!(".{:x}", now.as_nanosecond());
    let mut stem: String = pod.name.chars().take(253 - suffix.len()).collect();
    while stem.ends_with(['.', '-']) {
        stem.pop();
    }
    let mut message = event.message.clone();
    if message.len() > EVENT_MESSAGE_LIMIT {
        let mut cut = EVENT_MESSAGE_LIMIT;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let host = (!host.is_empty()).then(|| host.to_string());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{stem}{suffix}")),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: pod.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.clone()),
        message: Some(message),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: host.clone(),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: host,
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}
