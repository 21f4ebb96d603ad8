//! A compact, read-only JSON value: the form of the collections the cache keeps parsed ([`super::memo`]).
//!
//! serde_json's `Value` keeps each object in a `BTreeMap`, whose nodes have room for 11 entries (a leaf is 632
//! bytes however few keys it holds), and each key in a `String` of its own. A parsed Xyte device, about 550 bytes of
//! JSON text, took 5.9 KiB of heap that way, and the 500 devices of a kept collection were most of the idle daemon's
//! own memory (BENCHMARKS.md). Here an object is one boxed slice of its entries, sorted by key as the `BTreeMap`
//! kept them (so the serialised form is the same), and the rows of one collection share each key's text: 1.6 KiB
//! for the same device (`mallinfo2`).
//!
//! Reads index it like a `Value` (`d["space"]["id"]`, `as_str`, comparisons with text) and turn what they answer
//! into `Value`s with [`Compact::to_value`] or through `Serialize` (which is what `json!` uses).

use std::collections::HashSet;
use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Compact {
    Null,
    Bool(bool),
    Number(Number),
    String(Box<str>),
    Array(Box<[Compact]>),
    /// Sorted by key (keys are unique), for binary search.
    Object(Box<[(Arc<str>, Compact)]>),
}

static NULL: Compact = Compact::Null;

/// The key texts of the rows being made into one collection, each kept once.
#[derive(Default)]
pub struct Keys(HashSet<Arc<str>>);

impl Keys {
    fn get(&mut self, key: &str) -> Arc<str> {
        if let Some(k) = self.0.get(key) {
            return k.clone();
        }
        let k: Arc<str> = key.into();
        self.0.insert(k.clone());
        k
    }
}

impl Compact {
    pub fn of(v: &Value, keys: &mut Keys) -> Compact {
        match v {
            Value::Null => Compact::Null,
            Value::Bool(b) => Compact::Bool(*b),
            Value::Number(n) => Compact::Number(n.clone()),
            Value::String(s) => Compact::String(s.as_str().into()),
            Value::Array(a) => Compact::Array(a.iter().map(|x| Compact::of(x, keys)).collect()),
            // A `Map` iterates in key order (serde_json without `preserve_order`), which `get` relies on.
            Value::Object(m) => Compact::Object(m.iter().map(|(k, x)| (keys.get(k), Compact::of(x, keys))).collect()),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Compact::Null => Value::Null,
            Compact::Bool(b) => Value::Bool(*b),
            Compact::Number(n) => Value::Number(n.clone()),
            Compact::String(s) => Value::String(s.to_string()),
            Compact::Array(a) => Value::Array(a.iter().map(Compact::to_value).collect()),
            Compact::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Compact> {
        let Compact::Object(o) = self else { return None };
        o.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &o[i].1)
    }

    /// [`Compact::get`] for the same key in many objects of one shape (the devices of a page): `at` is where the key
    /// was last found, tried first; one comparison instead of a binary search when the shapes agree.
    pub fn get_near(&self, key: &str, at: &mut usize) -> &Compact {
        let Compact::Object(o) = self else { return &NULL };
        if let Some((k, v)) = o.get(*at)
            && **k == *key
        {
            return v;
        }
        match o.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => {
                *at = i;
                &o[i].1
            }
            Err(_) => &NULL,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Compact::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Compact]> {
        match self {
            Compact::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Compact::Number(n) => n.as_i64(),
            _ => None,
        }
    }
}

impl Index<&str> for Compact {
    type Output = Compact;

    /// Like `Value`'s: `Null` for a missing key or anything but an object.
    fn index(&self, key: &str) -> &Compact {
        self.get(key).unwrap_or(&NULL)
    }
}

impl PartialEq<&str> for Compact {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl Serialize for Compact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Compact::Null => s.serialize_unit(),
            Compact::Bool(b) => s.serialize_bool(*b),
            Compact::Number(n) => n.serialize(s),
            Compact::String(t) => s.serialize_str(t),
            Compact::Array(a) => s.collect_seq(a.iter()),
            Compact::Object(o) => s.collect_map(o.iter().map(|(k, v)| (&**k, v))),
        }
    }
}

/// The JSON text, as `Value`'s `Display` gives it.
impl fmt::Display for Compact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_like_the_value_it_was_made_from() {
        let v = json!({"id": "d1", "name": "Projector", "n": 3, "x": 1.5, "on": true, "none": null,
                       "space": {"id": 1031, "full_path": "HQ/Board Room"}, "tags": ["a", {"k": "v"}]});
        let mut keys = Keys::default();
        let c = Compact::of(&v, &mut keys);
        assert_eq!(c.to_value(), v);
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        assert_eq!(c.to_string(), v.to_string(), "same text, keys in the same order");
        assert_eq!(c["space"]["id"].as_i64(), Some(1031));
        assert!(c["name"] == "Projector" && c["missing"] == Compact::Null && c["name"]["deeper"] == Compact::Null);
        assert_eq!((c["x"].to_value(), c["tags"].to_value()), (json!(1.5), json!(["a", {"k": "v"}])));
        let other = Compact::of(&json!({"id": "d2", "space": {"id": 7}}), &mut keys);
        let (Compact::Object(a), Compact::Object(b)) = (&c, &other) else { panic!("objects") };
        assert!(Arc::ptr_eq(&a[0].0, &b[0].0), "one text per key across the rows of a collection");
    }
}
