//! `caxton conversation list|show|export|close|delete`: conversations kept by the memory
//! service, through the daemon, which allows each only on the caller's own (all for the
//! service's own uid and root).

use std::path::{Path, PathBuf};

use anyhow::Context;
use caxton_ipc::api::{ApiRequest, ApiResponse};
use caxton_ipc::conversation::{Conversation, ConversationOp, EntryKind};
use clap::Subcommand;

use crate::cli::{EXIT_OK, print_json, unexpected};
use crate::client::Client;
use crate::run_cli::one_line;

#[derive(Debug, Subcommand)]
pub enum ConversationCommand {
    /// Conversations, most recently used first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// A conversation's entries: messages, tool calls and results, handoffs, answers.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a conversation as JSON to FILE (`-` for stdout).
    Export { id: String, file: PathBuf },
    /// Mark a conversation completed: it can be read, not continued.
    Close { id: String },
    /// Delete a conversation and its entries.
    Delete { id: String },
}

fn call(socket: &Path, op: ConversationOp) -> anyhow::Result<ApiResponse> {
    Ok(Client::connect(socket)?.call(&ApiRequest::Conversation(op))?)
}

pub fn conversation(command: ConversationCommand, socket: &Path) -> anyhow::Result<u8> {
    match command {
        ConversationCommand::List { limit, json } => {
            match call(socket, ConversationOp::List { limit })? {
                ApiResponse::Conversations(list) if json => print_json(&list),
                ApiResponse::Conversations(list) => {
                    if list.is_empty() {
                        println!("no conversations");
                    }
                    for c in list {
                        println!(
                            "{:<40} {:<10} {:>4} messages  held by {}",
                            c.id,
                            c.state.as_str(),
                            c.turns,
                            c.holder
                        );
                    }
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        ConversationCommand::Show { id, json } => {
            match call(socket, ConversationOp::Show { id })? {
                ApiResponse::Conversation(c) if json => print_json(&c),
                ApiResponse::Conversation(c) => {
                    show(&c);
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        ConversationCommand::Export { id, file } => {
            match call(socket, ConversationOp::Show { id })? {
                ApiResponse::Conversation(c) => {
                    let text = serde_json::to_string_pretty(&c)?;
                    if file.as_os_str() == "-" {
                        println!("{text}");
                    } else {
                        std::fs::write(&file, text)
                            .with_context(|| format!("cannot write {}", file.display()))?;
                        eprintln!(
                            "exported {} entries of {} to {}",
                            c.entries.len(),
                            c.info.id,
                            file.display()
                        );
                    }
                    Ok(EXIT_OK)
                }
                other => unexpected(other),
            }
        }
        ConversationCommand::Close { id } => done(call(socket, ConversationOp::Close { id })?),
        ConversationCommand::Delete { id } => done(call(socket, ConversationOp::Delete { id })?),
    }
}

fn done(resp: ApiResponse) -> anyhow::Result<u8> {
    match resp {
        ApiResponse::Done => Ok(EXIT_OK),
        other => unexpected(other),
    }
}

fn show(c: &Conversation) {
    let i = &c.info;
    println!(
        "{} ({}, {} messages, held by {})",
        i.id,
        i.state.as_str(),
        i.turns,
        i.holder
    );
    if c.truncated {
        println!("  (older entries left out)");
    }
    for e in &c.entries {
        let name = e.name.as_deref().unwrap_or("");
        let line = match e.kind {
            EntryKind::User => format!("user → {}: {}", e.agent, one_line(&e.content, 300)),
            EntryKind::Answer => format!("{}: {}", e.agent, one_line(&e.content, 300)),
            EntryKind::ToolCall => {
                format!("  {} calls {name} {}", e.agent, one_line(&e.content, 200))
            }
            EntryKind::ToolResult => format!("    → {}", one_line(&e.content, 200)),
            EntryKind::ToolError => format!("    ✗ {}", one_line(&e.content, 200)),
            EntryKind::Handoff => format!("  ⇒ {} hands over to {name}: {}", e.agent, e.content),
            EntryKind::Failure => format!("  ✗ failed: {}", one_line(&e.content, 300)),
        };
        println!("{line}");
    }
}
