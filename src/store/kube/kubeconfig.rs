//! A kubeconfig read into what the one-shot client needs to reach the API server: the
//! server's address, the TLS settings built from the kubeconfig's own CA (never the system's
//! roots: a CNI plugin trusts the cluster it was configured for, and loading the system store
//! costs more than the whole call), and the credentials.
//!
//! Credentials the client understands: `token`, `tokenFile` (read when the store opens, so a
//! rotated projected token is picked up by the next call) and a client certificate and key
//! (`client-certificate[-data]`, `client-key[-data]`). Exec plugins, auth providers,
//! basic auth, impersonation and `proxy-url` are refused with code 7 naming the key: a CNI
//! call must not run a credential command or go through a proxy on every pod start.

use super::{STORE, is_loopback};
use crate::store::StoreError;
use ::kube::config::{Kubeconfig, KubeconfigError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::ExposeSecret;
use std::path::Path;
use std::sync::Arc;

/// Where and how to reach the API server.
pub(super) struct Endpoint {
    /// `host` or `host:port` as the server URL gives it: the `Host` header.
    pub authority: http::uri::Authority,
    /// The host without IPv6 brackets: what is resolved or parsed as an address.
    pub host: String,
    pub port: u16,
    /// The server URL's path (a proxy's prefix such as `/k8s/clusters/c-1`), without a
    /// trailing `/`; empty for most clusters.
    pub base_path: String,
    /// `None` for plain HTTP (loopback servers only).
    pub tls: Option<Tls>,
    /// The `Authorization` header, when the credentials are a bearer token.
    pub authorization: Option<http::HeaderValue>,
}

pub(super) struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    /// Whether the kubeconfig names a CA: without one no certificate is trusted, and a
    /// failed handshake says so.
    pub has_ca: bool,
}

/// Reads `path` (its current context). `origin` names it in errors.
pub(super) fn endpoint(path: &Path, origin: &str) -> Result<Endpoint, StoreError> {
    let malformed = |reason: String| malformed(origin, reason);
    let kc = Kubeconfig::read_from(path).map_err(|e| match e {
        // Not there (yet): the DaemonSet may be about to write it.
        KubeconfigError::ReadConfig(source, _) => StoreError::Unavailable {
            store: STORE,
            step: format!("read {origin}: {source}"),
            source: Box::new(source),
        },
        other => malformed(other.to_string()),
    })?;
    let (context, cluster, user) = current(&kc).map_err(&malformed)?;
    let server = Server::of(cluster, &context.cluster).map_err(&malformed)?;
    if cluster.proxy_url.is_some() {
        return Err(malformed(
            "proxy-url is not supported: the CNI binary talks to the API server directly".into(),
        ));
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        tracing::warn!(%origin, "insecure-skip-tls-verify is ignored: the API server's certificate is always verified");
    }
    let (authorization, identity) = match user {
        Some(user) => credentials(user, context.user.as_deref().unwrap_or_default(), origin)?,
        None => (None, None),
    };
    let tls = if server.https {
        Some(tls(cluster, &server.host, identity).map_err(&malformed)?)
    } else {
        None
    };
    Ok(Endpoint {
        authority: server.authority,
        host: server.host,
        port: server.port,
        base_path: server.url.path().trim_end_matches('/').to_string(),
        tls,
        authorization,
    })
}

fn malformed(origin: &str, reason: String) -> StoreError {
    StoreError::Malformed {
        origin: origin.to_string(),
        reason,
    }
}

/// The current context, its cluster and its user (if it names one).
fn current(
    kc: &Kubeconfig,
) -> Result<
    (
        &::kube::config::Context,
        &::kube::config::Cluster,
        Option<&::kube::config::AuthInfo>,
    ),
    String,
> {
    let context_name = kc
        .current_context
        .as_deref()
        .ok_or_else(|| "no current-context".to_string())?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("context {context_name:?} is not defined"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| format!("cluster {:?} is not defined", context.cluster))?;
    let user = match &context.user {
        Some(name) => Some(
            kc.auth_infos
                .iter()
                .find(|u| &u.name == name)
                .and_then(|u| u.auth_info.as_ref())
                .ok_or_else(|| format!("user {name:?} is not defined"))?,
        ),
        None => None,
    };
    Ok((context, cluster, user))
}

/// The API server's address as the cluster's `server` gives it.
struct Server {
    url: http::Uri,
    authority: http::uri::Authority,
    host: String,
    port: u16,
    https: bool,
}

impl Server {
    fn of(cluster: &::kube::config::Cluster, name: &str) -> Result<Server, String> {
        let server = cluster
            .server
            .as_deref()
            .ok_or_else(|| format!("cluster {name:?} has no server"))?;
        let url: http::Uri = server
            .parse()
            .map_err(|e| format!("server {server:?}: {e}"))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            // `kubectl proxy` on the node serves plain HTTP on loopback and adds the
            // credentials itself; nothing leaves the machine.
            Some("http") if is_loopback(url.host()) => false,
            _ => {
                return Err(format!(
                    "server {url} is not https: plain http is accepted only for a loopback \
                     server (127.0.0.0/8, ::1, localhost, e.g. kubectl proxy), because the \
                     bearer token and pod data would otherwise cross the network in clear text"
                ));
            }
        };
        let authority = url
            .authority()
            .cloned()
            .ok_or_else(|| format!("server {server:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Server {
            url,
            authority,
            host,
            port,
            https,
        })
    }
}

/// The `Authorization` header (a bearer token) and the client identity (certificate and
/// key) of `user`; credentials a CNI call must not use are refused naming their key.
fn credentials(
    user: &::kube::config::AuthInfo,
    user_name: &str,
    origin: &str,
) -> Result<(Option<http::HeaderValue>, Option<Identity>), StoreError> {
    let malformed = |reason: String| malformed(origin, reason);
    let refused = [
        (user.exec.is_some(), "exec"),
        (user.auth_provider.is_some(), "auth-provider"),
        (
            user.username.is_some() || user.password.is_some(),
            "username/password",
        ),
        (
            user.impersonate.is_some()
                || user.impersonate_uid.is_some()
                || user.impersonate_groups.is_some()
                || user.impersonate_user_extra.is_some(),
            "as (impersonation)",
        ),
    ];
    if let Some((_, key)) = refused.iter().find(|(set, _)| *set) {
        return Err(malformed(format!(
            "user {user_name:?}: {key} credentials are not supported by the CNI binary; use \
             token, tokenFile or a client certificate"
        )));
    }
    let token = match (&user.token, &user.token_file) {
        (Some(t), _) => Some(t.expose_secret().to_string()),
        (None, Some(file)) => Some(read_token_file(file, origin)?),
        (None, None) => None,
    };
    let mut authorization = None;
    if let Some(token) = token {
        let token = token.trim();
        let mut value = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| malformed("the token is not a valid HTTP header value".into()))?;
        value.set_sensitive(true);
        authorization = Some(value);
    }
    let cert = data_or_file(
        user.client_certificate_data.as_deref(),
        user.client_certificate.as_deref(),
        "client-certificate",
    )
    .map_err(&malformed)?;
    let key = data_or_file(
        user.client_key_data.as_ref().map(|k| k.expose_secret()),
        user.client_key.as_deref(),
        "client-key",
    )
    .map_err(&malformed)?;
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some(client_identity(&cert, &key).map_err(&malformed)?),
        (None, None) => None,
        _ => {
            return Err(malformed(
                "a client certificate needs both client-certificate and client-key".into(),
            ));
        }
    };
    Ok((authorization, identity))
}

/// TLS towards the server: the kubeconfig's CA only, the server name it names (or the host).
fn tls(
    cluster: &::kube::config::Cluster,
    host: &str,
    identity: Option<Identity>,
) -> Result<Tls, String> {
    let ca = data_or_file(
        cluster.certificate_authority_data.as_deref(),
        cluster.certificate_authority.as_deref(),
        "certificate-authority",
    )?;
    let server_name = cluster.tls_server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    Ok(Tls {
        has_ca: ca.is_some(),
        config: Arc::new(client_config(ca.as_deref(), identity)?),
        server_name,
    })
}

/// A projected token being rotated may be missing for a moment: that is worth another try.
fn read_token_file(file: &str, origin: &str) -> Result<String, StoreError> {
    let unavailable = |reason: String| StoreError::Unavailable {
        store: STORE,
        step: format!("load credentials from {origin}: token file {file}: {reason}"),
        source: Box::new(std::io::Error::other(reason.clone())),
    };
    let token = std::fs::read_to_string(file).map_err(|e| unavailable(e.to_string()))?;
    if token.trim().is_empty() {
        return Err(unavailable("empty".into()));
    }
    Ok(token)
}

/// `<key>-data` (base64 of PEM) wins over `<key>` (a PEM file), as in client-go.
fn data_or_file(
    data: Option<&str>,
    file: Option<&str>,
    key: &str,
) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine;
    match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map(Some)
            .map_err(|e| format!("{key}-data is not base64: {e}")),
        (None, Some(file)) => std::fs::read(file)
            .map(Some)
            .map_err(|e| format!("{key} {file}: {e}")),
        (None, None) => Ok(None),
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(cert: &[u8], key: &[u8]) -> Result<Identity, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("client-certificate: {e}"))?;
    if chain.is_empty() {
        return Err("client-certificate holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client-key: {e}"))?;
    Ok((chain, key))
}

/// TLS that trusts the kubeconfig's CA and nothing else, offering HTTP/1.1.
fn client_config(
    ca: Option<&[u8]>,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| format!("certificate-authority: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("certificate-authority: {e}"))?;
        }
        if roots.is_empty() {
            return Err("certificate-authority holds no certificate".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
