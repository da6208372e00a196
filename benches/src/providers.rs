//! Provider overhead: what the toolhost path adds to an LLM call, measured side by side in one
//! run against the same loopback server speaking the OpenAI streaming wire format:
//!
//! - direct: a reqwest client (the library the toolhost uses) posts the chat request and reads
//!   the whole SSE stream;
//! - through the toolhost: a worker-like connection sends `ToolhostRequest::Chat` over the
//!   toolhost socket; the toolhost builds the request, streams it, accumulates the answer, and
//!   replies with a frame (streaming its text as progress frames, as a streamed run does).
//!
//! The server is a minimal keep-alive HTTP/1.1 responder (no per-request thread, no pauses), so
//! the difference is the toolhost path: frames, routing, request building, SSE parsing,
//! accumulation and the reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::own_toolhost::{OwnToolhost, grant};
use caxton_ipc::toolhost::{ChatMessage, ChatRequest, ToolhostRequest, ToolhostResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ms, summary};

const SAMPLES: usize = 2000;
const WARMUP: usize = 100;

/// A short streamed answer: role, three content chunks, finish, usage, [DONE].
fn sse_body() -> String {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut body = chunk(r#"{"role":"assistant","content":""}"#, "null");
    for word in ["The ", "result ", "is 35."] {
        body.push_str(&chunk(&format!(r#"{{"content":"{word}"}}"#), "null"));
    }
    body.push_str(&chunk("{}", "\"stop\""));
    body.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":4,\"total_tokens\":24}}\n\ndata: [DONE]\n\n");
    body
}

/// Serves every request on every connection with the same SSE answer, keeping connections open.
async fn serve(listener: tokio::net::TcpListener, body: Arc<String>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(8192);
            loop {
                // Read one request: headers, then content-length bytes of body.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head_end + len);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn chat_request() -> ChatRequest {
    ChatRequest {
        run_id: "bench".into(),
        agent: "bench".into(),
        provider: "bench".into(),
        messages: vec![
            ChatMessage::System {
                content: "You are a careful calculator.".into(),
            },
            ChatMessage::User {
                content: "What is (2 + 3) * 7?".into(),
            },
        ],
        timeout_ms: 10_000,
        stream: true,
        ..Default::default()
    }
}

/// The same request body the toolhost sends, posted directly.
fn direct_body() -> String {
    serde_json::json!({
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You are a careful calculator."},
            {"role": "user", "content": "What is (2 + 3) * 7?"},
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

fn percentiles(samples: Vec<Duration>) -> (Duration, Duration) {
    let (p50, p99, _) = summary(samples);
    (p50, p99)
}

/// Runs both paths and returns the Markdown section.
pub fn report() -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(serve(listener, Arc::new(sse_body())));
    let base = format!("http://127.0.0.1:{port}/v1");

    // Direct: reqwest with a pooled keep-alive connection, reading the whole stream. (reqwest is
    // built without a default TLS provider here, as in the toolhost; install the same one.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("{base}/chat/completions");
    let body = direct_body();
    let direct: Vec<Duration> = rt.block_on(async {
        let mut out = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + WARMUP {
            let t = Instant::now();
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            let bytes = resp.bytes().await?;
            anyhow::ensure!(bytes.ends_with(b"[DONE]\n\n"), "a whole stream");
            if i >= WARMUP {
                out.push(t.elapsed());
            }
        }
        Ok::<_, anyhow::Error>(out)
    })?;

    // Through the toolhost, over a worker's connection attached to a run granted the provider.
    let host = OwnToolhost::start(&format!(
        "\n[providers.bench]\nkind = \"openai\"\nbase_url = \"{base}\"\nmodel = \"bench-model\"\n"
    ))?;
    let mut conn = host.worker(grant(&[], &["bench"]))?;
    let req = ToolhostRequest::Chat(chat_request());
    let mut through = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + WARMUP {
        let t = Instant::now();
        conn.send(&req)?;
        loop {
            match conn.recv()? {
                ToolhostResponse::ChatProgress(_) => continue,
                ToolhostResponse::Chat(r) => {
                    anyhow::ensure!(r.content.as_deref() == Some("The result is 35."), "{r:?}");
                    break;
                }
                other => anyhow::bail!("unexpected {other:?}"),
            }
        }
        if i >= WARMUP {
            through.push(t.elapsed());
        }
    }
    let (d50, d99) = percentiles(direct);
    let (t50, t99) = percentiles(through);
    let added = |a: Duration, b: Duration| {
        if a > b {
            ms(a - b)
        } else {
            format!("-{}", ms(b - a))
        }
    };
    Ok(format!(
        "## LLM provider overhead (toolhost path vs direct)\n\n\
         The same OpenAI-style streamed chat (4 content chunks, usage, `[DONE]`) from a keep-alive\n\
         loopback server, {SAMPLES} sequential requests after {WARMUP} warm-up ones.\n\n\
         | path | p50 ms | p99 ms |\n|---|---|---|\n\
         | direct reqwest POST, whole stream read | {} | {} |\n\
         | worker frame → toolhost → same server → reply frame (text streamed as progress frames) | {} | {} |\n\
         | **added by the toolhost path** | **{}** | **{}** |\n\n",
        ms(d50),
        ms(d99),
        ms(t50),
        ms(t99),
        added(t50, d50),
        added(t99, d99),
    ))
}
