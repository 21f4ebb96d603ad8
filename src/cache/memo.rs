//! Parsed copies of cache rows, so a cached read does not parse the same JSON text on every call.
//!
//! The benchmark (BENCHMARKS.md) found that parsing was most of a cached read: `list_devices` parsed all 500 device
//! bodies per call (12 ms), `get_device_status` three bodies. The rows stay the truth; this is a copy of what a read
//! already produced (volatile fields laid over), dropped whenever the cache writes that resource's rows.
//!
//! A read that began before such a write must not keep what it read: it takes the resource's generation before
//! reading SQLite and keeps its result only if the generation has not moved since ([`Memo::keep_list`]). Writes bump
//! the generation after their commit, so the worst case is a copy dropped one write too early, never a stale one.
//!
//! Rows are kept in [`Compact`] form (a device 1.6 KiB instead of the 5.9 KiB of a `Value`), a collection once: while
//! a resource's collection is kept, its single entries are read from it. A read gets a shared [`Body`], never a copy.
//!
//! Bounded: collections of at most [`MAX_LIST_ROWS`] rows, at most [`MAX_ENTRIES`] single entries (all dropped when
//! full; they refill from the next reads).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::Items;
use super::compact::{Compact, Keys};
use crate::store::cache::CacheEntry;

/// A cache row as reads share it: a read takes a reference to the kept body, not a copy (a device's commands or a
/// model's definition were copied whole on every `get_device_status`, to use five commands of a hundred).
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub body: Body,
    /// ms since the epoch; 0 after an invalidation.
    pub fetched_at: i64,
}

impl From<CacheEntry> for Row {
    fn from(e: CacheEntry) -> Row {
        Row { key: e.key, body: Body::of(&e.body), fetched_at: e.fetched_at }
    }
}

/// The body of one cache row, in [`Compact`] form, shared: a row of a kept collection, or a row read on its own (kept
/// as a collection of one). A device read from the kept device collection was turned back into a `Value` on every
/// `get_device_status` (a tenth of its time with the freeing, BENCHMARKS.md); now it is a reference to the row, and
/// an answer writes it from there ([`crate::ops::Answer`]).
#[derive(Debug, Clone)]
pub struct Body {
    rows: Items,
    at: usize,
}

impl Body {
    /// A body read on its own.
    pub fn of(value: &Value) -> Body {
        Body { rows: Arc::new(vec![Compact::of(value, &mut Keys::default())]), at: 0 }
    }

    /// The row of a kept collection at `at` (which must be in it).
    pub fn in_collection(rows: &Items, at: usize) -> Body {
        debug_assert!(at < rows.len());
        Body { rows: rows.clone(), at }
    }
}

impl Deref for Body {
    type Target = Compact;

    fn deref(&self) -> &Compact {
        &self.rows[self.at]
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

/// A collection larger than this is parsed per read instead (10,000 parsed devices would hold tens of MiB).
const MAX_LIST_ROWS: usize = 2000;
const MAX_ENTRIES: usize = 4096;

/// Every cached row of a resource, as [`super::Cache`] lists it.
#[derive(Debug, Default)]
pub struct CachedList {
    /// In the order of [`crate::store::cache::list`] (by key), so one can be found by binary search.
    pub keys: Vec<String>,
    /// Each row's `fetched_at` (0 for a row marked stale).
    pub fetched_at: Vec<i64>,
    /// The bodies, shared with every read result made from them (no copy per read).
    pub bodies: Items,
    /// The newest `fetched_at` of the rows (0 when there are none).
    pub newest_fetched_at: i64,
    /// Whether the rows are a complete snapshot ([`crate::store::cache::has_set`]).
    pub complete: bool,
}

impl CachedList {
    /// From rows of (key, body, fetched_at) in key order, as [`crate::store::cache::list`] gives them.
    pub fn new(rows: Vec<(String, Compact, i64)>, complete: bool) -> CachedList {
        let newest_fetched_at = rows.iter().map(|r| r.2).max().unwrap_or(0);
        let fetched_at = rows.iter().map(|r| r.2).collect();
        let (keys, bodies) = rows.into_iter().map(|(k, b, _)| (k, b)).unzip();
        CachedList { keys, fetched_at, bodies: Arc::new(bodies), newest_fetched_at, complete }
    }

    /// The row with this key, if the collection has it.
    fn get(&self, key: &str) -> Option<Row> {
        let i = self.keys.binary_search_by(|k| k.as_str().cmp(key)).ok()?;
        Some(Row {
            key: self.keys[i].clone(),
            body: Body::in_collection(&self.bodies, i),
            fetched_at: self.fetched_at[i],
        })
    }
}

#[derive(Default)]
pub struct Memo {
    generation: HashMap<&'static str, u64>,
    lists: HashMap<&'static str, Arc<CachedList>>,
    entries: HashMap<(&'static str, String), Row>,
}

impl Memo {
    /// The generation a read of `resource` starts from.
    pub fn generation(&self, resource: &'static str) -> u64 {
        self.generation.get(resource).copied().unwrap_or(0)
    }

    pub fn list(&self, resource: &'static str) -> Option<Arc<CachedList>> {
        self.lists.get(resource).cloned()
    }

    pub fn entry(&self, resource: &'static str, key: &str) -> Option<Row> {
        if let Some(e) = self.lists.get(resource).and_then(|l| l.get(key)) {
            return Some(e);
        }
        // A tuple key with a borrowed &str cannot be looked up without an owned String; the copy is a few bytes.
        self.entries.get(&(resource, key.to_string())).cloned()
    }

    /// Keeps a list read that started at `generation`, unless a write came in between or it is too large.
    pub fn keep_list(&mut self, resource: &'static str, generation: u64, list: &Arc<CachedList>) {
        if self.generation(resource) == generation && list.keys.len() <= MAX_LIST_ROWS {
            self.lists.insert(resource, list.clone());
            // Its rows are in the collection now; single copies of them would only double the memory.
            self.entries.retain(|(r, _), _| *r != resource);
        }
    }

    /// Keeps a single entry read that started at `generation`, unless a write came in between or its collection is
    /// kept (which has the row).
    pub fn keep_entry(&mut self, resource: &'static str, generation: u64, entry: &Row) {
        if self.generation(resource) != generation || self.lists.contains_key(resource) {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert((resource, entry.key.clone()), entry.clone());
    }

    /// After a write of `resource`'s rows (committed or not): drop its copies, and make reads in flight drop theirs.
    pub fn forget(&mut self, resource: &'static str) {
        *self.generation.entry(resource).or_default() += 1;
        self.lists.remove(resource);
        self.entries.retain(|(r, _), _| *r != resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(key: &str, v: i64) -> CacheEntry {
        CacheEntry { key: key.into(), body: json!({"v": v}), fetched_at: v }
    }

    fn row(key: &str, v: i64) -> Row {
        entry(key, v).into()
    }

    fn list(entries: Vec<CacheEntry>) -> Arc<CachedList> {
        let mut keys = Keys::default();
        let rows = entries.into_iter().map(|e| (e.key, Compact::of(&e.body, &mut keys), e.fetched_at)).collect();
        Arc::new(CachedList::new(rows, true))
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let mut m = Memo::default();
        let before = m.generation("device");
        m.forget("device"); // a write committed while the read was in SQLite
        m.keep_entry("device", before, &row("a", 1));
        m.keep_list("device", before, &list(vec![entry("a", 1)]));
        assert!(m.entry("device", "a").is_none());
        assert!(m.list("device").is_none());

        let now = m.generation("device");
        m.keep_entry("device", now, &row("a", 2));
        m.keep_list("device", now, &list(vec![entry("a", 2), entry("b", 5)]));
        assert_eq!(m.entry("device", "a").unwrap().body["v"].as_i64(), Some(2));
        let list = m.list("device").unwrap();
        assert_eq!((list.keys.len(), list.newest_fetched_at, list.complete), (2, 5, true));
    }

    #[test]
    fn a_kept_collection_serves_its_rows_and_replaces_their_single_copies() {
        let mut m = Memo::default();
        m.keep_entry("device", 0, &row("b", 1));
        let rows = vec![entry("a", 3), entry("b", 4), CacheEntry { fetched_at: 0, ..entry("c", 5) }];
        m.keep_list("device", 0, &list(rows));
        assert!(m.entries.is_empty(), "the collection holds the only copy");
        let b = m.entry("device", "b").unwrap();
        assert_eq!((b.key.as_str(), b.body["v"].as_i64(), b.fetched_at), ("b", Some(4), 4));
        assert_eq!(m.entry("device", "c").unwrap().fetched_at, 0, "a stale row stays stale");
        assert!(m.entry("device", "d").is_none());
        m.keep_entry("device", 0, &row("a", 9));
        assert!(m.entries.is_empty());
        m.forget("device");
        assert!(m.entry("device", "a").is_none());
    }

    #[test]
    fn a_write_forgets_only_its_resource_and_the_bounds_hold() {
        let mut m = Memo::default();
        m.keep_entry("device", 0, &row("a", 1));
        m.keep_entry("model", 0, &row("m", 1));
        m.forget("device");
        assert!(m.entry("device", "a").is_none());
        assert!(m.entry("model", "m").is_some());

        let big: Vec<CacheEntry> = (0..=MAX_LIST_ROWS as i64).map(|i| entry(&format!("d{i}"), i)).collect();
        m.keep_list("space", 0, &list(big));
        assert!(m.list("space").is_none(), "a list over the bound is parsed per read, not held");
        for i in 0..MAX_ENTRIES + 1 {
            m.keep_entry("commands", 0, &row(&format!("c{i}"), 1));
        }
        assert!(m.entries.len() <= MAX_ENTRIES);
    }
}
