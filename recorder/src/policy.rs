//! How a node's log lives on disk for weeks: cut into segments, the oldest deleted past a
//! bound, and the node's state snapshotted often enough that any kept segment can be
//! re-executed on its own.
//!
//! The defaults are for a production host: a node never keeps more than 1 GiB of log, in
//! segments of at most 64 MiB or one hour, and snapshots itself every 10 seconds. Each
//! flag's text form is what `retrace node` and `retrace cluster` accept, and what
//! [`std::fmt::Display`] writes back (the launcher hands a node its policy that way).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Everything about how a node's log is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPolicy {
    /// A segment is closed once it holds this many bytes...
    pub segment_bytes_max: u64,
    /// ...or is this old.
    pub segment_age_max: Duration,
    /// What is kept of the node's log, all its lives together.
    pub retain: Retain,
    /// How often the node's state is snapshotted inside a segment (each segment after
    /// the first starts with one as well).
    pub snapshot_every: SnapshotEvery,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            segment_bytes_max: 64 << 20,
            segment_age_max: Duration::from_secs(3600),
            retain: Retain::Bytes(1 << 30),
            snapshot_every: SnapshotEvery::Time(Duration::from_secs(10)),
        }
    }
}

/// `--retain`: a size (`1GiB`) keeps the newest segments that fit in it; a duration (`7d`)
/// keeps the segments written to within it; `all` keeps everything. Whole segments are
/// deleted, oldest first, and never the one being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    Bytes(u64),
    Age(Duration),
    All,
}

/// `--snapshot-every`: a duration (`10s`) or a number of log records (`50000`); `never`
/// snapshots only where a segment starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotEvery {
    Time(Duration),
    Records(u64),
    Never,
}

/// The smallest segment a node may be given: a header and a snapshot must fit with room
/// for records, or every step would start a segment.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Parses `64MiB`, `500KB`, `1GiB`, `4096` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a whole number of bytes, like `64MiB`"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}`: too large"))
}

/// Parses a duration as scenarios write them (`10s`, `250ms`, `2h`), plus days (`7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Some(days) = t.strip_suffix('d') {
        let days: u64 = days
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: expected a whole number of days, like `7d`"))?;
        return days
            .checked_mul(86_400)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{text}`: too long"));
    }
    let ns = retrace_sim::scenario::parse_duration_ns(t, false)?;
    Ok(Duration::from_nanos(ns as u64))
}

/// A duration in the largest unit that writes it whole, for the text form.
fn show_duration(d: Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let ns = d.as_nanos();
    for (unit, scale) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns >= scale && ns.is_multiple_of(scale) {
            return write!(f, "{}{unit}", ns / scale);
        }
    }
    write!(f, "{ns}ns")
}

impl FromStr for Retain {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "all" {
            return Ok(Retain::All);
        }
        if text
            .trim_end()
            .ends_with(|c: char| c == 'B' || c.is_ascii_digit())
        {
            return parse_size(text).map(Retain::Bytes);
        }
        parse_duration(text)
            .map(Retain::Age)
            .map_err(|e| format!("{e}; --retain takes a size (`1GiB`), a duration (`7d`) or `all`"))
    }
}

impl fmt::Display for Retain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retain::Bytes(b) => write!(f, "{b}"),
            Retain::Age(d) => show_duration(*d, f),
            Retain::All => f.write_str("all"),
        }
    }
}

impl FromStr for SnapshotEvery {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == "never" {
            return Ok(SnapshotEvery::Never);
        }
        if let Ok(records) = t.parse::<u64>() {
            if records == 0 {
                return Err(format!("`{text}`: at least 1 record between snapshots"));
            }
            return Ok(SnapshotEvery::Records(records));
        }
        match parse_duration(t)? {
            d if d.is_zero() => Err(format!("`{text}`: snapshots need a time between them")),
            d => Ok(SnapshotEvery::Time(d)),
        }
    }
}

impl fmt::Display for SnapshotEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotEvery::Time(d) => show_duration(*d, f),
            SnapshotEvery::Records(n) => write!(f, "{n}"),
            SnapshotEvery::Never => f.write_str("never"),
        }
    }
}

/// `--segment-size`, refusing segments too small to hold a snapshot and some records.
pub fn parse_segment_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        n if n < SEGMENT_BYTES_MIN => Err(format!(
            "`{text}`: a segment must hold at least {SEGMENT_BYTES_MIN} bytes"
        )),
        n => Ok(n),
    }
}

/// `--segment-age`, refusing zero.
pub fn parse_segment_age(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("`{text}`: a segment must live a while")),
        d => Ok(d),
    }
}

/// A duration as the flags write it.
pub struct ShowDuration(pub Duration);

impl fmt::Display for ShowDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        show_duration(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_reads_back_what_it_writes() {
        for text in ["1GiB", "4096", "7d", "90m", "all"] {
            let r: Retain = text.parse().unwrap();
            assert_eq!(r.to_string().parse::<Retain>().unwrap(), r, "{text}");
        }
        for text in ["10s", "250ms", "50000", "never"] {
            let s: SnapshotEvery = text.parse().unwrap();
            assert_eq!(s.to_string().parse::<SnapshotEvery>().unwrap(), s, "{text}");
        }
        assert_eq!("1GiB".parse::<Retain>().unwrap(), Retain::Bytes(1 << 30));
        assert_eq!(
            "7d".parse::<Retain>().unwrap(),
            Retain::Age(Duration::from_secs(7 * 86_400))
        );
        let d = parse_segment_age("1h").unwrap();
        assert_eq!(parse_segment_age(&ShowDuration(d).to_string()).unwrap(), d);
    }

    #[test]
    fn bad_sizes_and_durations_say_what_was_expected() {
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!("0".parse::<SnapshotEvery>().is_err());
        assert!("soon"
            .parse::<Retain>()
            .unwrap_err()
            .contains("--retain takes"));
        assert!(parse_segment_size("1KB").unwrap_err().contains("at least"));
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }
}
