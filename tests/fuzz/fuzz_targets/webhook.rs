//! `POST /v1/webhook` after hyper: the X-Signature-256 check, body parsing, event mapping and the durable commit
//! (`http::webhook::receive_signed`). Every answer must be 202, 400 or 401 — a 500 means a delivery the handler
//! accepted could not be stored — and a repeated accepted delivery must be recognised as a duplicate.
//!
//! Input: the first byte's bit 0 asks the harness to sign the body correctly (else the text up to the first `\n`
//! is the header and the rest the body), bit 1 leaves the secret unset.
#![no_main]

mod common;

use http_body_util::BodyExt;
use hyper::StatusCode;
use libfuzzer_sys::fuzz_target;
use ring::hmac;
use serde_json::Value;
use xyte_edge::config::Secret;
use xyte_edge::http::webhook::receive_signed;

const SECRET: &str = "fuzzing-webhook-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else { return };
    let (signature, body) = if options & 1 != 0 {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag: String = hmac::sign(&key, rest).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        (format!("sha256={tag}"), rest)
    } else {
        let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        // A header value that is not text reaches the handler as "" (see `receive`).
        let header = std::str::from_utf8(&rest[..split]).unwrap_or_default().to_string();
        (header, rest.get(split + 1..).unwrap_or_default())
    };
    let secret = (options & 2 == 0).then(|| Secret::new(SECRET.to_string()));
    let app = common::app();
    common::runtime().block_on(async move {
        let (status, answer) = post(&app, secret.as_ref(), &signature, body).await;
        assert!(
            [StatusCode::ACCEPTED, StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED].contains(&status),
            "status {status}: {answer}"
        );
        if status != StatusCode::ACCEPTED {
            return;
        }
        assert_eq!(answer["accepted"], true, "{answer}");
        let id = answer["id"].as_str().unwrap_or_else(|| panic!("no delivery id in {answer}")).to_string();
        let (again, second) = post(&app, secret.as_ref(), &signature, body).await;
        assert_eq!(again, StatusCode::ACCEPTED, "{second}");
        assert_eq!((second["id"].as_str(), &second["duplicate"]), (Some(id.as_str()), &Value::Bool(true)), "{second}");
    });
});

async fn post(
    app: &xyte_edge::runtime::App,
    secret: Option<&Secret<String>>,
    sig: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let response = receive_signed(app, secret, sig, body).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let answer = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"));
    (status, answer)
}
