//! xyte-edge: an edge daemon for Xyte organizations. See README.md and DESIGN.md for the map.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod ops;
pub mod plugins;
pub mod sim;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod telemetry;
pub mod xyte;
