//! Connection caps per listener and per peer, with eviction of waiting connections.
//!
//! Every listening socket (the public `api.sock` and the private toolhost and memory sockets)
//! admits a connection through a [`PeerTable`]: at most `total` connections, at most `per_peer`
//! from one peer (a uid on the public socket, a pid on the private ones). A connection that is
//! only *waiting* — for its first message, for its next request, or in the middle of a request
//! that trickles in — can be evicted to make room; one that is being served cannot. So a flood of
//! idle or slow-loris connections costs the flooding peer its own oldest connections first, and a
//! client that sends its request at once (`caxton health`) still gets in. When nothing can be
//! evicted the newcomer is refused, and the listener gives it its documented busy answer.
//!
//! Trusted peers (the supervisor on the private sockets) are *exempt*: never capped, never
//! evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// The caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections open at once, all peers together (exempt peers not counted).
    pub total: usize,
    /// Connections open at once from one peer.
    pub per_peer: usize,
}

/// Who is on the other end, as far as the caps are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Capped under this key (a uid or a pid, as the listener decides).
    Key(u32),
    /// Never capped or evicted.
    Exempt,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "busy: {open} connections are open and none is idle (the limit is {limit}); retry later"
    )]
    Total { open: usize, limit: usize },
    #[error(
        "busy: this peer has {open} connections open and none is idle (the limit per peer is {limit}); close some or retry later"
    )]
    PerPeer { open: usize, limit: usize },
}

#[derive(Debug)]
struct Entry {
    key: u32,
    /// `Some(since)` while the connection only waits (evictable), `None` while it is served.
    waiting_since: Option<Instant>,
    evict: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_key: HashMap<u32, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_key.get_mut(&entry.key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&entry.key);
            }
        }
        Some(entry)
    }

    /// The connection waiting longest among those whose key satisfies `pick`.
    fn oldest_waiting(&self, pick: impl Fn(u32) -> bool) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| pick(e.key))
            .filter_map(|(id, e)| e.waiting_since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id)
    }
}

/// The open connections of one listener.
#[derive(Debug)]
pub struct PeerTable {
    caps: Caps,
    table: Mutex<Table>,
}

impl PeerTable {
    pub fn new(caps: Caps) -> Arc<PeerTable> {
        Arc::new(PeerTable {
            caps,
            table: Mutex::new(Table::default()),
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now (exempt ones not counted).
    pub fn open(&self) -> usize {
        self.lock().entries.len()
    }

    /// Admits a new connection from `peer`, evicting a waiting one if a cap is reached. The
    /// connection starts out waiting (for its first message).
    pub fn admit(self: &Arc<Self>, peer: Peer) -> Result<Ticket, Refused> {
        let Peer::Key(key) = peer else {
            return Ok(Ticket {
                table: self.clone(),
                id: None,
                evict: Arc::new(Notify::new()),
            });
        };
        let mut t = self.lock();
        let mine = t.per_key.get(&key).copied().unwrap_or(0);
        let victim = if mine >= self.caps.per_peer {
            // The peer pays for its own flood: its longest-waiting connection goes.
            Some(t.oldest_waiting(|k| k == key).ok_or(Refused::PerPeer {
                open: mine,
                limit: self.caps.per_peer,
            })?)
        } else if t.entries.len() >= self.caps.total {
            // The heaviest peer with a waiting connection pays, if it is heavier than this one.
            let count = |k: &u32| t.per_key.get(k).copied().unwrap_or(0);
            let heaviest = t
                .entries
                .values()
                .filter(|e| e.waiting_since.is_some())
                .map(|e| e.key)
                .max_by_key(count)
                .filter(|k| count(k) > mine);
            Some(
                heaviest
                    .and_then(|h| t.oldest_waiting(|k| k == h))
                    .ok_or(Refused::Total {
                        open: t.entries.len(),
                        limit: self.caps.total,
                    })?,
            )
        } else {
            None
        };
        if let Some(id) = victim
            && let Some(entry) = t.remove(id)
        {
            tracing::warn!(
                peer = entry.key,
                "connection evicted to make room for a new one"
            );
            entry.evict.notify_one();
        }
        let id = t.next_id;
        t.next_id += 1;
        let evict = Arc::new(Notify::new());
        t.entries.insert(
            id,
            Entry {
                key,
                waiting_since: Some(Instant::now()),
                evict: evict.clone(),
            },
        );
        *t.per_key.entry(key).or_default() += 1;
        Ok(Ticket {
            table: self.clone(),
            id: Some(id),
            evict,
        })
    }
}

/// An admitted connection's place in its [`PeerTable`]; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket {
    table: Arc<PeerTable>,
    /// `None` for an exempt peer.
    id: Option<u64>,
    evict: Arc<Notify>,
}

impl Ticket {
    fn set_waiting(&self, waiting: bool) {
        let Some(id) = self.id else { return };
        if let Some(e) = self.table.lock().entries.get_mut(&id) {
            e.waiting_since = waiting.then(Instant::now);
        }
    }

    /// The connection waits for its next request: it may be evicted from now on.
    pub fn waiting(&self) {
        self.set_waiting(true);
    }

    /// The connection is being served: it is not evicted until [`Ticket::waiting`].
    pub fn serving(&self) {
        self.set_waiting(false);
    }

    /// Resolves when the connection has been evicted (never for an exempt peer).
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.table.lock().remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_peer: usize) -> Arc<PeerTable> {
        PeerTable::new(Caps { total, per_peer })
    }

    #[tokio::test]
    async fn a_flooding_peer_loses_its_own_oldest_waiting_connection() {
        let t = caps(10, 2);
        let first = t.admit(Peer::Key(1)).unwrap();
        let second = t.admit(Peer::Key(1)).unwrap();
        second.serving();
        let third = t.admit(Peer::Key(1)).unwrap();
        // `first` was waiting, so it made room; it learns so at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("evicted");
        assert_eq!(t.open(), 2);
        third.serving();
        // Both remaining are served: nothing to evict, the newcomer is refused.
        assert_eq!(
            t.admit(Peer::Key(1)).unwrap_err(),
            Refused::PerPeer { open: 2, limit: 2 }
        );
        // Another peer is not affected by peer 1's cap.
        t.admit(Peer::Key(2)).unwrap();
    }

    #[test]
    fn at_the_total_cap_the_heaviest_peer_pays_and_a_lighter_one_is_spared() {
        let t = caps(3, 3);
        let _a = t.admit(Peer::Key(1)).unwrap();
        let _b = t.admit(Peer::Key(1)).unwrap();
        let c = t.admit(Peer::Key(2)).unwrap();
        // Peer 3 (no connections) evicts from peer 1, the heaviest.
        let _d = t.admit(Peer::Key(3)).unwrap();
        assert_eq!(t.open(), 3);
        assert!(t.lock().per_key.get(&1) == Some(&1));
        drop(c);
        let _e = t.admit(Peer::Key(2)).unwrap();
        // Now each peer has one; a fourth from peer 2 may not evict peers no heavier than itself.
        assert!(matches!(
            t.admit(Peer::Key(2)),
            Err(Refused::Total { open: 3, limit: 3 })
        ));
    }

    #[test]
    fn exempt_peers_are_never_counted() {
        let t = caps(1, 1);
        let _a = t.admit(Peer::Key(1)).unwrap();
        for _ in 0..10 {
            let _x = t.admit(Peer::Exempt).unwrap();
        }
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn dropping_a_ticket_frees_its_place() {
        let t = caps(1, 1);
        let a = t.admit(Peer::Key(1)).unwrap();
        a.serving();
        assert!(t.admit(Peer::Key(2)).is_err());
        drop(a);
        t.admit(Peer::Key(2)).unwrap();
    }
}
