//! The optional HTTP listener (`[http] listen`, off unless set): the API under `/v1` (`v1.rs`,
//! bearer tokens, `auth.rs`), and the probes `/metrics` (the whole service's, as `caxton
//! metrics` prints them), `/healthz` (liveness: this process answers) and `/readyz`
//! (readiness: agents loaded, the toolhost and the memory service running, not draining), for
//! Prometheus and Kubernetes-style probes. The listener has a thread of its own, so
//! `/healthz` is answered from a heartbeat of the main runtime: a wedged supervisor is not
//! live even though this thread answers. The API's work runs on the main runtime.
//!
//! **Who may send:** to the probes, anyone who can reach the address. They only read, and
//! nothing they return is a secret or a prompt (the metrics' labels are agent, tool, provider
//! and model names and outcomes); the listener binds loopback unless told otherwise, and the
//! daemon warns when it is not. To the API, a token holder (`v1.rs`). There is no TLS: a
//! reverse proxy terminates it (README). **Hostile senders** get little: the probes take only
//! `GET` and `HEAD` (else 405) and never read a body; a request head must arrive within
//! [`HEAD_TIMEOUT`] (also the idle time of a kept-alive connection) and fit
//! [`MAX_HEAD_BYTES`] (else 431 or the connection is closed); at most `[http]
//! max_connections` connections are served at once (the rest wait in the kernel's backlog).

pub mod a2a;
pub mod auth;
pub mod mcp;
pub mod v1;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::service::Service;
use v1::{Body, Face};

/// Time a request's head has to arrive whole, the first one and each next one on a kept-alive
/// connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's smallest buffer).
pub const MAX_HEAD_BYTES: usize = 8192;

const HTTP_REQUESTS: &str = "caxton_http_requests_total";

/// Serves `listener` on a thread of its own (with its own single-threaded runtime) until
/// `stop` turns true: a scrape or a probe is answered even while every thread of the main
/// runtime is busy relaying runs. Called on the main runtime, where the API's work is done.
pub fn spawn(
    svc: Arc<Service>,
    listener: std::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let face = Arc::new(Face::new(svc, tokio::runtime::Handle::current()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("caxton-http".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(face, listener, stop).await,
                    Err(e) => tracing::error!(error = %e, "the HTTP listener cannot serve"),
                }
            });
        })
}

/// Serves `listener` until `stop` turns true; open connections are closed then.
async fn serve(face: Arc<Face>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "Requests to the HTTP listener, by endpoint and status code."
    );
    let slots = Arc::new(Semaphore::new(face.svc.config().http.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // A slot first: beyond the cap, connections wait in the backlog, not in memory here.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Finished connections are collected as new ones come.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let face = face.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let face = face.clone();
                async move { Ok::<_, Infallible>(respond(&face, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (a bad request, a timeout, a reset): nothing to log.
            let _ = conn.await;
        });
    }
    connections.shutdown().await;
}

/// Why the daemon is not live: its main runtime has not beaten for too long (wedged), though
/// this thread still answers.
fn stalled(svc: &Service) -> Option<String> {
    let since = svc.since_heartbeat();
    (since > crate::service::HEARTBEAT_STALE).then(|| {
        format!(
            "not live: the supervisor's runtime has not answered for {:.1}s",
            since.as_secs_f64()
        )
    })
}

/// `/readyz`: 200 when live and `Service::health` is ready. The reasons name only states, never
/// a service's exit message (which may quote its stderr): this endpoint has no authentication.
fn readiness(svc: &Service) -> (StatusCode, String) {
    if let Some(why) = stalled(svc) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    let health = svc.health();
    let state = |s: &caxton_ipc::api::ServiceState| match s {
        caxton_ipc::api::ServiceState::Starting => "starting",
        caxton_ipc::api::ServiceState::Running { .. } => "running",
        caxton_ipc::api::ServiceState::Unresponsive { .. } => "unresponsive",
        caxton_ipc::api::ServiceState::Restarting { .. } => "restarting",
        caxton_ipc::api::ServiceState::Stopped => "stopped",
    };
    let mut parts = vec![format!("toolhost {}", state(&health.toolhost))];
    if let Some(m) = &health.memory {
        parts.push(format!("memory {}", state(m)));
    }
    if svc.admission().is_draining() {
        parts.push("draining for shutdown".into());
    }
    let (status, word) = if health.ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (status, format!("{word}: {}\n", parts.join("; ")))
}

/// Answers one request: the API under `/v1/`, else a probe.
async fn respond(face: &Arc<Face>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path.starts_with("/v1/") || path == "/v1" {
        let (route, resp) = v1::respond(face, req).await;
        let endpoint = route.map_or("v1_other", v1::Route::label);
        metrics::counter!(HTTP_REQUESTS, "endpoint" => endpoint, "code" => resp.status().as_str().to_string())
            .increment(1);
        return resp;
    }
    if path == "/mcp" {
        let resp = mcp::respond(face, req).await;
        metrics::counter!(HTTP_REQUESTS, "endpoint" => "mcp", "code" => resp.status().as_str().to_string())
            .increment(1);
        return resp;
    }
    if path.starts_with("/a2a/") {
        let resp = a2a::respond(face, req).await;
        metrics::counter!(HTTP_REQUESTS, "endpoint" => "a2a", "code" => resp.status().as_str().to_string())
            .increment(1);
        return resp;
    }
    probe(&face.svc, &req).map(BodyExt::boxed_unsync)
}

fn probe(svc: &Service, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let endpoint = match path {
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        _ => "other",
    };
    let head = req.method() == Method::HEAD;
    let (status, body) = if !matches!(*req.method(), Method::GET | Method::HEAD) {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n".to_string(),
        )
    } else {
        match endpoint {
            "metrics" => (StatusCode::OK, svc.metrics()),
            "healthz" => match stalled(svc) {
                None => (StatusCode::OK, "ok\n".to_string()),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "readyz" => readiness(svc),
            _ => (
                StatusCode::NOT_FOUND,
                "not found: this listener serves /metrics, /healthz, /readyz and the API under /v1 (/v1/openapi.json describes it)\n".to_string(),
            ),
        }
    };
    metrics::counter!(HTTP_REQUESTS, "endpoint" => endpoint, "code" => status.as_str().to_string())
        .increment(1);
    let content_type = if endpoint == "metrics" && status == StatusCode::OK {
        caxton_telemetry::CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let length = body.len();
    let mut resp = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    }));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if head {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}
