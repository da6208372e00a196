//! Conversations in the memory database: one row per conversation, its entries in order. Each
//! operation is one transaction. The supervisor decides who may read or continue one; this
//! module stores and returns what it is asked.

use caxton_ipc::conversation::{
    self, Conversation, ConversationInfo, ConversationState, Entry, EntryKind, MAX_APPEND_ENTRIES,
    MAX_LOAD_ENTRIES,
};
use rusqlite::{OptionalExtension, params};

use crate::db::now_ms;
use crate::graph::{Result, SqlContext, Store, StoreError, write_tx};

fn info_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConversationInfo> {
    let state: String = row.get(3)?;
    Ok(ConversationInfo {
        id: row.get(0)?,
        owner_uid: row.get(1)?,
        owner_token: row.get(7)?,
        holder: row.get(2)?,
        state: ConversationState::parse(&state).unwrap_or(ConversationState::Failed),
        turns: row.get(4)?,
        created_ms: row.get::<_, i64>(5)? as u64,
        updated_ms: row.get::<_, i64>(6)? as u64,
    })
}

const INFO_COLUMNS: &str =
    "id, owner_uid, holder, state, turns, created_ms, updated_ms, owner_token";

impl Store {
    pub fn conversation_create(&self, info: &ConversationInfo) -> Result<()> {
        conversation::check_id(&info.id).map_err(StoreError::BadConversation)?;
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO conversations (id, owner_uid, holder, state, turns, created_ms, updated_ms, owner_token) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6)",
                params![info.id, info.owner_uid, info.holder, info.state.as_str(), info.created_ms as i64, info.owner_token],
            )
            .ctx("create a conversation")?;
        if inserted == 0 {
            return Err(StoreError::ConversationExists {
                id: info.id.clone(),
            });
        }
        tx.commit().ctx("commit a new conversation")
    }

    /// The conversation with its newest `max_entries` entries, oldest first; one idle past
    /// `ttl_ms` is marked expired first.
    pub fn conversation_load(
        &self,
        id: &str,
        max_entries: u32,
        ttl_ms: u64,
    ) -> Result<Conversation> {
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let mut info = tx
            .query_row(
                &format!("SELECT {INFO_COLUMNS} FROM conversations WHERE id = ?1"),
                [id],
                info_of,
            )
            .optional()
            .ctx("read a conversation")?
            .ok_or_else(|| StoreError::ConversationNotFound { id: id.into() })?;
        if info.state.open() && info.updated_ms.saturating_add(ttl_ms) < now_ms() {
            tx.execute(
                "UPDATE conversations SET state = 'expired' WHERE id = ?1",
                [id],
            )
            .ctx("expire a conversation")?;
            info.state = ConversationState::Expired;
        }
        let limit = max_entries.min(MAX_LOAD_ENTRIES);
        let mut entries = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT at_ms, run_id, agent, version, kind, name, content FROM conversation_entries WHERE conversation = ?1 ORDER BY seq DESC LIMIT ?2",
                )
                .ctx("read a conversation's entries")?;
            let rows = stmt
                .query_map(params![id, limit + 1], |r| {
                    let kind: String = r.get(4)?;
                    Ok(Entry {
                        at_ms: r.get::<_, i64>(0)? as u64,
                        run_id: r.get(1)?,
                        agent: r.get(2)?,
                        version: r.get(3)?,
                        kind: EntryKind::parse(&kind).unwrap_or(EntryKind::Failure),
                        name: r.get(5)?,
                        content: r.get(6)?,
                    })
                })
                .ctx("read a conversation's entries")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .ctx("read a conversation's entries")?
        };
        let truncated = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        entries.reverse();
        tx.commit().ctx("commit a conversation read")?;
        Ok(Conversation {
            info,
            entries,
            truncated,
        })
    }

    /// Appends a run's entries and sets the state and holder it leaves; counts the run.
    pub fn conversation_append(
        &self,
        id: &str,
        entries: &[Entry],
        state: ConversationState,
        holder: &str,
    ) -> Result<()> {
        if entries.len() > MAX_APPEND_ENTRIES {
            return Err(StoreError::TooMany {
                what: "conversation entries",
                count: entries.len(),
            });
        }
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        let next: Option<i64> = tx
            .query_row(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM conversation_entries WHERE conversation = ?1) FROM conversations WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .ctx("find a conversation's last entry")?;
        let Some(mut seq) = next else {
            return Err(StoreError::ConversationNotFound { id: id.into() });
        };
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO conversation_entries (conversation, seq, at_ms, run_id, agent, version, kind, name, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .ctx("append to a conversation")?;
            for e in entries {
                seq += 1;
                insert
                    .execute(params![
                        id,
                        seq,
                        e.at_ms as i64,
                        e.run_id,
                        e.agent,
                        e.version,
                        e.kind.as_str(),
                        e.name,
                        conversation::bounded(&e.content)
                    ])
                    .ctx("append to a conversation")?;
            }
        }
        tx.execute(
            "UPDATE conversations SET state = ?2, holder = ?3, turns = turns + 1, updated_ms = ?4 WHERE id = ?1",
            params![id, state.as_str(), holder, now_ms() as i64],
        )
        .ctx("update a conversation")?;
        tx.commit().ctx("commit a conversation's entries")
    }

    pub fn conversation_list(
        &self,
        owner_uid: Option<u32>,
        owner_token: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ConversationInfo>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {INFO_COLUMNS} FROM conversations WHERE (?1 IS NULL OR owner_uid = ?1) AND (?3 IS NULL OR owner_token = ?3) ORDER BY updated_ms DESC LIMIT ?2"
            ))
            .ctx("list conversations")?;
        let rows = stmt
            .query_map(
                params![owner_uid, limit.min(MAX_LOAD_ENTRIES), owner_token],
                info_of,
            )
            .ctx("list conversations")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("list conversations")
    }

    pub fn conversation_close(&self, id: &str) -> Result<()> {
        let conn = self.conn()?;
        let n = conn
            .execute(
                "UPDATE conversations SET state = 'completed', updated_ms = ?2 WHERE id = ?1",
                params![id, now_ms() as i64],
            )
            .ctx("close a conversation")?;
        if n == 0 {
            return Err(StoreError::ConversationNotFound { id: id.into() });
        }
        Ok(())
    }

    pub fn conversation_delete(&self, id: &str) -> Result<()> {
        let conn = self.conn()?;
        let n = conn
            .execute("DELETE FROM conversations WHERE id = ?1", [id])
            .ctx("delete a conversation")?;
        if n == 0 {
            return Err(StoreError::ConversationNotFound { id: id.into() });
        }
        Ok(())
    }

    /// Marks conversations idle past `ttl_ms` expired, and deletes expired or completed ones
    /// idle past `retention_ms`; returns how many were deleted.
    pub fn conversation_retention(&self, ttl_ms: u64, retention_ms: u64) -> Result<usize> {
        let now = now_ms();
        let mut conn = self.conn()?;
        let tx = write_tx(&mut conn)?;
        tx.execute(
            "UPDATE conversations SET state = 'expired' WHERE state IN ('active', 'failed') AND updated_ms < ?1",
            [now.saturating_sub(ttl_ms) as i64],
        )
        .ctx("expire conversations")?;
        let deleted = tx
            .execute(
                "DELETE FROM conversations WHERE state IN ('expired', 'completed') AND updated_ms < ?1",
                [now.saturating_sub(retention_ms) as i64],
            )
            .ctx("delete old conversations")?;
        tx.commit().ctx("commit conversation retention")?;
        Ok(deleted)
    }
}
