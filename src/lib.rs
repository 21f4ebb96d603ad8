//! xyte-edge: an edge daemon for Xyte organizations. README.md says what it does; docs/architecture.md is the map.
// No unsafe code, except the one audited call into the C library in `heap` (it says why).
#![deny(unsafe_code)]

/// Alerts, the decisions: which alerts fire, repeat, resolve or wait in a silence, and how they are grouped (being
/// built: not wired yet).
pub mod alerter;
pub mod alerts;
pub mod app;
pub mod backup;
pub mod cache;
pub mod channels;
pub mod cli;
pub mod config;
pub mod copies;
pub mod error;
pub mod events;
pub mod exit;
pub mod heap;
pub mod http;
pub mod log_writer;
pub mod mcp;
pub mod metrics;
pub mod ops;
pub mod plugins;
pub mod runtime;
/// The time side of room schedules: when a schedule runs, in its time zone, with daylight saving, holidays and
/// exceptions.
pub mod schedule;
pub mod scheduler;
pub mod sim;
pub mod stall;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod telemetry;
pub mod tls_client;
pub mod uplink;
pub mod xyte;
