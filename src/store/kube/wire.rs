//! The one-shot binary's HTTP client for the API server: HTTP/1.1 over rustls (or plain TCP
//! to a loopback server), with up to `MAX_CONNECTIONS` connections kept open for the life of
//! the store, so requests sent together (a pod's NADs, its events) go out at once. A
//! connection opened after the first resumes its TLS session, so it skips the certificate
//! checks of a full handshake.
//!
//! kube-rs's client does much more than a CNI call needs (exec credential plugins, auth
//! providers with JSONPath, proxies, its own retries, tracing, a buffered service stack):
//! code that every call would map, and a kubeconfig load that took longer than the rest of
//! the start-up together. This is the part Plexus uses. No thread is started: the host
//! is used as it is when it is an address, and only a name is resolved (on tokio's
//! blocking pool, so the connect timeout bounds it).

use super::kubeconfig::Endpoint;
use super::{Failure, MAX_BODY_BYTES, Reply, chain, response_head, too_large};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Connections open at once: enough for a pod's NADs or events to go out together, few
/// enough not to weigh on the API server's per-client limits.
const MAX_CONNECTIONS: usize = 4;

const USER_AGENT: &str = concat!("plexus/", env!("CARGO_PKG_VERSION"));

pub(super) struct Wire {
    endpoint: Endpoint,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    slots: tokio::sync::Semaphore,
}

impl Wire {
    pub(super) fn new(endpoint: Endpoint, connect_timeout: Duration) -> Wire {
        Wire {
            endpoint,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
        }
    }

    pub(super) async fn exchange(&self, request: http::Request<Vec<u8>>) -> Result<Reply, Failure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Failure::Fatal("the API client is closed".into()))?;
        let (mut sender, reused) = match self.take_idle().await {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.send_request(self.build(&request)?).await {
            // The server closed an idle connection before the request went out on it:
            // nothing was sent, so a fresh connection may carry it.
            Err(e) if reused && e.is_canceled() => {
                sender = self.connect().await?;
                sender.send_request(self.build(&request)?).await
            }
            other => other,
        }
        .map_err(|e| Failure::Transient(format!("send the request: {}", chain(&e))))?;
        let status = response.status().as_u16();
        let retry_after = response_head(response.headers())?;
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large(MAX_BODY_BYTES + 1)
                } else {
                    Failure::Transient(format!("read the response: {}", chain(&*e)))
                }
            })?
            .to_bytes();
        // Only a connection whose answer was read to the end can carry another request.
        if !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
        }
        Ok(Reply {
            status,
            retry_after,
            body: body.to_vec(),
        })
    }

    /// An open connection that can take a request, if one is idle.
    async fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// The request as it goes on the wire: the server URL's path before the API path, the
    /// host, the credentials.
    fn build(
        &self,
        request: &http::Request<Vec<u8>>,
    ) -> Result<http::Request<Full<Bytes>>, Failure> {
        let ep = &self.endpoint;
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut builder = http::Request::builder()
            .method(request.method())
            .uri(format!("{}{path}", ep.base_path))
            .header(http::header::HOST, ep.authority.as_str())
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        if let Some(auth) = &ep.authorization {
            builder = builder.header(http::header::AUTHORIZATION, auth.clone());
        }
        builder
            .body(Full::new(Bytes::from(request.body().clone())))
            .map_err(|e| Failure::Fatal(format!("build the request: {e}")))
    }

    /// A new connection: TCP, TLS (unless plain HTTP on loopback), HTTP/1.1, all within the
    /// connect timeout.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let ep = &self.endpoint;
        let opened = tokio::time::timeout(self.connect_timeout, async {
            let tcp = tcp_connect(&ep.host, ep.port).await?;
            let _ = tcp.set_nodelay(true);
            match &ep.tls {
                None => handshake(tcp).await,
                Some(tls) => {
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    let stream = connector
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| tls_failure(e, tls.has_ca))?;
                    handshake(stream).await
                }
            }
        })
        .await;
        match opened {
            Ok(result) => result,
            Err(_) => Err(Failure::Transient(format!(
                "connect to {}: no connection within {:?}",
                ep.authority, self.connect_timeout
            ))),
        }
    }
}

async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, Failure> {
    let refused = |e: std::io::Error| Failure::Transient(format!("connect to {host}:{port}: {e}"));
    if let Ok(ip) = host.parse::<IpAddr>() {
        return TcpStream::connect(SocketAddr::new(ip, port))
            .await
            .map_err(refused);
    }
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::Transient(format!("resolve {host}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => refused(e),
        None => Failure::Transient(format!("resolve {host}: no address")),
    })
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Transient(format!("HTTP handshake: {}", chain(&e))))?;
    // Driven by the store's runtime whenever it waits on a request; dropped with it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A certificate the client does not trust will not pass on another try; a connection
/// reset during the handshake may.
fn tls_failure(e: std::io::Error, has_ca: bool) -> Failure {
    if e.kind() != std::io::ErrorKind::InvalidData {
        return Failure::Transient(format!("TLS handshake: {e}"));
    }
    let why = if has_ca {
        ""
    } else {
        " (the kubeconfig names no certificate-authority, and only its CA is trusted)"
    };
    Failure::Fatal(format!("TLS handshake failed: {e}{why}"))
}
