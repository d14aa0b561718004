//! The kubeconfig `plexus install` writes for the CNI binary on the host.
//!
//! The user authenticates with `tokenFile`, never an inline token: kubelet rotates the
//! projected service-account token, and a token copied into the kubeconfig expires under
//! Multus thin (#852). The client reads the file on each invocation. The CA is embedded
//! (`certificate-authority-data`) because the host does not see the pod's
//! `/var/run/secrets` mount, and the CA is public.

use std::path::Path;

/// Where a pod finds its service account's CA and token.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the in-cluster API address.
pub fn in_cluster_server(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = get("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = get("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty())?;
    // An IPv6 service address needs brackets in a URL.
    if host.contains(':') {
        Some(format!("https://[{host}]:{port}"))
    } else {
        Some(format!("https://{host}:{port}"))
    }
}

/// A kubeconfig with one cluster, one token-file user and the context joining them.
pub fn render(server: &str, ca_pem: &[u8], token_file: &Path) -> String {
    // JSON strings are valid YAML double-quoted scalars: no value can break the structure.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         \x20 - name: plexus\n\
         \x20   cluster:\n\
         \x20     server: {server}\n\
         \x20     certificate-authority-data: {ca}\n\
         users:\n\
         \x20 - name: plexus\n\
         \x20   user:\n\
         \x20     tokenFile: {token}\n\
         contexts:\n\
         \x20 - name: plexus\n\
         \x20   context:\n\
         \x20     cluster: plexus\n\
         \x20     user: plexus\n\
         current-context: plexus\n",
        server = q(server),
        ca = q(&base64(ca_pem)),
        token = q(&token_file.display().to_string()),
    )
}

/// Standard base64 with padding (RFC 4648 §4), as kubeconfig's `*-data` fields expect.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn in_cluster_server_from_env() {
        let env = |h: &'static str, p: &'static str| {
            move |k: &str| match k {
                "KUBERNETES_SERVICE_HOST" => Some(h.to_string()),
                "KUBERNETES_SERVICE_PORT" => Some(p.to_string()),
                _ => None,
            }
        };
        assert_eq!(
            in_cluster_server(env("10.96.0.1", "443")).as_deref(),
            Some("https://10.96.0.1:443")
        );
        assert_eq!(
            in_cluster_server(env("fd00::1", "6443")).as_deref(),
            Some("https://[fd00::1]:6443")
        );
        assert_eq!(in_cluster_server(env("", "443")), None);
        assert_eq!(in_cluster_server(|_| None), None);
    }

    #[test]
    fn kube_reads_the_rendered_kubeconfig() {
        let yaml = render(
            "https://10.96.0.1:443",
            b"-----BEGIN CERTIFICATE-----\n",
            Path::new("/etc/cni/net.d/plexus.d/token \"quoted\""),
        );
        let k = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(k.current_context.as_deref(), Some("plexus"));
        let cluster = k.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(base64(b"-----BEGIN CERTIFICATE-----\n").as_str())
        );
        let user = k.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.token_file.as_deref(),
            Some("/etc/cni/net.d/plexus.d/token \"quoted\"")
        );
        assert!(user.token.is_none());
    }
}
