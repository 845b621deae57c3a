//! Durations as operators write them in the config: a number and a unit.

use std::time::Duration;

/// Parses `"500ms"`, `"20s"`, `"10m"`, `"2h"` or `"7d"`.
///
/// A bare number is refused on purpose: `hold_wait = 20` could mean seconds or
/// milliseconds, and a wrong guess turns a cutover pause into a bounce.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\" has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a whole number"))?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{other}\" (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn refuses_ambiguous_or_bad() {
        assert!(parse("20").is_err());
        assert!(parse("s").is_err());
        assert!(parse("3 weeks").is_err());
        assert!(parse("-1s").is_err());
    }
}
