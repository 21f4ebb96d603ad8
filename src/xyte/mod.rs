//! The Xyte Organization API client (SPEC §4).
