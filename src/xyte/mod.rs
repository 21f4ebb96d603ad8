//! The Xyte Organization API client: typed models, endpoints with pagination and 31-day history windows,
//! retries for idempotent calls only, 429 handling, one priority token bucket, and the error mapping
//! (docs/architecture.md, Errors).

mod client;
pub mod endpoints;
mod limiter;
pub mod model;
mod transport;

pub use client::{
    ClientConfig, Credential, HistoryQuery, IncidentQuery, SendCommand, XyteClient, has_more, history_windows,
};
pub use endpoints::segment;
pub use limiter::Priority;
pub use model::*;
pub use transport::{map_status, parse_retry_after};
