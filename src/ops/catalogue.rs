//! The list of operations and the dispatch from name to handler. Adding an operation = one entry here + its
//! handler in the module of its family.

use serde_json::{Value, json};

use super::schema::{input, output};
use super::{Ctx, admin, analytics, commands, devices, endpoints, fleet, rooms, tasks, tickets};
use crate::config::Role;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reads; never changes anything.
    Read,
    /// Changes something; repeating it may repeat the effect.
    Write,
    /// Changes something that cannot be undone, or disrupts a room.
    Destructive,
    /// Changes only the caller's own context; repeating it changes nothing more.
    Context,
}

pub struct Op {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub role: Role,
    pub kind: Kind,
    /// Whether it talks to Xyte (`openWorldHint`).
    pub open_world: bool,
    pub input: fn() -> Value,
    pub output: fn() -> Value,
}

impl Op {
    /// The role this call needs. Only `xyte_api_call` varies: a GET through it is a read any viewer may make.
    pub fn required_role(&self, args: &Value) -> Role {
        match self.name {
            "xyte_api_call" => endpoints::access(args).0,
            _ => self.role,
        }
    }

    pub fn is_mutating(&self, args: &Value) -> bool {
        match self.name {
            "xyte_api_call" => endpoints::access(args).1,
            _ => self.kind != Kind::Read,
        }
    }

    /// MCP tool annotations; what each means: docs/architecture.md, "What every operation promises".
    pub fn annotations(&self) -> Value {
        let read_only = self.kind == Kind::Read;
        let mut a = json!({"title": self.title, "readOnlyHint": read_only, "openWorldHint": self.open_world});
        if !read_only {
            a["destructiveHint"] = json!(self.kind == Kind::Destructive);
            a["idempotentHint"] = json!(self.kind == Kind::Context);
        }
        a
    }
}

pub fn find(name: &str) -> Option<&'static Op> {
    CATALOGUE.iter().find(|o| o.name == name)
}

fn list_out(key: &str) -> Value {
    output(
        json!({key: {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"}, "omitted": {"type": "integer"},
               "next_cursor": {"type": "string"}, "stale": {"type": "boolean"}, "fetched_at": {"type": ["string", "null"]}}),
        &[key],
    )
}

fn obj_out(key: &str) -> Value {
    output(
        json!({key: {"type": "object"}, "stale": {"type": "boolean"}, "fetched_at": {"type": ["string", "null"]}}),
        &[key],
    )
}

fn task_out() -> Value {
    output(
        json!({"task_id": {"type": "string"}, "device_id": {"type": "string"}, "command": {"type": "string"},
               "state": {"type": "string"}, "xyte_command_id": {"type": ["string", "null"]}, "final": {"type": "boolean"},
               "dry_run": {"type": "boolean"}}),
        &[],
    )
}

fn preset_out() -> Value {
    output(
        json!({"room": {"type": "string"}, "preset": {"type": "string"}, "ok": {"type": "boolean"},
               "dry_run": {"type": "boolean"}, "steps": {"type": "array", "items": {"type": "object"}}}),
        &["room", "preset", "ok", "steps"],
    )
}

fn write_out() -> Value {
    output(json!({"dry_run": {"type": "boolean"}, "would_send": {"type": "object"}}), &[])
}

pub static CATALOGUE: &[Op] = &[
    Op {
        name: "list_devices",
        title: "List devices",
        description: "Devices of the organization with status, model and space, filtered by space (and everything below \
                      it), status or free text (name, model, serial, space path). Includes counts by status. Results are \
                      capped (limit, default 50); pass next_cursor to continue.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<devices::ListDevices>,
        output: || list_out("devices"),
    },
    Op {
        name: "get_device_status",
        title: "Get device status",
        description: "Everything about one device: status, reported state, last seen, open incidents, its five most \
                      recent commands and the commands its model accepts (null when the model is unknown).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<devices::DeviceRef>,
        output: || obj_out("device"),
    },
    Op {
        name: "list_device_commands",
        title: "List device commands",
        description: "Commands sent to a device, newest first, with their status (pending, in_progress, done, failed, aborted).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<devices::ListCommands>,
        output: || list_out("commands"),
    },
    Op {
        name: "search_device_histories",
        title: "Search device histories",
        description: "Status history rows of devices over a time range (ISO-8601 or epoch seconds). Ranges longer than \
                      31 days are split into several Xyte calls and merged; progress is reported per window.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<devices::SearchHistories>,
        output: || list_out("rows"),
    },
    Op {
        name: "list_incidents",
        title: "List incidents",
        description: "Incidents (a device offline or in error). Active ones come from the cache; closed ones or a time \
                      range are asked of Xyte.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<tickets::ListIncidents>,
        output: || list_out("incidents"),
    },
    Op {
        name: "list_tickets",
        title: "List tickets",
        description: "Open support tickets of the organization.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<tickets::ListTickets>,
        output: || list_out("tickets"),
    },
    Op {
        name: "get_ticket",
        title: "Get ticket",
        description: "One ticket with its conversation (comments).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<tickets::TicketRef>,
        output: || obj_out("ticket"),
    },
    Op {
        name: "list_spaces",
        title: "List spaces",
        description: "Spaces (sites, floors, rooms) with their path and how many devices each holds.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<fleet::ListSpaces>,
        output: || list_out("spaces"),
    },
    Op {
        name: "get_organization_info",
        title: "Get organization info",
        description: "The Xyte organization this gateway serves: name, plan, contacts and statistics.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<fleet::NoArgs>,
        output: || obj_out("organization"),
    },
    Op {
        name: "get_fleet_health",
        title: "Get fleet health",
        description: "Health of the fleet (or one space and below), computed on the gateway so it works offline: online \
                      rate, offline percentage, active incidents with their age, open tickets, the spaces with most \
                      offline devices, the most incident-prone devices, and `healthy` (no active incidents and under 5 % \
                      offline).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        input: input::<fleet::FleetHealth>,
        output: || {
            output(
                json!({"devices": {"type": "object"}, "active_incidents": {"type": "object"}, "open_tickets": {"type": "integer"},
                       "top_offline_spaces": {"type": "array"}, "most_incident_prone_devices": {"type": "array"},
                       "healthy": {"type": "boolean"}, "stale": {"type": "boolean"}}),
                &["devices", "healthy"],
            )
        },
    },
    Op {
        name: "list_rooms",
        title: "List rooms",
        description: "Meeting rooms known to the gateway — from the presets file and from Xyte's spaces of type room — \
                      with their space, device count and preset names (start_meeting_room_preset runs one).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<rooms::ListRooms>,
        output: || list_out("rooms"),
    },
    Op {
        name: "get_device_analytics_report",
        title: "Device analytics report",
        description: "Availability %, offline episodes (count, longest, recent), command success rate and incidents of \
                      one device over last_24_hours, last_7_days (default) or last_30_days, computed on the gateway from \
                      Xyte's history rows and the local event log (falls back to local data when Xyte is unreachable).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<analytics::AnalyticsArgs>,
        output: || {
            output(
                json!({"device_id": {"type": "string"}, "period": {"type": "string"},
                       "availability_pct": {"type": ["number", "null"]}, "offline_episodes": {"type": "integer"},
                       "longest_offline_s": {"type": "integer"}, "commands": {"type": "object"},
                       "incidents": {"type": "object"}, "sources": {"type": "array"}}),
                &["device_id", "period", "commands", "incidents"],
            )
        },
    },
    Op {
        name: "xyte_endpoints_list",
        title: "List Xyte API endpoints",
        description: "The catalogue of every documented Xyte Organization API endpoint (key, method, path, summary), \
                      filtered by group, method, words or read_only. xyte_endpoint_describe gives an entry's parameters; \
                      xyte_api_call runs it.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        input: input::<endpoints::ListEndpoints>,
        output: || {
            output(
                json!({"endpoints": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"},
                       "groups": {"type": "array", "items": {"type": "string"}}}),
                &["endpoints", "total"],
            )
        },
    },
    Op {
        name: "xyte_endpoint_describe",
        title: "Describe a Xyte API endpoint",
        description: "One catalogue entry in full: path parameters, query parameters and body fields with types and \
                      which are required, the role it needs and whether it needs confirm.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        input: input::<endpoints::DescribeEndpoint>,
        output: || obj_out("endpoint"),
    },
    Op {
        name: "list_events",
        title: "List events",
        description: "The gateway's local event log: device status changes, incidents, tickets, commands, audit records. \
                      Without after_id: the most recent events.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        input: input::<fleet::ListEvents>,
        output: || {
            output(
                json!({"events": {"type": "array", "items": {"type": "object"}}, "last_id": {"type": ["integer", "null"]}}),
                &["events"],
            )
        },
    },
    Op {
        name: "search",
        title: "Search",
        description: "Finds devices, tickets, incidents and spaces whose names or descriptions contain all the words of \
                      the query. Each result's id can be passed to fetch.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        input: input::<fleet::Search>,
        output: || {
            output(
                json!({"results": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"}}),
                &["results"],
            )
        },
    },
    Op {
        name: "fetch",
        title: "Fetch",
        description: "The full object behind an id returned by search.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        input: input::<fleet::Fetch>,
        output: || {
            output(
                json!({"id": {"type": "string"}, "title": {}, "text": {"type": "string"}, "metadata": {"type": "object"}}),
                &["id", "text"],
            )
        },
    },
    Op {
        name: "send_command",
        title: "Send device command",
        description: "Sends a command to a device now, after checking it against the device model's command list and \
                      parameters. With wait=true, follows it until done/failed/aborted (or timeout_s) and reports \
                      progress. If Xyte is unreachable the error says so; use send_command_async to queue durably.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<commands::SendCommandArgs>,
        output: || {
            output(
                json!({"device_id": {"type": "string"}, "command": {"type": "string"}, "xyte_command_id": {"type": "string"},
                       "status": {}, "message": {}, "timed_out": {"type": "boolean"}, "dry_run": {"type": "boolean"},
                       "would_send": {"type": "object"}}),
                &["device_id"],
            )
        },
    },
    Op {
        name: "send_command_async",
        title: "Queue device command",
        description: "Queues a command in the gateway's durable outbox and answers at once with a task_id; the gateway \
                      delivers it when Xyte is reachable (in order per device, within XYTE_COMMAND_TTL) and follows it to \
                      its final status. Survives restarts and power loss. Check progress with get_task_status. Refused with \
                      rate_limited (nothing queued; wait retry_after_s) when the device's or the gateway's outbox is \
                      at its limit (XYTE_OUTBOX_MAX_PER_DEVICE, XYTE_OUTBOX_MAX).",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<tasks::SendAsync>,
        output: task_out,
    },
    Op {
        name: "get_task_status",
        title: "Get task status",
        description: "State of an async command: queued, sending, sent, then Xyte's pending/in_progress/done/failed/aborted, \
                      or rejected, expired, cancelled.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        input: input::<tasks::TaskRef>,
        output: task_out,
    },
    Op {
        name: "cancel_command",
        title: "Cancel command",
        description: "Cancels a command at Xyte (by its Xyte command id), or withdraws a queued async task (by task_id) \
                      that was not delivered yet.",
        role: Role::Operator,
        kind: Kind::Destructive,
        open_world: true,
        input: input::<tasks::Cancel>,
        output: write_out,
    },
    Op {
        name: "start_meeting_room_preset",
        title: "Run a room preset",
        description: "Runs a room's preset (default `start`) from the presets file: each step's command is validated, \
                      sent and followed to its final status, in order, with progress per step. A failed step stops the \
                      preset unless it is marked continue_on_error. Returns every step's result. Rooms match by name, \
                      unique prefix or close spelling. Refused with rate_limited before any step is sent when the \
                      outbox has no room for its steps (they share the upstream budget with queued commands).",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<rooms::RunPreset>,
        output: preset_out,
    },
    Op {
        name: "shutdown_meeting_room",
        title: "Shut down a room",
        description: "Runs the room's `shutdown` preset (powers the room's devices off), step by step with progress. \
                      Refused with rate_limited, as start_meeting_room_preset, when the outbox has no room for it.",
        role: Role::Operator,
        kind: Kind::Destructive,
        open_world: true,
        input: input::<rooms::ShutdownRoom>,
        output: preset_out,
    },
    Op {
        name: "update_ticket",
        title: "Update ticket",
        description: "Changes a ticket's title and/or description.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<tickets::UpdateTicket>,
        output: write_out,
    },
    Op {
        name: "mark_ticket_resolved",
        title: "Resolve ticket",
        description: "Marks a ticket as resolved.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<tickets::TicketAction>,
        output: write_out,
    },
    Op {
        name: "send_ticket_message",
        title: "Message ticket",
        description: "Adds a message to a ticket's conversation.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<tickets::TicketMessage>,
        output: write_out,
    },
    Op {
        name: "close_incident",
        title: "Close incident",
        description: "Closes an active incident.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        input: input::<tickets::CloseIncident>,
        output: write_out,
    },
    Op {
        name: "claim_device",
        title: "Claim device",
        description: "Adds a device to the organization in a space, identified by cloud_id or by mac and sn.",
        role: Role::Admin,
        kind: Kind::Write,
        open_world: true,
        input: input::<admin::ClaimDevice>,
        output: write_out,
    },
    Op {
        name: "update_device",
        title: "Update device",
        description: "Renames a device or changes its configuration or (edge devices) its complete set of custom \
                      parameters.",
        role: Role::Admin,
        kind: Kind::Write,
        open_world: true,
        input: input::<admin::UpdateDevice>,
        output: write_out,
    },
    Op {
        name: "delete_device",
        title: "Delete device",
        description: "Removes a device from the organization. confirm must repeat the device_id.",
        role: Role::Admin,
        kind: Kind::Destructive,
        open_world: true,
        input: input::<admin::DeleteDevice>,
        output: write_out,
    },
    Op {
        name: "xyte_api_call",
        title: "Call a Xyte API endpoint",
        description: "Runs any entry of the Xyte endpoint catalogue (see xyte_endpoints_list) with path_params, query \
                      and body validated against it first. GET entries need only the viewer role; writes need admin; \
                      DELETE entries also need confirm equal to the key.",
        role: Role::Admin,
        kind: Kind::Destructive,
        open_world: true,
        input: input::<endpoints::ApiCall>,
        output: || {
            output(
                json!({"key": {"type": "string"}, "method": {"type": "string"}, "path": {"type": "string"}, "result": {},
                       "dry_run": {"type": "boolean"}, "would_send": {"type": "object"}}),
                &["key"],
            )
        },
    },
    Op {
        name: "set_context",
        title: "Set context",
        description: "Remembers a default device, space and/or room for you (kept across connections); tools that take \
                      device_id, space_id or room fall back to it. Returns the context.",
        role: Role::Operator,
        kind: Kind::Context,
        open_world: false,
        input: input::<devices::SetContext>,
        output: || output(json!({"principal": {"type": "string"}, "context": {"type": "object"}}), &["context"]),
    },
];

pub async fn dispatch(ctx: &Ctx, name: &str, args: Value) -> Result<Value, Error> {
    match name {
        "list_devices" => devices::list_devices(ctx, args).await,
        "get_device_status" => devices::get_device_status(ctx, args).await,
        "list_device_commands" => devices::list_device_commands(ctx, args).await,
        "search_device_histories" => devices::search_device_histories(ctx, args).await,
        "list_incidents" => tickets::list_incidents(ctx, args).await,
        "list_tickets" => tickets::list_tickets(ctx, args).await,
        "get_ticket" => tickets::get_ticket(ctx, args).await,
        "list_spaces" => fleet::list_spaces(ctx, args).await,
        "get_organization_info" => fleet::get_organization_info(ctx, args).await,
        "get_fleet_health" => fleet::get_fleet_health(ctx, args).await,
        "list_events" => fleet::list_events(ctx, args).await,
        "search" => fleet::search(ctx, args).await,
        "fetch" => fleet::fetch(ctx, args).await,
        "send_command" => commands::send_command(ctx, args).await,
        "send_command_async" => tasks::send_command_async(ctx, args).await,
        "get_task_status" => tasks::get_task_status(ctx, args).await,
        "cancel_command" => tasks::cancel_command(ctx, args).await,
        "update_ticket" => tickets::update_ticket(ctx, args).await,
        "mark_ticket_resolved" => tickets::mark_ticket_resolved(ctx, args).await,
        "send_ticket_message" => tickets::send_ticket_message(ctx, args).await,
        "close_incident" => tickets::close_incident(ctx, args).await,
        "set_context" => devices::set_context(ctx, args).await,
        "list_rooms" => rooms::list_rooms(ctx, args).await,
        "get_device_analytics_report" => analytics::get_device_analytics_report(ctx, args).await,
        "xyte_endpoints_list" => endpoints::xyte_endpoints_list(ctx, args).await,
        "xyte_endpoint_describe" => endpoints::xyte_endpoint_describe(ctx, args).await,
        "xyte_api_call" => endpoints::xyte_api_call(ctx, args).await,
        "start_meeting_room_preset" => rooms::start_meeting_room_preset(ctx, args).await,
        "shutdown_meeting_room" => rooms::shutdown_meeting_room(ctx, args).await,
        "claim_device" => admin::claim_device(ctx, args).await,
        "update_device" => admin::update_device(ctx, args).await,
        "delete_device" => admin::delete_device(ctx, args).await,
        other => Err(Error::invalid_params(format!("unknown tool {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_schemas_and_annotations_follow_the_rules() {
        let re_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let mut names = std::collections::HashSet::new();
        for op in CATALOGUE {
            assert!(re_ok(op.name), "{}", op.name);
            assert!(names.insert(op.name), "duplicate {}", op.name);
            let schema = (op.input)();
            let text = schema.to_string();
            assert_eq!(schema["type"], "object", "{}", op.name);
            assert_eq!(schema["additionalProperties"], false, "{}", op.name);
            assert!(
                !text.contains("$ref") && !text.contains("$defs") && !text.contains("\"null\""),
                "{}: {text}",
                op.name
            );
            if op.kind != Kind::Read && op.kind != Kind::Context {
                assert!(schema["properties"].get("dry_run").is_some(), "{} must accept dry_run", op.name);
            }
            assert_eq!((op.output)()["type"], "object");
            let a = op.annotations();
            assert_eq!(a["readOnlyHint"], op.kind == Kind::Read);
        }
    }
}
