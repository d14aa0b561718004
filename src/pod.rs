//! Who the pod is: the `K8S_*` keys of `CNI_ARGS`, validated once at the boundary so no later
//! step builds a URL or file name from unchecked input, and the Kubernetes name rules they
//! are held to.

use cni::args::CniArgs;
use cni::env::EnvError;

/// Who the pod is, from `CNI_ARGS` (kubelet sets all four; podman only `K8S_POD_NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub infra_container_id: Option<String>,
}

impl PodRef {
    pub fn from_args(args: &CniArgs) -> Result<PodRef, EnvError> {
        pod_ref(args)
    }

    /// The namespace, `default` when the runtime named none.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// `K8S_POD_INFRA_CONTAINER_ID` follows the rule of `CNI_CONTAINERID`: it is a container ID.
fn validate_container_id(id: &str) -> Result<String, EnvError> {
    let invalid = |reason: String| EnvError::Invalid {
        var: "CNI_ARGS",
        reason,
    };
    let max = crate::journal::MAX_CONTAINER_ID;
    if id.len() > max {
        return Err(invalid(format!(
            "K8S_POD_INFRA_CONTAINER_ID is longer than {max} bytes"
        )));
    }
    if !cni::names::is_valid_name(id) {
        return Err(invalid(format!(
            "K8S_POD_INFRA_CONTAINER_ID {id:?} {}",
            cni::names::NAME_RULE
        )));
    }
    Ok(id.to_string())
}

/// The `K8S_*` keys of `CNI_ARGS`, each checked: they end up in API URLs and file names.
fn pod_ref(args: &CniArgs) -> Result<PodRef, EnvError> {
    let label = |var: &'static str| -> Result<Option<String>, EnvError> {
        match args.get(var).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if is_dns1123_subdomain(v) => Ok(Some(v.to_string())),
            Some(v) => Err(EnvError::Invalid {
                var: "CNI_ARGS",
                reason: format!("{var}={v:?} is not a DNS-1123 name"),
            }),
        }
    };
    let namespace = label("K8S_POD_NAMESPACE")?;
    let name = label("K8S_POD_NAME")?;
    let uid = match args.get("K8S_POD_UID").filter(|v| !v.is_empty()) {
        None => None,
        Some(u) if is_uuid(u) => Some(u.to_string()),
        Some(u) => {
            return Err(EnvError::Invalid {
                var: "CNI_ARGS",
                reason: format!("K8S_POD_UID={u:?} is not a UUID"),
            });
        }
    };
    let infra_container_id = match args.get("K8S_POD_INFRA_CONTAINER_ID") {
        Some(c) if !c.is_empty() => Some(validate_container_id(c)?),
        _ => None,
    };
    Ok(PodRef {
        namespace,
        name,
        uid,
        infra_container_id,
    })
}

/// RFC 1123 subdomain as Kubernetes uses it for object names: ≤253 chars of lowercase
/// alphanumerics, `-` and `.`, starting and ending alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_unbounded)
}

/// RFC 1123 label (namespaces): ≤63 chars.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_unbounded(s)
}

fn is_dns1123_label_unbounded(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_args_are_checked() {
        let with = |a: &str| PodRef::from_args(&CniArgs::parse(a).unwrap());
        assert!(with("K8S_POD_NAMESPACE=../kube-system").is_err());
        assert!(with("K8S_POD_UID=nope").is_err());
        assert!(with("K8S_POD_INFRA_CONTAINER_ID=-x").is_err());
        let ok = with("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=0b1e4a1c-3f5d-4c1e-9a7b-2d6f8e9a0b1c").unwrap();
        assert_eq!(ok.name.as_deref(), Some("p"));
        assert_eq!(ok.namespace(), "ns");
    }
}
