//! SQLite store (DESIGN §3).
