//! The time of room schedules ([`when`]: when a schedule runs, in its zone, with daylight-saving rules, exceptions
//! and holidays) and what happens to due times that came while nobody was looking ([`plan`]: fire the latest within
//! the grace period, skip the rest with the reason). Pure computation: no clock, no store, no I/O beyond reading the
//! tz database once per zone; the caller passes the instants, so tests and the scheduler (`scheduler.rs`, which
//! fires runs through `ops::schedules`) inject time.

pub mod plan;
pub mod when;

pub use when::{When, WhenError, WhenSpec, parse_date, parse_dates};
