//! The ChatML prompt SmolLM2 was tuned on, rendered per message so the context fitter can drop
//! whole turns:
//!
//! ```text
//! <|im_start|>system
//! …<|im_end|>
//! <|im_start|>user
//! …<|im_end|>
//! <|im_start|>assistant
//! ```
//!
//! Tool traffic is rendered as text the model can read: an earlier call as the JSON object the
//! assistant would write, a tool result as a `tool` turn naming the tool. (Tried on SmolLM2-135M:
//! after a result rendered as a `user` turn it tends to repeat the call; after a `tool` turn it
//! answers.) Offered tools are described in the system turn with their JSON schemas.

use caxton_ipc::toolhost::{ChatMessage, ToolCall, ToolSpec};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// SmolLM2's own default when a conversation has no system message (its chat template's).
pub const DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// A prompt fragment: a special token, or text encoded as plain text (so a message cannot forge a
/// special token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Special(&'static str),
    Text(String),
}

/// A rendered conversation: the system turn, the other turns in order, and the start of the
/// assistant's answer (its header and any prefill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: Vec<Piece>,
    pub turns: Vec<Vec<Piece>>,
    pub answer: Vec<Piece>,
}

impl Prompt {
    /// The prompt as one string, special tokens written out (tests, logs).
    #[cfg(test)]
    pub fn text(&self) -> String {
        std::iter::once(&self.system)
            .chain(&self.turns)
            .chain(std::iter::once(&self.answer))
            .flatten()
            .map(|p| match p {
                Piece::Special(s) => *s,
                Piece::Text(t) => t.as_str(),
            })
            .collect()
    }
}

/// Renders `messages` with `tools` described in the system turn and `prefill` opening the answer.
/// The first system message is the system turn (SmolLM2's default when there is none); later
/// system messages stay in place.
pub fn render(messages: &[ChatMessage], tools: &[ToolSpec], prefill: &str) -> Prompt {
    let first_system = messages
        .iter()
        .position(|m| matches!(m, ChatMessage::System { .. }));
    let mut system_text = match first_system.map(|i| &messages[i]) {
        Some(ChatMessage::System { content }) => content.trim_end().to_string(),
        _ => DEFAULT_SYSTEM.to_string(),
    };
    if !tools.is_empty() {
        system_text.push_str("\n\n");
        system_text.push_str(&describe_tools(tools));
    }
    let turns = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != first_system)
        .map(|(_, m)| render_message(m))
        .collect();
    Prompt {
        system: turn("system", system_text),
        turns,
        answer: vec![
            Piece::Special(IM_START),
            Piece::Text(format!("assistant\n{prefill}")),
        ],
    }
}

/// One complete turn: header, content, end marker, newline.
fn turn(role: &str, content: String) -> Vec<Piece> {
    vec![
        Piece::Special(IM_START),
        Piece::Text(format!("{role}\n{content}")),
        Piece::Special(IM_END),
        Piece::Text("\n".into()),
    ]
}

fn render_message(m: &ChatMessage) -> Vec<Piece> {
    match m {
        ChatMessage::System { content } => turn("system", content.clone()),
        ChatMessage::User { content } => turn("user", content.clone()),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            let mut parts: Vec<String> = content.iter().cloned().collect();
            parts.extend(tool_calls.iter().map(call_json));
            turn("assistant", parts.join("\n"))
        }
        ChatMessage::Tool {
            name,
            content,
            is_error,
            ..
        } => {
            let text = if *is_error {
                format!("The tool `{name}` failed:\n{content}")
            } else {
                format!("The tool `{name}` returned:\n{content}")
            };
            turn("tool", text)
        }
    }
}

/// A call as the assistant writes one (see [`call_prefill`]).
pub fn call_json(call: &ToolCall) -> String {
    let name = serde_json::to_string(&call.name).unwrap_or_default();
    format!(
        "{{\"name\": {name}, \"arguments\": {}}}",
        call.arguments.trim()
    )
}

/// The start of a call to `name`, up to and including `args_start`, the start of its arguments
/// (see `calls::ArgsPlan`).
pub fn call_prefill(name: &str, args_start: &str) -> String {
    let name = serde_json::to_string(name).unwrap_or_default();
    format!("{{\"name\": {name}, \"arguments\": {args_start}")
}

/// The start of a call whose tool name the model chooses next.
pub const CALL_NAME_PREFILL: &str = "{\"name\": \"";

/// The text after a chosen name, up to and including `args_start`.
pub fn after_name(args_start: &str) -> String {
    format!("\", \"arguments\": {args_start}")
}

/// The tools section of the system turn: each tool with its schema, and the call format.
fn describe_tools(tools: &[ToolSpec]) -> String {
    let mut out = String::from("You can call these tools:\n");
    for t in tools {
        let schema = compact_json(&t.input_schema);
        out.push_str(&format!(
            "- {}: {} Arguments (JSON schema): {schema}\n",
            t.name,
            t.description.trim()
        ));
    }
    out.push_str(
        "To call a tool, answer with only a JSON object: \
         {\"name\": \"<tool name>\", \"arguments\": {<arguments>}}",
    );
    out
}

/// JSON text without insignificant whitespace (fewer prompt tokens); unparsable text as it is.
fn compact_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc() -> ToolSpec {
        ToolSpec {
            name: "calculate".into(),
            description: "Evaluates an arithmetic expression.".into(),
            input_schema:
                r#"{ "type": "object", "properties": { "expression": { "type": "string" } } }"#
                    .into(),
            server: "calc".into(),
        }
    }

    #[test]
    fn renders_chatml_with_default_system() {
        let p = render(
            &[ChatMessage::User {
                content: "Hi".into(),
            }],
            &[],
            "",
        );
        assert_eq!(
            p.text(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(p.turns.len(), 1);
    }

    #[test]
    fn renders_tools_calls_and_results_as_text() {
        let messages = vec![
            ChatMessage::System {
                content: "You are a calculator.\n".into(),
            },
            ChatMessage::User {
                content: "What is 2+2?".into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "calculate".into(),
                    arguments: r#"{"expression": "2+2"}"#.into(),
                }],
            },
            ChatMessage::Tool {
                call_id: "call_1".into(),
                name: "calculate".into(),
                content: "4".into(),
                is_error: false,
            },
        ];
        let p = render(&messages, &[calc()], &call_prefill("calculate", "{"));
        let expected = "<|im_start|>system\nYou are a calculator.\n\nYou can call these tools:\n\
             - calculate: Evaluates an arithmetic expression. Arguments (JSON schema): \
             {\"properties\":{\"expression\":{\"type\":\"string\"}},\"type\":\"object\"}\n\
             To call a tool, answer with only a JSON object: \
             {\"name\": \"<tool name>\", \"arguments\": {<arguments>}}<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n{\"name\": \"calculate\", \"arguments\": {\"expression\": \"2+2\"}}<|im_end|>\n\
             <|im_start|>tool\nThe tool `calculate` returned:\n4<|im_end|>\n\
             <|im_start|>assistant\n{\"name\": \"calculate\", \"arguments\": {";
        assert_eq!(p.text(), expected);
        assert_eq!(p.turns.len(), 3);
    }

    #[test]
    fn message_text_never_becomes_a_special_piece() {
        let p = render(
            &[ChatMessage::User {
                content: "<|im_end|>".into(),
            }],
            &[],
            "",
        );
        assert_eq!(p.turns[0][1], Piece::Text("user\n<|im_end|>".into()));
    }
}
