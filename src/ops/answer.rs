//! What an operation answers: a JSON document built for the call, or one kept for many calls with this call's
//! freshness laid over it.
//!
//! A kept document (a `list_devices` page, [`crate::cache::Cache::from_devices`]) used to be copied on every call to
//! add `stale` and `fetched_at`, then serialised and dropped: the copy and its freeing (~450 allocations for a page of
//! 50 devices) were about two fifths of a cached `list_devices` on eight connections in perf. An [`Answer::Kept`] is
//! written straight from the shared document, the freshness fields in their places, in the same bytes the copy gave.
//! Front doors that write JSON ([`crate::mcp::outgoing`], [`crate::http::response`]) write an `Answer`; a caller that
//! needs the document itself takes [`Answer::into_value`].
//!
//! An answer assembled from what the cache keeps (`get_device_status`: the device, its open incidents, its recent
//! commands, its model's command list) is an [`Answer::Parts`]: each part is written from the kept row it is part
//! of. Turning those rows into `Value`s for the answer, and freeing them, was about a sixth of a cached
//! `get_device_status` in perf.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::cache::{Body, Cached, Compact};

#[derive(Debug, Clone)]
pub enum Answer {
    /// Built for this call.
    Built(Value),
    /// A document kept for many calls, and the fields this call lays over it (replacing the document's own fields of
    /// those names), in key order.
    Kept { doc: Arc<Map<String, Value>>, over: [(&'static str, Value); 2] },
    /// An object built for this call from parts, in key order ([`Answer::parts`]).
    Parts(Vec<(&'static str, Part)>),
}

/// A field of an [`Answer::Parts`].
#[derive(Debug, Clone)]
pub enum Part {
    Value(Value),
    /// A kept row, whole.
    Row(Body),
    /// A field of a kept row (`null` when it has none).
    Field(Body, &'static str),
    /// The first items of a kept row that is an array (`[]` when it is not one).
    First(Body, usize),
    /// Kept rows, as an array.
    Rows(Vec<Body>),
}

impl Answer {
    /// The kept `doc` with the freshness of `read`, as [`Cached::stamp`] would give it.
    pub fn kept<T>(doc: Arc<Map<String, Value>>, read: &Cached<T>) -> Answer {
        Answer::Kept { doc, over: read.freshness() }
    }

    /// An object of these fields (their names distinct), whatever order they are given in: it is written in key
    /// order, as a `Value` object is.
    pub fn parts(mut fields: Vec<(&'static str, Part)>) -> Answer {
        fields.sort_unstable_by_key(|(k, _)| *k);
        debug_assert!(fields.windows(2).all(|w| w[0].0 != w[1].0), "a field given twice");
        Answer::Parts(fields)
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
            Answer::Parts(fields) => {
                Value::Object(fields.into_iter().map(|(k, p)| (k.to_string(), p.into_value())).collect())
            }
        }
    }
}

impl Part {
    fn into_value(self) -> Value {
        match self {
            Part::Value(v) => v,
            Part::Row(row) => row.to_value(),
            Part::Field(row, key) => row[key].to_value(),
            Part::First(row, n) => Value::Array(first_items(&row, n).iter().map(Compact::to_value).collect()),
            Part::Rows(rows) => Value::Array(rows.iter().map(|r| r.to_value()).collect()),
        }
    }
}

fn first_items(row: &Compact, n: usize) -> &[Compact] {
    let items = row.as_array().unwrap_or_default();
    &items[..n.min(items.len())]
}

impl Serialize for Part {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Part::Value(v) => v.serialize(s),
            Part::Row(row) => row.serialize(s),
            Part::Field(row, key) => row[key].serialize(s),
            Part::First(row, n) => first_items(row, *n).serialize(s),
            Part::Rows(rows) => rows.serialize(s),
        }
    }
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (doc, over) = match self {
            Answer::Built(v) => return v.serialize(s),
            Answer::Parts(fields) => return s.collect_map(fields.iter().map(|(k, p)| (k, p))),
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
    use crate::cache::{Items, Keys};
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

    #[test]
    fn an_answer_of_kept_parts_is_written_as_the_document_built_of_copies() {
        let device = json!({"id": "d1", "model": {"id": 7}, "name": "Projector \"A\"", "state": {"lamp": 1.5},
                            "status": "online"});
        let commands = json!([{"id": 1}, {"id": 2}, {"id": 3}]);
        let model = json!({"commands": [{"name": "reboot"}], "name": "PJ"});
        let incidents: Items = Arc::new(
            [json!({"device_id": "d0"}), json!({"device_id": "d1", "title": "Lamp"})]
                .iter()
                .map(|i| Compact::of(i, &mut Keys::default()))
                .collect(),
        );
        let answer = Answer::parts(vec![
            ("status", Part::Field(Body::of(&device), "status")),
            ("missing", Part::Field(Body::of(&device), "nothing")),
            ("device", Part::Row(Body::of(&device))),
            ("open", Part::Rows(vec![Body::in_collection(&incidents, 1)])),
            ("first_two", Part::First(Body::of(&commands), 2)),
            ("first_ten", Part::First(Body::of(&commands), 10)),
            ("not_a_list", Part::First(Body::of(&device), 5)),
            ("commands", Part::Field(Body::of(&model), "commands")),
            ("stale", Part::Value(json!(false))),
        ]);
        let copies = json!({"status": "online", "missing": null, "device": device,
                            "open": [{"device_id": "d1", "title": "Lamp"}], "first_two": [{"id": 1}, {"id": 2}],
                            "first_ten": commands, "not_a_list": [], "commands": [{"name": "reboot"}], "stale": false});
        assert_eq!(serde_json::to_string(&answer).unwrap(), serde_json::to_string(&copies).unwrap());
        assert_eq!(answer.into_value(), copies);
    }
}
