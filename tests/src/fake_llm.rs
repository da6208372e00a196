//! A fake LLM server for the provider tests: real HTTP/1.1 on 127.0.0.1 (std threads, one per
//! connection), scripted per test with a queue of [`Reply`]s, one consumed per request. It speaks
//! whatever bytes it is given, so it serves both wire formats; [`openai`] and [`anthropic`] build
//! the usual replies. Every request is recorded ([`Request`]: method, path, headers, JSON body,
//! arrival time) so a test can assert what Caxton sent.
//!
//! Streamed replies use chunked transfer encoding and write each scripted piece separately, with
//! `TCP_NODELAY` and a short pause, so the client really receives the pieces apart: a piece that
//! ends mid-event or mid-character tests the client's reassembly.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Pause between two pieces of a streamed reply.
const PIECE_PAUSE: Duration = Duration::from_millis(5);
/// A [`Reply::Hang`] gives up waiting for the client after this long.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200, `text/event-stream`; each piece is written and flushed on its own, then the body ends.
    Sse(Vec<Vec<u8>>),
    /// A whole response: status, body, extra headers (the content type is `application/json`
    /// unless one is given).
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Reads the request and never answers; returns when the client closes the connection.
    Hang,
    /// 200, `text/event-stream`; writes these bytes as one chunk, then closes the connection
    /// without ending the body (a server dying mid-stream).
    CutOff(Vec<u8>),
}

impl Reply {
    /// A JSON response with this status.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply::Json {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// A response whose body is not what its content type says.
    pub fn raw(status: u16, content_type: &str, body: &str) -> Reply {
        Reply::Json {
            status,
            body: body.into(),
            headers: vec![("content-type".into(), content_type.into())],
        }
    }

    /// Adds a response header (to a [`Reply::Json`]).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Json { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    pub raw_body: String,
    pub at: Instant,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    requests: Vec<Request>,
    /// Hanging requests whose client has gone away.
    hangs_released: usize,
}

/// A running fake server. It serves until the test process ends.
pub struct FakeLlm {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeLlm {
    pub fn start() -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeLlm { port, state }
    }

    /// Queues replies, answered in order, one per request. A request with none left gets a 400
    /// (not retried) whose message says so.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().replies.extend(replies);
    }

    /// The API root to configure as `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// A `[providers.NAME]` table for this server: `kind`, `base_url`, `model = "fake-model"`,
    /// then `extra` lines (key, retries, timeouts…).
    pub fn provider_toml(&self, name: &str, kind: &str, extra: &str) -> String {
        format!(
            "\n[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{}\"\nmodel = \"fake-model\"\n{extra}\n",
            self.base_url()
        )
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Replies still queued.
    pub fn pending(&self) -> usize {
        self.lock().replies.len()
    }

    /// How many [`Reply::Hang`] requests saw their client close the connection.
    pub fn hangs_released(&self) -> usize {
        self.lock().hangs_released
    }

    /// Waits up to `deadline` for `cond` on the server's state (a client's disconnect reaches
    /// the server a moment after the client gave up).
    pub fn wait_for(&self, deadline: Duration, cond: impl Fn(&FakeLlm) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond(self)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers one connection: read the request, record it, play the next reply, close.
fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_nodelay(true);
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let reply = {
        let mut s = lock(state);
        s.requests.push(request);
        s.replies.pop_front()
    };
    let reply = reply.unwrap_or_else(|| {
        Reply::json(
            400,
            &json!({"error": {"message": "fake LLM: no scripted reply left for this request", "type": "fake_exhausted"}}),
        )
    });
    let _ = play(&mut stream, reply, state);
}

fn play(stream: &mut TcpStream, reply: Reply, state: &Mutex<State>) -> std::io::Result<()> {
    match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => {
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                head.push_str("content-type: application/json\r\n");
            }
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str(&format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            ));
            stream.write_all(head.as_bytes())?;
            stream.write_all(body.as_bytes())?;
        }
        Reply::Sse(pieces) => {
            stream.write_all(SSE_HEAD)?;
            for piece in pieces {
                write_chunk(stream, &piece)?;
                std::thread::sleep(PIECE_PAUSE);
            }
            stream.write_all(b"0\r\n\r\n")?;
        }
        Reply::CutOff(bytes) => {
            stream.write_all(SSE_HEAD)?;
            write_chunk(stream, &bytes)?;
            std::thread::sleep(PIECE_PAUSE);
            // Dropping the stream closes it mid-body: no terminating chunk.
        }
        Reply::Hang => {
            let _ = stream.set_read_timeout(Some(HANG_LIMIT));
            let mut buf = [0u8; 256];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    lock(state).hangs_released += 1;
                    break;
                }
            }
        }
    }
    stream.flush()
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";

fn write_chunk(stream: &mut TcpStream, piece: &[u8]) -> std::io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
    stream.write_all(piece)?;
    stream.write_all(b"\r\n")?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Whatever",
    }
}

/// Reads the head and a `content-length` body.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    Some(Request {
        method,
        path,
        headers,
        body: serde_json::from_str(&raw_body).unwrap_or(Value::Null),
        raw_body,
        at: Instant::now(),
    })
}

/// Splits `bytes` into pieces of at most `size` bytes (to stream one event across many writes).
pub fn pieces(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size.max(1)).map(<[u8]>::to_vec).collect()
}

/// Replies in the Chat Completions format.
pub mod openai {
    use super::{Reply, pieces};
    use serde_json::{Value, json};

    /// One `data:` line with a `chat.completion.chunk` whose only choice has `delta` (and
    /// `finish_reason`).
    pub fn chunk(delta: Value, finish_reason: Option<&str>) -> Vec<u8> {
        data(&json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "fake-model-2025",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }))
    }

    /// `data: <json>` and the blank line.
    pub fn data(value: &Value) -> Vec<u8> {
        format!("data: {value}\n\n").into_bytes()
    }

    /// The usage chunk (`include_usage`) and `[DONE]`.
    pub fn usage_and_done(prompt: u64, completion: u64) -> Vec<u8> {
        let mut out = data(&json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "model": "fake-model-2025",
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }));
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    /// A streamed text answer: a word per chunk, `finish_reason: stop`, usage, `[DONE]`.
    pub fn text(text: &str) -> Reply {
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        for word in text.split_inclusive(' ') {
            events.push(chunk(json!({"content": word}), None));
        }
        events.push(chunk(json!({}), Some("stop")));
        events.push(usage_and_done(11, 7));
        Reply::Sse(events)
    }

    /// A streamed single tool call, its arguments in `arg_pieces` chunks, the whole body then
    /// written in `write_size`-byte pieces (so writes split events too).
    pub fn tool_call(id: &str, name: &str, arguments: &str, write_size: usize) -> Reply {
        let mut body = chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}
            ]}),
            None,
        );
        let mut rest = arguments;
        while !rest.is_empty() {
            let cut = rest.char_indices().nth(3).map_or(rest.len(), |(i, _)| i);
            let (part, tail) = rest.split_at(cut);
            body.extend(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                None,
            ));
            rest = tail;
        }
        body.extend(chunk(json!({}), Some("tool_calls")));
        body.extend(usage_and_done(50, 20));
        Reply::Sse(pieces(&body, write_size))
    }
}

/// Replies in the Messages format.
pub mod anthropic {
    use super::{Reply, pieces};
    use serde_json::{Value, json};

    /// `event: <type>` and `data: <json>`.
    pub fn event(value: &Value) -> Vec<u8> {
        format!(
            "event: {}\ndata: {value}\n\n",
            value["type"].as_str().unwrap_or("message")
        )
        .into_bytes()
    }

    fn message_start() -> Vec<u8> {
        event(&json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1},
        }}))
    }

    fn message_end(stop_reason: &str, output_tokens: u64) -> Vec<u8> {
        let mut out = event(&json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}));
        out.extend(event(&json!({"type": "message_stop"})));
        out
    }

    /// A streamed text answer, a word per delta.
    pub fn text(text: &str) -> Reply {
        let mut events = vec![
            message_start(),
            event(
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event(&json!({"type": "ping"})),
        ];
        for word in text.split_inclusive(' ') {
            events.push(event(&json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": word}})));
        }
        events.push(event(&json!({"type": "content_block_stop", "index": 0})));
        events.push(message_end("end_turn", 9));
        Reply::Sse(events)
    }

    /// A streamed `tool_use` after a short text block, its input JSON in `input_pieces`
    /// deltas, the body then written in `write_size`-byte pieces.
    pub fn tool_use(id: &str, name: &str, input_pieces: &[&str], write_size: usize) -> Reply {
        let mut body = message_start();
        body.extend(event(&json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        body.extend(event(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me calculate."}})));
        body.extend(event(&json!({"type": "content_block_stop", "index": 0})));
        body.extend(event(&json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
        for part in input_pieces {
            body.extend(event(&json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        body.extend(event(&json!({"type": "content_block_stop", "index": 1})));
        body.extend(message_end("tool_use", 40));
        Reply::Sse(pieces(&body, write_size))
    }
}
