//! Room schedules (issue 26), so far only their time ([`when`]). Pure computation: no clock, no store, no I/O beyond
//! reading the tz database once per zone; the caller passes the instant to start from, so tests and the scheduler
//! inject time.

pub mod when;

pub use when::{When, WhenError, WhenSpec, parse_date, parse_dates};
