//! `GET /v1/metrics`: the process-wide registry of [`crate::metrics`] plus what is sampled per scrape
//! (the outbox depth and the alerts' counts, read through the store). Served without a token on the loopback listener and to `viewer`s on
//! the LAN listener (the router decides).

use hyper::{Response, StatusCode};

use super::response::{Body, error_response, full};
use super::state::Http;
use crate::error::Error;
use crate::metrics::{CONTENT_TYPE, Sampled, render as exposition};

pub async fn render(http: &Http) -> Response<Body> {
    let sampled = http
        .app
        .store
        .read(|c| {
            use crate::store::{alerts, tasks};
            Ok((tasks::outbox_depth(c)?, alerts::firing_count(c)?, alerts::counts(c)?))
        })
        .await;
    match sampled {
        Ok((outbox_depth, alerts_firing, alert_deliveries)) => {
            let sampled = Sampled { outbox_depth, env: http.app.env_label.clone(), alerts_firing, alert_deliveries };
            full(StatusCode::OK, CONTENT_TYPE, exposition(&sampled))
        }
        Err(e) => error_response(&Error::from(e)),
    }
}
