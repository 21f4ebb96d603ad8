//! MCP for local agents (SPEC §6): the protocol of both eras, independent of the transport ([`session`]), the Unix
//! socket transport ([`unix`]) and the stdio bridge ([`bridge`]). [`fixtures`] holds the conformance suite's test-only
//! fixtures, served only with `XYTE_CONFORMANCE_FIXTURES=1`.

pub mod bridge;
pub mod fixtures;
pub mod jsonrpc;
pub mod mrtr;
pub mod outgoing;
pub mod session;
pub mod unix;

pub const SERVER_NAME: &str = "xyte-edge";
pub const LEGACY_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
pub const MODERN_VERSION: &str = "2026-07-28";
/// Largest accepted message (SPEC §6.2).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Requests a connection may have in flight (running, or answered but waiting for room in the connection's queue)
/// before the daemon stops reading from it (README). With [`outgoing::QUEUE_BYTES`] this bounds what one client that
/// does not read can make the daemon hold.
pub const MAX_IN_FLIGHT: usize = 16;
