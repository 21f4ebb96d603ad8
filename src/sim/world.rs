//! The simulated organization: spaces (root → building → floor → room), models, devices, commands, incidents,
//! tickets, histories and the smaller collections. Everything is derived from the seed; the clock (`tick`) moves
//! commands through their lifecycle and lets devices drop offline and recover, opening and closing incidents.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::catalog::{self, MODELS, ModelSpec};
use super::rng::Rng;

pub fn ts(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

pub struct SimSpace {
    pub id: i64,
    pub name: String,
    pub parent_id: Option<i64>,
    pub space_type: &'static str,
    pub full_path: String,
    pub created_at: OffsetDateTime,
    pub config: Value,
}

impl SimSpace {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "parent_id": self.parent_id, "space_type": self.space_type,
               "full_path": self.full_path, "created_at": ts(self.created_at), "config": self.config})
    }
}

pub struct SimModel {
    pub id: String,
    pub spec: &'static ModelSpec,
}

impl SimModel {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.spec.name, "vendor": self.spec.vendor, "sub_model": null,
               "parameters": [], "commands": (self.spec.commands)()})
    }
}

pub struct SimDevice {
    pub id: String,
    pub name: String,
    pub sn: String,
    pub mac: Option<String>,
    pub cloud_id: Option<String>,
    pub status: String,
    pub last_seen_at: OffsetDateTime,
    pub state: Map<String, Value>,
    pub model: usize,
    pub space_id: i64,
    pub firmware: String,
    pub details: Value,
    /// Set by the control plane: the clock's churn leaves this device's status alone, so a test's change sticks.
    pub held: bool,
    /// Fields set through PATCH that have no dedicated member (configuration, custom_parameters, …).
    pub extra: Map<String, Value>,
}

pub struct SimCommand {
    pub id: String,
    pub name: String,
    pub friendly_name: String,
    pub status: String,
    pub params: Value,
    pub message: Option<String>,
    pub file_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The tick at which the command takes its next lifecycle step.
    pub next_step: u64,
}

impl SimCommand {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "friendly_name": self.friendly_name, "status": self.status,
               "params": self.params, "message": self.message, "file_id": self.file_id,
               "created_at": ts(self.created_at), "updated_at": ts(self.updated_at)})
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed" | "aborted")
    }
}

pub struct World {
    pub rng: Rng,
    pub tick: u64,
    pub churn: bool,
    pub org: Value,
    pub root_space: i64,
    pub spaces: Vec<SimSpace>,
    pub models: Vec<SimModel>,
    pub devices: Vec<SimDevice>,
    pub device_index: HashMap<String, usize>,
    space_index: HashMap<i64, usize>,
    /// Per device, newest first (as `GET /devices/:id/commands` lists them).
    pub commands: HashMap<String, Vec<SimCommand>>,
    pub incidents: Vec<Value>,
    pub tickets: Vec<Value>,
    /// (epoch seconds, row) in time order.
    pub histories: Vec<(i64, Value)>,
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
    pub licenses: Vec<Value>,
    pub edges: Vec<Value>,
    pub assets: Vec<Value>,
    pub notes: Vec<Value>,
    next_space_id: i64,
    next_note_id: i64,
    next_comment_id: i64,
}

impl World {
    pub fn new(devices: usize, seed: u64, churn: bool) -> World {
        let mut rng = Rng::new(seed);
        let now = OffsetDateTime::now_utc();
        let created = now - time::Duration::days(400);
        let mut w = World {
            org: Value::Null,
            root_space: 1000,
            spaces: Vec::new(),
            models: MODELS.iter().map(|spec| SimModel { id: rng.uuid(), spec }).collect(),
            devices: Vec::with_capacity(devices),
            device_index: HashMap::with_capacity(devices),
            space_index: HashMap::new(),
            commands: HashMap::new(),
            incidents: Vec::new(),
            tickets: Vec::new(),
            histories: Vec::new(),
            users: Vec::new(),
            groups: Vec::new(),
            licenses: Vec::new(),
            edges: Vec::new(),
            assets: Vec::new(),
            notes: Vec::new(),
            rng,
            tick: 0,
            churn,
            next_space_id: 1001,
            next_note_id: 1,
            next_comment_id: 11_000,
        };
        w.space_index.insert(1000, 0);
        w.spaces.push(SimSpace {
            id: 1000,
            name: "Northwind Traders".into(),
            parent_id: None,
            space_type: "root",
            full_path: "Northwind Traders".into(),
            created_at: created,
            config: json!({}),
        });
        let rooms = w.seed_spaces(devices.div_ceil(4).max(1), created);
        w.seed_devices(devices, &rooms, now);
        w.seed_people_and_tickets(now);
        w.seed_extras(now);
        w.org = json!({
            "id": w.rng.uuid(), "name": "Northwind Traders", "created_at": ts(created), "lab": true, "partner": "Acme AV",
            "domain": "https://xyte.io", "mobile_domain": "https://m.xyte.io", "pricing_plan": "enterprise",
            "contacts": {"admin_email": "it@northwind.example", "admin_name": "Northwind IT",
                         "finance_email": "finance@northwind.example", "finance_name": "Northwind Finance"},
        });
        w
    }

    pub fn add_space(
        &mut self,
        name: String,
        parent: i64,
        kind: &'static str,
        created: OffsetDateTime,
        config: Value,
    ) -> i64 {
        let id = self.next_space_id;
        self.next_space_id += 1;
        let parent_path = self.space(parent).map(|s| s.full_path.clone()).unwrap_or_default();
        self.space_index.insert(id, self.spaces.len());
        self.spaces.push(SimSpace {
            id,
            full_path: format!("{parent_path}/{name}"),
            name,
            parent_id: Some(parent),
            space_type: kind,
            created_at: created,
            config,
        });
        id
    }

    /// Buildings with floors, and `rooms` meeting rooms spread over them; returns the room ids.
    fn seed_spaces(&mut self, rooms: usize, created: OffsetDateTime) -> Vec<i64> {
        let buildings = catalog::BUILDINGS.len().min(rooms.div_ceil(4)).max(1);
        let mut floors = Vec::new();
        for (b, (name, region, lat, lng, offset)) in catalog::BUILDINGS.iter().take(buildings).enumerate() {
            let config = json!({"general": {"location": {"location": {"lat": lat, "lng": lng}, "utc_offset": offset,
                                 "description": name, "region_name": region}, "temperature_units": "celsius", "priority_factor": 0}});
            let building = self.add_space(name.to_string(), self.root_space, "site", created, config);
            let per_building = rooms.div_ceil(buildings);
            for f in 0..per_building.div_ceil(5).max(1) {
                floors.push((b, self.add_space(format!("Floor {}", f + 1), building, "floor", created, json!({}))));
            }
        }
        let mut ids = Vec::with_capacity(rooms);
        for r in 0..rooms {
            let (_, floor) = floors[r % floors.len()];
            let name = match catalog::ROOM_NAMES.get(r) {
                Some(n) => n.to_string(),
                None => format!("Meeting {}.{:02}", 1 + r % 9, r),
            };
            ids.push(self.add_space(name, floor, "room", created, json!({})));
        }
        ids
    }

    fn seed_devices(&mut self, n: usize, rooms: &[i64], now: OffsetDateTime) {
        let mut per_room: HashMap<i64, usize> = HashMap::new();
        for i in 0..n {
            let room_idx = i % rooms.len();
            let room = rooms[room_idx];
            let slot = per_room.entry(room).or_default();
            let fitting = catalog::ROOM_FITTINGS[room_idx % catalog::ROOM_FITTINGS.len()];
            let model = fitting[*slot % fitting.len()];
            *slot += 1;
            let spec = &MODELS[model];
            let room_name = self.space(room).map(|s| s.name.clone()).unwrap_or_default();
            let name = if *slot > fitting.len() {
                format!("{room_name} {} {}", spec.kind, slot)
            } else {
                format!("{room_name} {}", spec.kind)
            };
            let roll = self.rng.unit();
            let status = if roll < 0.05 {
                "offline"
            } else if roll < 0.08 {
                "error"
            } else {
                "online"
            };
            let id = self.rng.uuid();
            let uses_mac = self.rng.chance(0.5);
            let mut state = match (spec.initial_state)() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            state.insert("status".into(), json!(status));
            let last_seen =
                if status == "offline" { now - time::Duration::hours(1 + self.rng.below(30) as i64) } else { now };
            let device = SimDevice {
                sn: format!("{}-{:05}", &spec.vendor[..3].to_uppercase(), self.rng.below(100_000)),
                mac: uses_mac.then(|| {
                    let h = self.rng.hex(12);
                    (0..6).map(|k| &h[k * 2..k * 2 + 2]).collect::<Vec<_>>().join(":")
                }),
                cloud_id: (!uses_mac).then(|| format!("XYT-{}", self.rng.hex(10))),
                firmware: format!("{}.{}.{}", 1 + self.rng.below(3), self.rng.below(10), self.rng.below(20)),
                id: id.clone(),
                name,
                status: status.into(),
                last_seen_at: last_seen,
                state,
                model,
                space_id: room,
                details: Value::Null,
                held: false,
                extra: Map::new(),
            };
            self.device_index.insert(id.clone(), self.devices.len());
            self.devices.push(device);
            self.seed_history(self.devices.len() - 1, now);
            if status != "online" {
                self.open_incident(self.devices.len() - 1, last_seen);
            }
        }
    }

    /// A few status changes per device over the last 30 days, so reports and history searches have data.
    fn seed_history(&mut self, idx: usize, now: OffsetDateTime) {
        let changes = 2 + self.rng.below(4);
        let mut t = now - time::Duration::days(30);
        let mut status = "online";
        for _ in 0..changes {
            t += time::Duration::minutes(60 + self.rng.below(60 * 24 * 6) as i64);
            if t >= now {
                break;
            }
            self.push_history(idx, status, t);
            status = if status == "online" { "offline" } else { "online" };
        }
        let current = self.devices[idx].status.clone();
        self.push_history(idx, &current, now - time::Duration::minutes(5));
    }

    fn push_history(&mut self, idx: usize, status: &str, at: OffsetDateTime) {
        let d = &self.devices[idx];
        let mut state = d.state.clone();
        state.insert("status".into(), json!(status));
        let row = json!({"uuid": d.id, "device_id": d.id, "name": d.name, "model": MODELS[d.model].name, "partner": "Acme AV",
                         "space_id": d.space_id, "state": state, "created_at": ts(at)});
        let epoch = at.unix_timestamp();
        let pos = self.histories.partition_point(|(t, _)| *t <= epoch);
        self.histories.insert(pos, (epoch, row));
    }

    fn seed_people_and_tickets(&mut self, now: OffsetDateTime) {
        for (i, (name, email)) in catalog::PEOPLE.iter().enumerate() {
            self.users
                .push(json!({"id": 500 + i, "name": name, "email": email, "active": true, "group_ids": [1 + i % 2]}));
        }
        self.groups.push(json!({"id": 1, "name": "Facilities", "user_ids": [500, 502, 504]}));
        self.groups.push(json!({"id": 2, "name": "IT Support", "user_ids": [501, 503]}));
        for (i, (title, description)) in catalog::TICKETS.iter().enumerate() {
            let device =
                &self.devices[self.rng.below(self.devices.len().max(1)).min(self.devices.len().saturating_sub(1))];
            let (user, email) = catalog::PEOPLE[i % catalog::PEOPLE.len()];
            let created = now - time::Duration::hours(3 + 20 * i as i64);
            let comment_id = self.next_comment_id;
            self.next_comment_id += 1;
            self.tickets.push(json!({
                "id": self.rng.uuid(), "title": title, "description": description,
                "status": if i == 4 { "resolved" } else { "open" }, "created_at": ts(created), "device_id": device.id,
                "user_name": user, "user_email": email,
                "comments": [{"id": comment_id, "text": description, "created_at": ts(created), "system": false,
                              "user": user, "owner": "Northwind Traders", "owner_type": "organization"}],
            }));
        }
    }

    fn seed_extras(&mut self, now: OffsetDateTime) {
        let product = json!({"id": 77, "name": "Xyte Device License"});
        for (i, d) in self.devices.iter().take(20).enumerate() {
            self.licenses.push(json!({"id": 9000 + i, "state": "inuse", "expires_at": ts(now + time::Duration::days(200)),
                "activated_at": ts(now - time::Duration::days(100)), "warranty": false, "transferable": true,
                "bound_device_sn": d.sn, "created_at": ts(now - time::Duration::days(120)), "order_short_id": format!("ORD-{}", 100 + i),
                "partner": {"id": 3, "name": "Acme AV"}, "device": {"id": d.id, "sn": d.sn}, "product": product,
                "device_model": {"id": self.models[d.model].id, "name": MODELS[d.model].name}}));
        }
        for i in 0..3 {
            self.licenses.push(json!({"id": 9900 + i, "state": "available", "expires_at": ts(now + time::Duration::days(365)),
                "activated_at": null, "warranty": false, "transferable": true, "bound_device_sn": null,
                "created_at": ts(now - time::Duration::days(10)), "order_short_id": "ORD-900", "partner": {"id": 3, "name": "Acme AV"},
                "device": null, "product": product, "device_model": null}));
        }
        self.edges.push(json!({"id": "edge-berlin-1", "name": "Berlin rack gateway", "status": "online", "space_id": self.root_space + 1}));
        for (i, name) in ["Spare projector lamp", "Wireless presenter", "HDMI switcher", "Touch panel", "USB-C dock"]
            .iter()
            .enumerate()
        {
            self.assets.push(json!({"id": 300 + i, "name": name, "serial_number": format!("AS-{:04}", i * 37),
                "space_id": self.root_space + 1, "purchased_at": ts(now - time::Duration::days(200)), "comments": null,
                "manufacturer": {"id": 1, "name": "Various"}, "device_model": null, "device_type": {"id": 2, "name": "Accessory"},
                "status": {"id": 1, "name": "In use"}}));
        }
        if let Some(d) = self.devices.first() {
            let (id, space) = (d.id.clone(), d.space_id);
            self.add_note("device", &id, "Lamp replaced in March; next check in September.", now);
            self.add_note("space", &space.to_string(), "Room is booked for the board every Monday 9–11.", now);
        }
    }

    pub fn add_note(&mut self, kind: &str, owner: &str, content: &str, now: OffsetDateTime) -> Value {
        let note = json!({"id": self.next_note_id, "kind": kind, "owner_id": owner, "content": content,
                          "created_by": null, "created_at": ts(now)});
        self.next_note_id += 1;
        self.notes.push(note.clone());
        note
    }

    pub fn space(&self, id: i64) -> Option<&SimSpace> {
        self.space_index.get(&id).map(|&i| &self.spaces[i])
    }

    pub fn space_mut(&mut self, id: i64) -> Option<&mut SimSpace> {
        self.space_index.get(&id).map(|&i| &mut self.spaces[i])
    }

    pub fn remove_space(&mut self, id: i64) -> bool {
        let Some(i) = self.space_index.remove(&id) else { return false };
        self.spaces.remove(i);
        self.space_index = self.spaces.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        true
    }

    pub fn remove_device(&mut self, id: &str) -> bool {
        let Some(i) = self.device_index.remove(id) else { return false };
        self.devices.remove(i);
        self.device_index = self.devices.iter().enumerate().map(|(i, d)| (d.id.clone(), i)).collect();
        self.commands.remove(id);
        true
    }

    pub fn add_device(&mut self, device: SimDevice) {
        self.device_index.insert(device.id.clone(), self.devices.len());
        self.devices.push(device);
    }

    pub fn device(&self, id: &str) -> Option<&SimDevice> {
        self.device_index.get(id).map(|&i| &self.devices[i])
    }

    pub fn device_json(&self, d: &SimDevice) -> Value {
        let model = &self.models[d.model];
        let space_path = self.space(d.space_id).map(|s| s.full_path.clone()).unwrap_or_default();
        let effective = match d.status.as_str() {
            "online" => "ok",
            "error" => "error",
            _ => "offline",
        };
        let mut v = json!({
            "id": d.id, "name": d.name, "sn": d.sn, "mac": d.mac, "cloud_id": d.cloud_id, "status": d.status,
            "effective_status": effective, "merged_effective_status": effective, "last_seen_at": ts(d.last_seen_at),
            "details": d.details, "state": d.state,
            "model": {"id": model.id, "name": model.spec.name, "sub_model": null},
            "firmware": {"version": d.firmware}, "space": {"id": d.space_id, "full_path": space_path},
        });
        if let Value::Object(map) = &mut v {
            for (k, val) in &d.extra {
                map.insert(k.clone(), val.clone());
            }
        }
        v
    }

    /// Ids of the space and every space below it.
    pub fn space_and_below(&self, id: i64) -> Vec<i64> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(self.spaces.iter().filter(|s| s.parent_id == Some(parent)).map(|s| s.id));
            i += 1;
        }
        out
    }

    fn open_incident(&mut self, idx: usize, at: OffsetDateTime) {
        let id = self.rng.uuid();
        let d = &self.devices[idx];
        let spec = &MODELS[d.model];
        let space = self.space(d.space_id);
        let incident = json!({
            "id": id, "status": "active", "priority": spec.offline_priority,
            "title": format!("{} is {}", d.name, d.status), "description": null, "issue": d.status.clone(),
            "device_id": d.id, "device_name": d.name, "device_model": spec.name, "sub_model": null, "partner_name": "Acme AV",
            "space_id": d.space_id, "space_tree_path_name": space.map(|s| s.full_path.clone()),
            "space_name": space.map(|s| s.name.clone()), "created_at": ts(at), "updated_at": ts(at),
        });
        self.incidents.push(incident);
    }

    fn close_incidents_of(&mut self, device_id: &str, at: OffsetDateTime) {
        for inc in self.incidents.iter_mut() {
            if inc["device_id"] == device_id && inc["status"] == "active" {
                inc["status"] = json!("closed");
                inc["updated_at"] = json!(ts(at));
            }
        }
    }

    /// A status change ordered from outside (tests, the control plane): applied like telemetry, and kept — the
    /// clock's churn no longer touches this device.
    pub fn hold_device_status(&mut self, id: &str, status: &str) -> bool {
        let done = self.set_device_status(id, status);
        if let Some(&idx) = self.device_index.get(id)
            && done
        {
            self.devices[idx].held = true;
        }
        done
    }

    /// Changes a device's reported status as telemetry would: history row, `last_seen_at`, incidents.
    pub fn set_device_status(&mut self, id: &str, status: &str) -> bool {
        let Some(&idx) = self.device_index.get(id) else { return false };
        if !matches!(status, "online" | "offline" | "error") {
            return false;
        }
        let now = OffsetDateTime::now_utc();
        let was = std::mem::replace(&mut self.devices[idx].status, status.to_string());
        self.devices[idx].state.insert("status".into(), json!(status));
        if status == "online" {
            self.devices[idx].last_seen_at = now;
        }
        if was != status {
            self.push_history(idx, status, now);
            if status == "online" {
                self.close_incidents_of(id, now);
            } else if was == "online" {
                self.open_incident(idx, now);
            }
        }
        true
    }

    /// A presets file for the first `rooms` meeting rooms, built from what their devices' models accept:
    /// `start` powers on (or wakes), selects HDMI 1 and unmutes; `shutdown` powers off (or sleeps). The demo writes
    /// it so presets work out of the box; every step may fail on its own without stopping the room.
    pub fn demo_presets(&self, rooms: usize) -> Value {
        let mut out = Map::new();
        for room in self.spaces.iter().filter(|s| s.space_type == "room").take(rooms) {
            let (mut start, mut shutdown) = (vec![], vec![]);
            for d in self.devices.iter().filter(|d| d.space_id == room.id) {
                let names: Vec<String> = (MODELS[d.model].commands)()
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect();
                let has = |n: &str| names.iter().any(|c| c == n);
                let step = |command: &str, extra: Value| {
                    let mut s = json!({"device_id": d.id, "command": command, "continue_on_error": true});
                    if !extra.is_null() {
                        s["extra_params"] = extra;
                    }
                    s
                };
                if let Some(on) = ["power_on", "wake"].into_iter().find(|c| has(c)) {
                    start.push(step(on, Value::Null));
                }
                if has("select_input") {
                    start.push(step("select_input", json!({"input": "hdmi1"})));
                }
                if let Some(unmute) = ["unmute", "unmute_all"].into_iter().find(|c| has(c)) {
                    start.push(step(unmute, Value::Null));
                }
                if let Some(off) = ["power_off", "sleep"].into_iter().find(|c| has(c)) {
                    shutdown.push(step(off, Value::Null));
                }
            }
            if !start.is_empty() && !shutdown.is_empty() {
                out.insert(
                    room.name.clone(),
                    json!({"space_id": room.id, "presets": {"start": start, "shutdown": shutdown}}),
                );
            }
        }
        // The first room's schedules, there to be seen and tried (list_schedules, the dashboard, run_schedule_now)
        // but disabled: a demo must not drive rooms by itself at 07:45, nor a test that counts commands.
        let schedules: Vec<Value> = out
            .keys()
            .take(1)
            .flat_map(|room| {
                [
                    json!({"name": "morning start", "room": room, "preset": "start", "at": "07:45",
                           "days": ["weekdays"], "enabled": false}),
                    json!({"name": "evening shutdown", "room": room, "preset": "shutdown", "at": "19:00",
                           "enabled": false}),
                ]
            })
            .collect();
        json!({"rooms": out, "schedules": schedules})
    }

    /// One step of the world clock.
    pub fn step(&mut self) {
        self.tick += 1;
        let now = OffsetDateTime::now_utc();
        let tick = self.tick;
        let mut effects = Vec::new();
        for (device_id, list) in self.commands.iter_mut() {
            for c in list.iter_mut().filter(|c| !c.is_terminal() && c.next_step <= tick) {
                match c.status.as_str() {
                    "pending" | "scheduled" => {
                        c.status = "in_progress".into();
                        c.next_step = tick + 1 + self.rng.below(2) as u64;
                    }
                    _ if self.rng.chance(0.1) => {
                        c.status = "failed".into();
                        c.message = Some("Device reported an error executing the command".into());
                    }
                    _ => {
                        c.status = "done".into();
                        c.message = Some("OK".into());
                        effects.push((device_id.clone(), c.name.clone(), c.params.clone()));
                    }
                }
                c.updated_at = now;
            }
        }
        for (device_id, name, params) in effects {
            self.apply_effect(&device_id, &name, &params);
        }
        if self.churn {
            for idx in 0..self.devices.len() {
                let status = self.devices[idx].status.clone();
                let change = match status.as_str() {
                    _ if self.devices[idx].held => None,
                    "online" if self.rng.chance(0.002) => Some(if self.rng.chance(0.8) { "offline" } else { "error" }),
                    "offline" | "error" if self.rng.chance(0.05) => Some("online"),
                    _ => None,
                };
                if let Some(next) = change {
                    let id = self.devices[idx].id.clone();
                    self.set_device_status(&id, next);
                } else if status == "online" {
                    self.devices[idx].last_seen_at = now;
                }
            }
        }
    }

    /// What a finished command does to the device's state, so a dashboard sees "power_off" take effect.
    fn apply_effect(&mut self, device_id: &str, command: &str, params: &Value) {
        let Some(&idx) = self.device_index.get(device_id) else { return };
        let state = &mut self.devices[idx].state;
        match command {
            "power_on" | "wake" => {
                state.insert("power".into(), json!("on"));
            }
            "power_off" | "sleep" => {
                state.insert("power".into(), json!("standby"));
            }
            "mute" | "mute_all" => {
                state.insert("muted".into(), json!(true));
            }
            "unmute" | "unmute_all" => {
                state.insert("muted".into(), json!(false));
            }
            _ => {
                if let Value::Object(p) = params {
                    for (k, v) in p {
                        let key = if k == "level" { "volume" } else { k.as_str() };
                        state.insert(key.into(), v.clone());
                    }
                }
            }
        }
    }
}
