//! THE catalogue: every operation the daemon offers, defined once — name, description, input and output
//! schemas, annotations, required role, handler — and served identically over MCP, REST and OpenAPI. Front doors
//! authenticate a `Principal`, build a [`Ctx`] and call [`call`]; they never reach Xyte or SQL themselves.

mod admin;
mod alerts;
mod analytics;
mod answer;
mod catalogue;
mod commands;
mod devices;
mod endpoints;
mod fleet;
pub mod prompts;
pub mod resources;
pub mod rooms;
pub mod schedules;
pub mod schema;
mod tasks;
mod tickets;

use serde_json::{Value, json};

pub use answer::{Answer, Part};
pub use catalogue::{Access, CATALOGUE, Kind, Op, find};
pub use devices::summary as device_summary;

use crate::error::{Error, ErrorCode};
use crate::runtime::Ctx;
use crate::store::Durability;

/// [`answer`], as the document itself.
pub async fn call(ctx: &Ctx, name: &str, args: Value) -> Result<Value, Error> {
    answer(ctx, name, args).await.map(Answer::into_value)
}

/// Calls operation `name` with `args` for `ctx.principal`: checks the role and read-only mode, runs the handler,
/// and writes an audit record for every mutating call (dry runs included). Every call is counted by outcome. Front
/// doors that write the answer as JSON take it as it is ([`Answer`]).
pub async fn answer(ctx: &Ctx, name: &str, args: Value) -> Result<Answer, Error> {
    let Some(op) = find(name) else {
        // The metric's tool label is bounded: the catalogue's name, or `unknown` for a name a caller made up.
        crate::metrics::tool_call("unknown", ErrorCode::InvalidParams.as_str());
        return Err(Error::invalid_params(format!("unknown tool {name:?}")));
    };
    let args = if args.is_null() { json!({}) } else { args };
    let dry_run = args.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
    let outcome = crate::cache::within_revalidate_wait(checked_call(ctx, op, &args, dry_run)).await;
    let label = match &outcome {
        Ok(_) if dry_run => "dry_run",
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    crate::metrics::tool_call(op.name, label);
    outcome
}

async fn checked_call(ctx: &Ctx, op: &Op, args: &Value, dry_run: bool) -> Result<Answer, Error> {
    // What every call of `op` needs is checked before its arguments are parsed, what this one needs after.
    admit(ctx, op.name, op.least)?;
    let (mutating, outcome) = match op.prepare(ctx, args) {
        Ok(call) => {
            admit(ctx, op.name, call.access)?;
            (call.access.mutating, call.run.answer().await)
        }
        Err(e) => (op.least.mutating, Err(e)),
    };
    if mutating {
        audit(ctx, op.name, args, dry_run, &outcome).await;
    }
    outcome
}

/// Refuses a call the caller's role does not allow, or a mutating call on a read-only gateway.
fn admit(ctx: &Ctx, name: &str, needs: Access) -> Result<(), Error> {
    if ctx.principal.role < needs.role {
        return Err(Error::new(
            ErrorCode::PermissionDenied,
            format!("{name} needs the {} role; {} has {}", needs.role, ctx.principal.id, ctx.principal.role),
        ));
    }
    if needs.mutating && ctx.app.read_only {
        return Err(Error::new(ErrorCode::ReadOnly, format!("{name} is refused: XYTE_READ_ONLY=true on this gateway")));
    }
    Ok(())
}

async fn audit(ctx: &Ctx, tool: &str, args: &Value, dry_run: bool, outcome: &Result<Answer, Error>) {
    let (result, code) = match outcome {
        Ok(_) if dry_run => ("dry_run", None),
        Ok(_) => ("ok", None),
        Err(e) => ("error", Some(e.code.as_str())),
    };
    let (principal, tool, args) = (ctx.principal.id.clone(), tool.to_string(), redact(args));
    let now = crate::store::now_ms();
    let written = ctx
        .app
        .store
        .write(Durability::Normal, move |c| {
            crate::store::context::audit(c, now, &principal, &tool, &args, result, code)
        })
        .await;
    if let Err(e) = written {
        tracing::error!(error = %e, "could not write the audit record");
    }
}

/// Argument names that may carry secrets are never stored.
fn redact(args: &Value) -> Value {
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    // `key` alone names a catalogue entry (xyte_api_call); `api_key`, `access_key`… are secrets.
                    let k = k.to_lowercase();
                    let secret = ["password", "secret", "token", "authorization", "_key", "apikey"]
                        .iter()
                        .any(|s| k.contains(s));
                    (k.clone(), if secret { json!("***") } else { redact(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Results are capped (default 50, at most 500) with an opaque cursor to continue; why: docs/architecture.md,
/// "What every operation promises".
pub fn page<T: Clone>(
    items: &[T],
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<T>, Option<String>, usize), Error> {
    let limit = limit.unwrap_or(50).clamp(1, 500) as usize;
    let start = match cursor {
        None | Some("") => 0,
        Some(c) => c.parse::<usize>().map_err(|_| Error::invalid_params(format!("invalid cursor {c:?}")))?,
    };
    let start = start.min(items.len());
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next, items.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_caps_and_continues() {
        let items: Vec<u32> = (0..120).collect();
        let (p, next, left) = page(&items, None, None).unwrap();
        assert_eq!((p.len(), next.as_deref(), left), (50, Some("50"), 70));
        let (p, next, left) = page(&items, Some(1000), Some("100")).unwrap();
        assert_eq!((p, next, left), ((100..120).collect::<Vec<_>>(), None, 0));
        assert!(page(&items, None, Some("abc")).is_err());
    }

    #[test]
    fn secrets_are_redacted_from_audit_arguments() {
        let v = redact(&json!({"key": "devices.move", "body": {"api_key": "k", "nested": [{"password": "p"}]}}));
        assert_eq!(v, json!({"key": "devices.move", "body": {"api_key": "***", "nested": [{"password": "***"}]}}));
    }
}
