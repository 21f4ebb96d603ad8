//! JSON Schemas for operation arguments, generated from the same structs serde parses them into, so the schema a
//! client sees can never drift from what the daemon accepts. Inlined (no `$ref`/`$defs`), no `null` for optional
//! keys, `additionalProperties: false` (from `deny_unknown_fields`): see docs/architecture.md, "What every operation
//! promises".

use crate::cache::Compact;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

pub use crate::config::presets::Id;
use crate::error::Error;

pub fn input<T: JsonSchema>() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(NoNull)
        .into_generator();
    let mut v = generator.root_schema_for::<T>().to_value();
    if let Value::Object(o) = &mut v {
        o.remove("title");
        o.entry("properties").or_insert_with(|| json!({}));
        o.insert("additionalProperties".into(), json!(false));
    }
    v
}

/// Removes `null` from `type` lists and `anyOf`/`oneOf` arms, which schemars adds for `Option<T>`.
#[derive(Clone)]
struct NoNull;

impl schemars::transform::Transform for NoNull {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        if let Some(Value::Array(types)) = schema.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types[0].clone();
                schema.insert("type".into(), only);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(arms)) = schema.get_mut(key) {
                arms.retain(|a| a.get("type") != Some(&json!("null")) && a != &json!({"const": null}));
                if arms.len() == 1
                    && let Some(Value::Object(only)) = arms.pop()
                {
                    schema.remove(key);
                    for (k, v) in only {
                        schema.insert(k, v);
                    }
                }
            }
        }
        // `Option<Enum>` lists null among the values; an omitted key already says "absent".
        if let Some(Value::Array(values)) = schema.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
        if schema.get("default") == Some(&Value::Null) {
            schema.remove("default");
        }
        schemars::transform::transform_subschemas(self, schema);
    }
}

/// A time given as ISO-8601 text or epoch seconds.
#[derive(Debug, Clone)]
pub struct TimeArg(pub time::OffsetDateTime);

impl<'de> Deserialize<'de> for TimeArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let parsed = match &v {
            Value::Number(n) => n.as_i64().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()),
            Value::String(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .or_else(|| s.parse::<i64>().ok().and_then(|n| time::OffsetDateTime::from_unix_timestamp(n).ok())),
            _ => None,
        };
        parsed
            .map(TimeArg)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not an ISO-8601 time or epoch seconds")))
    }
}

impl JsonSchema for TimeArg {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // One plain type keeps the schema portable (clients that map schemas for other models reject type lists);
        // epoch seconds given as a number are accepted all the same.
        schemars::json_schema!({"type": "string", "description": "ISO-8601 (e.g. 2026-11-01T00:00:00Z) or epoch seconds"})
    }
}

/// An id as Xyte sent it (string or number) as text, the form ids take everywhere else.
pub fn id_text(v: &Compact) -> String {
    v.as_str().map(String::from).unwrap_or_else(|| v.to_string())
}

/// Parses arguments, turning serde's complaint into an `invalid_params` error that names the problem.
pub fn parse<T: DeserializeOwned>(args: Value) -> Result<T, Error> {
    let args = if args.is_null() { Value::Object(Map::new()) } else { args };
    serde_json::from_value(args).map_err(|e| Error::invalid_params(format!("invalid arguments: {e}")))
}

/// An output schema for an object with the given top-level properties (types kept loose where Xyte's shapes vary).
pub fn output(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        /// The device.
        device_id: Option<String>,
        limit: Option<u32>,
        inner: Option<Inner>,
        mode: Mode,
        speed: Option<Mode>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        a: String,
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Slow,
    }

    #[test]
    fn schemas_are_inlined_without_nulls() {
        let s = input::<Example>();
        let text = s.to_string();
        assert!(!text.contains("$ref") && !text.contains("$defs") && !text.contains("null"), "{text}");
        assert_eq!(s["properties"]["speed"]["enum"], json!(["fast", "slow"]));
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["device_id"]["type"], "string");
        assert_eq!(s["properties"]["device_id"]["description"], "The device.");
        assert_eq!(s["properties"]["inner"]["properties"]["a"]["type"], "string");
        assert_eq!(s["required"], json!(["mode"]));
    }

    #[test]
    fn unknown_arguments_are_refused_by_name() {
        let e = parse::<Example>(json!({"mode": "fast", "devise_id": "x"})).err().unwrap();
        assert!(e.message.contains("devise_id"), "{}", e.message);
    }
}
