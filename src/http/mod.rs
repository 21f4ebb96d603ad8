//! LAN HTTP (SPEC §7): TLS and loopback listeners, bearer-token principals, REST mapped onto the operation
//! catalogue, Streamable HTTP MCP, SSE, the webhook, health, metrics and the OpenAPI document. Nothing here reaches
//! Xyte or SQL except through `ops` and the store's typed functions.

pub mod openapi;
