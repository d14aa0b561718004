//! Requests through a kube-rs `Client`: the node daemon's (one HTTP/2 connection shared with
//! its reflectors) and the unit tests' scripted mocks. The one-shot binary never builds one
//! (it uses `wire`), so none of this is in its code.

use super::{Failure, MAX_BODY_BYTES, Reply, chain, response_head};
use ::kube::client::{Body, Client};

pub(super) async fn send(
    client: &Client,
    request: http::Request<Vec<u8>>,
) -> Result<Reply, Failure> {
    let response = client
        .send(request.map(Body::from))
        .await
        .map_err(transport_failure)?;
    let status = response.status().as_u16();
    let retry_after = response_head(response.headers())?;
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| Failure::Transient(format!("read response: {}", chain(&e))))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(Failure::Fatal(format!(
            "response of {} bytes is over the {MAX_BODY_BYTES}-byte limit",
            body.len()
        )));
    }
    Ok(Reply {
        status,
        retry_after,
        body: body.to_vec(),
    })
}

/// A refused or reset connection may pass; a certificate the client does not trust will not.
fn transport_failure(e: ::kube::Error) -> Failure {
    let text = chain(&e);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        source = match s.downcast_ref::<std::io::Error>() {
            // tokio-rustls reports a rejected handshake as InvalidData; hyper-rustls wraps
            // that in another io::Error, whose `source()` skips the wrapped error itself.
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                return Failure::Fatal(format!("TLS handshake failed: {text}"));
            }
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => s.source(),
        };
    }
    Failure::Transient(text)
}
