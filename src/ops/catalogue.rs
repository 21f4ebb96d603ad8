//! The list of operations. Each entry carries its handler, built from the handler's argument type by one typed
//! constructor ([`Entry::handler`]): the input schema and the parsing come from that type, the arguments are parsed
//! once, and the schemas are computed once, when the catalogue is first used. Adding an operation = one entry here
//! + its handler (`async fn(&Ctx, Args) -> Result<Value, Error>`, or an [`Answer`]) in the module of its family.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::schema::{input, output};
use super::{
    Answer, Ctx, admin, alerts, analytics, commands, devices, endpoints, fleet, rooms, schedules, tasks, tickets,
};
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

/// What a call needs: a role, and whether it changes something (then read-only mode refuses it and it is audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    pub mutating: bool,
}

/// An entry as written in the catalogue, before its handler makes it an [`Op`].
struct Entry {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    role: Role,
    kind: Kind,
    open_world: bool,
    output: Value,
}

pub struct Op {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The role a call needs; for an operation whose access depends on its arguments, the most it may need.
    pub role: Role,
    pub kind: Kind,
    /// Whether it talks to Xyte (the `openWorldHint` annotation).
    pub open_world: bool,
    /// Refused with `rate_limited` (HTTP 429) when the outbox is at its limit ([`super::OutboxLimits`]).
    pub outbox_admitted: bool,
    pub input: Value,
    pub output: Value,
    /// MCP tool annotations: hints that are true of every call.
    pub annotations: Value,
    /// What every call needs, checked before the arguments are parsed (the least, when access depends on them).
    pub least: Access,
    handler: Box<dyn Erased>,
}

/// A call whose arguments were parsed: what it needs, and the handler's future.
pub struct Prepared<'a> {
    pub access: Access,
    pub run: Run<'a>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A handler's future, boxed: most handlers answer a `Value`, a few an [`Answer`]. Two kinds of future rather than a
/// wrapper around each handler's: the `Value` becomes an `Answer` here, once, not in one generated wrapper per handler.
pub enum Run<'a> {
    Value(Boxed<'a, Value>),
    Answer(Boxed<'a, Answer>),
}

impl Run<'_> {
    pub async fn answer(self) -> Result<Answer, Error> {
        match self {
            Run::Value(run) => run.await.map(Answer::Built),
            Run::Answer(run) => run.await,
        }
    }
}

/// What a handler answers: a `Value` or an [`Answer`].
pub trait HandlerOutput: Sized {
    fn run(run: Boxed<'_, Self>) -> Run<'_>;
}

impl HandlerOutput for Value {
    fn run(run: Boxed<'_, Value>) -> Run<'_> {
        Run::Value(run)
    }
}

impl HandlerOutput for Answer {
    fn run(run: Boxed<'_, Answer>) -> Run<'_> {
        Run::Answer(run)
    }
}

impl Op {
    /// Parses `args` into the handler's argument type and says what this call needs; running it is up to the caller.
    pub fn prepare<'a>(&self, ctx: &'a Ctx, args: &Value) -> Result<Prepared<'a>, Error> {
        self.handler.prepare(ctx, args, self.least)
    }
}

/// A handler: an `async fn(&Ctx, A) -> Result<R, Error>`, `R` a `Value` or an [`Answer`]. (A trait, because the
/// future borrows the context.)
pub trait Handler<'a, A>: Copy + Send + Sync + 'static {
    type Output: HandlerOutput;
    type Future: Future<Output = Result<Self::Output, Error>> + Send + 'a;
    fn call(self, ctx: &'a Ctx, args: A) -> Self::Future;
}

impl<'a, A, F, Fut, R> Handler<'a, A> for F
where
    F: Fn(&'a Ctx, A) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Error>> + Send + 'a,
    R: HandlerOutput,
{
    type Output = R;
    type Future = Fut;
    fn call(self, ctx: &'a Ctx, args: A) -> Fut {
        self(ctx, args)
    }
}

/// A handler with its argument type, behind one object-safe face.
trait Erased: Send + Sync {
    fn prepare<'a>(&self, ctx: &'a Ctx, args: &Value, least: Access) -> Result<Prepared<'a>, Error>;
}

struct Typed<A, H> {
    handler: H,
    /// For operations whose access depends on the arguments (`xyte_api_call`: a GET is a read).
    access: Option<fn(&A) -> Access>,
    args: PhantomData<fn(A)>,
}

impl<A, H> Erased for Typed<A, H>
where
    A: DeserializeOwned + Send + 'static,
    H: for<'a> Handler<'a, A>,
{
    fn prepare<'a>(&self, ctx: &'a Ctx, args: &Value, least: Access) -> Result<Prepared<'a>, Error> {
        let args = A::deserialize(args).map_err(|e| Error::invalid_params(format!("invalid arguments: {e}")))?;
        let access = self.access.map_or(least, |rule| rule(&args));
        Ok(Prepared { access, run: HandlerOutput::run(Box::pin(self.handler.call(ctx, args))) })
    }
}

impl Entry {
    fn handler<A, H>(self, handler: H) -> Op
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        H: for<'a> Handler<'a, A>,
    {
        let least = Access { role: self.role, mutating: self.kind != Kind::Read };
        self.build(least, Typed { handler, access: None, args: PhantomData })
    }

    /// An operation whose role and mutation follow from its arguments by `rule`; `least` is what any call needs.
    fn handler_with_access<A, H>(self, least: Access, rule: fn(&A) -> Access, handler: H) -> Op
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        H: for<'a> Handler<'a, A>,
    {
        self.build(least, Typed { handler, access: Some(rule), args: PhantomData })
    }

    /// Builds the entry's annotations too; what each means: docs/architecture.md, "What every operation promises".
    fn build<A: JsonSchema + 'static, H>(self, least: Access, typed: Typed<A, H>) -> Op
    where
        Typed<A, H>: Erased + 'static,
    {
        let read_only = self.kind == Kind::Read;
        let mut annotations = json!({"title": self.title, "readOnlyHint": read_only, "openWorldHint": self.open_world});
        if !read_only {
            annotations["destructiveHint"] = json!(self.kind == Kind::Destructive);
            annotations["idempotentHint"] = json!(self.kind == Kind::Context);
        }
        Op {
            name: self.name,
            title: self.title,
            description: self.description,
            role: self.role,
            kind: self.kind,
            open_world: self.open_world,
            outbox_admitted: false,
            input: input::<A>(),
            output: self.output,
            annotations,
            least,
            handler: Box::new(typed),
        }
    }
}

impl Op {
    /// Marks an operation that queues commands in the outbox, and so is subject to its limits.
    fn admitted_by_outbox(mut self) -> Op {
        self.outbox_admitted = true;
        self
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

pub static CATALOGUE: LazyLock<Vec<Op>> = LazyLock::new(|| {
    vec![
    Entry {
        name: "list_devices",
        title: "List devices",
        description: "Devices of the organization with status, model and space, filtered by space (and everything below \
                      it), status or free text (name, model, serial, space path). Includes counts by status. Results are \
                      capped (limit, default 50); pass next_cursor to continue.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("devices"),
    }
    .handler(devices::list_devices),
    Entry {
        name: "get_device_status",
        title: "Get device status",
        description: "Everything about one device: status, reported state, last seen, open incidents, its five most \
                      recent commands and the commands its model accepts (null when the model is unknown).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: obj_out("device"),
    }
    .handler(devices::get_device_status),
    Entry {
        name: "list_device_commands",
        title: "List device commands",
        description: "Commands sent to a device, newest first, with their status (pending, in_progress, done, failed, aborted).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("commands"),
    }
    .handler(devices::list_device_commands),
    Entry {
        name: "search_device_histories",
        title: "Search device histories",
        description: "Status history rows of devices over a time range (ISO-8601 or epoch seconds). Ranges longer than \
                      31 days are split into several Xyte calls and merged; progress is reported per window.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("rows"),
    }
    .handler(devices::search_device_histories),
    Entry {
        name: "list_incidents",
        title: "List incidents",
        description: "Incidents (a device offline or in error). Active ones come from the cache; closed ones or a time \
                      range are asked of Xyte.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("incidents"),
    }
    .handler(tickets::list_incidents),
    Entry {
        name: "list_tickets",
        title: "List tickets",
        description: "Open support tickets of the organization.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("tickets"),
    }
    .handler(tickets::list_tickets),
    Entry {
        name: "get_ticket",
        title: "Get ticket",
        description: "One ticket with its conversation (comments).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: obj_out("ticket"),
    }
    .handler(tickets::get_ticket),
    Entry {
        name: "list_spaces",
        title: "List spaces",
        description: "Spaces (sites, floors, rooms) with their path and how many devices each holds.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("spaces"),
    }
    .handler(fleet::list_spaces),
    Entry {
        name: "get_organization_info",
        title: "Get organization info",
        description: "The Xyte organization this gateway serves: name, plan, contacts and statistics.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: obj_out("organization"),
    }
    .handler(fleet::get_organization_info),
    Entry {
        name: "get_fleet_health",
        title: "Get fleet health",
        description: "Health of the fleet (or one space and below), computed on the gateway so it works offline: online \
                      rate, offline percentage, active incidents with their age, open tickets, the spaces with most \
                      offline devices, the most incident-prone devices, and `healthy` (no active incidents and under 5 % \
                      offline).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: output(
            json!({"devices": {"type": "object"}, "active_incidents": {"type": "object"}, "open_tickets": {"type": "integer"},
                   "top_offline_spaces": {"type": "array"}, "most_incident_prone_devices": {"type": "array"},
                   "healthy": {"type": "boolean"}, "stale": {"type": "boolean"}}),
            &["devices", "healthy"],
        ),
    }
    .handler(fleet::get_fleet_health),
    Entry {
        name: "list_rooms",
        title: "List rooms",
        description: "Meeting rooms known to the gateway — from the presets file and from Xyte's spaces of type room — \
                      with their space, device count and preset names (start_meeting_room_preset runs one).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: list_out("rooms"),
    }
    .handler(rooms::list_rooms),
    Entry {
        name: "list_schedules",
        title: "List room schedules",
        description: "Room schedules from the presets file: which preset of which room runs when (at/days or cron, in \
                      its time zone, except dates and holidays), the next three run times in local time, whether it is \
                      paused, its last run with each step's result and its last skipped due time. `errors` lists \
                      schedule entries of the file that were not loaded, and why.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: list_out("schedules"),
    }
    .handler(schedules::list_schedules),
    Entry {
        name: "list_alerts",
        title: "List alerts",
        description: "The gateway's own alerts (rules of XYTE_ALERTS_FILE over devices, Xyte reachability, the outbox, \
                      the disk, failed commands …): those firing, and those resolved in the last 7 days, each with \
                      its messages per channel (pending with the last error, sent, given up) and whether a silence \
                      covers it; the running silences; the rules and channels (no secrets); `errors` of the file.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: list_out("alerts"),
    }
    .handler(alerts::list_alerts),
    Entry {
        name: "get_device_analytics_report",
        title: "Device analytics report",
        description: "Availability %, offline episodes (count, longest, recent), command success rate and incidents of \
                      one device over last_24_hours, last_7_days (default) or last_30_days, computed on the gateway from \
                      Xyte's history rows and the local event log (falls back to local data when Xyte is unreachable).",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: output(
            json!({"device_id": {"type": "string"}, "period": {"type": "string"},
                   "availability_pct": {"type": ["number", "null"]}, "offline_episodes": {"type": "integer"},
                   "longest_offline_s": {"type": "integer"}, "commands": {"type": "object"},
                   "incidents": {"type": "object"}, "sources": {"type": "array"}}),
            &["device_id", "period", "commands", "incidents"],
        ),
    }
    .handler(analytics::get_device_analytics_report),
    Entry {
        name: "xyte_endpoints_list",
        title: "List Xyte API endpoints",
        description: "The catalogue of every documented Xyte Organization API endpoint (key, method, path, summary), \
                      filtered by group, method, words or read_only. xyte_endpoint_describe gives an entry's parameters; \
                      xyte_api_call runs it.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: output(
            json!({"endpoints": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"},
                   "groups": {"type": "array", "items": {"type": "string"}}}),
            &["endpoints", "total"],
        ),
    }
    .handler(endpoints::xyte_endpoints_list),
    Entry {
        name: "xyte_endpoint_describe",
        title: "Describe a Xyte API endpoint",
        description: "One catalogue entry in full: path parameters, query parameters and body fields with types and \
                      which are required, the role it needs and whether it needs confirm.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: obj_out("endpoint"),
    }
    .handler(endpoints::xyte_endpoint_describe),
    Entry {
        name: "list_events",
        title: "List events",
        description: "The gateway's local event log: device status changes, incidents, tickets, commands, audit records. \
                      Without after_id: the most recent events.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: output(
            json!({"events": {"type": "array", "items": {"type": "object"}}, "last_id": {"type": ["integer", "null"]}}),
            &["events"],
        ),
    }
    .handler(fleet::list_events),
    Entry {
        name: "search",
        title: "Search",
        description: "Finds devices, tickets, incidents and spaces whose names or descriptions contain all the words of \
                      the query. Each result's id can be passed to fetch.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: output(
            json!({"results": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"}}),
            &["results"],
        ),
    }
    .handler(fleet::search),
    Entry {
        name: "fetch",
        title: "Fetch",
        description: "The full object behind an id returned by search.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: true,
        output: output(
            json!({"id": {"type": "string"}, "title": {}, "text": {"type": "string"}, "metadata": {"type": "object"}}),
            &["id", "text"],
        ),
    }
    .handler(fleet::fetch),
    Entry {
        name: "send_command",
        title: "Send device command",
        description: "Sends a command to a device now, after checking it against the device model's command list and \
                      parameters. With wait=true, follows it until done/failed/aborted (or timeout_s) and reports \
                      progress. If Xyte is unreachable the error says so; use send_command_async to queue durably.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        output: output(
            json!({"device_id": {"type": "string"}, "command": {"type": "string"}, "xyte_command_id": {"type": "string"},
                   "status": {}, "message": {}, "timed_out": {"type": "boolean"}, "dry_run": {"type": "boolean"},
                   "would_send": {"type": "object"}}),
            &["device_id"],
        ),
    }
    .handler(commands::send_command),
    Entry {
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
        output: task_out(),
    }
    .handler(tasks::send_command_async)
    .admitted_by_outbox(),
    Entry {
        name: "get_task_status",
        title: "Get task status",
        description: "State of an async command: queued, sending, sent, then Xyte's pending/in_progress/done/failed/aborted, \
                      or rejected, expired, cancelled.",
        role: Role::Viewer,
        kind: Kind::Read,
        open_world: false,
        output: task_out(),
    }
    .handler(tasks::get_task_status),
    Entry {
        name: "cancel_command",
        title: "Cancel command",
        description: "Cancels a command at Xyte (by its Xyte command id), or withdraws a queued async task (by task_id) \
                      that was not delivered yet.",
        role: Role::Operator,
        kind: Kind::Destructive,
        open_world: true,
        output: write_out(),
    }
    .handler(tasks::cancel_command),
    Entry {
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
        output: preset_out(),
    }
    .handler(rooms::start_meeting_room_preset)
    .admitted_by_outbox(),
    Entry {
        name: "shutdown_meeting_room",
        title: "Shut down a room",
        description: "Runs the room's `shutdown` preset (powers the room's devices off), step by step with progress. \
                      Refused with rate_limited, as start_meeting_room_preset, when the outbox has no room for it.",
        role: Role::Operator,
        kind: Kind::Destructive,
        open_world: true,
        output: preset_out(),
    }
    .handler(rooms::shutdown_meeting_room)
    .admitted_by_outbox(),
    Entry {
        name: "pause_schedule",
        title: "Pause a room schedule",
        description: "Pauses a room schedule until a time (`until`, ISO-8601) or until resume_schedule: its due times meanwhile \
                      are skipped (a schedule.skipped event with reason_code paused). The pause survives restarts.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: false,
        output: output(json!({"name": {"type": "string"}, "paused": {"type": ["object", "null"]}}), &["name"]),
    }
    .handler(schedules::pause_schedule),
    Entry {
        name: "silence_alerts",
        title: "Silence alerts",
        description: "Keeps matching alerts quiet until a time (`until`) or for a while (`duration`, e.g. 2h; at most \
                      30 days): by rule, space (a path prefix: site, floor or room) or device — every one given must \
                      match. Silenced alerts still fire in list_alerts; one still firing when the silence ends is told \
                      then. Survives restarts. Answers the silence and the firing alerts it covers.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: false,
        output: output(json!({"silence": {"type": "object"}, "silenced": {"type": "array"}}), &[]),
    }
    .handler(alerts::silence_alerts),
    Entry {
        name: "end_silence",
        title: "End an alert silence",
        description: "Ends a running silence now (its id as list_alerts shows it); alerts it kept quiet that still fire \
                      are told at once.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: false,
        output: output(json!({"id": {"type": "string"}, "ended": {"type": "boolean"}}), &[]),
    }
    .handler(alerts::end_silence),
    Entry {
        name: "resume_schedule",
        title: "Resume a room schedule",
        description: "Ends a schedule's pause; it runs again from its next due time (paused due times are not caught \
                      up). Answers the next run times.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: false,
        output: output(json!({"name": {"type": "string"}, "paused": {"type": "null"}, "next_runs": {"type": "array"}}), &["name"]),
    }
    .handler(schedules::resume_schedule),
    Entry {
        name: "run_schedule_now",
        title: "Run a room schedule now",
        description: "Runs a schedule's preset now, as its due time would: the steps are queued in the outbox as one \
                      run (delivered in order when Xyte is reachable; a failed step stops the rest unless marked \
                      continue_on_error), with a schedule.fired event and, when every step is final, schedule.finished. \
                      Answers the run's task ids (get_task_status follows each). dry_run shows the steps.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        output: output(
            json!({"schedule": {"type": "string"}, "run_id": {"type": "string"}, "dry_run": {"type": "boolean"},
                   "steps": {"type": "array", "items": {"type": "object"}}}),
            &["schedule", "steps"],
        ),
    }
    .handler(schedules::run_schedule_now),
    Entry {
        name: "update_ticket",
        title: "Update ticket",
        description: "Changes a ticket's title and/or description.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        output: write_out(),
    }
    .handler(tickets::update_ticket),
    Entry {
        name: "mark_ticket_resolved",
        title: "Resolve ticket",
        description: "Marks a ticket as resolved.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        output: write_out(),
    }
    .handler(tickets::mark_ticket_resolved),
    Entry {
        name: "send_ticket_message",
        title: "Message ticket",
        description: "Adds a message to a ticket's conversation.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        output: write_out(),
    }
    .handler(tickets::send_ticket_message),
    Entry {
        name: "close_incident",
        title: "Close incident",
        description: "Closes an active incident.",
        role: Role::Operator,
        kind: Kind::Write,
        open_world: true,
        output: write_out(),
    }
    .handler(tickets::close_incident),
    Entry {
        name: "claim_device",
        title: "Claim device",
        description: "Adds a device to the organization in a space, identified by cloud_id or by mac and sn.",
        role: Role::Admin,
        kind: Kind::Write,
        open_world: true,
        output: write_out(),
    }
    .handler(admin::claim_device),
    Entry {
        name: "update_device",
        title: "Update device",
        description: "Renames a device or changes its configuration or (edge devices) its complete set of custom \
                      parameters.",
        role: Role::Admin,
        kind: Kind::Write,
        open_world: true,
        output: write_out(),
    }
    .handler(admin::update_device),
    Entry {
        name: "delete_device",
        title: "Delete device",
        description: "Removes a device from the organization. confirm must repeat the device_id.",
        role: Role::Admin,
        kind: Kind::Destructive,
        open_world: true,
        output: write_out(),
    }
    .handler(admin::delete_device),
    Entry {
        name: "xyte_api_call",
        title: "Call a Xyte API endpoint",
        description: "Runs any entry of the Xyte endpoint catalogue (see xyte_endpoints_list) with path_params, query \
                      and body validated against it first. GET entries need only the viewer role; writes need admin; \
                      DELETE entries also need confirm equal to the key.",
        role: Role::Admin,
        kind: Kind::Destructive,
        open_world: true,
        output: output(
            json!({"key": {"type": "string"}, "method": {"type": "string"}, "path": {"type": "string"}, "result": {},
                   "dry_run": {"type": "boolean"}, "would_send": {"type": "object"}}),
            &["key"],
        ),
    }
    .handler_with_access(
        Access { role: Role::Viewer, mutating: false },
        endpoints::access,
        endpoints::xyte_api_call,
    ),
    Entry {
        name: "set_context",
        title: "Set context",
        description: "Remembers a default device, space and/or room for you (kept across connections); tools that take \
                      device_id, space_id or room fall back to it. Returns the context.",
        role: Role::Operator,
        kind: Kind::Context,
        open_world: false,
        output: output(json!({"principal": {"type": "string"}, "context": {"type": "object"}}), &["context"]),
    }
    .handler(devices::set_context),
    ]
});

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
        for op in CATALOGUE.iter() {
            assert!(re_ok(op.name), "{}", op.name);
            assert!(names.insert(op.name), "duplicate {}", op.name);
            let schema = &op.input;
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
            assert_eq!(op.output["type"], "object");
            assert_eq!(op.annotations["readOnlyHint"], op.kind == Kind::Read);
        }
        let admitted: Vec<&str> = CATALOGUE.iter().filter(|op| op.outbox_admitted).map(|op| op.name).collect();
        assert_eq!(admitted, ["send_command_async", "start_meeting_room_preset", "shutdown_meeting_room"]);
    }
}
