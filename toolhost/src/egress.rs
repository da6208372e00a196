//! Host-mediated HTTP for guests: the `caxton_http` import. A guest never gets a socket; it hands
//! the host a request as JSON and gets the response as JSON.
//!
//! Guest ABI (module `caxton_http`):
//! - `fetch(req_ptr: i32, req_len: i32) -> i32` runs the request described by the JSON at
//!   `req_ptr` (`{"method","url","headers":{..},"body"}`; only `url` is required) and returns the
//!   length of the response JSON, which the host keeps: `{"status","url","headers","body",
//!   "truncated"}` or `{"error": "..."}`.
//! - `take(buf_ptr: i32, buf_len: i32) -> i32` copies the kept response into the guest's buffer
//!   and returns the number of bytes copied (the whole response if `buf_len` is large enough).
//!
//! Every request, and every redirect hop, must target a granted origin (scheme, host and port).
//! Names are resolved by the host and every resolved address is checked before connecting:
//! loopback, private, link-local and similar addresses are refused unless the grant of that
//! exact origin (the one requested, or the redirect hop's) says `private = true`; another port
//! or scheme of the same host does not share it. The connection goes to exactly the checked addresses. Responses are cut
//! at [`MAX_RESPONSE_BYTES`]; each request has a deadline, and the guest call's own deadline
//! drops the request when it fires.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use caxton_ipc::trace::TraceParent;
use serde_json::{Value, json};
use tracing::Instrument;
use wasmtime::{Caller, Extern, Linker};

use caxton_ipc::error::Chain;

use crate::policy::{Origin, OriginError, is_public};
use crate::wasm::GuestState;

/// Largest request JSON a guest may pass.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Response bodies are cut here (the response says `"truncated": true`).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Deadline of one request (the tool call's deadline may be shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers a guest may not set: they would change where or how the request goes.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
];
/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// Why a package's HTTP capability cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("cannot build the HTTP client of tool package `{server}`")]
    Client {
        server: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Why a guest's HTTP request was refused or failed. The guest receives the whole chain as
/// `{"error": ...}`; refusals start with `denied:` and say how an operator grants what was refused.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the request is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the request has no `url` string")]
    NoUrl,
    #[error("`{url}` is not a URL")]
    NotUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("`{method}` is not an HTTP method")]
    NotMethod { method: String },
    #[error("header `{name}` may not be set by a tool; the host sets it from the URL")]
    ForbiddenHeader { name: String },
    #[error("header `{name}` must be a string")]
    HeaderNotString { name: String },
    #[error("`{name}` is not a valid header name")]
    HeaderName { name: String },
    #[error("the value of header `{name}` is not valid")]
    HeaderValue { name: String },
    #[error(
        "denied: {origin} is not granted to tool package `{server}` (granted: {granted}); an operator can grant it in caxton.toml [tools.{server}] http"
    )]
    NotGranted {
        origin: Origin,
        server: String,
        granted: String,
    },
    #[error(
        "denied: {ip} is a loopback, private or link-local address; grant {origin} with `private = true` to allow it"
    )]
    PrivateAddress { ip: IpAddr, origin: Origin },
    /// A redirect that may not be followed: the reason is the source.
    #[error("redirect refused")]
    Redirect(#[source] Box<FetchError>),
    #[error("the {status} response's location is not text")]
    LocationNotText { status: reqwest::StatusCode },
    #[error("the {status} response's location `{location}` is not a URL")]
    LocationNotUrl {
        status: reqwest::StatusCode,
        location: String,
        #[source]
        source: url::ParseError,
    },
    #[error("redirect refused: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the request timed out")]
    TimedOut(#[source] reqwest::Error),
    #[error("the request failed")]
    Http(#[source] reqwest::Error),
    #[error("the request did not complete within {REQUEST_TIMEOUT:?} (timed out)")]
    Deadline,
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::TimedOut(e)
        } else {
            FetchError::Http(e)
        }
    }
}

/// Why a name is not resolved for a guest (reqwest carries it as the request's cause).
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{host} did not resolve to any address")]
    NoAddress { host: String },
    #[error(
        "denied: {host} resolves to {ip}, a loopback, private or link-local address; grant this origin with `private = true` to allow it"
    )]
    Private { host: String, ip: IpAddr },
}

/// The HTTP capability of one tool package.
///
/// Whether a private address may be reached is a property of one granted origin (scheme, host
/// and port), but a resolver only sees a host name. So there are two clients: one whose resolver
/// refuses non-public addresses, used for every origin granted without `private = true`, and
/// one whose resolver allows them, used only for origins granted with it. Redirects are followed
/// here, hop by hop, so each hop goes through the client of its own origin.
pub struct Egress {
    server: String,
    origins: Vec<Origin>,
    public: reqwest::Client,
    private: reqwest::Client,
}

impl Egress {
    /// A client limited to `origins`; `None` when nothing is granted.
    pub fn new(server: &str, origins: &[Origin]) -> Result<Option<Arc<Egress>>, EgressError> {
        if origins.is_empty() {
            return Ok(None);
        }
        let client = |allow_private: bool| {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(10))
                .dns_resolver(CheckedResolver { allow_private })
                // Followed in `send`, each hop checked and sent through its origin's client.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|source| EgressError::Client {
                    server: server.into(),
                    source,
                })
        };
        Ok(Some(Arc::new(Egress {
            server: server.into(),
            origins: origins.to_vec(),
            public: client(false)?,
            private: client(true)?,
        })))
    }

    /// Runs one guest request; the answer is the response JSON (or `{"error": ...}`).
    /// `trace` is the tool call's span: each request is a span under it and carries its
    /// `traceparent`.
    pub async fn fetch(&self, request: &[u8], trace: Option<TraceParent>) -> Value {
        // The whole chain of redirects and the body share one deadline.
        let fetched = tokio::time::timeout(REQUEST_TIMEOUT, self.try_fetch(request, trace))
            .await
            .unwrap_or(Err(FetchError::Deadline));
        match fetched {
            Ok(v) => v,
            Err(e) => {
                let error = Chain(&e).to_string();
                tracing::warn!(server = %self.server, %error, "http request refused or failed");
                json!({ "error": error })
            }
        }
    }

    async fn try_fetch(
        &self,
        request: &[u8],
        trace: Option<TraceParent>,
    ) -> Result<Value, FetchError> {
        let req: Value = serde_json::from_slice(request).map_err(FetchError::NotJson)?;
        let url = req
            .get("url")
            .and_then(Value::as_str)
            .ok_or(FetchError::NoUrl)?;
        let url = url::Url::parse(url).map_err(|source| FetchError::NotUrl {
            url: url.into(),
            source,
        })?;
        let method = req.get("method").and_then(Value::as_str).unwrap_or("GET");
        let method =
            reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                FetchError::NotMethod {
                    method: method.into(),
                }
            })?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(given) = req.get("headers").and_then(Value::as_object) {
            for (k, v) in given {
                // The origin check covers the URL; a Host header would send the request to
                // another site behind the same address.
                let name = || k.clone();
                if FORBIDDEN_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    return Err(FetchError::ForbiddenHeader { name: name() });
                }
                let v = v
                    .as_str()
                    .ok_or_else(|| FetchError::HeaderNotString { name: name() })?;
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| FetchError::HeaderName { name: name() })?;
                let value = reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| FetchError::HeaderValue { name: k.clone() })?;
                headers.append(name, value);
            }
        }
        let body = req.get("body").and_then(Value::as_str).map(str::to_string);
        let hop = Hop {
            method,
            url,
            headers,
            body,
            timeout: None,
        };
        let mut resp = self.send(hop, trace).await?;
        let status = resp.status().as_u16();
        let final_url = resp.url().to_string();
        let headers: serde_json::Map<String, Value> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), Value::from(v.to_str().ok()?))))
            .collect();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await? {
            let room = MAX_RESPONSE_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(json!({
            "status": status,
            "url": final_url,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "truncated": truncated,
        }))
    }
}

impl Egress {
    /// One request on the host's own behalf (the A2A client): the same origin checks, post-DNS
    /// address checks and redirect handling as a guest's, the response body up to
    /// [`MAX_RESPONSE_BYTES`]. The caller sets the deadline.
    pub async fn exchange(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(String, String)],
        body: Option<String>,
        timeout: Duration,
        trace: Option<TraceParent>,
    ) -> Result<(u16, String), FetchError> {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| FetchError::HeaderName { name: k.clone() })?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| FetchError::HeaderValue { name: k.clone() })?;
            map.append(name, value);
        }
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| FetchError::NotMethod {
                method: method.into(),
            })?;
        let hop = Hop {
            method,
            url: url.clone(),
            headers: map,
            body,
            timeout: Some(timeout),
        };
        let mut resp = self.send(hop, trace).await?;
        let status = resp.status().as_u16();
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }
}

/// One request of a chain of redirects.
struct Hop {
    method: reqwest::Method,
    url: url::Url,
    headers: reqwest::header::HeaderMap,
    body: Option<String>,
    /// Replaces the client's [`REQUEST_TIMEOUT`] (the host's own requests set their deadline).
    timeout: Option<Duration>,
}

impl Egress {
    /// Sends `hop` and follows redirects (at most [`MAX_REDIRECTS`]), checking each hop's origin
    /// against the grants and sending it through the client of that exact origin.
    async fn send(
        &self,
        mut hop: Hop,
        trace: Option<TraceParent>,
    ) -> Result<reqwest::Response, FetchError> {
        let mut redirects = 0;
        loop {
            let origin = check_url(&self.server, &self.origins, &hop.url).map_err(|e| {
                if redirects == 0 {
                    e
                } else {
                    FetchError::Redirect(Box::new(e))
                }
            })?;
            let client = if origin.private {
                &self.private
            } else {
                &self.public
            };
            let mut builder = client
                .request(hop.method.clone(), hop.url.clone())
                .headers(hop.headers.clone());
            if let Some(body) = &hop.body {
                builder = builder.body(body.clone());
            }
            if let Some(t) = hop.timeout {
                builder = builder.timeout(t);
            }
            // Each hop is a client span under the tool call, and tells the server so.
            let span = tracing::info_span!(
                "egress request",
                otel.name = %hop.method,
                otel.kind = "client",
                http.request.method = %hop.method,
                server.address = hop.url.host_str().unwrap_or_default(),
                url.scheme = hop.url.scheme(),
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            caxton_telemetry::traces::set_parent(&span, trace.as_ref());
            if let Some(cx) = caxton_telemetry::traces::context_of(&span)
                && let Ok(value) = reqwest::header::HeaderValue::from_str(&cx.to_string())
            {
                builder = builder.header("traceparent", value);
            }
            let resp = builder.send().instrument(span.clone()).await;
            match &resp {
                Ok(r) => {
                    span.record("http.response.status_code", r.status().as_u16());
                    if r.status().is_server_error() {
                        caxton_telemetry::traces::fail(&span, r.status().as_str(), None);
                    }
                }
                Err(_) => caxton_telemetry::traces::fail(&span, "request_failed", None),
            }
            let resp = resp?;
            let Some(next) = redirect(&hop, &resp) else {
                return Ok(resp);
            };
            let next = next.map_err(|e| FetchError::Redirect(Box::new(e)))?;
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(FetchError::TooManyRedirects);
            }
            hop = next;
        }
    }
}

/// The request a redirect response asks for (`None` when `resp` is not one to follow), with
/// the usual rules: 301/302 turn a POST into a GET and 303 anything but HEAD, dropping the
/// body; 307/308 repeat the request; credentials are not sent to another origin.
fn redirect(hop: &Hop, resp: &reqwest::Response) -> Option<Result<Hop, FetchError>> {
    use reqwest::StatusCode;
    use reqwest::header;
    let status = resp.status();
    let keep_method = match status {
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => hop.method != reqwest::Method::POST,
        StatusCode::SEE_OTHER => hop.method == reqwest::Method::HEAD,
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
        _ => return None,
    };
    let location = resp.headers().get(header::LOCATION)?;
    let next = location
        .to_str()
        .map_err(|_| FetchError::LocationNotText { status })
        .and_then(|l| {
            hop.url
                .join(l)
                .map_err(|source| FetchError::LocationNotUrl {
                    status,
                    location: l.into(),
                    source,
                })
        });
    let url = match next {
        Ok(url) => url,
        Err(e) => return Some(Err(e)),
    };
    let mut headers = hop.headers.clone();
    let same_origin = match (Origin::of(&hop.url), Origin::of(&url)) {
        (Ok(a), Ok(b)) => a.same(&b),
        _ => false,
    };
    if !same_origin {
        for h in [
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
            header::WWW_AUTHENTICATE,
        ] {
            headers.remove(h);
        }
        headers.remove("cookie2");
    }
    let (method, body) = if keep_method {
        (hop.method.clone(), hop.body.clone())
    } else {
        for h in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
        (reqwest::Method::GET, None)
    };
    Some(Ok(Hop {
        method,
        url,
        headers,
        body,
        timeout: hop.timeout,
    }))
}

/// The grant of `origin` (scheme, host and port exactly); private addresses are allowed when a
/// grant of that same origin says `private = true`.
fn granted(origins: &[Origin], origin: &Origin) -> Option<Origin> {
    let mut same = origins.iter().filter(|o| o.same(origin)).peekable();
    let first = same.peek().copied()?.clone();
    Some(Origin {
        private: same.any(|o| o.private),
        ..first
    })
}

/// The URL's origin is granted, and an IP-literal host is public unless that origin's grant
/// allows private addresses. Returns the grant.
fn check_url(server: &str, origins: &[Origin], url: &url::Url) -> Result<Origin, FetchError> {
    let origin = Origin::of(url)?;
    let Some(granted) = granted(origins, &origin) else {
        return Err(FetchError::NotGranted {
            granted: origins
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            origin,
            server: server.into(),
        });
    };
    if let Ok(ip) = origin.host.parse::<IpAddr>()
        && !granted.private
        && !is_public(ip)
    {
        return Err(FetchError::PrivateAddress { ip, origin });
    }
    Ok(granted)
}

/// Resolves names with the system resolver and, unless `allow_private`, refuses any name with a
/// non-public address. The connection uses exactly the addresses returned here. The resolver
/// sees only the host name, so the client it belongs to is chosen per origin (see [`Egress`]).
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(ResolveError::NoAddress { host }.into());
            }
            if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(ResolveError::Private { host, ip: bad.ip() }.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Adds the `caxton_http` import to the linker. A guest without an HTTP grant gets an error
/// response from `fetch`, never a connection.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "caxton_http",
        "fetch",
        |mut caller: Caller<'_, GuestState>, (ptr, len): (i32, i32)| {
            Box::new(async move {
                let request = read_guest(&mut caller, ptr, len)?;
                let response = if !caller.data().in_call() {
                    let server = caller.data().server.clone();
                    tracing::warn!(%server, "http request refused: no tool call is in progress");
                    json!({"error": "denied: http requests are served only during a tool call"})
                } else {
                    match caller.data().egress.clone() {
                    Some(egress) => egress.fetch(&request, caller.data().call_trace()).await,
                    None => {
                        let server = caller.data().server.clone();
                        tracing::warn!(%server, "http request refused: no http grant");
                        json!({"error": format!("denied: tool package `{server}` has no http grant; an operator can grant origins in caxton.toml [tools.{server}] http")})
                    }
                }
                };
                let bytes = response.to_string().into_bytes();
                let n = i32::try_from(bytes.len())?;
                caller.data_mut().http_response = bytes;
                Ok(n)
            })
        },
    )?;
    linker.func_wrap(
        "caxton_http",
        "take",
        |mut caller: Caller<'_, GuestState>, ptr: i32, cap: i32| -> wasmtime::Result<i32> {
            let pending = std::mem::take(&mut caller.data_mut().http_response);
            let n = pending.len().min(usize::try_from(cap)?);
            let memory = guest_memory(&mut caller)?;
            memory.write(&mut caller, usize::try_from(ptr)?, &pending[..n])?;
            Ok(i32::try_from(n)?)
        },
    )?;
    Ok(())
}

fn guest_memory(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("the guest exports no memory"),
    }
}

fn read_guest(
    caller: &mut Caller<'_, GuestState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let len = usize::try_from(len)?;
    wasmtime::ensure!(
        len <= MAX_REQUEST_BYTES,
        "http request of {len} bytes exceeds {MAX_REQUEST_BYTES}"
    );
    let memory = guest_memory(caller)?;
    let mut buf = vec![0; len];
    memory.read(&caller, usize::try_from(ptr)?, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP server: `/ok` answers 200, `/to/<url>` redirects to `<url>` (302).
    async fn server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let reply = match path.strip_prefix("/to/") {
                        Some(to) => format!(
                            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        ),
                        None => {
                            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                                .to_string()
                        }
                    };
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        port
    }

    fn origin(text: &str, private: bool) -> Origin {
        Origin {
            private,
            ..Origin::parse(text).unwrap()
        }
    }

    async fn fetch(egress: &Egress, url: &str) -> Value {
        egress
            .fetch(json!({ "url": url }).to_string().as_bytes(), None)
            .await
    }

    #[tokio::test]
    async fn private_addresses_are_allowed_per_exact_origin() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (a, b) = (server().await, server().await);
        // `localhost` resolves to 127.0.0.1: only the origin granted with `private = true` may
        // reach it, not another port or scheme of the same host.
        let egress = Egress::new(
            "t",
            &[
                origin(&format!("http://localhost:{a}"), true),
                origin(&format!("http://localhost:{b}"), false),
                origin(&format!("https://localhost:{a}"), false),
            ],
        )
        .unwrap()
        .unwrap();
        let ok = fetch(&egress, &format!("http://localhost:{a}/ok")).await;
        assert_eq!(ok["status"], 200, "{ok}");
        for url in [
            format!("http://localhost:{b}/ok"),
            format!("https://localhost:{a}/ok"),
            // Across a redirect, the hop's own origin decides.
            format!("http://localhost:{a}/to/http://localhost:{b}/ok"),
        ] {
            let refused = fetch(&egress, &url).await;
            let error = refused["error"].as_str().unwrap_or_default();
            assert!(error.contains("resolves to 127.0.0.1"), "{url}: {refused}");
        }
        // A redirect within the private origin is followed.
        let followed = fetch(
            &egress,
            &format!("http://localhost:{a}/to/http://localhost:{a}/ok"),
        )
        .await;
        assert_eq!(followed["status"], 200, "{followed}");
        assert_eq!(followed["url"], format!("http://localhost:{a}/ok"));
    }

    #[tokio::test]
    async fn redirects_are_checked_and_capped() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let a = server().await;
        let egress = Egress::new("t", &[origin(&format!("http://127.0.0.1:{a}"), true)])
            .unwrap()
            .unwrap();
        let out = fetch(
            &egress,
            &format!("http://127.0.0.1:{a}/to/http://127.0.0.1:1/ok"),
        )
        .await;
        let error = out["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("redirect refused: denied: http://127.0.0.1:1 is not granted"),
            "{out}"
        );
        let mut url = format!("http://127.0.0.1:{a}/ok");
        for _ in 0..=MAX_REDIRECTS {
            url = format!("http://127.0.0.1:{a}/to/{url}");
        }
        let out = fetch(&egress, &url).await;
        assert_eq!(
            out["error"],
            format!("redirect refused: more than {MAX_REDIRECTS} redirects")
        );
        // One redirect fewer is followed.
        let out = fetch(&egress, url.split_once("/to/").unwrap().1).await;
        assert_eq!(out["status"], 200, "{out}");
    }
}
