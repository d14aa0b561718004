//! Listening, connections, faults and the request log; routing is in `routes`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::routes::{Target, dispatch};
use super::{Fault, Logged, Shared};

// SO_REUSEADDR lets a closed port be bound again while old connections sit in TIME_WAIT.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

pub(super) async fn accept_loop(
    first: tokio::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut open = shared.listening.subscribe();
    let mut listener = Some(first);
    loop {
        if !*open.borrow_and_update() {
            listener = None;
            shared.bound.send_replace(false);
            if open.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        shared.bound.send_replace(true);
        loop {
            tokio::select! {
                acc = l.accept() => {
                    let Ok((stream, _)) = acc else { continue };
                    // As kube-apiserver (Go sets TCP_NODELAY on every connection): otherwise
                    // an answer written in two segments waits for the client's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let hang = shared.lock().fault == Some(Fault::HangAccept);
                    let closed = shared.listening.subscribe();
                    tokio::spawn(serve_conn(stream, tls.clone(), shared.clone(), closed, hang));
                }
                r = open.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if !*open.borrow() {
                        break;
                    }
                }
            }
        }
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut open: watch::Receiver<bool>,
    hang: bool,
) {
    let conn = async move {
        if hang {
            // Held, never read: the client's TLS handshake waits forever.
            let _held = &stream;
            std::future::pending::<()>().await;
        }
        let handler = shared.clone();
        let svc = hyper::service::service_fn(move |req| handle(handler.clone(), req));
        let http = hyper::server::conn::http1::Builder::new();
        match tls {
            Some(acceptor) => {
                if let Ok(s) = acceptor.accept(stream).await {
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    shared.count_connection(h2);
                    let io = hyper_util::rt::TokioIo::new(s);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await;
                    } else {
                        let _ = http.serve_connection(io, svc).await;
                    }
                }
            }
            None => {
                let _ = http
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            }
        }
    };
    // A closed port must not keep serving over connections a client pooled earlier.
    tokio::select! {
        _ = conn => {}
        _ = open.wait_for(|o| !*o) => {}
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a scripted fault")
    }
}

impl std::error::Error for Dropped {}

type Body = Either<Full<Bytes>, Channel<Bytes, Infallible>>;

pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) retry_after: Option<u64>,
    pub(super) body: ReplyBody,
}

pub(super) enum ReplyBody {
    Json(Value),
    Stream(Channel<Bytes, Infallible>),
}

impl Reply {
    pub(super) fn json(code: u16, v: Value) -> Reply {
        Reply {
            code,
            retry_after: None,
            body: ReplyBody::Json(v),
        }
    }
}

pub(super) fn status(code: u16, message: impl Into<String>) -> Reply {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        504 => "Timeout",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    Reply::json(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message.into(), "reason": reason, "code": code
        }),
    )
}

pub(super) fn not_found(what: &str, name: &str) -> Reply {
    let mut r = status(404, format!("{what} \"{name}\" not found"));
    if let ReplyBody::Json(v) = &mut r.body {
        v["details"] = json!({"name": name, "kind": what});
    }
    r
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(String::from);
    let params = parse_query(query.as_deref().unwrap_or(""));
    let method = parts.method.as_str().to_string();
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let authorization = header(hyper::header::AUTHORIZATION);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let target = Target::parse(&segs);
    let route = target.route(
        &method,
        params.get("watch").is_some_and(|w| w == "true" || w == "1"),
    );

    let (idx, fault, token) = {
        let mut st = shared.lock();
        st.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: String::from_utf8_lossy(&body).to_string(),
            route,
            status: None,
            at: std::time::Instant::now(),
        });
        (
            st.log.len() - 1,
            st.take_fault(route, &path),
            st.token.clone(),
        )
    };

    let mut padding = None;
    let reply = match fault {
        Some(Fault::Hang | Fault::HangAccept) => std::future::pending().await,
        Some(Fault::Drop | Fault::ClosedPort) => return Err(Dropped),
        Some(Fault::Status(code)) => {
            let mut r = status(code, format!("scripted fault {code}"));
            r.retry_after = (code == 429).then_some(1);
            Some(r)
        }
        Some(Fault::StatusRetryAfter(code, secs)) => {
            let mut r = status(code, format!("scripted fault {code}"));
            r.retry_after = Some(secs);
            Some(r)
        }
        Some(Fault::Latency(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(Fault::HugeBody(n)) => {
            padding = Some(n);
            None
        }
        None => None,
    };
    let mut reply = match reply {
        Some(r) => r,
        None if authorization.as_deref() != Some(&format!("Bearer {token}")) => {
            status(401, "Unauthorized")
        }
        None => {
            let ct = content_type.as_deref().unwrap_or("");
            dispatch(&shared, &target, &method, &params, ct, &body)
        }
    };
    if let (Some(n), ReplyBody::Json(Value::Object(m))) = (padding, &mut reply.body) {
        m.insert("padding".into(), json!("x".repeat(n)));
    }
    if let Some(entry) = shared.lock().log.get_mut(idx) {
        entry.status = Some(reply.code);
    }
    let mut resp = Response::builder()
        .status(reply.code)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(s) = reply.retry_after {
        resp = resp.header(hyper::header::RETRY_AFTER, s.to_string());
    }
    let body = match reply.body {
        ReplyBody::Json(v) => Either::Left(Full::new(Bytes::from(v.to_string()))),
        ReplyBody::Stream(c) => Either::Right(c),
    };
    resp.body(body).map_err(|_| Dropped)
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}
