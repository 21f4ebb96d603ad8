//! Multi round-trip requests (MRTR, SEP-2322, protocol 2026-07-28): a `tools/call` or `prompts/get` may answer
//! `{resultType: "input_required", inputRequests, requestState}`, and the client retries the same call with
//! `inputResponses` and the echoed `requestState`.
//!
//! `requestState` comes back from the client, so it is attacker-controlled input. It is sealed here with
//! HMAC-SHA256 under a key drawn at process start (state does not survive a restart, which MRTR tolerates: the
//! server simply asks again), and bound to the principal, the method, the tool or prompt name and an expiry. A state
//! that fails any of these checks is refused with `-32602`; it is never "re-asked", so tampering is visible.

use std::sync::OnceLock;

use ring::hmac;
use serde_json::{Value, json};

/// How long a client may take to answer an input request.
const STATE_TTL_MS: i64 = 10 * 60 * 1000;

fn key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the operating system's random number generator works")
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// A short random string, so two states for the same step never look alike.
pub fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    hex(&bytes)
}

/// Who and what a state belongs to.
pub struct Binding<'a> {
    pub principal: &'a str,
    pub method: &'a str,
    /// The tool or prompt name.
    pub name: &'a str,
}

/// Seals `state` into an opaque `requestState` string.
pub fn seal(binding: &Binding, state: &Value, now_ms: i64) -> String {
    let payload = json!({
        "p": binding.principal,
        "m": binding.method,
        "n": binding.name,
        "exp": now_ms + STATE_TTL_MS,
        "s": state,
    })
    .to_string();
    let tag = hmac::sign(key(), payload.as_bytes());
    format!("{}.{}", hex(payload.as_bytes()), hex(tag.as_ref()))
}

/// Opens a `requestState` made by [`seal`] for the same binding; the error says why it is refused.
pub fn open(binding: &Binding, token: &str, now_ms: i64) -> Result<Value, &'static str> {
    let (payload, tag) = token.split_once('.').ok_or("requestState was not issued by this server")?;
    let (payload, tag) = match (unhex(payload), unhex(tag)) {
        (Some(p), Some(t)) => (p, t),
        _ => return Err("requestState was not issued by this server"),
    };
    hmac::verify(key(), &payload, &tag).map_err(|_| "requestState failed its integrity check")?;
    let sealed: Value = serde_json::from_slice(&payload).map_err(|_| "requestState failed its integrity check")?;
    let bound = sealed["p"] == binding.principal && sealed["m"] == binding.method && sealed["n"] == binding.name;
    if !bound {
        return Err("requestState belongs to another caller or request");
    }
    if sealed["exp"].as_i64().is_none_or(|exp| exp < now_ms) {
        return Err("requestState has expired; call again without it");
    }
    Ok(sealed["s"].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Binding = Binding { principal: "token:a", method: "tools/call", name: "t" };

    #[test]
    fn sealed_state_opens_only_untouched_for_its_binding_and_in_time() {
        let state = json!({"round": 1, "nonce": nonce()});
        let token = seal(&B, &state, 1_000);
        assert_eq!(open(&B, &token, 2_000), Ok(state));
        assert!(open(&B, &format!("{token}-TAMPERED"), 2_000).is_err());
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", payload.replace("31", "32"));
        assert_eq!(open(&B, &forged, 2_000), Err("requestState failed its integrity check"));
        let other = Binding { principal: "token:b", ..B };
        assert!(open(&other, &token, 2_000).is_err());
        let other = Binding { name: "u", ..B };
        assert!(open(&other, &token, 2_000).is_err());
        assert!(open(&B, &token, 1_000 + STATE_TTL_MS + 1).is_err());
        assert!(open(&B, "not-a-state", 2_000).is_err());
        assert_ne!(seal(&B, &json!({"nonce": nonce()}), 0), seal(&B, &json!({"nonce": nonce()}), 0));
    }
}
