//! Background work that keeps the local picture current: the poller (Xyte → cache → events), the forwarder
//! (outbox → Xyte) and retention (keeps the event log bounded).
pub mod forwarder;
pub mod poller;
pub mod retention;
