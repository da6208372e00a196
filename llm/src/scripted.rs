//! The `scripted` LLM provider: deterministic replies from a rule file, for tests, demos and
//! reproducible agent checks. It is not a language model.
//!
//! Rules are tried in order against the last message of the conversation; the first that matches
//! answers. See `scripted_default.toml` (the built-in rules) and the README for the format.

use std::collections::HashMap;
use std::time::Duration;

use super::{Attempt, AttemptError, Completion};

use regex::Regex;
use serde::Deserialize;

use caxton_ipc::toolhost::{ChatMessage, ToolCall, ToolChoice};

/// The rules used when the `scripted` provider has no rule file configured.
pub const BUILTIN_RULES: &str = include_str!("scripted_default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    when: When,
    agent: Option<String>,
    #[serde(rename = "match")]
    pattern: Option<String>,
    reply: Option<String>,
    call: Option<RawCall>,
    /// Several tool calls in one reply (a model asking for them in parallel).
    calls: Option<Vec<RawCall>>,
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    tool: String,
    arguments: String,
    /// Emit the call even when the agent was not offered this tool, to simulate a model that
    /// invents tool calls (tests the worker's allowlist).
    #[serde(default)]
    unoffered: bool,
}

/// Which last message a rule looks at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum When {
    User,
    Tool,
    #[default]
    Any,
}

#[derive(Debug)]
enum Action {
    Reply(String),
    /// One tool call or more, in one reply.
    Call(Vec<CallSpec>),
}

#[derive(Debug)]
struct CallSpec {
    tool: String,
    arguments: String,
    unoffered: bool,
}

impl From<RawCall> for CallSpec {
    fn from(c: RawCall) -> CallSpec {
        CallSpec {
            tool: c.tool,
            arguments: c.arguments,
            unoffered: c.unoffered,
        }
    }
}

#[derive(Debug)]
struct Rule {
    when: When,
    agent: Option<String>,
    pattern: Option<Regex>,
    action: Action,
    delay: Option<Duration>,
}

/// A loaded rule set.
#[derive(Debug)]
pub struct ScriptedProvider {
    source: String,
    rules: Vec<Rule>,
}

/// Model name the scripted provider reports.
pub const SCRIPTED_MODEL: &str = "scripted-rules";

impl ScriptedProvider {
    /// The built-in rules.
    pub fn builtin() -> ScriptedProvider {
        // The built-in rules are tested below; failing to parse them is a build defect.
        Self::parse(BUILTIN_RULES, "<built-in scripted rules>")
            .expect("built-in scripted rules are valid")
    }

    /// Parses a rule file; errors name the source and the rule.
    pub fn parse(text: &str, source: &str) -> Result<ScriptedProvider, String> {
        let file: RuleFile = toml::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        let mut rules = Vec::new();
        for (i, raw) in file.rules.into_iter().enumerate() {
            let at = format!("{source}: rule {}", i + 1);
            let pattern = raw
                .pattern
                .map(|p| Regex::new(&p).map_err(|e| format!("{at}: bad `match` regex: {e}")))
                .transpose()?;
            let action = match (raw.reply, raw.call, raw.calls) {
                (Some(text), None, None) => Action::Reply(text),
                (None, Some(call), None) => Action::Call(vec![call.into()]),
                (None, None, Some(calls)) if !calls.is_empty() => {
                    Action::Call(calls.into_iter().map(CallSpec::from).collect())
                }
                _ => {
                    return Err(format!(
                        "{at}: give exactly one of `reply`, `call` or `calls` (a non-empty list)"
                    ));
                }
            };
            rules.push(Rule {
                when: raw.when,
                agent: raw.agent,
                pattern,
                action,
                delay: raw.delay,
            });
        }
        Ok(ScriptedProvider {
            source: source.to_string(),
            rules,
        })
    }

    /// Answers one chat request. Replies are streamed word by word when the request streams;
    /// a rule's `delay` past the attempt's deadline is cut off there by the caller.
    pub async fn complete(&self, a: &Attempt<'_>) -> Result<Completion, AttemptError> {
        let req = a.req;
        let Some(last) = req.messages.last() else {
            return Err(llm_err("scripted provider: empty conversation".into()));
        };
        let (kind, content) = match last {
            ChatMessage::User { content } => (When::User, content.as_str()),
            ChatMessage::Tool { content, .. } => (When::Tool, content.as_str()),
            ChatMessage::System { content } => (When::Any, content.as_str()),
            ChatMessage::Assistant { content, .. } => (When::Any, content.as_deref().unwrap_or("")),
        };
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.when != When::Any && rule.when != kind {
                continue;
            }
            if rule.agent.as_ref().is_some_and(|a| *a != req.agent) {
                continue;
            }
            let mut values: HashMap<String, String> = HashMap::new();
            values.insert("content".into(), content.to_string());
            values.insert("agent".into(), req.agent.clone());
            if let Some(re) = &rule.pattern {
                let Some(caps) = re.captures(content) else {
                    continue;
                };
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        values.insert(name.to_string(), m.as_str().trim().to_string());
                    }
                }
            }
            if let Action::Call(calls) = &rule.action
                && calls
                    .iter()
                    .any(|c| !c.unoffered && !req.tools.iter().any(|t| t.name == c.tool))
            {
                continue; // the agent may not call this tool: the rule does not apply
            }
            // tool_choice is honoured like a model would: `none` skips call rules, `required`
            // or a named tool skips reply rules (and calls to other tools).
            let allowed = match (&req.tool_choice, &rule.action) {
                (ToolChoice::Auto, _) => true,
                (ToolChoice::None, action) => matches!(action, Action::Reply(_)),
                (ToolChoice::Required, action) => matches!(action, Action::Call { .. }),
                (ToolChoice::Tool(name), Action::Call(calls)) => {
                    calls.iter().all(|c| c.tool == *name)
                }
                (ToolChoice::Tool(_), Action::Reply(_)) => false,
            };
            if !allowed {
                continue;
            }
            if let Some(delay) = rule.delay {
                tokio::time::sleep(delay).await;
            }
            let at = || format!("{} rule {}", self.source, i + 1);
            let prompt_tokens = req.messages.iter().map(message_words).sum();
            let reply = match &rule.action {
                Action::Reply(text) => {
                    let text = render(text, &values, false)
                        .map_err(|e| llm_err(format!("{}: {e}", at())))?;
                    for (j, word) in text.split_inclusive(' ').enumerate() {
                        if j > 0 {
                            tokio::task::yield_now().await;
                        }
                        a.progress.text(word);
                    }
                    Completion {
                        completion_tokens: text.split_whitespace().count() as u64,
                        content: Some(text),
                        tool_calls: vec![],
                        model: SCRIPTED_MODEL.into(),
                        prompt_tokens,
                    }
                }
                Action::Call(calls) => {
                    let mut tool_calls = Vec::new();
                    for (j, c) in calls.iter().enumerate() {
                        let arguments = render(&c.arguments, &values, true)
                            .map_err(|e| llm_err(format!("{}: {e}", at())))?;
                        serde_json::from_str::<serde_json::Value>(&arguments).map_err(|e| {
                            llm_err(format!(
                                "{}: `arguments` is not valid JSON after filling it in: {e}",
                                at()
                            ))
                        })?;
                        // One call keeps the id it always had; several are numbered.
                        let id = if calls.len() == 1 {
                            format!("call_{}", req.messages.len())
                        } else {
                            format!("call_{}_{}", req.messages.len(), j + 1)
                        };
                        tool_calls.push(ToolCall {
                            id,
                            name: c.tool.clone(),
                            arguments,
                        });
                    }
                    Completion {
                        content: None,
                        completion_tokens: tool_calls.len() as u64,
                        tool_calls,
                        model: SCRIPTED_MODEL.into(),
                        prompt_tokens,
                    }
                }
            };
            return Ok(reply);
        }
        Err(llm_err(format!(
            "scripted provider: no rule in {} matches the last message ({kind:?}: {:?})",
            self.source,
            truncate(content, 120)
        )))
    }
}

fn llm_err(message: String) -> AttemptError {
    AttemptError::Fatal(message)
}

fn message_words(m: &ChatMessage) -> u64 {
    let text = match m {
        ChatMessage::System { content }
        | ChatMessage::User { content }
        | ChatMessage::Tool { content, .. } => content.as_str(),
        ChatMessage::Assistant { content, .. } => content.as_deref().unwrap_or(""),
    };
    text.split_whitespace().count() as u64
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Fills `{{name}}` placeholders from the rule's values; with `json`, escaped for a JSON string.
fn render(template: &str, values: &HashMap<String, String>, json: bool) -> Result<String, String> {
    caxton_ipc::template::render(template, |k| values.get(k).map(String::as_str), json)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::{attempt, request};

    fn req(messages: Vec<ChatMessage>, tools: &[&str]) -> caxton_ipc::toolhost::ChatRequest {
        request(messages, tools)
    }

    impl ScriptedProvider {
        async fn chat(
            &self,
            req: &caxton_ipc::toolhost::ChatRequest,
        ) -> Result<Completion, AttemptError> {
            attempt(req, async |a| self.complete(&a).await).await
        }
    }

    #[tokio::test]
    async fn builtin_rules_call_the_calculator_then_report() {
        let p = ScriptedProvider::builtin();
        let r = p
            .chat(&req(
                vec![ChatMessage::User {
                    content: "What is (2 + 3) * 7?".into(),
                }],
                &["calculate"],
            ))
            .await
            .unwrap();
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "calculate");
        assert_eq!(
            r.tool_calls[0].arguments,
            r#"{"expression": "(2 + 3) * 7"}"#
        );
        let r = p
            .chat(&req(
                vec![ChatMessage::Tool {
                    call_id: "c".into(),
                    name: "calculate".into(),
                    content: "35".into(),
                    is_error: false,
                }],
                &["calculate"],
            ))
            .await
            .unwrap();
        assert_eq!(r.content.as_deref(), Some("The result is 35."));
        // Without the tool allowed, the rule does not apply and the echo rule answers.
        let r = p
            .chat(&req(
                vec![ChatMessage::User {
                    content: "What is 1+1?".into(),
                }],
                &[],
            ))
            .await
            .unwrap();
        assert!(r.content.unwrap().contains("What is 1+1?"));
        // tool_choice = none: the call rule is skipped like a model that may not call tools.
        let mut none = req(
            vec![ChatMessage::User {
                content: "What is 2 + 2?".into(),
            }],
            &["calculate"],
        );
        none.tool_choice = ToolChoice::None;
        let r = p.chat(&none).await.unwrap();
        assert!(r.tool_calls.is_empty() && r.content.is_some(), "{r:?}");
    }

    #[tokio::test]
    async fn a_calls_rule_asks_for_several_tools_at_once() {
        let p = ScriptedProvider::parse(
            "[[rule]]\ncalls = [{ tool = 'a', arguments = '{\"x\": \"{{content}}\"}' }, { tool = 'b', arguments = '{}' }]\n[[rule]]\nreply = 'no b'",
            "f",
        )
        .unwrap();
        let user = || {
            vec![ChatMessage::User {
                content: "hi".into(),
            }]
        };
        let r = p.chat(&req(user(), &["a", "b"])).await.unwrap();
        let calls: Vec<(&str, &str, &str)> = r
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [("call_1_1", "a", r#"{"x": "hi"}"#), ("call_1_2", "b", "{}")]
        );
        // One of its tools is not offered: the rule does not apply.
        let r = p.chat(&req(user(), &["a"])).await.unwrap();
        assert_eq!(r.content.as_deref(), Some("no b"));
    }

    #[test]
    fn bad_rules_are_reported() {
        assert!(
            ScriptedProvider::parse("[[rule]]\nreply='x'\ncall={tool='t',arguments='{}'}", "f")
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(
            ScriptedProvider::parse("[[rule]]\nmatch='('\nreply='x'", "f")
                .unwrap_err()
                .contains("regex")
        );
        assert!(
            ScriptedProvider::parse("[[rule]]\nrepy='x'", "f")
                .unwrap_err()
                .contains("repy")
        );
    }

    #[test]
    fn json_values_are_escaped() {
        let v: HashMap<String, String> = [("x".to_string(), "a\"b".to_string())].into();
        assert_eq!(
            render(r#"{"k": "{{x}}"}"#, &v, true).unwrap(),
            r#"{"k": "a\"b"}"#
        );
        assert!(render("{{missing}}", &v, false).is_err());
    }
}
