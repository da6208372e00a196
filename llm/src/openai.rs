//! The `openai` kind: the Chat Completions API (`POST {base}/chat/completions`), as OpenAI and the
//! many compatible servers (Ollama, vLLM, llama.cpp, LM Studio, OpenRouter…) speak it.
//!
//! Every request streams (`stream: true` with `stream_options.include_usage`), whether or not
//! the caller watches the text, so time to first token and cancellation behave the same either
//! way. Compatible servers differ in how they stream tool calls; the accumulation below is
//! deliberately tolerant (see [`ChunkStream`]). A server that ignores `stream` and answers with
//! one JSON body is read too.

use std::collections::HashMap;

use caxton_ipc::toolhost::{ChatMessage, ToolCall, ToolChoice};
use serde_json::{Map, Value, json};

use super::http::{self, Draft, DraftCall, Wire, WireStream};
use super::sse::Event;
use super::{Attempt, AttemptError, Progress};

/// The Chat Completions wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

impl Wire for OpenAi {
    type Stream = ChunkStream;
    const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";
    const ENDPOINT: &'static str = "chat/completions";
    const KEY_HEADER: (&'static str, &'static str) = ("authorization", "Bearer ");
    const FIXED_HEADERS: &'static [(&'static str, &'static str)] = &[];

    fn build_body(&self, a: &Attempt<'_>) -> Result<Value, AttemptError> {
        let req = a.req;
        let mut body = Map::new();
        body.insert("model".into(), a.model.into());
        body.insert(
            "messages".into(),
            req.messages.iter().map(message).collect(),
        );
        body.insert("stream".into(), true.into());
        body.insert("stream_options".into(), json!({"include_usage": true}));
        http::insert_sampling(&mut body, req);
        if let Some(seed) = req.seed {
            body.insert("seed".into(), seed.into());
        }
        if let Some(max) = req.max_tokens {
            body.insert("max_tokens".into(), max.into());
        }
        if !req.stop.is_empty() {
            body.insert("stop".into(), json!(req.stop));
        }
        if !req.tools.is_empty() {
            let tools = req
                .tools
                .iter()
                .map(|t| {
                    Ok(json!({
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": http::input_schema(t)?,
                        },
                    }))
                })
                .collect::<Result<Vec<_>, AttemptError>>()?;
            body.insert("tools".into(), tools.into());
            body.insert("tool_choice".into(), tool_choice(&req.tool_choice));
        }
        Ok(body.into())
    }

    /// The non-streamed shape: `choices[0].message` with `content` and `tool_calls`, `usage`.
    fn parse_body(&self, body: &Value) -> Result<Draft, String> {
        if body.get("error").is_some_and(|e| !e.is_null()) {
            return Err(format!(
                "the server answered with an error: {}",
                http::excerpt(&body["error"].to_string())
            ));
        }
        let message = first_choice(body)
            .and_then(|c| c.get("message"))
            .ok_or_else(|| {
                format!(
                    "no `choices[0].message` in the reply: {}",
                    http::excerpt(&body.to_string())
                )
            })?;
        let calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| DraftCall {
                        id: str_of(c.get("id")).map(String::from),
                        name: str_of(c.pointer("/function/name")).unwrap_or("").into(),
                        arguments: c
                            .pointer("/function/arguments")
                            .map(arguments)
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut draft = Draft {
            text: str_of(message.get("content")).unwrap_or("").into(),
            calls,
            ..Draft::default()
        };
        apply_meta(&mut draft, body);
        Ok(draft)
    }

    fn stream(&self) -> ChunkStream {
        ChunkStream::default()
    }
}

/// The body's first choice (the one with index 0, else the first listed).
fn first_choice(body: &Value) -> Option<&Value> {
    let choices = body.get("choices")?.as_array()?;
    choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64) == Some(0))
        .or_else(|| choices.first())
}

/// The model and usage a chunk or a whole reply reports, when it reports them.
fn apply_meta(draft: &mut Draft, body: &Value) {
    if let Some(model) = str_of(body.get("model")).filter(|m| !m.is_empty()) {
        draft.model = Some(model.into());
    }
    if let Some(usage) = body.get("usage").filter(|u| u.is_object()) {
        draft.prompt_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
        draft.completion_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
    }
}

fn str_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// Function arguments: JSON text as the API specifies, or (some compatible servers) an object.
fn arguments(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn message(m: &ChatMessage) -> Value {
    match m {
        ChatMessage::System { content } => json!({"role": "system", "content": content}),
        ChatMessage::User { content } => json!({"role": "user", "content": content}),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            // Always a string: OpenAI accepts "" beside tool calls, and some compatible servers
            // (llama-cpp-python's) reject `null` or a missing content.
            let mut v = json!({
                "role": "assistant",
                "content": content.as_deref().unwrap_or(""),
            });
            if !tool_calls.is_empty() {
                v["tool_calls"] = tool_calls.iter().map(tool_call).collect();
            }
            v
        }
        // The API has no error flag on tool results: the prefix tells the model the call failed.
        ChatMessage::Tool {
            call_id,
            content,
            is_error,
            ..
        } => json!({
            "role": "tool",
            "tool_call_id": call_id,
            "content": if *is_error { format!("error: {content}") } else { content.clone() },
        }),
    }
}

fn tool_call(c: &ToolCall) -> Value {
    json!({
        "id": c.id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    })
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// A streamed reply being read: `chat.completion.chunk` objects, then `data: [DONE]`.
///
/// Tool calls arrive as fragments keyed by `index`; servers differ, so: a fragment without an
/// `id` continues the call open at its index; a fragment with a *new* id starts a new call even
/// at a used index (Ollama sends every call as index 0, each with its own id); a missing index is
/// 0; `arguments` text is appended across fragments; a repeated whole name is not appended again.
#[derive(Debug, Default)]
pub struct ChunkStream {
    draft: Draft,
    /// The call open at each index, as a position in `draft.calls`.
    open: HashMap<u64, usize>,
    /// A chunk carried a `finish_reason`: the answer is complete even if `[DONE]` never comes.
    finished: bool,
}

impl WireStream for ChunkStream {
    fn on_event(&mut self, event: &Event, progress: &Progress) -> Result<bool, AttemptError> {
        if event.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let chunk = http::event_json(event)?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return Err(http::stream_error(&chunk));
        }
        apply_meta(&mut self.draft, &chunk);
        let Some(choice) = first_choice(&chunk) else {
            // The final usage chunk has no choices.
            return Ok(false);
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = str_of(delta.get("content")) {
                progress.text(text);
                self.draft.text.push_str(text);
            }
            for fragment in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.apply_fragment(fragment);
            }
        }
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            self.finished = true;
        }
        Ok(false)
    }

    fn complete_without_terminal(&self) -> bool {
        self.finished
    }

    fn into_draft(self) -> Draft {
        self.draft
    }
}

impl ChunkStream {
    fn apply_fragment(&mut self, fragment: &Value) {
        let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0);
        let id = str_of(fragment.get("id")).filter(|id| !id.is_empty());
        let open = self.open.get(&index).copied();
        let continues = match (open, id) {
            (Some(_), None) => true,
            (Some(pos), Some(id)) => self.draft.calls[pos]
                .id
                .as_deref()
                .is_none_or(|own| own == id),
            (None, _) => false,
        };
        let pos = match open {
            Some(pos) if continues => pos,
            _ => {
                self.draft.calls.push(DraftCall::default());
                let pos = self.draft.calls.len() - 1;
                self.open.insert(index, pos);
                pos
            }
        };
        let call = &mut self.draft.calls[pos];
        if call.id.is_none() {
            call.id = id.map(String::from);
        }
        if let Some(name) = str_of(fragment.pointer("/function/name")).filter(|n| !n.is_empty())
            && call.name != name
        {
            call.name.push_str(name);
        }
        if let Some(args) = fragment.pointer("/function/arguments") {
            call.arguments.push_str(&arguments(args));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::replay;
    use crate::test_support;
    use caxton_ipc::toolhost::ChatProgress;

    /// `data:` lines of the chunks, as the API frames them, then `[DONE]`.
    fn sse(chunks: &[&str], done: bool) -> Vec<u8> {
        let mut out = String::new();
        for c in chunks {
            out.push_str(&format!("data: {c}\n\n"));
        }
        if done {
            out.push_str("data: [DONE]\n\n");
        }
        out.into_bytes()
    }

    /// OpenAI's documented stream of a function call (the arguments in many pieces), a
    /// `finish_reason` chunk and the final usage chunk.
    fn weather_call() -> Vec<&'static str> {
        vec![
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"location"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\":\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"Paris, France"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97}}"#,
        ]
    }

    fn read(body: &[u8], piece: usize) -> Result<Option<Draft>, AttemptError> {
        replay(&OpenAi, body, piece, &Progress::silent())
    }

    #[test]
    fn a_documented_tool_call_stream_accumulates_at_every_chunking() {
        let body = sse(&weather_call(), true);
        for piece in [1, 2, 3, 7, 64, body.len()] {
            let d = read(&body, piece).unwrap().expect("complete");
            assert_eq!(
                d.calls,
                vec![DraftCall {
                    id: Some("call_DdmO9pD3xa9XTPNJ32zg2hcA".into()),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Paris, France"}"#.into(),
                }],
                "pieces of {piece}"
            );
            assert_eq!(d.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
            assert_eq!((d.prompt_tokens, d.completion_tokens), (Some(80), Some(17)));
            assert_eq!(d.text, "");
        }
    }

    #[test]
    fn text_deltas_stream_to_progress_and_accumulate() {
        let chunks = [
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" wörld"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let progress = Progress::new(tx, true);
        let d = replay(&OpenAi, &sse(&chunks, true), 5, &progress)
            .unwrap()
            .unwrap();
        assert_eq!(d.text, "Hello wörld");
        let mut streamed = Vec::new();
        while let Ok(ChatProgress::Text { text }) = rx.try_recv() {
            streamed.push(text);
        }
        assert_eq!(streamed, ["Hello", " wörld"]);
        // No usage chunk: left for Draft::finish to estimate.
        assert_eq!(d.prompt_tokens, None);
    }

    #[test]
    fn parallel_calls_at_distinct_indexes_interleave() {
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}},{"index":1,"id":"b","function":{"name":"g","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"y\":2}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        let d = read(&sse(&chunks, true), 1000).unwrap().unwrap();
        let got: Vec<_> = d
            .calls
            .iter()
            .map(|c| (c.id.as_deref(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("a"), "f", r#"{"x":1}"#),
                (Some("b"), "g", r#"{"y":2}"#)
            ]
        );
    }

    #[test]
    fn ollama_style_calls_all_at_index_zero_with_new_ids_are_separate() {
        let chunks = [
            r#"{"model":"llama3.2","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc","index":0,"type":"function","function":{"name":"calculate","arguments":"{\"expression\":\"1+1\"}"}}]},"finish_reason":null}]}"#,
            r#"{"model":"llama3.2","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_def","index":0,"type":"function","function":{"name":"calculate","arguments":"{\"expression\":\"2*3\"}"}}]},"finish_reason":null}]}"#,
            r#"{"model":"llama3.2","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"tool_calls"}]}"#,
        ];
        // And no [DONE]: the finish_reason plus the end of the body completes it.
        let d = read(&sse(&chunks, false), 9).unwrap().unwrap();
        assert_eq!(d.calls.len(), 2, "{d:?}");
        assert_eq!(d.calls[0].arguments, r#"{"expression":"1+1"}"#);
        assert_eq!(d.calls[1].id.as_deref(), Some("call_def"));
        assert_eq!(d.calls[1].arguments, r#"{"expression":"2*3"}"#);
    }

    #[test]
    fn missing_index_and_id_continue_one_call_and_repeated_names_are_not_doubled() {
        let chunks = [
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"calc","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"calc","arguments":": 1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        let d = read(&sse(&chunks, true), 4).unwrap().unwrap();
        assert_eq!(
            d.calls,
            [DraftCall {
                id: None,
                name: "calc".into(),
                arguments: r#"{"a": 1}"#.into(),
            }]
        );
    }

    #[test]
    fn a_stream_without_done_or_finish_reason_is_cut() {
        let all = weather_call();
        assert_eq!(read(&sse(&all[..4], false), 10).unwrap(), None);
        // A half event at the very end is dropped, not parsed.
        let mut body = sse(&all[..6], false);
        body.extend_from_slice(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"con");
        assert_eq!(read(&body, 10).unwrap(), None);
    }

    #[test]
    fn malformed_chunks_and_error_chunks_fail_clearly() {
        let err = read(&sse(&["{not json"], true), 100).unwrap_err();
        assert!(
            matches!(&err, AttemptError::Fatal(m) if m.contains("not valid JSON") && m.contains("{not json")),
            "{err:?}"
        );
        let err = read(
            &sse(
                &[r#"{"error":{"message":"The server had an error","type":"server_error"}}"#],
                false,
            ),
            100,
        )
        .unwrap_err();
        assert!(matches!(err, AttemptError::Retryable { .. }), "{err:?}");
    }

    #[test]
    fn a_whole_json_reply_is_read() {
        let body = json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": "{\"expression\":\"2+2\"}"}}],
                },
                "finish_reason": "tool_calls",
            }],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
        });
        let d = OpenAi.parse_body(&body).unwrap();
        assert_eq!(d.calls[0].name, "calculate");
        assert_eq!(d.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(d.prompt_tokens, Some(19));
        // Ollama's native shape puts the arguments as an object.
        let body = json!({"choices":[{"message":{"content":"","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]}}]});
        assert_eq!(
            OpenAi.parse_body(&body).unwrap().calls[0].arguments,
            r#"{"a":1}"#
        );
        assert!(
            OpenAi
                .parse_body(&json!({"object":"list"}))
                .unwrap_err()
                .contains("choices")
        );
    }

    #[tokio::test]
    async fn the_request_body_maps_every_message_kind_and_option() {
        let mut req = test_support::request(
            vec![
                ChatMessage::System {
                    content: "be brief".into(),
                },
                ChatMessage::User {
                    content: "2+2?".into(),
                },
                ChatMessage::Assistant {
                    content: None,
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "calculate".into(),
                        arguments: "{\"expression\":\"2+2\"}".into(),
                    }],
                },
                ChatMessage::Tool {
                    call_id: "call_1".into(),
                    name: "calculate".into(),
                    content: "division by zero".into(),
                    is_error: true,
                },
            ],
            &["calculate"],
        );
        req.temperature = Some(0.2);
        req.seed = Some(7);
        req.max_tokens = Some(100);
        req.stop = vec!["END".into()];
        req.tool_choice = ToolChoice::Tool("calculate".into());
        let body = test_support::attempt(&req, async |a| OpenAi.build_body(&a))
            .await
            .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "test-model",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "calculate", "arguments": "{\"expression\":\"2+2\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "error: division by zero"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.2,
                "seed": 7,
                "max_tokens": 100,
                "stop": ["END"],
                "tools": [{"type": "function", "function": {"name": "calculate", "description": "the calculate tool", "parameters": {}}}],
                "tool_choice": {"type": "function", "function": {"name": "calculate"}},
            })
        );
        for (choice, want) in [
            (ToolChoice::Auto, json!("auto")),
            (ToolChoice::Required, json!("required")),
            (ToolChoice::None, json!("none")),
        ] {
            assert_eq!(tool_choice(&choice), want);
        }
        // Without tools there is neither `tools` nor `tool_choice`, and nothing unset is sent.
        let bare = test_support::request(
            vec![ChatMessage::User {
                content: "hi".into(),
            }],
            &[],
        );
        let body = test_support::attempt(&bare, async |a| OpenAi.build_body(&a))
            .await
            .unwrap();
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["messages", "model", "stream", "stream_options"]);
    }
}
