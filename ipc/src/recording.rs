//! Recordings of a run's LLM exchanges: what `caxton agent run --record FILE` writes and
//! `--replay FILE` (and `caxton agent test`) answers from, with no provider at all.
//!
//! A recording is JSON. Each exchange keeps the parts of the request that decide the answer (the
//! conversation, the offered tools, the tool choice, provider and model) and the reply. Replay
//! compares each live request with the recorded one and refuses to go on when they differ, naming
//! the first difference, so a recording cannot silently answer a conversation it never saw.

use serde::{Deserialize, Serialize};

use crate::toolhost::{ChatMessage, ChatReply, ChatRequest, ToolChoice};

/// Version of the recording format written today.
pub const RECORDING_VERSION: u32 = 1;

/// Every LLM exchange of one run, and of the runs it delegated to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub version: u32,
    pub agent: String,
    pub input: String,
    pub exchanges: Vec<Exchange>,
    /// The delegated runs of the tree, by their path: the call ids from the root down,
    /// joined by `/` (`call_2`, `call_2/call_4`). Call ids come from the recorded replies, so a
    /// replay finds each child again whatever order parallel children run in.
    #[serde(default)]
    pub children: std::collections::BTreeMap<String, ChildRecording>,
}

/// The LLM exchanges of one delegated run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildRecording {
    pub agent: String,
    pub input: String,
    pub exchanges: Vec<Exchange>,
}

impl Recording {
    /// A recording of the run at `path` of this tree, for replaying it: its own exchanges
    /// (none when the recording has no such run, so a replay never asks a provider).
    pub fn for_child(&self, path: &str, agent: &str, input: &str) -> Recording {
        let child = self.children.get(path);
        Recording {
            version: self.version,
            agent: child.map_or(agent, |c| &c.agent).to_string(),
            input: child.map_or(input, |c| &c.input).to_string(),
            exchanges: child.map(|c| c.exchanges.clone()).unwrap_or_default(),
            children: Default::default(),
        }
    }
}

/// One LLM request (the parts that decide the answer) and its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub request: RecordedRequest,
    pub reply: ChatReply,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub provider: String,
    pub model: Option<String>,
    pub tool_choice: ToolChoice,
    /// Names of the offered tools.
    pub tools: Vec<String>,
    pub messages: Vec<ChatMessage>,
}

impl RecordedRequest {
    pub fn of(req: &ChatRequest) -> RecordedRequest {
        RecordedRequest {
            provider: req.provider.clone(),
            model: req.model.clone(),
            tool_choice: req.tool_choice.clone(),
            tools: req.tools.iter().map(|t| t.name.clone()).collect(),
            messages: req.messages.clone(),
        }
    }

    /// The first difference between this (recorded) request and `live`, in words.
    pub fn difference(&self, live: &RecordedRequest) -> Option<String> {
        if self.provider != live.provider || self.model != live.model {
            return Some(format!(
                "provider/model: recorded {}/{}, now {}/{}",
                self.provider,
                self.model.as_deref().unwrap_or("default"),
                live.provider,
                live.model.as_deref().unwrap_or("default")
            ));
        }
        if self.tool_choice != live.tool_choice {
            return Some(format!(
                "tool_choice: recorded `{}`, now `{}`",
                self.tool_choice, live.tool_choice
            ));
        }
        if self.tools != live.tools {
            return Some(format!(
                "offered tools: recorded [{}], now [{}]",
                self.tools.join(", "),
                live.tools.join(", ")
            ));
        }
        for (i, (rec, now)) in self.messages.iter().zip(&live.messages).enumerate() {
            if rec != now {
                return Some(format!(
                    "message {} differs:\n  recorded: {}\n  now:      {}",
                    i + 1,
                    describe(rec),
                    describe(now)
                ));
            }
        }
        if self.messages.len() != live.messages.len() {
            return Some(format!(
                "the conversation has {} messages now, {} when recorded",
                live.messages.len(),
                self.messages.len()
            ));
        }
        None
    }
}

/// One message as one line: its role and an excerpt.
fn describe(m: &ChatMessage) -> String {
    let (role, text) = match m {
        ChatMessage::System { content } => ("system", content.clone()),
        ChatMessage::User { content } => ("user", content.clone()),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            let calls: Vec<String> = tool_calls
                .iter()
                .map(|c| format!("{}({})", c.name, c.arguments))
                .collect();
            (
                "assistant",
                format!(
                    "{}{}",
                    content.as_deref().unwrap_or(""),
                    if calls.is_empty() {
                        String::new()
                    } else {
                        format!(" calls {}", calls.join(", "))
                    }
                ),
            )
        }
        ChatMessage::Tool { name, content, .. } => ("tool", format!("{name} → {content}")),
    };
    let text = text.replace('\n', "⏎");
    let excerpt: String = text.chars().take(160).collect();
    let more = if text.chars().count() > 160 {
        "…"
    } else {
        ""
    };
    format!("{role}: {excerpt:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(user: &str) -> RecordedRequest {
        RecordedRequest {
            provider: "local".into(),
            model: None,
            tool_choice: ToolChoice::Auto,
            tools: vec!["calculate".into()],
            messages: vec![
                ChatMessage::System {
                    content: "sys".into(),
                },
                ChatMessage::User {
                    content: user.into(),
                },
            ],
        }
    }

    #[test]
    fn differences_are_named() {
        assert_eq!(req("a").difference(&req("a")), None);
        let d = req("2 + 2").difference(&req("2 + 3")).unwrap();
        assert!(d.contains("message 2") && d.contains("\"2 + 3\""), "{d}");
        let mut other = req("a");
        other.tool_choice = ToolChoice::Tool("calculate".into());
        assert!(req("a").difference(&other).unwrap().contains("tool_choice"));
        let mut longer = req("a");
        longer.messages.push(ChatMessage::User {
            content: "more".into(),
        });
        assert!(
            req("a")
                .difference(&longer)
                .unwrap()
                .contains("3 messages now, 2 when recorded")
        );
    }

    #[test]
    fn a_recording_round_trips_through_json() {
        let rec = Recording {
            version: RECORDING_VERSION,
            agent: "calculator".into(),
            input: "2+2".into(),
            exchanges: vec![Exchange {
                request: req("2+2"),
                reply: ChatReply {
                    content: Some("4".into()),
                    tool_calls: vec![],
                    provider: "local".into(),
                    model: "m".into(),
                    prompt_tokens: 3,
                    completion_tokens: 1,
                    cost_usd: 0.0,
                },
            }],
            children: Default::default(),
        };
        let text = serde_json::to_string_pretty(&rec).unwrap();
        assert_eq!(serde_json::from_str::<Recording>(&text).unwrap(), rec);
    }
}
