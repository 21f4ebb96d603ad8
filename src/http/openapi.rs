//! OpenAPI 3.1 document generated from the operation catalogue (SPEC §7.2), and the self-contained docs page.
