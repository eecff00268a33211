//! Network profiles: how slow and how unreliable the proxied link is.
//!
//! A profile is parsed from `NAME` or `NAME:KEY=VALUE,KEY=VALUE…`, where `NAME` is one of
//! `none`, `wifi`, `3g`, `edge`, `hostile` and the keys override single settings:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `latency` | duration (`420ms`, `1.5s`) | one-way delay added to every chunk |
//! | `jitter` | duration | the delay varies uniformly by up to this much either way |
//! | `down`, `up` | rate (`240kbit`, `2mbit`, `30000B`) or `off` | bandwidth cap per connection |
//! | `drop` | probability (`0.05` or `5%`) | chance per second that a connection is dropped |
//! | `stall` | probability | chance per second and direction that the link freezes |
//! | `stall-len` | duration or range (`1s-5s`) | how long a stall lasts |
//! | `outage` | duration, range (`3s-5s`) or `off` | how long a profile-wide outage lasts |
//! | `outage-every` | duration | mean time online between two outages |
//!
//! For example `hostile:outage=3s-5s,outage-every=10s` is the hostile profile with short
//! outages, as used by the chaos test.

use crate::ProxyError;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Profile-wide outages: periods during which every connection is cut and new ones are
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outages {
    /// Mean time online between two outages; each gap is drawn uniformly from half to one and
    /// a half times this.
    pub every: Duration,
    /// Shortest outage.
    pub length_min: Duration,
    /// Longest outage; each outage's length is drawn uniformly from `length_min..=length_max`.
    pub length_max: Duration,
}

/// The faults a proxy injects.
///
/// Per connection and per direction: a delay of `latency ± jitter` on every chunk, a
/// bandwidth cap, random stalls; per connection: random drops (both sides closed with a
/// reset). Profile-wide: outages. Build one from a preset ([`Profile::wifi`],
/// [`Profile::three_g`], [`Profile::edge`], [`Profile::hostile`]), from
/// [`Profile::custom`] with the `with_*` methods, or parse one (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Name shown in reports.
    pub name: String,
    /// One-way delay added to each chunk, in each direction (half the added round trip).
    pub latency: Duration,
    /// Each chunk's delay is `latency` plus a uniform draw from `-jitter..=jitter` (never
    /// below zero; chunks are never reordered).
    pub jitter: Duration,
    /// Bandwidth cap from the upstream to the client, in bytes per second (`None` = no cap).
    pub down_bytes_per_sec: Option<u64>,
    /// Bandwidth cap from the client to the upstream, in bytes per second (`None` = no cap).
    pub up_bytes_per_sec: Option<u64>,
    /// Probability that a connection is dropped within any one second of its life (0 = never).
    pub drop_per_sec: f64,
    /// Probability, per direction and second, that the link stalls (0 = never).
    pub stall_per_sec: f64,
    /// Shortest stall.
    pub stall_min: Duration,
    /// Longest stall; each stall's length is drawn uniformly from `stall_min..=stall_max`.
    pub stall_max: Duration,
    /// Profile-wide outages, if any.
    pub outages: Option<Outages>,
}

/// Bytes per second of a rate given in kilobits per second.
const fn kbit(k: u64) -> u64 {
    k * 1000 / 8
}

impl Profile {
    /// No faults at all: a transparent proxy.
    pub fn none() -> Profile {
        Profile {
            name: "none".into(),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            down_bytes_per_sec: None,
            up_bytes_per_sec: None,
            drop_per_sec: 0.0,
            stall_per_sec: 0.0,
            stall_min: Duration::ZERO,
            stall_max: Duration::ZERO,
            outages: None,
        }
    }

    /// A starting point for a hand-made profile: no faults, named `custom`. Add faults with
    /// the `with_*` methods.
    ///
    /// ```
    /// use burrow_proxy::Profile;
    /// use std::time::Duration;
    /// let p = Profile::custom()
    ///     .with_latency(Duration::from_millis(300), Duration::from_millis(200))
    ///     .with_bandwidth(Some(32_000), Some(32_000))
    ///     .with_drops(0.01);
    /// assert_eq!(p.name, "custom");
    /// ```
    pub fn custom() -> Profile {
        Profile::none().with_name("custom")
    }

    /// Good Wi-Fi: 20 ms round trip ± 5 ms each way, 50 Mbit/s down, 20 Mbit/s up, no faults.
    pub fn wifi() -> Profile {
        Profile::none()
            .with_name("wifi")
            .with_latency(Duration::from_millis(10), Duration::from_millis(5))
            .with_bandwidth(Some(kbit(50_000)), Some(kbit(20_000)))
    }

    /// A typical 3G link: 300 ms round trip ± 40 ms each way, 1.6 Mbit/s down, 768 kbit/s up.
    pub fn three_g() -> Profile {
        Profile::none()
            .with_name("3g")
            .with_latency(Duration::from_millis(150), Duration::from_millis(40))
            .with_bandwidth(Some(kbit(1_600)), Some(kbit(768)))
    }

    /// EDGE (2G): 840 ms round trip ± 60 ms each way, 240 kbit/s down, 200 kbit/s up.
    pub fn edge() -> Profile {
        Profile::none()
            .with_name("edge")
            .with_latency(Duration::from_millis(420), Duration::from_millis(60))
            .with_bandwidth(Some(kbit(240)), Some(kbit(200)))
    }

    /// EDGE plus trouble: each connection is dropped with 5 % probability per second, each
    /// direction stalls for 1–5 s with 2 % probability per second, and 30 s outages come
    /// every 60 s on average. Shorten the outages for tests with
    /// [`Profile::with_outage_length`].
    pub fn hostile() -> Profile {
        Profile::edge()
            .with_name("hostile")
            .with_drops(0.05)
            .with_stalls(0.02, Duration::from_secs(1), Duration::from_secs(5))
            .with_outages(
                Duration::from_secs(60),
                Duration::from_secs(30),
                Duration::from_secs(30),
            )
    }

    /// The preset called `name`: `none`, `wifi`, `3g`, `edge` or `hostile` (case-insensitive).
    pub fn named(name: &str) -> Result<Profile, ProxyError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" | "clean" => Ok(Profile::none()),
            "wifi" => Ok(Profile::wifi()),
            "3g" => Ok(Profile::three_g()),
            "edge" | "2g" => Ok(Profile::edge()),
            "hostile" => Ok(Profile::hostile()),
            _ => Err(ProxyError::Profile(format!(
                "unknown profile {name:?} (expected none, wifi, 3g, edge or hostile)"
            ))),
        }
    }

    /// Renames the profile.
    pub fn with_name(mut self, name: &str) -> Profile {
        self.name = name.to_string();
        self
    }

    /// Sets the one-way delay and its jitter.
    pub fn with_latency(mut self, latency: Duration, jitter: Duration) -> Profile {
        self.latency = latency;
        self.jitter = jitter;
        self
    }

    /// Sets the bandwidth caps in bytes per second (`None` = unlimited).
    pub fn with_bandwidth(mut self, down: Option<u64>, up: Option<u64>) -> Profile {
        self.down_bytes_per_sec = down.filter(|r| *r > 0);
        self.up_bytes_per_sec = up.filter(|r| *r > 0);
        self
    }

    /// Sets the probability per connection and second of a drop (clamped to `0..=1`).
    pub fn with_drops(mut self, per_sec: f64) -> Profile {
        self.drop_per_sec = clamp_probability(per_sec);
        self
    }

    /// Sets the probability per direction and second of a stall, and the stalls' length.
    pub fn with_stalls(mut self, per_sec: f64, min: Duration, max: Duration) -> Profile {
        self.stall_per_sec = clamp_probability(per_sec);
        self.stall_min = min.min(max);
        self.stall_max = max.max(min);
        self
    }

    /// Adds outages of `length_min..=length_max` about every `every` of online time.
    pub fn with_outages(
        mut self,
        every: Duration,
        length_min: Duration,
        length_max: Duration,
    ) -> Profile {
        self.outages = Some(Outages {
            every,
            length_min: length_min.min(length_max),
            length_max: length_max.max(length_min),
        });
        self
    }

    /// Changes the length of the outages (to `min..=max`), keeping their frequency; adds
    /// outages every 60 s if the profile had none.
    pub fn with_outage_length(self, min: Duration, max: Duration) -> Profile {
        let every = self
            .outages
            .map(|o| o.every)
            .unwrap_or(Duration::from_secs(60));
        self.with_outages(every, min, max)
    }

    /// Removes the outages.
    pub fn without_outages(mut self) -> Profile {
        self.outages = None;
        self
    }

    /// The bandwidth cap of one direction.
    pub fn bytes_per_sec(&self, dir: Direction) -> Option<u64> {
        match dir {
            Direction::Up => self.up_bytes_per_sec,
            Direction::Down => self.down_bytes_per_sec,
        }
    }

    /// Applies one `KEY=VALUE` override (see the module docs).
    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "latency" => self.latency = parse_duration(value)?,
            "jitter" => self.jitter = parse_duration(value)?,
            "down" => self.down_bytes_per_sec = parse_rate(value)?,
            "up" => self.up_bytes_per_sec = parse_rate(value)?,
            "drop" => self.drop_per_sec = parse_probability(value)?,
            "stall" => self.stall_per_sec = parse_probability(value)?,
            "stall-len" => {
                let (min, max) = parse_range(value)?;
                self.stall_min = min;
                self.stall_max = max;
            }
            "outage" | "outage-len" => {
                if is_off(value) {
                    self.outages = None;
                } else {
                    let (min, max) = parse_range(value)?;
                    *self = self.clone().with_outage_length(min, max);
                }
            }
            "outage-every" => {
                let every = parse_duration(value)?;
                if every.is_zero() {
                    return Err("outage-every must be above zero".into());
                }
                let (min, max) = self
                    .outages
                    .map(|o| (o.length_min, o.length_max))
                    .unwrap_or((Duration::from_secs(30), Duration::from_secs(30)));
                self.outages = Some(Outages {
                    every,
                    length_min: min,
                    length_max: max,
                });
            }
            other => return Err(format!("unknown key {other:?}")),
        }
        Ok(())
    }
}

impl FromStr for Profile {
    type Err = ProxyError;

    /// Parses `NAME` or `NAME:KEY=VALUE,…` (see the module docs).
    fn from_str(spec: &str) -> Result<Profile, ProxyError> {
        let (name, overrides) = match spec.split_once(':') {
            Some((n, o)) => (n, o),
            None => (spec, ""),
        };
        let mut p = Profile::named(name)?;
        for item in overrides
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                ProxyError::Profile(format!("{item:?} in profile {spec:?} is not KEY=VALUE"))
            })?;
            p.apply(&k.trim().to_ascii_lowercase(), v.trim())
                .map_err(|e| ProxyError::Profile(format!("profile {spec:?}: {k}: {e}")))?;
        }
        Ok(p)
    }
}

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream.
    Up,
    /// From the upstream to the client.
    Down,
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

fn is_off(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "off" | "none" | "no" | "unlimited"
    )
}

/// Splits `"12.5ms"` into `(12.5, "ms")`.
fn number_and_unit(v: &str) -> Result<(f64, String), String> {
    let v = v.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(end);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} does not start with a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{v:?} is not a non-negative number"));
    }
    Ok((n, unit.trim().to_ascii_lowercase()))
}

/// `500ms`, `1.5s`, `2m`, `0` (a unit is required except for zero).
pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(v)?;
    let secs = match unit.as_str() {
        "ms" => n / 1000.0,
        "s" | "sec" | "secs" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "" if n == 0.0 => 0.0,
        "" => return Err(format!("{v:?} needs a unit (ms, s, m or h)")),
        other => return Err(format!("unknown time unit {other:?} in {v:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{v:?}: {e}"))
}

/// `MIN-MAX` or a single duration.
fn parse_range(v: &str) -> Result<(Duration, Duration), String> {
    match v.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if a > b {
                return Err(format!("range {v:?} is backwards"));
            }
            Ok((a, b))
        }
        None => {
            let d = parse_duration(v)?;
            Ok((d, d))
        }
    }
}

/// `240kbit`, `2mbit`, `1gbit`, `30000B`, `30kB`, `2MB` (bytes per second) or `off`.
pub(crate) fn parse_rate(v: &str) -> Result<Option<u64>, String> {
    if is_off(v) {
        return Ok(None);
    }
    let (n, unit) = number_and_unit(v)?;
    let unit = unit.trim_end_matches("/s");
    let unit = match unit.strip_suffix("bps") {
        Some(prefix) => format!("{prefix}bit"),
        None => unit.to_string(),
    };
    let bytes_per_sec = match unit.as_str() {
        "bit" => n / 8.0,
        "kbit" => n * 1000.0 / 8.0,
        "mbit" => n * 1_000_000.0 / 8.0,
        "gbit" => n * 1_000_000_000.0 / 8.0,
        "b" => n,
        "kb" => n * 1000.0,
        "mb" => n * 1_000_000.0,
        "" => return Err(format!("{v:?} needs a unit (kbit, mbit, B, kB, MB)")),
        other => return Err(format!("unknown rate unit {other:?} in {v:?}")),
    };
    if bytes_per_sec < 1.0 {
        return Err(format!("rate {v:?} is below 1 byte per second"));
    }
    Ok(Some(bytes_per_sec as u64))
}

/// `0.05` or `5%`.
fn parse_probability(v: &str) -> Result<f64, String> {
    let (n, unit) = number_and_unit(v)?;
    let p = match unit.as_str() {
        "%" => n / 100.0,
        "" => n,
        other => return Err(format!("unknown unit {other:?} in probability {v:?}")),
    };
    if p > 1.0 {
        return Err(format!("probability {v:?} is above 1"));
    }
    Ok(p)
}

fn fmt_rate(f: &mut fmt::Formatter<'_>, r: Option<u64>) -> fmt::Result {
    match r {
        None => write!(f, "unlimited"),
        Some(b) if b * 8 >= 1_000_000 => write!(f, "{:.1} Mbit/s", (b * 8) as f64 / 1e6),
        Some(b) => write!(f, "{:.0} kbit/s", (b * 8) as f64 / 1e3),
    }
}

impl fmt::Display for Profile {
    /// One line, e.g. `edge: 420ms ± 60ms each way, down 240 kbit/s, up 200 kbit/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?} ± {:?} each way, down ",
            self.name, self.latency, self.jitter
        )?;
        fmt_rate(f, self.down_bytes_per_sec)?;
        write!(f, ", up ")?;
        fmt_rate(f, self.up_bytes_per_sec)?;
        if self.drop_per_sec > 0.0 {
            write!(f, ", drops {:.1} %/s", self.drop_per_sec * 100.0)?;
        }
        if self.stall_per_sec > 0.0 {
            write!(
                f,
                ", stalls {:.1} %/s ({:?}-{:?})",
                self.stall_per_sec * 100.0,
                self.stall_min,
                self.stall_max
            )?;
        }
        if let Some(o) = self.outages {
            write!(
                f,
                ", outages {:?}-{:?} every ~{:?}",
                o.length_min, o.length_max, o.every
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_by_name() {
        assert_eq!("wifi".parse::<Profile>().unwrap(), Profile::wifi());
        assert_eq!("3G".parse::<Profile>().unwrap(), Profile::three_g());
        assert_eq!(" edge ".parse::<Profile>().unwrap(), Profile::edge());
        assert_eq!("hostile".parse::<Profile>().unwrap(), Profile::hostile());
        assert_eq!("none".parse::<Profile>().unwrap(), Profile::none());
    }

    #[test]
    fn edge_matches_the_brief() {
        let e = Profile::edge();
        assert_eq!(e.down_bytes_per_sec, Some(30_000)); // 240 kbit/s
        assert_eq!(e.up_bytes_per_sec, Some(25_000)); // 200 kbit/s
        assert_eq!(e.latency * 2, Duration::from_millis(840));
        let h = Profile::hostile();
        assert_eq!(h.down_bytes_per_sec, e.down_bytes_per_sec);
        assert_eq!(h.latency, e.latency);
        assert_eq!(h.drop_per_sec, 0.05);
        let o = h.outages.unwrap();
        assert_eq!(o.length_min, Duration::from_secs(30));
        assert_eq!(o.length_max, Duration::from_secs(30));
    }

    #[test]
    fn unknown_names_and_keys_are_errors() {
        assert!("lte".parse::<Profile>().is_err());
        assert!("edge:speed=1".parse::<Profile>().is_err());
        assert!("edge:latency".parse::<Profile>().is_err());
        assert!("edge:latency=5".parse::<Profile>().is_err());
        assert!("edge:down=fast".parse::<Profile>().is_err());
        assert!("edge:drop=150%".parse::<Profile>().is_err());
        assert!("edge:outage=5s-3s".parse::<Profile>().is_err());
        assert!("edge:outage-every=0s".parse::<Profile>().is_err());
        let msg = "lte".parse::<Profile>().unwrap_err().to_string();
        assert!(msg.contains("lte"), "{msg}");
    }

    #[test]
    fn overrides_change_single_settings() {
        let p: Profile = "hostile:outage=3s-5s,outage-every=10s,drop=10%,jitter=0"
            .parse()
            .unwrap();
        assert_eq!(
            p.outages,
            Some(Outages {
                every: Duration::from_secs(10),
                length_min: Duration::from_secs(3),
                length_max: Duration::from_secs(5),
            })
        );
        assert_eq!(p.drop_per_sec, 0.1);
        assert_eq!(p.jitter, Duration::ZERO);
        assert_eq!(p.latency, Duration::from_millis(420));

        let p: Profile = "edge:latency=1.5s,down=2mbit,up=off,stall=0.5,stall-len=100ms-2s"
            .parse()
            .unwrap();
        assert_eq!(p.latency, Duration::from_millis(1500));
        assert_eq!(p.down_bytes_per_sec, Some(250_000));
        assert_eq!(p.up_bytes_per_sec, None);
        assert_eq!(p.stall_per_sec, 0.5);
        assert_eq!(
            (p.stall_min, p.stall_max),
            (Duration::from_millis(100), Duration::from_secs(2))
        );

        let p: Profile = "hostile:outage=off".parse().unwrap();
        assert_eq!(p.outages, None);
        let p: Profile = "wifi:outage=2s".parse().unwrap();
        assert_eq!(p.outages.unwrap().every, Duration::from_secs(60));
    }

    #[test]
    fn rates_and_durations_parse_with_units() {
        assert_eq!(parse_rate("240kbit").unwrap(), Some(30_000));
        assert_eq!(parse_rate("240kbit/s").unwrap(), Some(30_000));
        assert_eq!(parse_rate("256kbps").unwrap(), Some(32_000));
        assert_eq!(parse_rate("30kB").unwrap(), Some(30_000));
        assert_eq!(parse_rate("1MB").unwrap(), Some(1_000_000));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert!(parse_rate("0.1bit").is_err());
        assert!(parse_rate("100").is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn builder_keeps_ranges_ordered() {
        let p = Profile::custom()
            .with_stalls(2.0, Duration::from_secs(5), Duration::from_secs(1))
            .with_outage_length(Duration::from_secs(5), Duration::from_secs(3))
            .with_bandwidth(Some(0), Some(10));
        assert_eq!(p.stall_per_sec, 1.0);
        assert_eq!(p.stall_min, Duration::from_secs(1));
        assert_eq!(p.stall_max, Duration::from_secs(5));
        let o = p.outages.unwrap();
        assert_eq!(
            (o.length_min, o.length_max),
            (Duration::from_secs(3), Duration::from_secs(5))
        );
        assert_eq!(p.down_bytes_per_sec, None);
        assert_eq!(p.up_bytes_per_sec, Some(10));
        assert_eq!(
            Profile::hostile()
                .with_outage_length(Duration::from_secs(4), Duration::from_secs(4))
                .outages
                .unwrap()
                .every,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn display_is_one_line() {
        let s = Profile::hostile().to_string();
        assert!(
            s.starts_with("hostile: 420ms ± 60ms each way, down 240 kbit/s, up 200 kbit/s"),
            "{s}"
        );
        assert!(!s.contains('\n'));
        assert!(Profile::wifi().to_string().contains("50.0 Mbit/s"));
    }
}
