//! The MQTT uplink's settings (README, Connect a fleet broker): off unless `XYTE_MQTT_URL` is set, then validated
//! like every other key, so a broken uplink configuration stops the start (exit 78) instead of failing at 3 a.m.

use std::path::PathBuf;

use super::{Layers, Role, Secret, TlsFiles, secret_setting, values};

/// A validated uplink configuration.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The URL as configured (no credentials in it), for status and logs.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with the daemon's rustls (ring).
    pub tls: bool,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// Trust this CA (PEM) for the broker instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<TlsFiles>,
    pub site: String,
    /// Every topic starts with this (no trailing `/`).
    pub topic_prefix: String,
    /// `XYTE_MQTT_COMMANDS=on`: answer command requests under `<prefix>/cmd/req/`.
    pub commands: bool,
    /// The role command requests run with.
    pub role: Role,
}

/// The uplink's keys besides `XYTE_MQTT_URL`: set while the URL is not, they are a warning (nothing connects).
const DEPENDENT: [&str; 10] = [
    "XYTE_MQTT_CLIENT_ID",
    "XYTE_MQTT_USERNAME",
    "XYTE_MQTT_PASSWORD",
    "XYTE_MQTT_PASSWORD_FILE",
    "XYTE_MQTT_CA_FILE",
    "XYTE_MQTT_CLIENT_CERT",
    "XYTE_MQTT_CLIENT_KEY",
    "XYTE_MQTT_TOPIC_PREFIX",
    "XYTE_MQTT_COMMANDS",
    "XYTE_MQTT_ROLE",
];

pub(super) fn mqtt(layers: &mut Layers, hostname: &str) -> Option<MqttConfig> {
    // Typed even when the uplink is off, so a bad value is reported whether or not the URL is set yet.
    let commands = layers.typed("XYTE_MQTT_COMMANDS", on_off);
    let role = layers.typed("XYTE_MQTT_ROLE", |r| r.parse());
    let url = layers.get("XYTE_MQTT_URL").trim().to_string();
    if url.is_empty() {
        let given = |k: &&str| matches!(layers.values.get(k), Some((_, super::Source::Env | super::Source::File(_))));
        let set: Vec<&str> = DEPENDENT.iter().copied().filter(given).collect();
        if !set.is_empty() {
            layers.warnings.push(format!("{} set but XYTE_MQTT_URL is not: the MQTT uplink is off", set.join(", ")));
        }
        return None;
    }
    let (tls, host, port) = layers.typed("XYTE_MQTT_URL", broker_url).unwrap_or((false, String::new(), 0));

    let site = if layers.is_set("XYTE_SITE") {
        checked(layers, "XYTE_SITE", |r| topic_level(r.trim()).map(str::to_string)).unwrap_or_default()
    } else {
        let site = topic_safe(hostname);
        layers.values.insert("XYTE_SITE", (site.clone(), super::Source::Machine));
        site
    };
    let topic_prefix = if layers.is_set("XYTE_MQTT_TOPIC_PREFIX") {
        checked(layers, "XYTE_MQTT_TOPIC_PREFIX", topic_prefix).unwrap_or_default()
    } else {
        let prefix = format!("xyte-edge/v1/{site}");
        layers.values.insert("XYTE_MQTT_TOPIC_PREFIX", (prefix.clone(), super::Source::Derived("XYTE_SITE")));
        prefix
    };
    let client_id = if layers.is_set("XYTE_MQTT_CLIENT_ID") {
        checked(layers, "XYTE_MQTT_CLIENT_ID", client_id).unwrap_or_default()
    } else {
        let id = format!("xyte-edge-{}", topic_safe(hostname));
        layers.values.insert("XYTE_MQTT_CLIENT_ID", (id.clone(), super::Source::Machine));
        id
    };

    let username = layers.is_set("XYTE_MQTT_USERNAME").then(|| layers.get("XYTE_MQTT_USERNAME").trim().to_string());
    let password = secret_setting(layers, "XYTE_MQTT_PASSWORD", "XYTE_MQTT_PASSWORD_FILE").flatten();
    if password.is_some() && username.is_none() {
        layers.problem("XYTE_MQTT_PASSWORD", "a password needs XYTE_MQTT_USERNAME too");
    }
    if password.is_some() && !tls && !super::is_loopback_host(&host) {
        layers.warnings.push(format!(
            "XYTE_MQTT_URL {url} is plain mqtt://: the broker password would cross the network unencrypted"
        ));
    }
    let ca_file = readable_file(layers, "XYTE_MQTT_CA_FILE");
    let cert = readable_file(layers, "XYTE_MQTT_CLIENT_CERT");
    let key = readable_file(layers, "XYTE_MQTT_CLIENT_KEY");
    let client_cert = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            layers.problem("XYTE_MQTT_CLIENT_KEY", "XYTE_MQTT_CLIENT_CERT is set, so XYTE_MQTT_CLIENT_KEY must be too");
            None
        }
        (None, Some(_)) => {
            layers
                .problem("XYTE_MQTT_CLIENT_CERT", "XYTE_MQTT_CLIENT_KEY is set, so XYTE_MQTT_CLIENT_CERT must be too");
            None
        }
    };
    if !tls && (ca_file.is_some() || client_cert.is_some()) {
        layers.problem(
            "XYTE_MQTT_URL",
            "XYTE_MQTT_CA_FILE or a client certificate is set but the URL is plain mqtt://; use mqtts://",
        );
    }
    Some(MqttConfig {
        url,
        host,
        port,
        tls,
        client_id,
        username,
        password,
        ca_file,
        client_cert,
        site,
        topic_prefix,
        commands,
        role,
    })
}

/// Like [`Layers::typed`] for keys whose default is computed (so there is no built-in value to stand in).
fn checked<T>(layers: &mut Layers, key: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
    let raw = layers.get(key).to_string();
    parse(&raw).map_err(|why| layers.bad_value(key, why)).ok()
}

/// `on` or `off` (the other spellings of a boolean too).
fn on_off(raw: &str) -> Result<bool, String> {
    values::boolean(raw).map_err(|_| "must be on or off".to_string())
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` (1883 / 8883 by default); an IPv6 host in brackets.
fn broker_url(raw: &str) -> Result<Option<(bool, String, u16)>, String> {
    const MUST: &str = "must be mqtt://host[:port] or mqtts://host[:port]";
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let (tls, rest) = match raw.split_once("://") {
        Some(("mqtt", rest)) => (false, rest),
        Some(("mqtts", rest)) => (true, rest),
        _ => return Err(MUST.into()),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{MUST} (no path, query or user:password@; use XYTE_MQTT_USERNAME and _PASSWORD)"));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(MUST)?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{MUST}: bad port {p:?}"))?,
    };
    if host.is_empty() {
        return Err(format!("{MUST}: the host is missing"));
    }
    Ok(Some((tls, host.to_string(), port)))
}

/// One topic level: no `/`, no wildcards, no control characters, not empty.
fn topic_level(raw: &str) -> Result<&str, String> {
    if raw.is_empty() || raw.len() > 128 || raw.contains(['/', '+', '#']) || raw.chars().any(char::is_control) {
        Err("must be 1 to 128 characters without '/', '+', '#' or control characters".into())
    } else {
        Ok(raw)
    }
}

fn topic_prefix(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.starts_with('/') || raw.ends_with('/') || raw.starts_with('$') || raw.len() > 512 {
        return Err("must be a topic such as site/hq-berlin: not empty, no leading or trailing '/', not $…".into());
    }
    for level in raw.split('/') {
        topic_level(level).map_err(|why| format!("each level of the prefix {why}"))?;
    }
    Ok(raw.to_string())
}

fn client_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 128 || !raw.chars().all(|c| c.is_ascii_graphic()) {
        Err("must be 1 to 128 printable ASCII characters without spaces".into())
    } else {
        Ok(raw.to_string())
    }
}

/// The host name as one topic level (and client id part): anything outside `[A-Za-z0-9._-]` becomes `-`.
fn topic_safe(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    if safe.is_empty() { "gateway".into() } else { safe }
}

fn readable_file(layers: &mut Layers, key: &'static str) -> Option<PathBuf> {
    let raw = layers.get(key).trim().to_string();
    if raw.is_empty() {
        return None;
    }
    match std::fs::File::open(&raw) {
        Ok(_) => Some(PathBuf::from(raw)),
        Err(e) => {
            layers.problem(key, format!("cannot read {raw}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(broker_url("mqtt://broker.lan").unwrap(), Some((false, "broker.lan".into(), 1883)));
        assert_eq!(broker_url("mqtts://broker.lan:9883/").unwrap(), Some((true, "broker.lan".into(), 9883)));
        assert_eq!(broker_url("mqtts://[::1]").unwrap(), Some((true, "::1".into(), 8883)));
        assert_eq!(broker_url("mqtt://[fe80::1]:1884").unwrap(), Some((false, "fe80::1".into(), 1884)));
        for bad in
            ["http://x", "mqtt://", "mqtt://u:p@host", "mqtt://host:0", "mqtt://host:99999", "mqtt://h/x", "tcp://h"]
        {
            assert!(broker_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn topics() {
        assert_eq!(topic_prefix("fleet/hq-berlin").unwrap(), "fleet/hq-berlin");
        for bad in ["", "/a", "a/", "a/+/b", "#", "a//b", "$SYS/x"] {
            assert!(topic_prefix(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(topic_safe("gw 1/α"), "gw-1--");
    }
}
