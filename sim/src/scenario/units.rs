//! Scenario value types that validate themselves while being deserialized, so that a bad
//! value is reported with the exact place in the file (the TOML parser attaches the span).

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// Parses `1ms`, `1.5s`, `250us`, `100ns`, `2m`, or `0`, into nanoseconds; a leading `-` is
/// accepted only when `signed`.
pub fn parse_duration_ns(text: &str, signed: bool) -> Result<i64, String> {
    let t = text.trim();
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) if signed => (true, rest.trim_start()),
        Some(_) => return Err(format!("`{text}`: a duration here cannot be negative")),
        None => (false, t),
    };
    if body == "0" {
        return Ok(0);
    }
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let scale: f64 = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "" => {
            return Err(format!(
                "`{text}`: missing unit (use ns, us, ms, s, m or h)"
            ))
        }
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ns, us, ms, s, m or h)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number followed by a unit, like `5ms`"))?;
    let ns = (value * scale).round();
    if !ns.is_finite() || ns > i64::MAX as f64 {
        return Err(format!("`{text}`: too long"));
    }
    Ok(if negative { -(ns as i64) } else { ns as i64 })
}

struct TextVisitor(&'static str);

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        if v == 0 {
            Ok("0".into())
        } else {
            Err(E::custom(format!(
                "bare number {v}: add a unit, like \"{v}ms\""
            )))
        }
    }
}

fn text<'de, D: Deserializer<'de>>(d: D, expecting: &'static str) -> Result<String, D::Error> {
    d.deserialize_any(TextVisitor(expecting))
}

/// A non-negative duration in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dur(pub u64);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = text(d, "a duration such as \"5ms\"")?;
        parse_duration_ns(&t, false)
            .map(|ns| Dur(ns as u64))
            .map_err(de::Error::custom)
    }
}

/// A duration that may be negative (clock offsets and jumps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SignedDur(pub i64);

impl<'de> Deserialize<'de> for SignedDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = text(d, "a duration such as \"-5ms\"")?;
        parse_duration_ns(&t, true)
            .map(SignedDur)
            .map_err(de::Error::custom)
    }
}

fn split_range(t: &str) -> (&str, &str) {
    match t.split_once("..") {
        Some((lo, hi)) => (lo, hi.strip_prefix('=').unwrap_or(hi)),
        None => (t, t),
    }
}

/// A range of non-negative durations, `"1ms..5ms"` (inclusive), or one duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DurRange {
    pub lo_ns: u64,
    pub hi_ns: u64,
}

impl DurRange {
    pub fn fixed(ns: u64) -> Self {
        DurRange {
            lo_ns: ns,
            hi_ns: ns,
        }
    }
}

impl<'de> Deserialize<'de> for DurRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = text(d, "a duration range such as \"1ms..5ms\"")?;
        let (lo, hi) = split_range(&t);
        let lo = parse_duration_ns(lo, false).map_err(de::Error::custom)? as u64;
        let hi = parse_duration_ns(hi, false).map_err(de::Error::custom)? as u64;
        if lo > hi {
            return Err(de::Error::custom(format!(
                "range `{t}` is empty: its start is after its end"
            )));
        }
        Ok(DurRange {
            lo_ns: lo,
            hi_ns: hi,
        })
    }
}

/// A range of possibly negative durations, `"-5ms..5ms"`, or one duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SignedDurRange {
    pub lo_ns: i64,
    pub hi_ns: i64,
}

impl<'de> Deserialize<'de> for SignedDurRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = text(d, "a duration range such as \"-5ms..5ms\"")?;
        let (lo, hi) = split_range(&t);
        let lo = parse_duration_ns(lo, true).map_err(de::Error::custom)?;
        let hi = parse_duration_ns(hi, true).map_err(de::Error::custom)?;
        if lo > hi {
            return Err(de::Error::custom(format!(
                "range `{t}` is empty: its start is after its end"
            )));
        }
        Ok(SignedDurRange {
            lo_ns: lo,
            hi_ns: hi,
        })
    }
}

/// A probability in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Prob(pub f64);

impl<'de> Deserialize<'de> for Prob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = f64::deserialize(d)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(de::Error::custom(format!(
                "probability must be between 0 and 1, got {p}"
            )));
        }
        Ok(Prob(p))
    }
}

/// A rate of events, `"200/s"`, `"0.5/s"`, `"3/ms"`, `"10/m"`; stored per second.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Rate {
    pub per_second: f64,
}

impl Rate {
    /// Mean time between events, or `None` for a zero rate.
    pub fn mean_interval_ns(self) -> Option<f64> {
        (self.per_second > 0.0).then(|| 1e9 / self.per_second)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = text(d, "a rate such as \"100/s\"")?;
        let (count, per) = t.split_once('/').ok_or_else(|| {
            de::Error::custom(format!("`{t}`: a rate needs a unit, like \"100/s\""))
        })?;
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("`{t}`: expected a number before `/`")))?;
        let per_ns =
            parse_duration_ns(&format!("1{}", per.trim()), false).map_err(de::Error::custom)?;
        if !count.is_finite() || count < 0.0 {
            return Err(de::Error::custom(format!(
                "`{t}`: a rate cannot be negative"
            )));
        }
        Ok(Rate {
            per_second: count * 1e9 / per_ns as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ns("1ms", false), Ok(1_000_000));
        assert_eq!(parse_duration_ns("1.5s", false), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("250us", false), Ok(250_000));
        assert_eq!(parse_duration_ns("-5ms", true), Ok(-5_000_000));
        assert!(parse_duration_ns("-5ms", false).is_err());
        assert!(parse_duration_ns("5", false)
            .unwrap_err()
            .contains("missing unit"));
        assert!(parse_duration_ns("5 parsecs", false)
            .unwrap_err()
            .contains("unknown unit"));
    }
}
