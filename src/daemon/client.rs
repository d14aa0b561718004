//! The daemon's API client: kube's own layers (base URI, credentials, extra headers) over a
//! hyper client that offers HTTP/2 by ALPN, so both reflectors' watches, the fallback GETs,
//! the status patches and the events share one long-lived connection to an API server that
//! speaks it (every kube-apiserver does unless HTTP/2 serving was turned off; then the same
//! client speaks HTTP/1.1 with a connection per request in flight).
//!
//! kube's `Client::try_from(Config)` builds an HTTP/1.1-only stack (its rustls connector
//! enables only http1), so the stack is put together here from the same config. HTTP/2 pings
//! find a dead connection within a minute: a watch on it would otherwise wait forever.

use super::metrics::Metrics;
use crate::store::StoreError;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::{Client, Config};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;

const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

pub fn build(config: &Config, origin: &str, metrics: Arc<Metrics>) -> Result<Client, StoreError> {
    let bad = |reason: String| StoreError::Malformed {
        origin: origin.to_string(),
        reason,
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    http.set_keepalive(Some(PING_INTERVAL));
    http.set_nodelay(true);
    let tls = config
        .rustls_client_config()
        .map_err(|e| bad(format!("TLS: {e}")))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let auth = config
        .auth_layer()
        .map_err(|e| crate::store::client_error(e, origin))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| bad(e.to_string()))?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .map_request(move |req: http::Request<kube::client::Body>| {
            metrics.api_request(verb(&req));
            req
        })
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// The Kubernetes verb of a request, as RBAC names it.
fn verb<B>(req: &http::Request<B>) -> &'static str {
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let segments: Vec<&str> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // After `api/v1` or `apis/<group>/<version>`: `[namespaces, ns,] plural [, name [, sub]]`.
    let prefix = if segments.first() == Some(&"api") {
        2
    } else {
        3
    };
    let rest = segments.get(prefix..).unwrap_or_default();
    let collection = match rest.first() {
        Some(&"namespaces") if rest.len() >= 3 => rest.len() == 3,
        _ => rest.len() <= 1,
    };
    match *req.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET if collection => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::verb;

    fn v(method: &str, uri: &str) -> &'static str {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap();
        verb(&req)
    }

    #[test]
    fn verbs_follow_rbac() {
        assert_eq!(
            v("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn"),
            "list"
        );
        assert_eq!(
            v("GET", "/api/v1/pods?watch=true&resourceVersion=5"),
            "watch"
        );
        assert_eq!(v("GET", "/api/v1/namespaces/default/pods/web"), "get");
        assert_eq!(v("GET", "/api/v1/namespaces/default/pods"), "list");
        assert_eq!(
            v("PATCH", "/api/v1/namespaces/default/pods/web/status"),
            "patch"
        );
        assert_eq!(v("POST", "/api/v1/namespaces/default/events"), "create");
        assert_eq!(
            v(
                "GET",
                "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"
            ),
            "list"
        );
        assert_eq!(
            v(
                "GET",
                "/apis/k8s.cni.cncf.io/v1/namespaces/team/network-attachment-definitions/blue"
            ),
            "get"
        );
    }
}
