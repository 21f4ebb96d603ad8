//! MCP for local agents (SPEC §6): the protocol of both eras, independent of the transport ([`session`]), the Unix
//! socket transport ([`unix`]) and the stdio bridge ([`bridge`]). [`fixtures`] holds the conformance suite's test-only
//! fixtures, served only with `XYTE_CONFORMANCE_FIXTURES=1`.

pub mod bridge;
pub mod fixtures;
pub mod jsonrpc;
pub mod mrtr;
pub mod session;
pub mod unix;

pub const SERVER_NAME: &str = "xyte-edge";
pub const LEGACY_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
pub const MODERN_VERSION: &str = "2026-07-28";
/// Largest accepted message (SPEC §6.2).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Requests a connection may have in flight before the daemon stops reading from it.
pub const MAX_IN_FLIGHT: usize = 64;
