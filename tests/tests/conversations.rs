//! Conversations: runs that continue each other, kept by the memory service across daemon
//! restarts, readable and continuable only by the user who started them; handoffs between
//! agents within one.

use std::process::Command;

use caxton_ipc::api::{ErrorKind, RunEvent, RunRequest};
use caxton_ipc::conversation::{ConversationState, EntryKind};
use caxton_ipc::toolhost::ChatMessage;
use caxton_tests::{Daemon, Options, RunOutcome, assert_contains, bin};

fn daemon(extra_config: &str) -> Daemon {
    Daemon::start(Options {
        extra_config: extra_config.into(),
        ..Options::with_agents(&[
            "tests/agents/adder.toml",
            "tests/agents/stubborn.toml",
            "tests/agents/triage.toml",
            "tests/agents/billing.toml",
        ])
    })
    .unwrap()
}

fn in_conversation(d: &Daemon, agent: &str, input: &str, conversation: &str) -> RunOutcome {
    let mut req = RunRequest::new(agent, input);
    req.conversation = Some(conversation.into());
    req.record = true;
    d.run_req(req).unwrap()
}

/// The conversation a run took part in: (id, turn, agent holding it).
fn joined(out: &RunOutcome) -> (String, u32, String) {
    out.events
        .iter()
        .find_map(|e| match e {
            RunEvent::Conversation { id, turn, agent } => Some((id.clone(), *turn, agent.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no conversation event: {out:?}"))
}

/// The messages of the run's first LLM request (from its recorded exchange).
fn first_prompt(out: &RunOutcome) -> Vec<ChatMessage> {
    out.events
        .iter()
        .find_map(|e| match e {
            RunEvent::LlmExchange(x) => Some(x.request.messages.clone()),
            _ => None,
        })
        .expect("a recorded exchange")
}

fn texts(messages: &[ChatMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            ChatMessage::System { content } => format!("system: {content}"),
            ChatMessage::User { content } => format!("user: {content}"),
            ChatMessage::Assistant { content, .. } => {
                format!("assistant: {}", content.as_deref().unwrap_or(""))
            }
            ChatMessage::Tool { content, .. } => format!("tool: {content}"),
        })
        .collect()
}

#[test]
fn a_conversation_carries_history_and_survives_a_restart() {
    let mut d = daemon("");
    let first = in_conversation(&d, "adder", "2 + 3", "new");
    assert_eq!(first.answer(), Some("The result is 5."));
    let (id, turn, agent) = joined(&first);
    assert_eq!((turn, agent.as_str()), (1, "adder"));
    assert!(id.starts_with("conv-"), "{id}");
    // The first run had no history: system prompt, then the request.
    assert_eq!(first_prompt(&first).len(), 2);

    d.stop_and_restart();
    let second = in_conversation(&d, "adder", "4 * 4", &id);
    assert_eq!(second.answer(), Some("The result is 16."));
    assert_eq!(joined(&second).1, 2);
    let prompt = texts(&first_prompt(&second));
    assert_eq!(
        prompt[1..],
        [
            "user: 2 + 3".to_string(),
            "assistant: [calculate gave: 5]\nThe result is 5.".to_string(),
            "user: 4 * 4".to_string(),
        ],
        "{prompt:#?}"
    );
    // The record, as `caxton conversation show` reads it.
    let shown = d.cli_ok(&["conversation", "show", &id, "--json"]);
    let c: caxton_ipc::conversation::Conversation = serde_json::from_str(&shown).unwrap();
    assert_eq!(c.info.turns, 2);
    assert_eq!(c.info.state, ConversationState::Active);
    let kinds: Vec<EntryKind> = c.entries.iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        [
            User, ToolCall, ToolResult, Answer, User, ToolCall, ToolResult, Answer
        ]
    );
    assert!(c.entries.iter().all(|e| e.agent == "adder" && e.at_ms > 0));
    let listed = d.cli_ok(&["conversation", "list"]);
    assert_contains(&listed, &[&id, "active", "held by adder"]);
    // Closed: readable, not continued.
    d.cli_ok(&["conversation", "close", &id]);
    let mut req = RunRequest::new("adder", "1 + 1");
    req.conversation = Some(id.clone());
    let refused = d.run_req(req).unwrap();
    assert_contains(
        &refused.failure().unwrap().message,
        &["is completed", "--conversation new"],
    );
    d.cli_ok(&["conversation", "delete", &id]);
    let gone = d.cli_err(&["conversation", "show", &id], 1);
    assert_contains(&gone, &["no conversation"]);
}

#[test]
fn the_run_after_a_failure_sees_what_completed_before_it() {
    let d = daemon("");
    let first = in_conversation(&d, "stubborn", "add", "new");
    first.expect_failure(ErrorKind::LimitExceeded, &["max_tool_calls = 1"]);
    let (id, ..) = joined(&first);
    let second = in_conversation(&d, "stubborn", "again", &id);
    let prompt = texts(&first_prompt(&second));
    assert_contains(
        &prompt[2],
        &[
            "[calculate gave: 2]",
            "[this request failed: agent `stubborn` reached max_tool_calls = 1",
        ],
    );
}

#[test]
fn a_handoff_moves_the_conversation_and_hands_back() {
    let d = daemon("");
    let first = in_conversation(&d, "triage", "I want a refund", "new");
    assert_eq!(first.answer(), Some("billing answers: I want a refund"));
    let (id, ..) = joined(&first);
    let handoff = first
        .events
        .iter()
        .find_map(|e| match e {
            RunEvent::Handoff {
                from, to, reason, ..
            } => Some((from.clone(), to.clone(), reason.clone())),
            _ => None,
        })
        .expect("a handoff event");
    assert_eq!(
        handoff,
        (
            "triage".into(),
            "billing".into(),
            "a billing question".into()
        )
    );
    // The next message, though addressed to triage, goes to billing, which holds it now.
    let second = in_conversation(&d, "triage", "and my invoice?", &id);
    assert_eq!(joined(&second).2, "billing");
    assert_eq!(second.answer(), Some("billing answers: and my invoice?"));
    // Billing hands back; triage answers, and holds it again.
    let third = in_conversation(&d, "triage", "something else", &id);
    assert_eq!(third.answer(), Some("triage answers: something else"));
    let fourth = in_conversation(&d, "billing", "hello", &id);
    assert_eq!(joined(&fourth).2, "triage");
    let shown = d.cli_ok(&["conversation", "show", &id]);
    assert_contains(
        &shown,
        &[
            "⇒ triage hands over to billing: a billing question",
            "billing: billing answers: I want a refund",
            "⇒ billing hands over to triage: not about billing",
        ],
    );
}

#[test]
fn another_user_can_neither_read_nor_continue_a_conversation() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    let d = daemon("[api]\nsocket_mode = \"0666\"\nallowed_uids = [65534]\n");
    std::fs::set_permissions(
        d.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let first = in_conversation(&d, "adder", "2 + 3", "new");
    let (id, ..) = joined(&first);
    let probe = r#"
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
f = s.makefile("rw")
for line in sys.argv[2:]:
    f.write(line + "\n"); f.flush()
    print(f.readline().strip())
"#;
    let show = format!(r#"{{"conversation":{{"show":{{"id":"{id}"}}}}}}"#);
    let run = format!(r#"{{"run":{{"agent":"adder","input":"1 + 1","conversation":"{id}"}}}}"#);
    let delete = format!(r#"{{"conversation":{{"delete":{{"id":"{id}"}}}}}}"#);
    let list = r#"{"conversation":{"list":{"limit":10}}}"#.to_string();
    let out = Command::new("python3")
        .arg("-c")
        .arg(probe)
        .arg(&d.socket)
        .args([&show, &run, &delete, &list])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in &lines[..3] {
        assert_contains(line, &["permission_denied", "started by another user"]);
    }
    assert_eq!(lines[3], r#"{"conversations":[]}"#);
    // The owner still has it, unchanged.
    let again = in_conversation(&d, "adder", "1 + 1", &id);
    assert_eq!(joined(&again).1, 2);
    let _ = bin("caxton");
}

#[test]
fn conversations_need_the_memory_service_and_a_good_id() {
    let d = daemon("");
    let bad = in_conversation(&d, "adder", "1", "../etc");
    assert_contains(&bad.failure().unwrap().message, &["bad conversation id"]);
    let unknown = in_conversation(&d, "adder", "1", "conv-nope");
    assert_contains(
        &unknown.failure().unwrap().message,
        &["no conversation `conv-nope`"],
    );
    let off = Daemon::start(Options {
        extra_config: "[memory]\nenabled = false\n".into(),
        ..Options::with_agents(&["tests/agents/adder.toml"])
    })
    .unwrap();
    let out = in_conversation(&off, "adder", "1", "new");
    assert_contains(
        &out.failure().unwrap().message,
        &["conversations are kept by the memory service"],
    );
}

#[test]
fn a_child_sees_the_conversation_only_when_its_parent_says_so() {
    let d = Daemon::start(Options::with_agents(&[
        "tests/agents/briefed.toml",
        "tests/agents/boss.toml",
        "tests/agents/adder.toml",
    ]))
    .unwrap();
    // The child's first prompt, from its recorded exchange.
    let child_prompt = |out: &RunOutcome| -> Vec<String> {
        out.events
            .iter()
            .find_map(|e| match e {
                RunEvent::Child(c) => match &c.event {
                    RunEvent::LlmExchange(x) => Some(texts(&x.request.messages)),
                    _ => None,
                },
                _ => None,
            })
            .expect("the child's exchange")
    };
    for (agent, first, second, sees_history) in [
        ("briefed", "2 + 3", "4 * 4", true),
        ("boss", "ask adder: 2 + 3", "ask adder: 4 * 4", false),
    ] {
        let one = in_conversation(&d, agent, first, "new");
        let (id, ..) = joined(&one);
        let two = in_conversation(&d, agent, second, &id);
        let prompt = child_prompt(&two);
        if sees_history {
            assert_eq!(prompt.len(), 4, "{prompt:#?}");
            assert_eq!(prompt[1], "user: 2 + 3");
            assert_contains(&prompt[2], &["The result is 5."]);
        } else {
            assert_eq!(prompt.len(), 2, "task only: {prompt:#?}");
        }
    }
}

#[test]
fn the_memory_services_conversation_requests_are_not_reachable_from_the_api_socket() {
    use caxton_ipc::api::{ApiRequest, ApiResponse};
    use caxton_ipc::memory::MemoryRequest;
    let d = daemon("");
    let first = in_conversation(&d, "adder", "2 + 3", "new");
    let (id, ..) = joined(&first);
    // Only the supervisor may send these to the memory service; relayed through the API socket
    // they would skip the owner check.
    for forged in [
        MemoryRequest::ConversationLoad {
            id: id.clone(),
            max_entries: 10,
        },
        MemoryRequest::ConversationList {
            owner_uid: None,
            owner_token: None,
            limit: 10,
        },
        MemoryRequest::ConversationDelete { id: id.clone() },
    ] {
        match d
            .connect()
            .unwrap()
            .call(&ApiRequest::Memory(forged))
            .unwrap()
        {
            ApiResponse::Error(e) => assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e:?}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // The conversation is untouched and the service serves on.
    let again = in_conversation(&d, "adder", "1 + 1", &id);
    assert_eq!(joined(&again).1, 2);
}
