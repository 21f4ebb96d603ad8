//! Room schedules on an injected clock (issue: room schedules): the scheduler is driven as its task drives itself —
//! a pass, then the clock set to the next due time it names — over daylight-saving days in two zones, weeks with
//! holidays and exceptions, pauses, a daemon that was down, clocks that jump forward and back, and a clock that says
//! 1970. A real store and simulator under it; only the time is the test's. What fired and what was skipped is read
//! from the event log, as every consumer reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};
use xyte_edge::config::Role;
use xyte_edge::config::presets::Presets;
use xyte_edge::runtime::{Ctx, Principal};
use xyte_edge::scheduler::{Clock, Scheduler};
use xyte_edge::store::events::{self, EventFilter};

mod support;

struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

fn ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

struct Setup {
    rig: support::Rig,
    clock: Arc<ManualClock>,
    scheduler: Scheduler,
}

/// A rig whose presets file has one room (two steps on simulated devices) and `schedules`, the clock at `start`.
async fn setup(schedules: Value, holidays: Value, start: &str) -> Setup {
    let rig = support::rig(false).await;
    let devices = rig.sim.sim.device_ids();
    let file = rig._dir.path().join("presets.json");
    let presets = json!({
        "rooms": {"Board Room": {"presets": {"start": [
            {"device_id": devices[0], "command": "reboot"},
            {"device_id": devices[1], "command": "reboot", "continue_on_error": true}]}}},
        "holidays": holidays,
        "schedules": schedules,
    });
    std::fs::write(&file, presets.to_string()).unwrap();
    let loaded = Presets::load(&file).unwrap();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    rig.app.set_presets(loaded);
    let clock = Arc::new(ManualClock(AtomicI64::new(ms(start))));
    let scheduler = Scheduler::new(rig.app.clone(), clock.clone());
    Setup { rig, clock, scheduler }
}

impl Setup {
    /// Runs the scheduler as its task would until the clock passes `until`: a pass, then the clock moved to the next
    /// due time the pass named.
    async fn run_until(&self, until: &str) {
        let until = ms(until);
        loop {
            let next = self.scheduler.pass().await.unwrap();
            match next {
                Some(n) if n <= until => {
                    assert!(n > self.clock.now_ms(), "the next due time is after now");
                    self.clock.set(n);
                }
                _ => break,
            }
        }
        self.clock.set(until);
        self.scheduler.pass().await.unwrap();
    }

    /// The clock jumps (a daemon started after downtime, or a clock corrected) and one pass runs.
    async fn jump(&self, to: &str) {
        self.clock.set(ms(to));
        self.scheduler.pass().await.unwrap();
    }

    async fn events(&self, kind: &str) -> Vec<Value> {
        let filter = EventFilter { kinds: vec![kind.to_string()], device_id: None };
        let list = self.rig.app.store.read(move |c| events::after(c, 0, &filter, 10_000)).await.unwrap();
        list.into_iter().map(|e| e.data).collect()
    }

    /// `(schedule, due_at)` of every run fired.
    async fn fired(&self) -> Vec<(String, String)> {
        let fired = self.events("schedule.fired").await;
        fired.iter().map(|d| (d["schedule"].as_str().unwrap().into(), d["due_at"].as_str().unwrap().into())).collect()
    }

    fn operator(&self) -> Ctx {
        Ctx {
            app: self.rig.app.clone(),
            principal: Principal { id: "test:op".into(), role: Role::Operator },
            progress: None,
        }
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn berlin_runs_at_the_end_of_the_spring_gap_and_once_in_the_autumn_fold() {
    let s = setup(
        json!([
            {"name": "night", "room": "Board Room", "preset": "start", "at": "02:30", "timezone": "Europe/Berlin"},
            {"name": "morning", "room": "Board Room", "preset": "start", "cron": "45 7 * * 1-5",
             "timezone": "Europe/Berlin"},
        ]),
        json!([]),
        "2027-03-26T12:00:00Z",
    )
    .await;
    s.run_until("2027-03-30T12:00:00Z").await;
    // 02:30 does not exist on 28 March 2027 (clocks go from 02:00 to 03:00): it runs at 03:00 CEST, 01:00 UTC.
    let fired = sorted_by_due(s.fired().await);
    assert_eq!(
        fired,
        pairs(&[
            ("night", "2027-03-27T01:30:00Z"),
            ("night", "2027-03-28T01:00:00Z"),
            ("night", "2027-03-29T00:30:00Z"),
            ("morning", "2027-03-29T05:45:00Z"),
            ("night", "2027-03-30T00:30:00Z"),
            ("morning", "2027-03-30T05:45:00Z"),
        ])
    );
    // 02:30 happens twice on 31 October 2027 (03:00 CEST becomes 02:00 CET): it runs once, at the first.
    s.jump("2027-10-29T12:00:00Z").await;
    let before = s.fired().await.len();
    s.run_until("2027-11-01T12:00:00Z").await;
    let autumn: Vec<_> =
        sorted_by_due(s.fired().await[before..].to_vec()).into_iter().filter(|(n, _)| n == "night").collect();
    assert_eq!(
        autumn,
        pairs(&[
            ("night", "2027-10-30T00:30:00Z"),
            ("night", "2027-10-31T00:30:00Z"),
            ("night", "2027-11-01T01:30:00Z"),
        ])
    );
}

fn sorted_by_due(mut list: Vec<(String, String)>) -> Vec<(String, String)> {
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list
}

#[tokio::test]
async fn new_york_cron_runs_after_the_spring_gap_and_once_in_the_autumn_fold() {
    let s = setup(
        json!([
            {"name": "gap", "room": "Board Room", "preset": "start", "cron": "30 2 * * *",
             "timezone": "America/New_York"},
            {"name": "fold", "room": "Board Room", "preset": "start", "cron": "30 1 * * *",
             "timezone": "America/New_York"},
        ]),
        json!([]),
        "2027-03-13T00:00:00Z",
    )
    .await;
    s.run_until("2027-03-15T12:00:00Z").await;
    // 14 March 2027: 02:00 EST becomes 03:00 EDT, so 02:30 runs at 03:00 EDT (07:00 UTC).
    assert_eq!(
        sorted_by_due(s.fired().await),
        pairs(&[
            ("fold", "2027-03-13T06:30:00Z"),
            ("gap", "2027-03-13T07:30:00Z"),
            ("fold", "2027-03-14T06:30:00Z"),
            ("gap", "2027-03-14T07:00:00Z"),
            ("fold", "2027-03-15T05:30:00Z"),
            ("gap", "2027-03-15T06:30:00Z"),
        ])
    );
    // 7 November 2027: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice and runs once, at the first (EDT).
    s.jump("2027-11-06T00:00:00Z").await;
    let before = s.fired().await.len();
    s.run_until("2027-11-08T12:00:00Z").await;
    let autumn: Vec<_> =
        sorted_by_due(s.fired().await[before..].to_vec()).into_iter().filter(|(n, _)| n == "fold").collect();
    assert_eq!(
        autumn,
        pairs(&[("fold", "2027-11-06T05:30:00Z"), ("fold", "2027-11-07T05:30:00Z"), ("fold", "2027-11-08T06:30:00Z")])
    );
}

#[tokio::test]
async fn holidays_and_except_dates_do_not_run() {
    let s = setup(
        json!([{"name": "weekday-start", "room": "Board Room", "preset": "start", "at": "07:45",
                "days": ["weekdays"], "timezone": "Europe/Berlin", "except": ["2027-04-14"]}]),
        json!(["2027-04-16"]),
        "2027-04-11T12:00:00Z",
    )
    .await;
    s.run_until("2027-04-19T12:00:00Z").await;
    let days: Vec<String> = s.fired().await.into_iter().map(|(_, d)| d).collect();
    // Mon 12, Tue 13, (Wed 14 except), Thu 15, (Fri 16 holiday, the weekend), Mon 19; 07:45 CEST is 05:45 UTC.
    assert_eq!(days, ["2027-04-12T05:45:00Z", "2027-04-13T05:45:00Z", "2027-04-15T05:45:00Z", "2027-04-19T05:45:00Z"]);
    assert!(s.events("schedule.skipped").await.is_empty(), "days it does not run on are not skips");
}

#[tokio::test]
async fn a_paused_schedule_skips_its_due_times_until_resumed() {
    let s = setup(
        json!([{"name": "daily", "room": "Board Room", "preset": "start", "at": "08:00", "timezone": "UTC"}]),
        json!([]),
        "2027-05-03T07:00:00Z",
    )
    .await;
    s.scheduler.pass().await.unwrap();
    let ctx = s.operator();
    let paused = xyte_edge::ops::call(&ctx, "pause_schedule", json!({"name": "daily"})).await.unwrap();
    assert_eq!(paused["paused"]["by"], "test:op", "{paused}");
    s.run_until("2027-05-05T07:00:00Z").await;
    assert!(s.fired().await.is_empty(), "nothing fires while paused");
    let skipped = s.events("schedule.skipped").await;
    let reasons: Vec<(&str, &str)> =
        skipped.iter().map(|d| (d["due_at"].as_str().unwrap(), d["reason_code"].as_str().unwrap())).collect();
    assert_eq!(reasons, [("2027-05-03T08:00:00Z", "paused"), ("2027-05-04T08:00:00Z", "paused")]);
    let tasks: i64 =
        s.rig.app.store.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!(tasks, 0, "a paused schedule queues nothing");

    xyte_edge::ops::call(&ctx, "resume_schedule", json!({"name": "daily"})).await.unwrap();
    s.run_until("2027-05-05T09:00:00Z").await;
    assert_eq!(s.fired().await, pairs(&[("daily", "2027-05-05T08:00:00Z")]));
    let list = xyte_edge::ops::call(&ctx, "list_schedules", json!({})).await.unwrap();
    let item = &list["schedules"][0];
    assert_eq!(
        (item["paused"].clone(), item["last_run"]["due_at"].clone()),
        (Value::Null, json!("2027-05-05T08:00:00Z"))
    );
    assert_eq!(item["last_skip"]["reason_code"], "paused");
}

#[tokio::test]
async fn after_downtime_only_the_latest_due_time_within_grace_fires_and_a_clock_set_back_runs_nothing_twice() {
    let s = setup(
        json!([{"name": "daily", "room": "Board Room", "preset": "start", "at": "08:00", "timezone": "UTC"}]),
        json!([]),
        "2027-06-01T07:00:00Z",
    )
    .await;
    s.scheduler.pass().await.unwrap();
    // Down (or a clock corrected forward) from 1 June 07:00 to 4 June 08:05: three due times missed, one in grace.
    s.jump("2027-06-04T08:05:00Z").await;
    assert_eq!(s.fired().await, pairs(&[("daily", "2027-06-04T08:00:00Z")]));
    let fired = s.events("schedule.fired").await;
    assert_eq!(fired[0]["late_s"], 300);
    let skipped: Vec<(String, String)> = s
        .events("schedule.skipped")
        .await
        .iter()
        .map(|d| (d["due_at"].as_str().unwrap().into(), d["reason_code"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        skipped,
        pairs(&[
            ("2027-06-01T08:00:00Z", "missed"),
            ("2027-06-02T08:00:00Z", "missed"),
            ("2027-06-03T08:00:00Z", "missed")
        ])
    );
    // Again, beyond the grace period: nothing fires, the due times are skipped.
    s.jump("2027-06-06T08:20:00Z").await;
    assert_eq!(s.fired().await.len(), 1);
    assert_eq!(s.events("schedule.skipped").await.len(), 5);
    // The clock set back a day (a bad NTP answer): nothing runs again, and the next due time runs once the clock
    // reaches it.
    s.jump("2027-06-05T07:59:00Z").await;
    s.jump("2027-06-05T08:01:00Z").await;
    assert_eq!(s.fired().await.len(), 1, "6 June 08:00 was handled; 5 June 08:00 is not due again");
    s.run_until("2027-06-07T09:00:00Z").await;
    assert_eq!(sorted_by_due(s.fired().await).last().unwrap().1, "2027-06-07T08:00:00Z");
    assert_eq!(s.fired().await.len(), 2);
}

#[tokio::test]
async fn a_long_gap_of_a_frequent_schedule_is_summed_up_not_listed() {
    let s = setup(
        json!([{"name": "often", "room": "Board Room", "preset": "start", "cron": "*/5 * * * *", "timezone": "UTC"}]),
        json!([]),
        "2027-07-01T00:00:30Z",
    )
    .await;
    s.scheduler.pass().await.unwrap();
    s.jump("2027-07-01T10:00:30Z").await;
    // 120 due times passed: the last fires (30 s late), ten are listed as skipped, the other 109 summed in one.
    assert_eq!(s.fired().await, pairs(&[("often", "2027-07-01T10:00:00Z")]));
    let skipped = s.events("schedule.skipped").await;
    assert_eq!(skipped.len(), 11, "{skipped:?}");
    assert_eq!(
        (skipped[0]["count"].as_u64(), skipped[0]["first_due_at"].as_str()),
        (Some(109), Some("2027-07-01T00:05:00Z"))
    );
    let counted: u64 = skipped.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 119);
}

#[tokio::test]
async fn a_clock_before_this_release_is_not_trusted() {
    let s = setup(
        json!([{"name": "daily", "room": "Board Room", "preset": "start", "at": "08:00", "timezone": "UTC"}]),
        json!([]),
        "1970-01-01T00:00:10Z",
    )
    .await;
    assert_eq!(s.scheduler.pass().await.unwrap(), None);
    let rows: i64 =
        s.rig.app.store.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM schedules", [], |r| r.get(0))?)).await.unwrap();
    assert_eq!(rows, 0, "nothing recorded from a clock that says 1970");
    // Set by NTP: the schedule starts from then, without catching up on anything.
    s.jump("2027-08-02T07:00:00Z").await;
    s.run_until("2027-08-02T09:00:00Z").await;
    assert_eq!(s.fired().await, pairs(&[("daily", "2027-08-02T08:00:00Z")]));
    assert!(s.events("schedule.skipped").await.is_empty());
}
