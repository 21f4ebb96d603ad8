//! REST routes as a table onto catalogue operations: a path names a tool and some of its arguments;
//! query parameters become the rest, typed by the tool's own input schema. No operation logic lives here.

use serde_json::{Map, Value, json};

use super::query::Query;
use crate::error::Error;

/// A GET route: `{id}` segments fill `path_arg`.
pub struct Route {
    /// The path pattern; also the label in logs and metrics (never a concrete id).
    pub label: &'static str,
    pattern: &'static [&'static str],
    pub tool: &'static str,
    /// The argument the `{id}` segment fills, if the pattern has one.
    pub path_arg: Option<&'static str>,
}

/// Every REST read, for the router and the OpenAPI document alike.
pub const ROUTES: &[Route] = &[
    Route { label: "/v1/devices", pattern: &["v1", "devices"], tool: "list_devices", path_arg: None },
    Route {
        label: "/v1/devices/{id}",
        pattern: &["v1", "devices", "{id}"],
        tool: "get_device_status",
        path_arg: Some("device_id"),
    },
    Route {
        label: "/v1/devices/{id}/commands",
        pattern: &["v1", "devices", "{id}", "commands"],
        tool: "list_device_commands",
        path_arg: Some("device_id"),
    },
    Route {
        label: "/v1/devices/{id}/histories",
        pattern: &["v1", "devices", "{id}", "histories"],
        tool: "search_device_histories",
        path_arg: Some("device_id"),
    },
    Route { label: "/v1/incidents", pattern: &["v1", "incidents"], tool: "list_incidents", path_arg: None },
    Route { label: "/v1/tickets", pattern: &["v1", "tickets"], tool: "list_tickets", path_arg: None },
    Route {
        label: "/v1/tickets/{id}",
        pattern: &["v1", "tickets", "{id}"],
        tool: "get_ticket",
        path_arg: Some("ticket_id"),
    },
    Route { label: "/v1/spaces", pattern: &["v1", "spaces"], tool: "list_spaces", path_arg: None },
    Route {
        label: "/v1/spaces/{id}/devices",
        pattern: &["v1", "spaces", "{id}", "devices"],
        tool: "list_devices",
        path_arg: Some("space_id"),
    },
    Route { label: "/v1/rooms", pattern: &["v1", "rooms"], tool: "list_rooms", path_arg: None },
    Route { label: "/v1/schedules", pattern: &["v1", "schedules"], tool: "list_schedules", path_arg: None },
    Route { label: "/v1/alerts", pattern: &["v1", "alerts"], tool: "list_alerts", path_arg: None },
    Route {
        label: "/v1/organization",
        pattern: &["v1", "organization"],
        tool: "get_organization_info",
        path_arg: None,
    },
    Route { label: "/v1/fleet/health", pattern: &["v1", "fleet", "health"], tool: "get_fleet_health", path_arg: None },
    Route {
        label: "/v1/tasks/{id}",
        pattern: &["v1", "tasks", "{id}"],
        tool: "get_task_status",
        path_arg: Some("task_id"),
    },
    Route { label: "/v1/events", pattern: &["v1", "events"], tool: "list_events", path_arg: None },
];

/// A matched route: its label, and the tool with its arguments (or why the query is not acceptable).
pub type Resolved = (&'static str, Result<(&'static str, Value), Error>);

/// The route's label and the tool and arguments for a GET path, or `None` when no REST read route matches.
pub fn resolve(segments: &[&str], query: Option<&str>) -> Option<Resolved> {
    let route = ROUTES.iter().find(|r| {
        r.pattern.len() == segments.len() && r.pattern.iter().zip(segments).all(|(p, s)| *p == "{id}" || p == s)
    })?;
    let mut args = Map::new();
    if let Some(arg) = route.path_arg {
        let id = route.pattern.iter().zip(segments).find(|(p, _)| **p == "{id}").map(|(_, s)| *s).unwrap_or("");
        args.insert(arg.to_string(), json!(Query::decode_component(id)));
    }
    Some((route.label, typed_query(route.tool, args, query).map(|a| (route.tool, a))))
}

/// Adds query parameters to `args`, converting each by the tool's input schema (integers, booleans, strings), and
/// refusing names the tool does not take — the same rule as the tool itself.
fn typed_query(tool: &str, mut args: Map<String, Value>, raw: Option<&str>) -> Result<Value, Error> {
    let empty = Map::new();
    let props = crate::ops::find(tool).and_then(|op| op.input["properties"].as_object()).unwrap_or(&empty);
    for (name, value) in Query::parse(raw).0 {
        if args.contains_key(&name) {
            continue;
        }
        let Some(prop) = props.get(&name) else {
            let mut known: Vec<&String> = props.keys().collect();
            known.sort();
            let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
            return Err(Error::invalid_params(format!(
                "unknown query parameter {name:?}; this route takes: {}",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )));
        };
        let typed = match prop["type"].as_str() {
            Some("integer") => value
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| Error::invalid_params(format!("{name} must be an integer, got {value:?}")))?,
            Some("boolean") => match value.as_str() {
                "true" | "1" => json!(true),
                "false" | "0" => json!(false),
                _ => return Err(Error::invalid_params(format!("{name} must be true or false, got {value:?}"))),
            },
            _ => json!(value),
        };
        args.insert(name, typed);
    }
    Ok(Value::Object(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_become_typed_tool_arguments() {
        let (tool, args) =
            resolve(&["v1", "devices"], Some("status=online&limit=5&query=board+room")).unwrap().1.unwrap();
        assert_eq!(tool, "list_devices");
        assert_eq!(args, json!({"status": "online", "limit": 5, "query": "board room"}));
        let (label, found) = resolve(&["v1", "spaces", "1003", "devices"], None).unwrap();
        assert_eq!(label, "/v1/spaces/{id}/devices");
        let (tool, args) = found.unwrap();
        assert_eq!((tool, args), ("list_devices", json!({"space_id": "1003"})));
        let (_, args) = resolve(&["v1", "devices", "a%2Fb"], None).unwrap().1.unwrap();
        assert_eq!(args, json!({"device_id": "a/b"}));
        let e = resolve(&["v1", "devices"], Some("limt=5")).unwrap().1.unwrap_err();
        assert!(e.message.contains("unknown query parameter \"limt\"") && e.message.contains("limit"), "{e}");
        let e = resolve(&["v1", "devices"], Some("limit=five")).unwrap().1.unwrap_err();
        assert!(e.message.contains("limit must be an integer"), "{e}");
        assert!(resolve(&["v1", "nothing"], None).is_none());
        for route in ROUTES {
            assert!(crate::ops::find(route.tool).is_some(), "{} names no tool", route.tool);
        }
    }
}
