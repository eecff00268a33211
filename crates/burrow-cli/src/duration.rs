//! Parsing of human durations like `90s`, `15m`, `1h`, `7d`.

/// Seconds in a duration written as a number with an optional unit (s, m, h, d).
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 15m, 1h, 7d)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("15m"), Ok(900));
        assert_eq!(parse_secs("1h"), Ok(3600));
        assert_eq!(parse_secs("7d"), Ok(604_800));
        assert!(parse_secs("h").is_err());
        assert!(parse_secs("1w").is_err());
    }
}
