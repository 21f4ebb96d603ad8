//! What the targets share: one runtime and one daemon core per fuzzing process. The core is the real one (store,
//! event bus, Xyte client), read-only and pointed at a closed loopback port, so no input can change anything
//! upstream or send a byte beyond this machine. Its state lives under `$TMPDIR` (run.sh points that at a scratch
//! directory it removes afterwards).
#![allow(dead_code)] // each target uses its own part

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use xyte_edge::config::{Secret, XyteCredential};
use xyte_edge::runtime::App;
use xyte_edge::store::Store;
use xyte_edge::xyte::{ClientConfig, XyteClient};

/// Nothing listens on port 1: every call to "Xyte" fails at once with connection refused.
const UNREACHABLE_XYTE: &str = "http://127.0.0.1:1";

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> =
        LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"));
    &RT
}

/// The daemon core.
pub fn app() -> Arc<App> {
    static APP: LazyLock<Arc<App>> = LazyLock::new(build);
    APP.clone()
}

fn build() -> Arc<App> {
    // Kept for the life of the process: the store's files must outlive every input.
    let dir = tempfile::Builder::new().prefix("xyte-edge-fuzz-").tempdir().expect("state dir").keep();
    let store = Store::open(&dir, Default::default()).expect("store");
    let client = XyteClient::new(ClientConfig {
        base_url: UNREACHABLE_XYTE.into(),
        credential: XyteCredential::ApiKey(Secret::new("fuzz-key".into())),
        // Short, so a read that tries Xyte gives up within milliseconds instead of backing off.
        request_timeout: Duration::from_millis(20),
        rate_limit_per_min: 6000,
    })
    .expect("client");
    Arc::new(App { read_only: true, env_label: "fuzz".into(), experimental_apis: true, ..App::new(store, client) })
}
