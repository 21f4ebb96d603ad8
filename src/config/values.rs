//! Parsers for the value types used in the configuration table. Each returns a message that says what is allowed;
//! the caller adds the key and the (masked) value.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Seconds, or a number with `ms`, `s`, `m`, `h` or `d`: `60`, `90s`, `5m`, `1h`.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| "expected a whole number of seconds, or a number with ms/s/m/h/d".to_string())?;
    let secs = |mul: u64| n.checked_mul(mul).map(Duration::from_secs).ok_or_else(|| "too large".to_string());
    match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        other => Err(format!("unknown unit {other:?}; use ms, s, m, h or d")),
    }
}

pub fn duration_in(raw: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = duration(raw)?;
    if d < min || d > max {
        return Err(format!("must be between {} and {}", human(min), human(max)));
    }
    Ok(d)
}

pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

pub fn integer_in(raw: &str, min: u64, max: u64) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

pub fn boolean(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("must be true or false (also yes/no, on/off, 1/0)".into()),
    }
}

/// A comma-separated list; blanks between commas are ignored.
pub fn list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `IP:PORT` (IPv6 in brackets). Host names are refused: a listener must not depend on DNS at boot.
pub fn socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim().parse::<SocketAddr>().map_err(|_| {
        format!(
            "{:?} is not an IP:PORT address (e.g. 0.0.0.0:8443 or [::]:8443; host names are not allowed)",
            raw.trim()
        )
    })
}

pub fn ip(raw: &str) -> Result<IpAddr, String> {
    raw.trim().parse::<IpAddr>().map_err(|_| format!("{:?} is not an IP address", raw.trim()))
}

/// Edit distance, for "did you mean" on misspelt keys.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(duration("").is_err());
        assert!(duration("-1").is_err());
        assert!(duration("5 parsecs").is_err());
        assert!(duration("1.5").is_err());
        assert!(duration_in("0", Duration::from_secs(1), Duration::from_secs(10)).is_err());
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(86_400)), "1d");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn scalars() {
        assert_eq!(integer_in("60", 1, 100).unwrap(), 60);
        assert!(integer_in("0", 1, 100).is_err());
        assert!(integer_in("sixty", 1, 100).is_err());
        assert!(boolean("Yes").unwrap());
        assert!(!boolean("off").unwrap());
        assert!(boolean("maybe").is_err());
        assert_eq!(list(" a, ,b ,"), vec!["a", "b"]);
        assert!(socket_addr("0.0.0.0:8443").is_ok());
        assert!(socket_addr("[::1]:80").is_ok());
        assert!(socket_addr("localhost:80").is_err());
        assert_eq!(distance("XYTE_CACHE_TTL", "XYTE_CACHE_TLL"), 1);
    }
}
