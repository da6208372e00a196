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
//! loopback, private, link-local and similar addresses are refused unless the origin's grant
//! says `private = true`. The connection goes to exactly the checked addresses. Responses are cut
//! at [`MAX_RESPONSE_BYTES`]; each request has a deadline, and the guest call's own deadline
//! drops the request when it fires.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wasmtime::{Caller, Extern, Linker};

use crate::policy::{Origin, is_public};
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

/// The HTTP capability of one tool package.
pub struct Egress {
    server: String,
    origins: Arc<Vec<Origin>>,
    client: reqwest::Client,
}

impl Egress {
    /// A client limited to `origins`; `None` when nothing is granted.
    pub fn new(server: &str, origins: &[Origin]) -> anyhow::Result<Option<Arc<Egress>>> {
        if origins.is_empty() {
            return Ok(None);
        }
        let origins = Arc::new(origins.to_vec());
        let for_redirects = origins.clone();
        let name = server.to_string();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(CheckedResolver {
                origins: origins.clone(),
            })
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match check_url(&name, &for_redirects, attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => {
                        let e = format!("redirect refused: {e}");
                        attempt.error(e)
                    }
                }
            }))
            .build()?;
        Ok(Some(Arc::new(Egress {
            server: server.into(),
            origins,
            client,
        })))
    }

    /// Runs one guest request; the answer is the response JSON (or `{"error": ...}`).
    pub async fn fetch(&self, request: &[u8]) -> Value {
        match self.try_fetch(request).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(server = %self.server, error = %e, "http request refused or failed");
                json!({"error": e})
            }
        }
    }

    async fn try_fetch(&self, request: &[u8]) -> Result<Value, String> {
        let req: Value = serde_json::from_slice(request)
            .map_err(|e| format!("the request is not valid JSON: {e}"))?;
        let url = req
            .get("url")
            .and_then(Value::as_str)
            .ok_or("the request has no `url` string")?;
        let url = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        check_url(&self.server, &self.origins, &url)?;
        let method = req.get("method").and_then(Value::as_str).unwrap_or("GET");
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`{method}` is not an HTTP method"))?;
        let mut builder = self.client.request(method, url);
        if let Some(headers) = req.get("headers").and_then(Value::as_object) {
            for (k, v) in headers {
                // The origin check covers the URL; a Host header would send the request to
                // another site behind the same address.
                if FORBIDDEN_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "header `{k}` may not be set by a tool; the host sets it from the URL"
                    ));
                }
                let v = v.as_str().ok_or(format!("header `{k}` must be a string"))?;
                builder = builder.header(k.as_str(), v);
            }
        }
        if let Some(body) = req.get("body").and_then(Value::as_str) {
            builder = builder.body(body.to_string());
        }
        let mut resp = builder.send().await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let final_url = resp.url().to_string();
        let headers: serde_json::Map<String, Value> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), Value::from(v.to_str().ok()?))))
            .collect();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
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

/// The error and its causes in one line (reqwest keeps the interesting part in the sources).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}

/// The URL's origin is granted, and an IP-literal host is public unless the grant allows private.
fn check_url(server: &str, origins: &[Origin], url: &url::Url) -> Result<(), String> {
    let origin = Origin::of(url)?;
    let Some(granted) = origins.iter().find(|o| o.same(&origin)) else {
        return Err(format!(
            "denied: {origin} is not granted to tool package `{server}` (granted: {}); an operator can grant it in caxton.toml [tools.{server}] http",
            origins
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if let Ok(ip) = origin.host.parse::<IpAddr>()
        && !granted.private
        && !is_public(ip)
    {
        return Err(format!(
            "denied: {ip} is a loopback, private or link-local address; grant {origin} with `private = true` to allow it"
        ));
    }
    Ok(())
}

/// Resolves names with the system resolver and refuses non-public addresses unless some grant of
/// that host allows private ones. The connection uses exactly the addresses returned here.
struct CheckedResolver {
    origins: Arc<Vec<Origin>>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let private = self.origins.iter().any(|o| o.host == host && o.private);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} did not resolve to any address").into());
            }
            if !private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "denied: {host} resolves to {}, a loopback, private or link-local address; grant it with `private = true` to allow it",
                    bad.ip()
                )
                .into());
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
                    Some(egress) => egress.fetch(&request).await,
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
