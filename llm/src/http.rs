//! The HTTP client shared by the provider kinds that speak a vendor API (`openai`, `anthropic`).
//!
//! Everything that does not depend on the wire format lives here, once: the key and headers,
//! sending the request, classifying a failed status for the retry policy (with `Retry-After`),
//! extracting the vendor's error message, reading a JSON or event-stream reply, and turning what a
//! reply said into a [`Completion`]. A kind is a [`Wire`]: how to build its request body and how to
//! read its replies.
//!
//! The key is a secret of this process: it goes only into the request header that carries it
//! (marked sensitive, so it is never printed by `Debug`), and every error message is scrubbed of
//! it, even when a server echoes it back in its error body.

use std::time::{Duration, SystemTime};

use caxton_config::HttpProviderConfig;
use caxton_ipc::toolhost::{ChatRequest, ToolCall, ToolSpec};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::sse::{Event, EventStream};
use super::{Attempt, AttemptError, Completion, Progress};

/// Largest JSON reply read (a whole non-streamed completion).
const MAX_JSON_BYTES: usize = 8 << 20;
/// Largest error body read; only its message is kept.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// Longest excerpt of a server's text quoted in an error message.
const EXCERPT_CHARS: usize = 200;
/// What replaces the key wherever it would appear in an error.
const REDACTED: &str = "[redacted]";

/// A vendor wire format.
pub trait Wire: Send + Sync {
    /// Per-response state while reading a stream.
    type Stream: WireStream + Send;
    /// Root of the vendor's public API, used when the config names no `base_url`.
    const DEFAULT_BASE_URL: &'static str;
    /// The chat endpoint, relative to the base URL.
    const ENDPOINT: &'static str;
    /// The header carrying the key, and the prefix of its value (`Bearer `).
    const KEY_HEADER: (&'static str, &'static str);
    /// Headers the API requires on every request (a version pin).
    const FIXED_HEADERS: &'static [(&'static str, &'static str)];

    /// The request body for this attempt. It always asks for a stream.
    fn build_body(&self, a: &Attempt<'_>) -> Result<Value, AttemptError>;
    /// Reads a whole (non-streamed) reply; the error says what was not as expected.
    fn parse_body(&self, body: &Value) -> Result<Draft, String>;
    /// Fresh state for reading one streamed reply.
    fn stream(&self) -> Self::Stream;
}

/// Reading one streamed reply, event by event.
pub trait WireStream {
    /// Applies one event; `Ok(true)` when it was the stream's terminal event.
    fn on_event(&mut self, event: &Event, progress: &Progress) -> Result<bool, AttemptError>;
    /// Whether the answer is complete although the body ended without a terminal event (some
    /// servers end with a final chunk and close, without `[DONE]`).
    fn complete_without_terminal(&self) -> bool;
    /// What the stream said.
    fn into_draft(self) -> Draft;
}

/// What a reply said, before the gaps are filled in by [`Draft::finish`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Draft {
    pub text: String,
    pub calls: Vec<DraftCall>,
    pub model: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// A tool call as the reply gave it: maybe without an id, with arguments maybe empty.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DraftCall {
    pub id: Option<String>,
    pub name: String,
    pub arguments: String,
}

impl Draft {
    /// The completion: the requested model when the reply named none, ids `call_<n>` for calls
    /// that had none, `{}` for empty arguments. Servers that report no usage (some
    /// OpenAI-compatible ones ignore `stream_options`) get an estimate of one token per four
    /// characters, so budgets and cost accounting still see a plausible number rather than 0.
    pub fn finish(self, a: &Attempt<'_>) -> Completion {
        let completion_chars = self.text.chars().count()
            + self
                .calls
                .iter()
                .map(|c| c.name.len() + c.arguments.len())
                .sum::<usize>();
        let tool_calls = self
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: c
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{}", i + 1)),
                name: c.name,
                arguments: if c.arguments.trim().is_empty() {
                    "{}".into()
                } else {
                    c.arguments
                },
            })
            .collect();
        Completion {
            content: (!self.text.is_empty()).then_some(self.text),
            tool_calls,
            model: self
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| a.model.to_string()),
            prompt_tokens: self
                .prompt_tokens
                .unwrap_or_else(|| estimate_tokens(super::prompt_chars(a.req))),
            completion_tokens: self
                .completion_tokens
                .unwrap_or_else(|| estimate_tokens(completion_chars)),
        }
    }
}

/// One token per four characters, rounded up: the usual rule of thumb for English text.
fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// One configured HTTP provider of wire format `W`.
pub struct HttpProvider<W> {
    wire: W,
    client: reqwest::Client,
    url: url::Url,
    /// Key header (sensitive), fixed headers, then the configured extra ones.
    headers: HeaderMap,
    /// Kept only to scrub it from error messages.
    key: Option<String>,
}

impl<W: Wire> HttpProvider<W> {
    /// Checks the config and resolves the key now, so a broken provider stops the toolhost at
    /// start rather than failing its first run. `name` is the provider's name in the config.
    pub fn new(name: &str, cfg: &HttpProviderConfig, wire: W) -> Result<Self, String> {
        let url = endpoint_url(
            cfg.base_url.as_deref().unwrap_or(W::DEFAULT_BASE_URL),
            W::ENDPOINT,
        )?;
        let key = resolve_key(cfg)?;
        let headers = request_headers::<W>(key.as_deref(), &cfg.headers)?;
        // The toolhost's main installs ring once; this covers other callers (tests, tools).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No overall timeout: the caller ends an attempt at its deadline by dropping it, which
        // drops the request.
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", describe(e)))?;
        tracing::debug!(provider = name, %url, authenticated = key.is_some(), "HTTP LLM provider configured");
        Ok(HttpProvider {
            wire,
            client,
            url,
            headers,
            key,
        })
    }

    /// One attempt: send the request, read the reply (streamed or not) into a completion.
    pub async fn complete(&self, a: &Attempt<'_>) -> Result<Completion, AttemptError> {
        match self.attempt(a).await {
            Ok(draft) => Ok(draft.finish(a)),
            Err(e) => Err(self.redact(e)),
        }
    }

    async fn attempt(&self, a: &Attempt<'_>) -> Result<Draft, AttemptError> {
        let body = self.wire.build_body(a)?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| AttemptError::Fatal(format!("cannot encode the request: {e}")))?;
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream, application/json")
            .headers(trace_headers())
            .body(body)
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(response).await);
        }
        if is_json(response.headers()) {
            let body = read_capped(response, MAX_JSON_BYTES).await?;
            let value: Value = serde_json::from_slice(&body).map_err(|e| {
                AttemptError::Fatal(format!(
                    "the reply is not valid JSON ({e}): {}",
                    excerpt(&String::from_utf8_lossy(&body))
                ))
            })?;
            return self
                .wire
                .parse_body(&value)
                .map_err(|e| AttemptError::Fatal(format!("unexpected reply: {e}")));
        }
        self.read_stream(response, a.progress).await
    }

    /// Reads events until the terminal one. A body that ends before it is a cut stream
    /// (retryable), unless what came is complete anyway or was never an event stream at all.
    async fn read_stream(
        &self,
        response: reqwest::Response,
        progress: &Progress,
    ) -> Result<Draft, AttemptError> {
        let mut events = EventStream::new(response);
        let mut state = self.wire.stream();
        let mut seen = 0usize;
        while let Some(event) = events.next().await? {
            seen += 1;
            if state.on_event(&event, progress)? {
                return Ok(state.into_draft());
            }
        }
        if state.complete_without_terminal() {
            return Ok(state.into_draft());
        }
        if seen == 0 && !events.looks_like_sse() {
            return Err(AttemptError::Fatal(format!(
                "the reply is neither JSON nor an event stream: {}",
                excerpt(&events.head())
            )));
        }
        Err(AttemptError::retryable(format!(
            "the stream was cut off after {} bytes ({seen} events), before its end",
            events.received
        )))
    }

    /// A request that could not be sent: retryable unless the request itself was malformed.
    fn send_error(&self, e: reqwest::Error) -> AttemptError {
        let builder = e.is_builder();
        let message = format!("cannot reach {}: {}", self.url, describe(e));
        if builder {
            AttemptError::Fatal(message)
        } else {
            AttemptError::retryable(message)
        }
    }

    /// The error with every occurrence of the key replaced.
    fn redact(&self, e: AttemptError) -> AttemptError {
        let Some(key) = self.key.as_deref() else {
            return e;
        };
        match e {
            AttemptError::Retryable {
                message,
                retry_after,
            } => AttemptError::Retryable {
                message: message.replace(key, REDACTED),
                retry_after,
            },
            AttemptError::Fatal(message) => AttemptError::Fatal(message.replace(key, REDACTED)),
        }
    }
}

/// `{base}/{endpoint}`, checked to be an http(s) URL.
fn endpoint_url(base: &str, endpoint: &str) -> Result<url::Url, String> {
    let joined = format!("{}/{endpoint}", base.trim_end_matches('/'));
    let url =
        url::Url::parse(&joined).map_err(|e| format!("base_url `{base}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "base_url `{base}` must be an http or https URL, not `{}`",
            url.scheme()
        ));
    }
    // The URL appears in logs and error messages; secrets belong in `api_key` or `headers`.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "base_url must not contain credentials; use `api_key`, `api_key_env` or `headers`"
                .into(),
        );
    }
    Ok(url)
}

/// The key from `api_key` or the environment variable `api_key_env`; none for servers that need
/// no key (a local Ollama or vLLM). Errors name the variable, never a value.
fn resolve_key(cfg: &HttpProviderConfig) -> Result<Option<String>, String> {
    let key = match (&cfg.api_key, &cfg.api_key_env) {
        (Some(_), Some(_)) => return Err("give `api_key` or `api_key_env`, not both".into()),
        (None, None) => return Ok(None),
        (Some(key), None) => {
            if key.trim().is_empty() {
                return Err("`api_key` is empty".into());
            }
            key.trim().to_string()
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
            Ok(_) => {
                return Err(format!(
                    "the environment variable `{var}` (api_key_env) is empty"
                ));
            }
            Err(std::env::VarError::NotPresent) => {
                return Err(format!(
                    "the environment variable `{var}` (api_key_env) is not set"
                ));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!(
                    "the environment variable `{var}` (api_key_env) is not valid UTF-8"
                ));
            }
        },
    };
    Ok(Some(key))
}

/// The W3C `traceparent` of the attempt's span, when tracing is on.
fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = caxton_telemetry::traces::current()
        .and_then(|cx| HeaderValue::from_str(&cx.to_string()).ok())
    {
        headers.insert(HeaderName::from_static("traceparent"), value);
    }
    headers
}

/// The headers of every request: the key (marked sensitive), the API's fixed ones, then the
/// configured extras (which may override the fixed ones, e.g. a newer API version).
fn request_headers<W: Wire>(
    key: Option<&str>,
    extra: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        let (name, prefix) = W::KEY_HEADER;
        let mut value = HeaderValue::from_str(&format!("{prefix}{key}"))
            .map_err(|_| "the API key contains characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static(name), value);
    }
    for (name, value) in W::FIXED_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    for (name, value) in extra {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`headers`: `{name}` is not a valid header name"))?;
        // The value may be a secret too (a proxy's token): the error does not quote it.
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("`headers`: the value of `{name}` is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    Ok(headers)
}

/// A failed status as an attempt error: 408, 429 and 5xx (Anthropic's 529 "overloaded"
/// included) are retryable, other 4xx are not. The message has the status and the vendor's own
/// error message.
async fn status_error(response: reqwest::Response) -> AttemptError {
    let status = response.status();
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let body = read_capped(response, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let message = format!("HTTP {status}{}", error_detail(&body));
    if is_retryable_status(status) {
        AttemptError::Retryable {
            message,
            retry_after,
        }
    } else {
        AttemptError::Fatal(message)
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `: <message> (<type>)` from an error body in either vendor's shape
/// (`{"error":{"message","type"}}`, Anthropic's adds a top-level `"type":"error"`), or a bare
/// `{"error":"…"}` as some compatible servers send; else an excerpt of the body.
fn error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return String::new();
    }
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return format!(": {}", excerpt(text.trim()));
    };
    match value.get("error") {
        Some(Value::Object(error)) => {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            let kind = error
                .get("type")
                .or_else(|| error.get("code"))
                .and_then(Value::as_str);
            match kind {
                Some(kind) => format!(": {} ({kind})", excerpt(message)),
                None => format!(": {}", excerpt(message)),
            }
        }
        Some(Value::String(message)) => format!(": {}", excerpt(message)),
        _ => format!(": {}", excerpt(text.trim())),
    }
}

/// An error the server reported inside a stream (`{"error":{"type","message"}}`, an OpenAI
/// chunk or an Anthropic `error` event): retryable when it says the server is overloaded or
/// failed (by type, or by an HTTP-like numeric `code` as OpenRouter sends), else fatal.
pub fn stream_error(value: &Value) -> AttemptError {
    const RETRYABLE: &[&str] = &[
        "overloaded_error",
        "api_error",
        "server_error",
        "rate_limit_error",
        "rate_limit_exceeded",
        "timeout_error",
    ];
    let error = value.get("error").unwrap_or(value);
    let kind = error
        .get("type")
        .or_else(|| error.get("code"))
        .map(|k| k.as_str().map_or_else(|| k.to_string(), String::from))
        .unwrap_or_default();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .unwrap_or("");
    let text = format!(
        "the server reported an error mid-stream: {} ({kind})",
        excerpt(message)
    );
    let status_code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok());
    if RETRYABLE.contains(&kind.as_str()) || status_code.is_some_and(is_retryable_status) {
        AttemptError::retryable(text)
    } else {
        AttemptError::Fatal(text)
    }
}

/// The server's requested wait: OpenAI's `retry-after-ms`, else `Retry-After` in seconds or as
/// an HTTP date (a date in the past means now).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(wait);
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers must send.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = s.split_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    humantime::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z")).ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
}

/// The body, refusing one over `max` bytes; a broken connection is retryable.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, AttemptError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        AttemptError::retryable(format!(
            "the reply broke off after {} bytes: {}",
            body.len(),
            describe(e)
        ))
    })? {
        if body.len() + chunk.len() > max {
            return Err(AttemptError::Fatal(format!(
                "the reply is larger than {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a stream event's data as JSON; a fatal error quoting it when it is not.
pub fn event_json(event: &Event) -> Result<Value, AttemptError> {
    serde_json::from_str(&event.data).map_err(|e| {
        AttemptError::Fatal(format!(
            "a stream event is not valid JSON ({e}): {}",
            excerpt(&event.data)
        ))
    })
}

/// `s` cut to [`EXCERPT_CHARS`] characters, marked when cut.
pub fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// The error and its causes in one line (reqwest keeps the interesting part in the sources),
/// without the URL, which the caller's message already names.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = caxton_ipc::error::Chain(&e).to_string();
    if e.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}

/// A sampling parameter as JSON, written as its shortest decimal (`0.2`, not the `f32`'s
/// `0.20000000298023224`), so the request says what the agent file said.
pub fn float(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Adds the request's optional sampling settings that both APIs spell alike.
pub fn insert_sampling(body: &mut Map<String, Value>, req: &ChatRequest) {
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), float(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), float(p));
    }
}

/// A tool's input schema as JSON (the toolhost checked it when loading the tool; a bad one here
/// is a defect worth failing loudly on).
pub fn input_schema(tool: &ToolSpec) -> Result<Value, AttemptError> {
    serde_json::from_str(&tool.input_schema).map_err(|e| {
        AttemptError::Fatal(format!(
            "the input schema of tool `{}` is not valid JSON: {e}",
            tool.name
        ))
    })
}

/// Test support: feeds `body` to `wire`'s stream reader in pieces of `piece` bytes, as
/// [`HttpProvider`] does with a response; `Ok(None)` when the body ended before the answer was
/// complete (a cut stream).
#[cfg(test)]
pub(crate) fn replay<W: Wire>(
    wire: &W,
    body: &[u8],
    piece: usize,
    progress: &Progress,
) -> Result<Option<Draft>, AttemptError> {
    let mut decoder = super::sse::Decoder::new(super::sse::MAX_EVENT_BYTES);
    let mut state = wire.stream();
    for chunk in body.chunks(piece.max(1)) {
        let events = decoder
            .push(chunk)
            .map_err(|e| AttemptError::Fatal(e.to_string()))?;
        for event in events {
            if state.on_event(&event, progress)? {
                return Ok(Some(state.into_draft()));
            }
        }
    }
    Ok(state
        .complete_without_terminal()
        .then(|| state.into_draft()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support;
    use caxton_ipc::toolhost::ChatMessage;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = humantime::parse_rfc3339("2015-10-21T07:28:00Z").unwrap();
        let at = |h: &[(&str, &str)]| retry_after(&headers(h), now);
        assert_eq!(at(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(
            at(&[("retry-after", " 1.5 ")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            at(&[("retry-after", "2"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            at(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        assert_eq!(at(&[("retry-after", "soon")]), None);
        assert_eq!(at(&[("retry-after", "-4")]), None);
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn statuses_are_classified_for_the_retry_policy() {
        for s in [429, 408, 500, 502, 503, 529] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn error_details_come_from_either_vendor_shape() {
        assert_eq!(
            error_detail(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#),
            ": Incorrect API key provided (invalid_request_error)"
        );
        assert_eq!(
            error_detail(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            ": Overloaded (overloaded_error)"
        );
        assert_eq!(
            error_detail(br#"{"error":"model not found"}"#),
            ": model not found"
        );
        assert_eq!(error_detail(b""), "");
        let long = "x".repeat(500);
        let detail = error_detail(long.as_bytes());
        assert_eq!(detail.chars().count(), 2 + EXCERPT_CHARS + 1, "{detail}");
    }

    #[test]
    fn stream_errors_are_retryable_only_when_the_server_is_at_fault() {
        let overloaded = serde_json::json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}});
        assert!(matches!(
            stream_error(&overloaded),
            AttemptError::Retryable { .. }
        ));
        let upstream =
            serde_json::json!({"error":{"code":502,"message":"Provider returned error"}});
        assert!(
            matches!(stream_error(&upstream), AttemptError::Retryable { message, .. } if message.contains("(502)"))
        );
        let bad = serde_json::json!({"error":{"type":"invalid_request_error","message":"bad"}});
        assert!(matches!(stream_error(&bad), AttemptError::Fatal(m) if m.contains("bad")));
    }

    #[test]
    fn urls_must_be_http() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:9/v1/", "chat/completions")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert!(
            endpoint_url("not a url", "x")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(
            endpoint_url("ftp://h/v1", "x")
                .unwrap_err()
                .contains("http")
        );
        let e = endpoint_url("https://user:pw@h/v1", "x").unwrap_err();
        assert!(e.contains("credentials") && !e.contains("pw"), "{e}");
    }

    fn config(api_key: Option<&str>, api_key_env: Option<&str>) -> HttpProviderConfig {
        toml::from_str::<HttpProviderConfig>(&format!(
            "model = \"m\"\n{}{}",
            api_key
                .map(|k| format!("api_key = \"{k}\"\n"))
                .unwrap_or_default(),
            api_key_env
                .map(|k| format!("api_key_env = \"{k}\"\n"))
                .unwrap_or_default()
        ))
        .unwrap()
    }

    #[test]
    fn keys_resolve_from_the_config_or_a_named_variable_whose_value_is_never_quoted() {
        assert_eq!(
            resolve_key(&config(Some(" k1 "), None)),
            Ok(Some("k1".into()))
        );
        assert_eq!(resolve_key(&config(None, None)), Ok(None));
        assert!(resolve_key(&config(Some("a"), Some("B"))).is_err());
        let unset = resolve_key(&config(None, Some("CAXTON_TEST_SURELY_UNSET_VAR"))).unwrap_err();
        assert!(
            unset.contains("CAXTON_TEST_SURELY_UNSET_VAR") && unset.contains("not set"),
            "{unset}"
        );
        // PATH is set in any test environment; its value must not appear in any error.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(resolve_key(&config(None, Some("PATH"))), Ok(Some(path)));
    }

    #[test]
    fn extra_headers_are_checked_without_quoting_values() {
        let bad = [("x-ok".to_string(), "secret\nvalue".to_string())].into();
        let e = request_headers::<crate::openai::OpenAi>(Some("k"), &bad).unwrap_err();
        assert!(e.contains("x-ok") && !e.contains("secret"), "{e}");
        let h = request_headers::<crate::openai::OpenAi>(Some("k"), &Default::default()).unwrap();
        assert!(h["authorization"].is_sensitive());
        assert!(!format!("{h:?}").contains("Bearer k"));
    }

    /// A provider of kind openai at `base` with key `k`.
    fn provider(base: &str, key: &str) -> HttpProvider<crate::openai::OpenAi> {
        let cfg: HttpProviderConfig = toml::from_str(&format!(
            "model = \"m\"\nbase_url = \"{base}\"\napi_key = \"{key}\"\n"
        ))
        .unwrap();
        HttpProvider::new("t", &cfg, crate::openai::OpenAi).unwrap()
    }

    async fn complete_once(
        p: &HttpProvider<crate::openai::OpenAi>,
    ) -> Result<Completion, AttemptError> {
        let req = test_support::request(
            vec![ChatMessage::User {
                content: "hi".into(),
            }],
            &[],
        );
        test_support::attempt(&req, async |a| p.complete(&a).await).await
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_and_names_the_url_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let p = provider(&format!("http://127.0.0.1:{port}/v1"), "k-123");
        let err = complete_once(&p).await.unwrap_err();
        let AttemptError::Retryable { message, .. } = err else {
            panic!("{err:?}")
        };
        assert!(
            message.starts_with("cannot reach http://127.0.0.1"),
            "{message}"
        );
        assert_eq!(message.matches("127.0.0.1").count(), 1, "{message}");
    }

    #[tokio::test]
    async fn a_key_echoed_by_the_server_is_redacted_and_a_401_is_fatal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const KEY: &str = "sk-unit-test-secret-42";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            let body = format!(
                r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error"}}}}"#
            );
            let reply = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        let p = provider(&format!("http://127.0.0.1:{port}/v1"), KEY);
        let err = complete_once(&p).await.unwrap_err();
        let head = server.await.unwrap();
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "authorization: bearer {}",
                KEY.to_ascii_lowercase()
            )),
            "{head}"
        );
        let AttemptError::Fatal(message) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            message,
            "HTTP 401 Unauthorized: Incorrect API key provided: [redacted] (invalid_request_error)"
        );
    }

    #[tokio::test]
    async fn drafts_fill_in_ids_arguments_model_and_estimated_usage() {
        let req = test_support::request(
            vec![ChatMessage::User {
                content: "12345678".into(),
            }],
            &[],
        );
        let draft = Draft {
            text: "abcd".into(),
            calls: vec![
                DraftCall {
                    id: None,
                    name: "t".into(),
                    arguments: String::new(),
                },
                DraftCall {
                    id: Some("x".into()),
                    name: "u".into(),
                    arguments: "{\"a\":1}".into(),
                },
            ],
            ..Draft::default()
        };
        let c = test_support::attempt(&req, async |a| draft.finish(&a)).await;
        assert_eq!(c.content.as_deref(), Some("abcd"));
        assert_eq!(c.model, "test-model");
        assert_eq!(
            (
                c.tool_calls[0].id.as_str(),
                c.tool_calls[0].arguments.as_str()
            ),
            ("call_1", "{}")
        );
        assert_eq!(c.tool_calls[1].id, "x");
        assert_eq!(c.prompt_tokens, 2);
        // "abcd", "t" and "", "u" and {"a":1}: 13 characters.
        assert_eq!(c.completion_tokens, 4);
        assert_eq!(float(0.2), serde_json::json!(0.2));
    }
}
