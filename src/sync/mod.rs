//! Background work that keeps the local picture current: the poller (Xyte → cache).
pub mod poller;
