//! How the uplink reaches its broker: MQTT 5 options, the will, credentials and TLS with the daemon's own rustls
//! and ring (no second crypto provider).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::MqttOptions;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::LastWill;
use rumqttc::{TlsConfiguration, Transport};
use rustls::ClientConfig;

use crate::config::mqtt::MqttConfig;

/// The largest packet the broker may send us (MQTT 5 Maximum Packet Size). Above the 256 KiB a command request may
/// carry, so an oversized request still arrives and is answered with an error; larger ones the broker drops.
pub const MAX_INCOMING_PACKET: u32 = 1024 * 1024;
/// A dead broker or a silent network partition is noticed within about one and a half keep-alives.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// TCP connect, TLS handshake and CONNACK together.
const CONNECT_TIMEOUT_S: u64 = 10;

/// The TLS client configuration for `mqtts://`, built once at start so a bad CA or key file stops the start.
pub fn tls(cfg: &MqttConfig) -> Result<Option<Arc<ClientConfig>>, String> {
    if !cfg.tls {
        return Ok(None);
    }
    const CLIENT: &str = "XYTE_MQTT_CLIENT_CERT/KEY";
    let client_auth = match &cfg.client_cert {
        Some(files) => {
            let (certs, key) =
                crate::http::tls::read_pair(&files.cert, &files.key).map_err(|e| format!("{CLIENT}: {e}"))?;
            Some((CLIENT, certs, key))
        }
        None => None,
    };
    crate::tls_client::config("XYTE_MQTT_CA_FILE", cfg.ca_file.as_deref(), client_auth).map(Some)
}

/// Options for one connection: a clean start (delivery resumes from the log's cursor, not from a broker session)
/// and the will that says this session went offline.
/// `window` bounds the publishes in flight: the client keeps a slot per packet id up to it (216 bytes each; unset,
/// it would keep 65,535 of them, 13.5 MiB, on every connection).
pub fn options(cfg: &MqttConfig, tls: Option<&Arc<ClientConfig>>, will: (String, Vec<u8>), window: u16) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(KEEP_ALIVE)
        .set_outgoing_inflight_upper_limit(window)
        .set_clean_start(true)
        .set_connection_timeout(CONNECT_TIMEOUT_S)
        .set_max_packet_size(Some(MAX_INCOMING_PACKET))
        .set_last_will(LastWill::new(will.0, will.1, QoS::AtLeastOnce, true, None));
    if let Some(user) = &cfg.username {
        let password = cfg.password.as_ref().map(|p| p.expose().clone()).unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    }
    o
}
