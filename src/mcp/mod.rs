//! MCP for local agents: the protocol of both eras, independent of the transport ([`session`]), the Unix
//! socket transport ([`unix`]) and the stdio bridge ([`bridge`]). A session also serves the app's [`Extension`]:
//! nothing, or the conformance suite's test fixtures (`fixtures`, only with the cargo feature `conformance-fixtures`).

use std::sync::Arc;

use serde_json::{Map, Value};

pub mod bridge;
/// Test code, kept beside the conformance run that needs it rather than in the daemon's source.
#[cfg(feature = "conformance-fixtures")]
#[path = "../../tests/interop/conformance_fixtures.rs"]
pub mod fixtures;
pub mod jsonrpc;
pub mod mrtr;
pub mod outgoing;
pub mod session;
pub mod unix;

pub const SERVER_NAME: &str = "xyte-edge";
pub const LEGACY_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
pub const MODERN_VERSION: &str = "2026-07-28";
/// Largest accepted message.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Requests a connection may have in flight (running, or answered but waiting for room in the connection's queue)
/// before the daemon stops reading from it (README). With [`outgoing::QUEUE_BYTES`] this bounds what one client that
/// does not read can make the daemon hold.
pub const MAX_IN_FLIGHT: usize = 16;

/// Tools, resources and prompts served after the catalogue's own (given to each `Session`); every method defaults to none,
/// as `()` keeps. A session runs the tools and prompts it lists through [`Extension::run`], with MRTR in 2026-07-28.
pub trait Extension: Send + Sync {
    /// Its entries of a `kind` of list: `tools`, `resources`, `resourceTemplates` or `prompts`.
    fn list(&self, _kind: &str, _modern: bool) -> Vec<Value> {
        Vec::new()
    }
    /// The `contents` of one of its resources, or `None` if `uri` is not one.
    fn read(&self, _uri: &str) -> Option<Value> {
        None
    }
    /// Runs one of its tools (`method` is `tools/call`) or prompts (`prompts/get`).
    fn run<'a>(&'a self, _method: &'a str, name: &'a str, _call: &'a Call<'a>) -> Running<'a> {
        Box::pin(std::future::ready(Err(jsonrpc::RpcError::new(jsonrpc::INVALID_PARAMS, format!("unknown: {name}")))))
    }
    /// A resource of its own that changes by itself, and how often: subscribers are told at that pace.
    fn watched(&self) -> Option<(&'static str, std::time::Duration)> {
        None
    }
}

impl Extension for () {}

/// What [`Extension::run`] returns.
pub type Running<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Outcome, jsonrpc::RpcError>> + Send + 'a>>;

/// What an extension's tool or prompt answers: a result, or (modern era only) a request for input from the client.
pub enum Outcome {
    Complete(Value),
    InputRequired { requests: Map<String, Value>, state: Option<Value> },
}

/// One call of an extension's tool or prompt, with what the session knows about the request.
pub struct Call<'a> {
    pub args: &'a Map<String, Value>,
    /// MRTR `inputResponses` (already checked to be objects); empty on a first call and in the legacy era.
    pub responses: &'a Map<String, Value>,
    /// The opened MRTR `requestState`, if the client echoed a valid one.
    pub state: Option<&'a Value>,
    /// The modern era's declared client capabilities (`{}` in the legacy era).
    pub caps: &'a Value,
    /// Set when the request carried a progress token.
    pub progress: Option<crate::runtime::Progress>,
    /// Sends a `notifications/message` tied to this request, if the client's log level lets it through.
    pub log: &'a (dyn Fn(&str, Value) + Send + Sync),
}

/// The extension for `XYTE_CONFORMANCE_FIXTURES=1` (`on`): the conformance suite's fixtures in a build with the cargo
/// feature `conformance-fixtures`; a build without it has none and ignores the switch with a warning.
pub fn extension(on: bool) -> Arc<dyn Extension> {
    #[cfg(feature = "conformance-fixtures")]
    if on {
        tracing::warn!("XYTE_CONFORMANCE_FIXTURES=1: MCP also serves the conformance suite's TEST fixtures (test_*)");
        return Arc::new(fixtures::Fixtures);
    }
    if on {
        tracing::warn!("XYTE_CONFORMANCE_FIXTURES=1 ignored: built without the cargo feature conformance-fixtures");
    }
    Arc::new(())
}
