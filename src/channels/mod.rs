//! Where alerts go (the alerts issue, being built: nothing sends through these yet): one sender per channel type,
//! each bounded in time and answering "delivered" or why not, so the caller can retry with backoff or give up. What a
//! message says is `alerts::message`; which alerts exist is `alerts`.

pub mod email;
pub mod http;
pub mod syslog;
