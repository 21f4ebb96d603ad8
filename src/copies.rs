//! Copies of database rows kept in memory, exact rather than eventually right: the write that changes a row drops
//! its copy ([`Copies::forget`]), and a read that raced such a write is not kept — it takes the generation before
//! reading the database ([`Copies::get`] answers it on a miss) and [`Copies::keep`] refuses it if anything was
//! forgotten since. Bounded: past `max` copies the table starts again rather than grow.
//!
//! Used for verified bearer tokens (`http/auth.rs`) and principals' contexts (`runtime::Contexts`); the parsed cache
//! rows (`cache/memo.rs`) follow the same rule with a generation per resource.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub struct Copies<K, V> {
    inner: Mutex<Inner<K, V>>,
    max: usize,
}

struct Inner<K, V> {
    /// Counts the times something was forgotten.
    generation: u64,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> Copies<K, V> {
    pub fn new(max: usize) -> Copies<K, V> {
        Copies { inner: Mutex::new(Inner { generation: 0, map: HashMap::new() }), max }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kept copy, or the generation a read of the database starts from (to hand to [`Copies::keep`]).
    pub fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Result<V, u64>
    where
        K: Borrow<Q>,
    {
        let inner = self.lock();
        inner.map.get(key).cloned().ok_or(inner.generation)
    }

    /// Keeps what a read that started at `generation` found, unless something was forgotten since.
    pub fn keep(&self, generation: u64, key: K, value: V) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= self.max {
            inner.map.clear();
        }
        inner.map.insert(key, value);
    }

    /// Changes a kept copy the way the daemon just changed its row (nothing when there is none).
    pub fn update<Q: Eq + Hash + ?Sized>(&self, key: &Q, change: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
    {
        if let Some(v) = self.lock().map.get_mut(key) {
            change(v);
        }
    }

    /// After a write of `key`'s row (committed or not): read it again next time.
    pub fn forget<Q: Eq + Hash + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.map.remove(key);
    }

    /// After a change of rows the daemon cannot name (another process wrote): read everything again.
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_write_is_not_kept_and_the_bound_holds() {
        let copies: Copies<String, u32> = Copies::new(2);
        let started = copies.get("a").unwrap_err();
        copies.forget("b"); // a write committed while the read was in the database
        copies.keep(started, "a".into(), 1);
        let now = copies.get("a").unwrap_err();
        assert!(now > started, "not kept");
        copies.keep(now, "a".into(), 2);
        assert_eq!(copies.get("a"), Ok(2));
        copies.update("a", |v| *v = 3);
        assert_eq!(copies.get("a"), Ok(3));

        let g = copies.get("b").unwrap_err();
        copies.keep(g, "b".into(), 1);
        copies.keep(g, "c".into(), 1); // full: starts again
        assert_eq!((copies.get("a").is_err(), copies.get("c")), (true, Ok(1)));
        copies.forget_all();
        assert!(copies.get("c").is_err());
    }
}
