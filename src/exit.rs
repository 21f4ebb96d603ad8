//! sysexits(3) codes used across the binary.

pub const OK: u8 = 0;
pub const USAGE: u8 = 64;
/// The input file is not what it must be (`restore` of a foreign, truncated or damaged file).
pub const DATA_ERROR: u8 = 65;
pub const UNAVAILABLE: u8 = 69;
pub const SOFTWARE: u8 = 70;
/// A file the user named could not be written (`diagnose --to`).
pub const IO_ERROR: u8 = 74;
/// Try again later: the state directory is in use by a running daemon (`restore`, a second `serve`).
pub const TEMPFAIL: u8 = 75;
pub const NO_PERMISSION: u8 = 77;
pub const CONFIG: u8 = 78;
