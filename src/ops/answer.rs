//! What an operation answers: a JSON document built for the call, or one kept for many calls with this call's
//! freshness laid over it.
//!
//! A kept document (a `list_devices` page, [`crate::cache::Cache::from_devices`]) used to be copied on every call to
//! add `stale` and `fetched_at`, then serialised and dropped: the copy and its freeing (~450 allocations for a page of
//! 50 devices) were about two fifths of a cached `list_devices` on eight connections in perf. An [`Answer::Kept`] is
//! written straight from the shared document, the freshness fields in their places, in the same bytes the copy gave.
//! Front doors that write JSON ([`crate::mcp::outgoing`], [`crate::http::response`]) write an `Answer`; a caller that
//! needs the document itself takes [`Answer::into_value`].

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::cache::Cached;

#[derive(Debug, Clone)]
pub enum Answer {
    /// Built for this call.
    Built(Value),
    /// A document kept for many calls, and the fields this call lays over it (replacing the document's own fields of
    /// those names), in key order.
    Kept { doc: Arc<Map<String, Value>>, over: [(&'static str, Value); 2] },
}

impl Answer {
    /// The kept `doc` with the freshness of `read`, as [`Cached::stamp`] would give it.
    pub fn kept<T>(doc: Arc<Map<String, Value>>, read: &Cached<T>) -> Answer {
        Answer::Kept { doc, over: read.freshness() }
    }

    /// The document itself (a copy of a kept one).
    pub fn into_value(self) -> Value {
        match self {
            Answer::Built(v) => v,
            Answer::Kept { doc, over } => {
                let mut map = Arc::unwrap_or_clone(doc);
                map.extend(over.map(|(k, v)| (k.to_string(), v)));
                Value::Object(map)
            }
        }
    }
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (doc, over) = match self {
            Answer::Built(v) => return v.serialize(s),
            Answer::Kept { doc, over } => (doc, over),
        };
        // The document's fields are in key order (serde_json's map is a BTreeMap), so the laid-over ones are merged in
        // where a copy would have them.
        let mut map = s.serialize_map(None)?;
        let mut over = over.iter().peekable();
        for (key, value) in doc.iter() {
            let mut replaced = false;
            while let Some((k, v)) = over.next_if(|(k, _)| *k <= key.as_str()) {
                map.serialize_entry(k, v)?;
                replaced |= *k == key.as_str();
            }
            if !replaced {
                map.serialize_entry(key, value)?;
            }
        }
        for (k, v) in over {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(stale: bool, fetched_at: i64) -> Cached<()> {
        Cached { value: (), stale, fetched_at }
    }

    #[test]
    fn a_kept_answer_is_written_as_its_stamped_copy_would_be() {
        let docs = [
            json!({"counts": {"online": 1}, "devices": [{"name": "Lobby \"A\""}], "next_cursor": "50", "omitted": 3,
                   "total": 53}),
            json!({}),
            json!({"a": 1}),
            json!({"zz": 1}),
            // The document's own fields of those names are replaced, not repeated.
            json!({"fetched_at": "old", "m": 2, "stale": "old"}),
            json!({"fetched_at": "old"}),
        ];
        for doc in docs {
            for read in [read(false, 1_700_000_000_000), read(true, 0)] {
                let stamped = read.stamp(doc.clone());
                let Value::Object(map) = doc.clone() else { unreachable!() };
                let answer = Answer::kept(Arc::new(map), &read);
                assert_eq!(serde_json::to_string(&answer).unwrap(), serde_json::to_string(&stamped).unwrap());
                assert_eq!(answer.into_value(), stamped);
            }
        }
        let built = Answer::Built(json!([1, "two"]));
        assert_eq!(serde_json::to_string(&built).unwrap(), r#"[1,"two"]"#);
        assert_eq!(built.into_value(), json!([1, "two"]));
    }
}
