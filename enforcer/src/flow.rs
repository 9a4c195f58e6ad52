//! Bounded, expiring maps for the handshake: the flow table (half-open connections keyed
//! by their 4-tuple) and the replay cache (nonces of accepted SYN tokens). Pure: time is
//! passed in as milliseconds, nothing here reads a clock.
//!
//! Every entry has an expiry time; [`ExpiringMap::expire`] removes what is due, oldest
//! first, and an insert into a full map evicts the entry that would expire first. So the
//! map never holds more than `max` entries and nothing outlives its expiry.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::SocketAddr;

/// A connection as seen in this pod's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// This pod's address and port.
    pub local: SocketAddr,
    /// The peer's address and port (a Service VIP on the client side when it dialled one).
    pub remote: SocketAddr,
}

/// What an insert did besides inserting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// Entries removed because they had expired.
    pub expired: usize,
    /// Live entries evicted to make room.
    pub evicted: usize,
}

struct Slot<V> {
    expires_ms: u64,
    id: u64,
    value: V,
}

/// A map with a size bound and a per-entry expiry time.
pub struct ExpiringMap<K, V> {
    map: HashMap<K, Slot<V>>,
    /// (expiry, insertion id) → key; the first entry is the next to expire.
    order: BTreeMap<(u64, u64), K>,
    next_id: u64,
    max: usize,
}

impl<K: Hash + Eq + Clone, V> ExpiringMap<K, V> {
    /// An empty map holding at most `max` entries (at least 1).
    pub fn new(max: usize) -> Self {
        ExpiringMap {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next_id: 0,
            max: max.max(1),
        }
    }

    /// The size bound.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Number of entries (some may be expired until the next [`Self::expire`]).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every entry whose expiry is at or before `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let k = entry.remove();
            self.map.remove(&k);
            n += 1;
        }
        n
    }

    /// Inserts or replaces `key`, expiring at `expires_ms`. Expired entries go first; if the
    /// map is still full, the entry closest to expiry is evicted.
    pub fn insert(&mut self, key: K, value: V, expires_ms: u64, now_ms: u64) -> Removed {
        let mut removed = Removed {
            expired: self.expire(now_ms),
            evicted: 0,
        };
        if let Some(old) = self.map.remove(&key) {
            self.order.remove(&(old.expires_ms, old.id));
        } else {
            while self.map.len() >= self.max {
                let Some((_, k)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&k);
                removed.evicted += 1;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.order.insert((expires_ms, id), key.clone());
        self.map.insert(
            key,
            Slot {
                expires_ms,
                id,
                value,
            },
        );
        removed
    }

    /// The live entry for `key` (None if absent or expired at `now_ms`).
    pub fn get(&self, key: &K, now_ms: u64) -> Option<&V> {
        self.map
            .get(key)
            .filter(|s| s.expires_ms > now_ms)
            .map(|s| &s.value)
    }

    /// The live entry for `key`, mutable (None if absent or expired at `now_ms`).
    pub fn get_mut(&mut self, key: &K, now_ms: u64) -> Option<&mut V> {
        self.map
            .get_mut(key)
            .filter(|s| s.expires_ms > now_ms)
            .map(|s| &mut s.value)
    }

    /// Changes the expiry of an existing entry; false if absent.
    pub fn set_expiry(&mut self, key: &K, expires_ms: u64) -> bool {
        let Some(slot) = self.map.get_mut(key) else {
            return false;
        };
        if let Some(k) = self.order.remove(&(slot.expires_ms, slot.id)) {
            slot.expires_ms = expires_ms;
            self.order.insert((expires_ms, slot.id), k);
        }
        true
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.order.remove(&(slot.expires_ms, slot.id));
        Some(slot.value)
    }
}

/// The half-open flows of one pod, keyed by 4-tuple.
pub type FlowTable<V> = ExpiringMap<FlowKey, V>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            local: SocketAddr::from(([10, 0, 0, 1], port)),
            remote: SocketAddr::from(([10, 0, 0, 2], 80)),
        }
    }

    #[test]
    fn entries_expire_at_their_time_and_not_before() {
        let mut m = FlowTable::new(10);
        m.insert(key(1), "a", 1000, 0);
        m.insert(key(2), "b", 2000, 0);
        assert_eq!(m.get(&key(1), 999), Some(&"a"));
        assert_eq!(
            m.get(&key(1), 1000),
            None,
            "expired entries are not returned"
        );
        assert_eq!(m.expire(1500), 1);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&key(2), 1500), Some(&"b"));
        assert_eq!(m.expire(5000), 1);
        assert!(m.is_empty());
    }

    #[test]
    fn full_map_evicts_the_entry_closest_to_expiry() {
        let mut m = FlowTable::new(3);
        m.insert(key(1), 1, 3000, 0);
        m.insert(key(2), 2, 1000, 0);
        m.insert(key(3), 3, 2000, 0);
        let r = m.insert(key(4), 4, 4000, 10);
        assert_eq!(
            r,
            Removed {
                expired: 0,
                evicted: 1
            }
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&key(2), 10), None, "soonest to expire was evicted");
        for k in [1, 3, 4] {
            assert!(m.get(&key(k), 10).is_some());
        }
    }

    #[test]
    fn insert_prefers_expiring_over_evicting() {
        let mut m = FlowTable::new(2);
        m.insert(key(1), 1, 100, 0);
        m.insert(key(2), 2, 5000, 0);
        let r = m.insert(key(3), 3, 6000, 200);
        assert_eq!(
            r,
            Removed {
                expired: 1,
                evicted: 0
            }
        );
        assert!(m.get(&key(2), 200).is_some() && m.get(&key(3), 200).is_some());
    }

    #[test]
    fn replacing_a_key_does_not_evict_and_updates_expiry() {
        let mut m = FlowTable::new(2);
        m.insert(key(1), 1, 100, 0);
        m.insert(key(2), 2, 200, 0);
        assert_eq!(m.insert(key(1), 10, 1000, 0), Removed::default());
        assert_eq!(m.len(), 2);
        assert_eq!(m.expire(500), 1);
        assert_eq!(m.get(&key(1), 500), Some(&10));
    }

    #[test]
    fn bound_holds_under_many_inserts() {
        let mut m = ExpiringMap::new(1000);
        let mut evicted = 0;
        for i in 0..100_000u64 {
            evicted += m.insert(i, i, 1_000_000 + i, 0).evicted;
            assert!(m.len() <= 1000);
        }
        assert_eq!(evicted, 99_000);
        assert_eq!(m.order.len(), m.map.len(), "index and map agree");
        // the newest survive
        assert!(m.get(&99_999, 0).is_some());
        assert!(m.get(&0, 0).is_none());
    }

    #[test]
    fn remove_and_set_expiry_keep_the_index_consistent() {
        let mut m = FlowTable::new(4);
        m.insert(key(1), 1, 100, 0);
        m.insert(key(2), 2, 200, 0);
        assert!(m.set_expiry(&key(1), 10_000));
        assert!(!m.set_expiry(&key(9), 1));
        assert_eq!(m.remove(&key(2)), Some(2));
        assert_eq!(m.remove(&key(2)), None);
        assert_eq!(m.expire(5000), 0);
        assert_eq!(m.get_mut(&key(1), 5000).map(|v| *v), Some(1));
        assert_eq!(m.order.len(), m.map.len());
        assert_eq!(m.expire(10_000), 1);
        assert!(m.is_empty() && m.order.is_empty());
    }
}
