//! Conversations: the durable record of a sequence of runs (user messages, answers, tool calls
//! and results, delegations, handoffs), kept by the memory service (the only process that owns
//! the database) and given to the next run as history. The supervisor decides who may read or
//! continue one (its owner's uid); the memory service stores what the supervisor sends.

use serde::{Deserialize, Serialize};

/// Longest conversation id accepted.
pub const MAX_ID_LEN: usize = 64;
/// Most entries one append may carry.
pub const MAX_APPEND_ENTRIES: usize = 1000;
/// Longest text of one entry (bytes); longer ones are cut with a mark.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Most entries a load returns (the newest).
pub const MAX_LOAD_ENTRIES: u32 = 5000;

/// A conversation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// Its last run answered; the next message continues it.
    Active,
    /// Closed by its owner (`caxton conversation close`); it can be read, not continued.
    Completed,
    /// Its last run failed; the next message continues it, with what completed before.
    Failed,
    /// Idle past `[memory] conversation_ttl`; it can be read, not continued.
    Expired,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Active => "active",
            ConversationState::Completed => "completed",
            ConversationState::Failed => "failed",
            ConversationState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ConversationState> {
        match s {
            "active" => Some(ConversationState::Active),
            "completed" => Some(ConversationState::Completed),
            "failed" => Some(ConversationState::Failed),
            "expired" => Some(ConversationState::Expired),
            _ => None,
        }
    }

    /// May a new message continue it?
    pub fn open(self) -> bool {
        matches!(self, ConversationState::Active | ConversationState::Failed)
    }
}

/// What one entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The user's message (a run's input).
    User,
    /// The run's answer.
    Answer,
    /// A tool call (`name` is the tool, `content` its arguments).
    ToolCall,
    /// A tool's result (`name` is the tool).
    ToolResult,
    /// A tool's error (`name` is the tool).
    ToolError,
    /// The conversation was handed to another agent (`name`; `content` the reason).
    Handoff,
    /// The run failed (`content` says why).
    Failure,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::User => "user",
            EntryKind::Answer => "answer",
            EntryKind::ToolCall => "tool_call",
            EntryKind::ToolResult => "tool_result",
            EntryKind::ToolError => "tool_error",
            EntryKind::Handoff => "handoff",
            EntryKind::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        [
            EntryKind::User,
            EntryKind::Answer,
            EntryKind::ToolCall,
            EntryKind::ToolResult,
            EntryKind::ToolError,
            EntryKind::Handoff,
            EntryKind::Failure,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub run_id: String,
    /// The agent of the run, and its version.
    pub agent: String,
    pub version: String,
    pub kind: EntryKind,
    /// The tool (or the agent handed to), when the kind has one.
    pub name: Option<String>,
    pub content: String,
}

/// A conversation without its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationInfo {
    pub id: String,
    pub state: ConversationState,
    /// The uid of the client that started it: only it (and the service's own uid, and root)
    /// may read or continue it.
    pub owner_uid: u32,
    /// Set when an HTTP client started it: the name of its bearer token. Only that token (and
    /// an admin token, and the local operator) may read or continue it.
    #[serde(default)]
    pub owner_token: Option<String>,
    /// The agent the next message goes to (changed by handoffs).
    pub holder: String,
    /// Runs so far.
    pub turns: u32,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A conversation with its (newest) entries, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub info: ConversationInfo,
    pub entries: Vec<Entry>,
    /// Older entries were left out (at most [`MAX_LOAD_ENTRIES`] are returned).
    pub truncated: bool,
}

/// An entry's text within [`MAX_ENTRY_BYTES`], mark included: longer text is cut at a character
/// boundary and says so.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ENTRY_BYTES {
        return text.into();
    }
    let mark = format!("… [cut at {MAX_ENTRY_BYTES} bytes]");
    let mut end = MAX_ENTRY_BYTES - mark.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end]).into()
}

/// Checks a conversation id: 1–64 characters of letters, digits, `-` and `_`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "bad conversation id `{}`: use 1–{MAX_ID_LEN} letters, digits, `-` and `_`",
            id.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// `caxton conversation …` over the API socket; each is allowed only on the caller's own
/// conversations (the service's uid and root see all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConversationOp {
    List {
        limit: u32,
    },
    /// The conversation with its entries (`export` is the same, written as JSON).
    Show {
        id: String,
    },
    /// Mark it completed: readable, not continued.
    Close {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_fits_with_its_mark() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_ENTRY_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ENTRY_BYTES, "{}", cut.len());
        assert!(cut.ends_with(&format!("… [cut at {MAX_ENTRY_BYTES} bytes]")));
        // Already bounded: unchanged, so a second cut (the memory service's) changes nothing.
        assert_eq!(bounded(&cut), cut);
    }
}
