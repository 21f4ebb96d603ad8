//! Xyte simulator (SPEC §10).
