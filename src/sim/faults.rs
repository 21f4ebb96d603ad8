//! Fault injection for the simulator (`--faults`): a comma-separated `key=value` list, all off by default.
//! Faults apply to the organization API only, never to the `/_sim/` control routes.

use std::time::Duration;

use crate::config::values::duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pagination {
    NextPage,
    HasNextPage,
    #[default]
    Both,
}

/// Which key `POST /devices/:id/commands` reads the command from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommandKey {
    /// Only `command` (newest Xyte); a body with only `name` is rejected.
    Command,
    /// Only `name` (older servers).
    Name,
    #[default]
    Both,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    pub latency: Duration,
    pub jitter: Duration,
    /// Fraction of requests answered with a 5xx.
    pub error_rate: f64,
    /// Fraction of requests answered with 429.
    pub rate_429: f64,
    /// `Retry-After` seconds on 429 answers (absent: no header).
    pub retry_after: Option<u64>,
    /// The next N requests get 429, then normal service (deterministic, for tests).
    pub burst_429: u64,
    /// With `burst_429`: a new burst of N begins every this long (a storm of recurring 429s, not just one).
    pub burst_429_every: Option<Duration>,
    /// Fraction of requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// Fraction of requests that are accepted and never answered.
    pub hang_rate: f64,
    /// Pause between 64-byte chunks of every body.
    pub slow_body: Duration,
    pub pagination: Pagination,
    pub command_key: CommandKey,
}

fn rate(key: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{key}={v}: expected a fraction between 0 and 1")),
    }
}

impl std::str::FromStr for Faults {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let mut f = Faults::default();
        let mut problems = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                problems.push(format!("{item:?}: expected key=value"));
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let dur = |v: &str| duration(v).map_err(|e| format!("{key}={v}: {e}"));
            let result: Result<(), String> = (|| {
                match key {
                    "latency" => f.latency = dur(value)?,
                    "jitter" => f.jitter = dur(value)?,
                    "error_rate" => f.error_rate = rate(key, value)?,
                    "rate_429" => f.rate_429 = rate(key, value)?,
                    "retry_after" => {
                        f.retry_after =
                            Some(value.parse().map_err(|_| format!("{key}={value}: expected whole seconds"))?)
                    }
                    "burst_429" => {
                        f.burst_429 = value.parse().map_err(|_| format!("{key}={value}: expected a count"))?
                    }
                    "burst_429_every" => f.burst_429_every = Some(dur(value)?).filter(|d| !d.is_zero()),
                    "drop_rate" => f.drop_rate = rate(key, value)?,
                    "hang" => f.hang_rate = if value == "1" || value == "true" { 1.0 } else { rate(key, value)? },
                    "hang_rate" => f.hang_rate = rate(key, value)?,
                    "slow_body" => f.slow_body = dur(value)?,
                    "pagination" => {
                        f.pagination = match value {
                            "next_page" => Pagination::NextPage,
                            "has_next_page" => Pagination::HasNextPage,
                            "both" => Pagination::Both,
                            _ => return Err(format!("{key}={value}: expected next_page, has_next_page or both")),
                        }
                    }
                    "command_key" => {
                        f.command_key = match value {
                            "command" => CommandKey::Command,
                            "name" => CommandKey::Name,
                            "both" => CommandKey::Both,
                            _ => return Err(format!("{key}={value}: expected command, name or both")),
                        }
                    }
                    _ => {
                        return Err(format!(
                            "unknown fault {key:?} (known: latency, jitter, error_rate, rate_429, retry_after, burst_429, \
                             burst_429_every, drop_rate, hang, hang_rate, slow_body, pagination, command_key)"
                        ));
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                problems.push(e);
            }
        }
        if problems.is_empty() { Ok(f) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let f: Faults = "latency=250ms,jitter=1s,error_rate=0.3,rate_429=0.1,retry_after=2,burst_429=3,drop_rate=0.05,\
                         burst_429_every=15s,hang_rate=0.01,slow_body=10ms,pagination=next_page,command_key=command"
            .parse()
            .unwrap();
        assert_eq!(f.latency, Duration::from_millis(250));
        assert_eq!((f.error_rate, f.rate_429, f.retry_after, f.burst_429), (0.3, 0.1, Some(2), 3));
        assert_eq!(f.burst_429_every, Some(Duration::from_secs(15)));
        assert_eq!((f.pagination, f.command_key), (Pagination::NextPage, CommandKey::Command));
        assert_eq!("hang=1".parse::<Faults>().unwrap().hang_rate, 1.0);
        assert_eq!("".parse::<Faults>().unwrap(), Faults::default());
    }

    #[test]
    fn rejects_bad_specs_naming_each_problem() {
        let e = "latency=fast,error_rate=2,frobnicate=1,pagination=sideways,lonely".parse::<Faults>().unwrap_err();
        for needle in ["latency=fast", "error_rate=2", "frobnicate", "pagination=sideways", "lonely"] {
            assert!(e.contains(needle), "{needle} missing from {e}");
        }
    }
}
