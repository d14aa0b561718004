//! Devices kubelet's device manager gave a pod, read from its checkpoint file
//! (`/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`), so a NAD with
//! `k8s.v1.cni.cncf.io/resourceName` can hand its delegate the allocated device (`deviceID`).
//!
//! The file is kubelet's, not an API: two shapes of `DeviceIDs` are read, the list of older
//! kubelets and the NUMA-node map (`{"0": [...], "-1": [...]}`) of newer ones. Nothing here
//! knows NADs or networks.

use super::StoreError;
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Where kubelet keeps the checkpoint.
pub const KUBELET_CHECKPOINT: &str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// A checkpoint larger than this is refused rather than read into memory.
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
struct Checkpoint {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "PodUID", default)]
    pod_uid: String,
    #[serde(rename = "ResourceName", default)]
    resource: String,
    #[serde(rename = "DeviceIDs", default)]
    device_ids: Value,
}

/// The device IDs allocated to pod `pod_uid` for `resource`, over all its containers, in
/// file order without repeats. Empty when the pod has none of that resource.
pub fn device_ids(
    checkpoint: &Path,
    pod_uid: &str,
    resource: &str,
) -> Result<Vec<String>, StoreError> {
    let read = |source| StoreError::ReadFile {
        path: checkpoint.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(checkpoint).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(StoreError::TooLarge {
            path: checkpoint.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_CHECKPOINT_BYTES,
        });
    }
    parse_device_ids(&bytes, pod_uid, resource).map_err(|reason| StoreError::Parse {
        path: checkpoint.to_path_buf(),
        reason,
    })
}

/// [`device_ids`] over the checkpoint's bytes.
pub fn parse_device_ids(
    bytes: &[u8],
    pod_uid: &str,
    resource: &str,
) -> Result<Vec<String>, String> {
    let checkpoint: Checkpoint = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut out: Vec<String> = Vec::new();
    for entry in checkpoint.data.entries.unwrap_or_default() {
        if entry.pod_uid != pod_uid || entry.resource != resource {
            continue;
        }
        for id in ids_of(&entry.device_ids)
            .map_err(|e| format!("DeviceIDs of pod {pod_uid} resource {resource}: {e}"))?
        {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

fn ids_of(value: &Value) -> Result<Vec<String>, String> {
    let list = |v: &Value| -> Result<Vec<String>, String> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("device ID {i} is not a string"))
                })
                .collect(),
            other => Err(format!("expected a list of device IDs, got {other}")),
        }
    };
    match value {
        // Kubelet ≥1.20: NUMA node → IDs. Nodes in numeric order (-1, "no NUMA affinity",
        // first), so the result does not depend on how the map was written.
        Value::Object(by_node) => {
            let mut nodes: Vec<(&String, &Value)> = by_node.iter().collect();
            nodes.sort_by_key(|(k, _)| (k.parse::<i64>().unwrap_or(i64::MAX), k.to_string()));
            let mut ids = Vec::new();
            for (_, v) in nodes {
                ids.extend(list(v)?);
            }
            Ok(ids)
        }
        other => list(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c";

    /// Kubelet ≥1.20 (`DeviceIDs` keyed by NUMA node), two containers of the pod asking for the
    /// same resource, another pod and another resource mixed in.
    const NUMA_MAP: &str = r#"{
      "Data": {
        "PodDeviceEntries": [
          {"PodUID": "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c", "ContainerName": "app",
           "ResourceName": "intel.com/sriov_netdevice",
           "DeviceIDs": {"1": ["0000:81:02.0"], "0": ["0000:03:02.1", "0000:03:02.2"]},
           "AllocResp": "CiIKFlBDSURFVklDRV9JTlRFTA=="},
          {"PodUID": "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c", "ContainerName": "sidecar",
           "ResourceName": "intel.com/sriov_netdevice",
           "DeviceIDs": {"-1": ["0000:03:02.3"], "0": ["0000:03:02.1"]},
           "AllocResp": ""},
          {"PodUID": "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c", "ContainerName": "app",
           "ResourceName": "nvidia.com/gpu", "DeviceIDs": {"0": ["GPU-1"]}, "AllocResp": ""},
          {"PodUID": "11111111-2222-3333-4444-555555555555", "ContainerName": "app",
           "ResourceName": "intel.com/sriov_netdevice", "DeviceIDs": {"0": ["0000:03:02.7"]},
           "AllocResp": ""}
        ],
        "RegisteredDevices": {"intel.com/sriov_netdevice": ["0000:03:02.1", "0000:03:02.2"]}
      },
      "Checksum": 1234567890
    }"#;

    /// Kubelet before 1.20: `DeviceIDs` a plain list.
    const LIST: &str = r#"{
      "Data": {
        "PodDeviceEntries": [
          {"PodUID": "0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c", "ContainerName": "app",
           "ResourceName": "intel.com/sriov_netdevice",
           "DeviceIDs": ["0000:03:02.4", "0000:03:02.5"], "AllocResp": ""}
        ],
        "RegisteredDevices": {}
      },
      "Checksum": 42
    }"#;

    #[test]
    fn numa_map_shape_gives_every_container_devices_in_node_order_once() {
        let ids = parse_device_ids(NUMA_MAP.as_bytes(), UID, "intel.com/sriov_netdevice").unwrap();
        assert_eq!(
            ids,
            vec![
                "0000:03:02.1",
                "0000:03:02.2",
                "0000:81:02.0",
                "0000:03:02.3"
            ]
        );
        assert_eq!(
            parse_device_ids(NUMA_MAP.as_bytes(), UID, "nvidia.com/gpu").unwrap(),
            vec!["GPU-1"]
        );
    }

    #[test]
    fn list_shape_of_older_kubelets_is_read() {
        let ids = parse_device_ids(LIST.as_bytes(), UID, "intel.com/sriov_netdevice").unwrap();
        assert_eq!(ids, vec!["0000:03:02.4", "0000:03:02.5"]);
    }

    #[test]
    fn other_pods_and_resources_give_nothing() {
        assert!(
            parse_device_ids(NUMA_MAP.as_bytes(), UID, "example.com/none")
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_device_ids(
                LIST.as_bytes(),
                "99999999-2222-3333-4444-555555555555",
                "intel.com/sriov_netdevice"
            )
            .unwrap()
            .is_empty()
        );
        let empty = r#"{"Data":{"PodDeviceEntries":null,"RegisteredDevices":null},"Checksum":0}"#;
        assert!(
            parse_device_ids(empty.as_bytes(), UID, "x/y")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_checkpoints_are_parse_errors_not_panics() {
        for bad in [
            "",
            "[]",
            r#"{"Data":{"PodDeviceEntries":[{"PodUID":"0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c","ResourceName":"a/b","DeviceIDs":"x"}]}}"#,
            r#"{"Data":{"PodDeviceEntries":[{"PodUID":"0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c","ResourceName":"a/b","DeviceIDs":{"0":[1]}}]}}"#,
        ] {
            assert!(
                parse_device_ids(bad.as_bytes(), UID, "a/b").is_err(),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn file_errors_carry_the_path_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kubelet_internal_checkpoint");
        let e = device_ids(&missing, UID, "a/b").unwrap_err();
        assert_eq!(e.code(), 5);
        assert!(e.to_string().contains("kubelet_internal_checkpoint"), "{e}");

        std::fs::write(&missing, "{not json").unwrap();
        assert_eq!(device_ids(&missing, UID, "a/b").unwrap_err().code(), 7);

        std::fs::write(&missing, LIST).unwrap();
        assert_eq!(
            device_ids(&missing, UID, "intel.com/sriov_netdevice").unwrap(),
            vec!["0000:03:02.4", "0000:03:02.5"]
        );
    }
}
