//! The `anthropic` kind: the Messages API (`POST {base}/messages`, `anthropic-version:
//! 2023-06-01`), always streamed.
//!
//! The API differs from Chat Completions in shape, not in meaning: the system prompt is a field,
//! not a message; turns must alternate user/assistant, so consecutive messages of one role
//! (several tool results, or a tool result then a user note) merge into one turn; tool calls and
//! their results are content blocks; a stream is a sequence of typed events ending in
//! `message_stop`.

use std::collections::HashMap;

use caxton_ipc::toolhost::{ChatMessage, ToolChoice};
use serde_json::{Map, Value, json};

use super::http::{self, Draft, DraftCall, Wire, WireStream};
use super::sse::Event;
use super::{Attempt, AttemptError, Progress};

/// `max_tokens` is required by the API; this is used when the agent sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The Messages wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic;

impl Wire for Anthropic {
    type Stream = MessageStream;
    const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com/v1";
    const ENDPOINT: &'static str = "messages";
    const KEY_HEADER: (&'static str, &'static str) = ("x-api-key", "");
    const FIXED_HEADERS: &'static [(&'static str, &'static str)] =
        &[("anthropic-version", "2023-06-01")];

    fn build_body(&self, a: &Attempt<'_>) -> Result<Value, AttemptError> {
        let req = a.req;
        let mut body = Map::new();
        body.insert("model".into(), a.model.into());
        body.insert(
            "max_tokens".into(),
            req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into(),
        );
        body.insert("stream".into(), true.into());
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter_map(|m| match m {
                ChatMessage::System { content } => Some(content.as_str()),
                _ => None,
            })
            .collect();
        if !system.is_empty() {
            body.insert("system".into(), system.join("\n\n").into());
        }
        body.insert("messages".into(), turns(&req.messages).into());
        http::insert_sampling(&mut body, req);
        if !req.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(req.stop));
        }
        if !req.tools.is_empty() {
            let tools = req
                .tools
                .iter()
                .map(|t| {
                    Ok(json!({
                        "name": t.name,
                        "description": t.description,
                        "input_schema": http::input_schema(t)?,
                    }))
                })
                .collect::<Result<Vec<_>, AttemptError>>()?;
            body.insert("tools".into(), tools.into());
            body.insert("tool_choice".into(), tool_choice(&req.tool_choice));
        }
        Ok(body.into())
    }

    /// The non-streamed shape: `content` blocks, `model`, `usage`.
    fn parse_body(&self, body: &Value) -> Result<Draft, String> {
        if body.get("type").and_then(Value::as_str) == Some("error") {
            return Err(format!(
                "the server answered with an error: {}",
                http::excerpt(&body["error"].to_string())
            ));
        }
        let blocks = body
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                format!(
                    "no `content` array in the reply: {}",
                    http::excerpt(&body.to_string())
                )
            })?;
        let mut draft = Draft::default();
        for block in blocks {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => draft
                    .text
                    .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("tool_use") => draft.calls.push(DraftCall {
                    id: block.get("id").and_then(Value::as_str).map(String::from),
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    arguments: block.get("input").map(input_text).unwrap_or_default(),
                }),
                _ => {}
            }
        }
        if let Some(model) = body.get("model").and_then(Value::as_str) {
            draft.model = Some(model.into());
        }
        if let Some(usage) = body.get("usage") {
            apply_usage(&mut draft, usage);
        }
        Ok(draft)
    }

    fn stream(&self) -> MessageStream {
        MessageStream::default()
    }
}

/// The conversation as alternating turns of content blocks. System messages are left out (they
/// go to `system`); empty text is left out (the API refuses empty text blocks); consecutive
/// messages of one role merge, with tool results first in a user turn as the API requires.
fn turns(messages: &[ChatMessage]) -> Vec<Value> {
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m {
            ChatMessage::System { .. } => continue,
            ChatMessage::User { content } => ("user", text_block(content)),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = text_block(content.as_deref().unwrap_or(""));
                blocks.extend(tool_calls.iter().map(|c| {
                    json!({
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": tool_input(&c.arguments),
                    })
                }));
                ("assistant", blocks)
            }
            ChatMessage::Tool {
                call_id,
                content,
                is_error,
                ..
            } => {
                let mut block =
                    json!({"type": "tool_result", "tool_use_id": call_id, "is_error": is_error});
                if !content.is_empty() {
                    block["content"] = content.as_str().into();
                }
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, merged)) if *last == role => merged.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut content)| {
            content.sort_by_key(|b| b["type"] != "tool_result");
            json!({"role": role, "content": content})
        })
        .collect()
}

fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

/// A call's arguments as the object `input` must be. Arguments that are not a JSON object (a
/// call another provider made before a fallback) are passed as `{"arguments": "<text>"}`, so the
/// conversation stays valid and the model can still see what was sent.
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"arguments": arguments}),
    }
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    }
}

/// A tool input object as arguments text; an empty object as empty text (filled with `{}` later).
fn input_text(input: &Value) -> String {
    match input {
        Value::Object(o) if o.is_empty() => String::new(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Prompt tokens are the uncached input plus cache writes and reads; output tokens are
/// cumulative, so the latest report wins.
fn apply_usage(draft: &mut Draft, usage: &Value) {
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    if let Some(input) = field("input_tokens") {
        let cached = field("cache_creation_input_tokens").unwrap_or(0)
            + field("cache_read_input_tokens").unwrap_or(0);
        draft.prompt_tokens = Some(input + cached);
    }
    if let Some(output) = field("output_tokens") {
        draft.completion_tokens = Some(output);
    }
}

/// What a content block of the stream is.
#[derive(Debug)]
enum Block {
    Text,
    /// Fills `draft.calls[call]`; `initial` is a non-empty `input` given at the block's start.
    ToolUse {
        call: usize,
        initial: String,
    },
    /// Thinking and block types added later: read past.
    Other,
}

/// A streamed reply being read: `message_start`, content blocks (start, deltas, stop),
/// `message_delta`, `message_stop`; `ping` anywhere; an `error` event instead of the rest.
#[derive(Debug, Default)]
pub struct MessageStream {
    draft: Draft,
    blocks: HashMap<u64, Block>,
}

impl WireStream for MessageStream {
    fn on_event(&mut self, event: &Event, progress: &Progress) -> Result<bool, AttemptError> {
        let data = http::event_json(event)?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.name);
        match kind {
            "message_start" => {
                let message = &data["message"];
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.draft.model = Some(model.into());
                }
                apply_usage(&mut self.draft, &message["usage"]);
            }
            "content_block_start" => self.start_block(&data, progress),
            "content_block_delta" => self.apply_delta(&data, progress)?,
            "content_block_stop" => self.stop_block(&data),
            "message_delta" => apply_usage(&mut self.draft, &data["usage"]),
            "message_stop" => return Ok(true),
            "error" => return Err(http::stream_error(&data)),
            // `ping`, and event types added later (the API's versioning policy says to ignore them).
            _ => {}
        }
        Ok(false)
    }

    fn complete_without_terminal(&self) -> bool {
        false
    }

    fn into_draft(self) -> Draft {
        self.draft
    }
}

impl MessageStream {
    fn start_block(&mut self, data: &Value, progress: &Progress) {
        let index = block_index(data);
        let block = &data["content_block"];
        let kind = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                self.push_text(
                    block.get("text").and_then(Value::as_str).unwrap_or(""),
                    progress,
                );
                Block::Text
            }
            Some("tool_use") => {
                self.draft.calls.push(DraftCall {
                    id: block.get("id").and_then(Value::as_str).map(String::from),
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    arguments: String::new(),
                });
                Block::ToolUse {
                    call: self.draft.calls.len() - 1,
                    initial: block.get("input").map(input_text).unwrap_or_default(),
                }
            }
            _ => Block::Other,
        };
        self.blocks.insert(index, kind);
    }

    fn apply_delta(&mut self, data: &Value, progress: &Progress) -> Result<(), AttemptError> {
        let index = block_index(data);
        let delta = &data["delta"];
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                self.push_text(
                    delta.get("text").and_then(Value::as_str).unwrap_or(""),
                    progress,
                );
            }
            Some("input_json_delta") => {
                let Some(Block::ToolUse { call, .. }) = self.blocks.get(&index) else {
                    return Err(AttemptError::Fatal(format!(
                        "the stream sent tool input for content block {index}, which is not a tool_use block"
                    )));
                };
                let part = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.draft.calls[*call].arguments.push_str(part);
            }
            // thinking_delta, signature_delta, citations and later additions.
            _ => {}
        }
        Ok(())
    }

    /// A tool_use block whose input came whole at its start and not as deltas keeps that input.
    fn stop_block(&mut self, data: &Value) {
        if let Some(Block::ToolUse { call, initial }) = self.blocks.get(&block_index(data)) {
            let arguments = &mut self.draft.calls[*call].arguments;
            if arguments.trim().is_empty() {
                arguments.clone_from(initial);
            }
        }
    }

    fn push_text(&mut self, text: &str, progress: &Progress) {
        progress.text(text);
        self.draft.text.push_str(text);
    }
}

fn block_index(data: &Value) -> u64 {
    data.get("index").and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::replay;
    use crate::test_support;
    use caxton_ipc::toolhost::{ChatProgress, ToolCall};

    /// The event sequence of the Messages streaming documentation's tool-use example.
    const TOOL_USE_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-3-haiku-20240307","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

    fn read(body: &[u8], piece: usize) -> Result<Option<Draft>, AttemptError> {
        replay(&Anthropic, body, piece, &Progress::silent())
    }

    #[test]
    fn the_documented_tool_use_stream_accumulates_at_every_chunking() {
        let body = TOOL_USE_STREAM.replace('\n', "\r\n");
        for body in [TOOL_USE_STREAM.as_bytes(), body.as_bytes()] {
            for piece in [1, 3, 17, 100, body.len()] {
                let d = read(body, piece).unwrap().expect("complete");
                assert_eq!(d.text, "Okay, let's check the weather.");
                assert_eq!(
                    d.calls,
                    [DraftCall {
                        id: Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6".into()),
                        name: "get_weather".into(),
                        arguments: r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#
                            .into(),
                    }]
                );
                assert_eq!(d.model.as_deref(), Some("claude-3-haiku-20240307"));
                assert_eq!(
                    (d.prompt_tokens, d.completion_tokens),
                    (Some(472), Some(89))
                );
            }
        }
    }

    #[test]
    fn text_deltas_reach_progress() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        replay(
            &Anthropic,
            TOOL_USE_STREAM.as_bytes(),
            50,
            &Progress::new(tx, true),
        )
        .unwrap()
        .unwrap();
        let mut texts = Vec::new();
        while let Ok(ChatProgress::Text { text }) = rx.try_recv() {
            texts.push(text);
        }
        assert_eq!(texts, ["Okay", ", let's check the weather."]);
    }

    #[test]
    fn a_stream_ending_before_message_stop_is_cut() {
        let cut = TOOL_USE_STREAM
            .split_once("event: message_delta")
            .unwrap()
            .0;
        assert_eq!(read(cut.as_bytes(), 64).unwrap(), None);
    }

    #[test]
    fn a_tool_use_without_input_deltas_gets_an_empty_object_or_its_start_input() {
        let events = [
            r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":3,"cache_read_input_tokens":4}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t1","name":"now","input":{}}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t2","name":"add","input":{"a":1}}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let d = read(body.as_bytes(), 1000).unwrap().unwrap();
        assert_eq!(d.calls[0].arguments, "");
        assert_eq!(d.calls[1].arguments, r#"{"a":1}"#);
        assert_eq!(d.prompt_tokens, Some(7));
    }

    #[test]
    fn error_events_are_classified() {
        let overloaded = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let err = read(overloaded.as_bytes(), 7).unwrap_err();
        assert!(
            matches!(&err, AttemptError::Retryable { message, .. } if message.contains("Overloaded")),
            "{err:?}"
        );
        let invalid = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}\n\n";
        assert!(matches!(
            read(invalid.as_bytes(), 7),
            Err(AttemptError::Fatal(_))
        ));
        let stray = "data: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n";
        assert!(
            matches!(read(stray.as_bytes(), 7), Err(AttemptError::Fatal(m)) if m.contains("block 5"))
        );
    }

    #[test]
    fn a_whole_json_reply_is_read() {
        let body = json!({
            "id": "msg_01Aq9w938a90dw8q",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "I'll check."},
                {"type": "tool_use", "id": "toolu_1", "name": "calculate", "input": {"expression": "2+2"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        });
        let d = Anthropic.parse_body(&body).unwrap();
        assert_eq!(d.text, "I'll check.");
        assert_eq!(d.calls[0].arguments, r#"{"expression":"2+2"}"#);
        assert_eq!((d.prompt_tokens, d.completion_tokens), (Some(10), Some(5)));
        let err = json!({"type":"error","error":{"type":"not_found_error","message":"model: x"}});
        assert!(
            Anthropic
                .parse_body(&err)
                .unwrap_err()
                .contains("not_found_error")
        );
    }

    #[tokio::test]
    async fn the_request_body_alternates_turns_and_merges_tool_results() {
        let call = |id: &str| ToolCall {
            id: id.into(),
            name: "calculate".into(),
            arguments: if id == "c2" {
                String::new()
            } else {
                "{\"expression\":\"1+1\"}".into()
            },
        };
        let mut req = test_support::request(
            vec![
                ChatMessage::System {
                    content: "rule one".into(),
                },
                ChatMessage::System {
                    content: "rule two".into(),
                },
                ChatMessage::User {
                    content: "sum?".into(),
                },
                ChatMessage::Assistant {
                    content: Some("Let me see.".into()),
                    tool_calls: vec![call("c1"), call("c2")],
                },
                ChatMessage::Tool {
                    call_id: "c1".into(),
                    name: "calculate".into(),
                    content: "2".into(),
                    is_error: false,
                },
                ChatMessage::Tool {
                    call_id: "c2".into(),
                    name: "calculate".into(),
                    content: "missing expression".into(),
                    is_error: true,
                },
                ChatMessage::User {
                    content: "and then?".into(),
                },
            ],
            &["calculate"],
        );
        req.top_p = Some(0.9);
        req.stop = vec!["STOP".into()];
        req.tool_choice = ToolChoice::Required;
        let body = test_support::attempt(&req, async |a| Anthropic.build_body(&a))
            .await
            .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "test-model",
                "max_tokens": 1024,
                "stream": true,
                "system": "rule one\n\nrule two",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "sum?"}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me see."},
                        {"type": "tool_use", "id": "c1", "name": "calculate", "input": {"expression": "1+1"}},
                        {"type": "tool_use", "id": "c2", "name": "calculate", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "2", "is_error": false},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "missing expression", "is_error": true},
                        {"type": "text", "text": "and then?"},
                    ]},
                ],
                "top_p": 0.9,
                "stop_sequences": ["STOP"],
                "tools": [{"name": "calculate", "description": "the calculate tool", "input_schema": {}}],
                "tool_choice": {"type": "any"},
            })
        );
        for (choice, want) in [
            (ToolChoice::Auto, json!({"type": "auto"})),
            (ToolChoice::None, json!({"type": "none"})),
            (
                ToolChoice::Tool("t".into()),
                json!({"type": "tool", "name": "t"}),
            ),
        ] {
            assert_eq!(tool_choice(&choice), want);
        }
        assert_eq!(tool_input("[1]"), json!({"arguments": "[1]"}));
    }
}
