//! `retrace export`: a trace in the formats other tools open, streamed from the file.

use crate::exit;
use crate::registry::{Models, Registry};
use crate::summary::group;
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::export::{export as write_export, Format, Options};
use retrace_sim::trace::TraceReader;
use retrace_sim::RequestId;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The trace
    trace: PathBuf,
    /// perfetto (Chrome trace JSON), otlp (OpenTelemetry OTLP/JSON), jaeger (Jaeger UI JSON),
    /// shiviz (ShiViz log), dot (Graphviz happens-before graph)
    #[arg(long, short = 'f', value_name = "FORMAT")]
    format: String,
    /// Write here instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    /// Only this request (as `r12` or `12`): otlp, jaeger and dot
    #[arg(long, value_name = "ID")]
    request: Option<String>,
    /// otlp and jaeger: when a simulated run's time zero is, as Unix seconds or
    /// `2026-11-30T12:00:00Z` (default: now, so a trace viewer's default search finds it;
    /// recorded runs keep their wall-clock times). Written into the file as
    /// `retrace.base_time_unix_nano`
    #[arg(long, value_name = "TIME")]
    base_time: Option<String>,
    /// dot: how many events of each node before the violation to draw (the default
    /// graph is the violation's neighbourhood)
    #[arg(long, value_name = "N", default_value_t = 10)]
    depth: u32,
    /// dot: draw the whole run, not the violation's neighbourhood
    #[arg(long)]
    all: bool,
    /// Print the process's peak memory on standard error when done (for `bench export`)
    #[arg(long, hide = true)]
    report_peak_memory: bool,
}

pub fn export<L: Models>(registry: &Registry<L>, args: &ExportArgs) -> anyhow::Result<u8> {
    let format = Format::parse(&args.format).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        anyhow!(
            "--format `{}`: expected one of {}",
            args.format,
            names.join(", ")
        )
    })?;
    let request = match &args.request {
        Some(r) => {
            Some(RequestId(r.trim_start_matches('r').parse().map_err(
                |_| anyhow!("--request `{r}` is not a request id"),
            )?))
        }
        None => None,
    };
    let (header, mut reader) = TraceReader::open(&args.trace).map_err(anyhow::Error::msg)?;
    // Labels name messages by the model's variant when this binary knows the model.
    let messages = registry.messages(&header.model);
    let (message_name, message_text, timer_name, service_bytes) = (
        messages.name,
        messages.text,
        messages.timer,
        messages.service,
    );
    let survey = if format.two_passes() {
        let (_, first) = TraceReader::open(&args.trace).map_err(anyhow::Error::msg)?;
        Some(
            retrace_replayer::export::survey(&header, first)
                .map_err(|e| anyhow!("{}: {e}", args.trace.display()))?,
        )
    } else {
        None
    };
    let base_time_ns = match (&header.origin, &args.base_time) {
        (_, Some(text)) => parse_base_time(text)?,
        (origin, None) if origin.virtual_time() => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        (_, None) => 0,
    };
    let neighbourhood = format == Format::Dot && !args.all;
    let options = Options {
        request,
        message_name: &message_name,
        message_text: &message_text,
        timer_name: &timer_name,
        service_bytes: &service_bytes,
        survey: survey.as_ref(),
        base_time_ns,
        dot_depth: neighbourhood.then_some(args.depth.max(1)),
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).map_err(|e| anyhow!("{}: {e}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, &mut out);
    let walked = write_export(&header, reader.by_ref(), format, &options, &mut out)
        .map_err(|e| anyhow!("writing the export: {e}"))?;
    drop(out);
    if let Some(tail) = reader.tail_error().filter(|t| t.is_structural()) {
        return Err(anyhow!(
            "{}: {tail}; the export stops there and is not usable",
            args.trace.display()
        ));
    }
    if walked.written == 0 {
        // Never report success for a file with nothing in it.
        if let Some(path) = &args.out {
            let _ = std::fs::remove_file(path);
        }
        let what = match request {
            Some(r) => format!("request {r} has no events in it"),
            None => format!("it has no events ({} records)", group(walked.records)),
        };
        return Err(anyhow!(
            "{}: nothing to export as {}: {what}",
            args.trace.display(),
            format.name()
        ));
    }
    if let Some(tail) = reader.tail_error() {
        eprintln!(
            "warning: {}: {tail}; exported the {} records before it",
            args.trace.display(),
            group(walked.records)
        );
    }
    if let Some(path) = &args.out {
        eprintln!(
            "exported  {} records ({} events) of {} as {} {} to {}",
            group(walked.records),
            group(walked.steps),
            args.trace.display(),
            group(walked.written),
            unit(format),
            path.display()
        );
    }
    if neighbourhood {
        match survey.as_ref().and_then(|s| s.violation.as_ref()) {
            Some((at, _)) => eprintln!(
                "drew the violation's neighbourhood: the last {} events of each node before \
                 event #{at} ({} of {} events); --all draws the whole run",
                args.depth.max(1),
                group(walked.written),
                group(walked.steps)
            ),
            None if walked.steps > 2_000 => eprintln!(
                "note: no violation, so the whole run is drawn ({} events), which Graphviz \
                 may take minutes to lay out; --request ID draws one request",
                group(walked.steps)
            ),
            None => {}
        }
    }
    if args.report_peak_memory {
        eprintln!("peak RSS {}", crate::bench::replay::peak_rss());
    }
    Ok(exit::after_reading(reader.tail_error(), exit::OK))
}

/// What one item of `format` is, for the summary line.
fn unit(format: Format) -> &'static str {
    match format {
        Format::Perfetto => "slices",
        Format::Otlp | Format::Jaeger => "spans",
        Format::Shiviz => "events",
        Format::Dot => "vertices",
    }
}

/// `--base-time`: Unix seconds, or a UTC time as `YYYY-MM-DDTHH:MM:SSZ`; nanoseconds since
/// the epoch.
fn parse_base_time(text: &str) -> anyhow::Result<u64> {
    let bad = || {
        anyhow!(
            "--base-time `{text}`: expected Unix seconds or a UTC time like 2026-11-30T12:00:00Z"
        )
    };
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(1_000_000_000).ok_or_else(bad);
    }
    let t = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let h: Vec<&str> = time.split(':').collect();
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), h.as_slice()) else {
        return Err(bad());
    };
    let (y, m, day, hh, mm, ss) = (num(y)?, num(m)?, num(day)?, num(hh)?, num(mm)?, num(ss)?);
    if !(1970..=2500).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm), valid for the Gregorian calendar.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    Ok(seconds as u64 * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::parse_base_time;

    #[test]
    fn base_times_parse_as_unix_nanoseconds() {
        assert_eq!(parse_base_time("0").ok(), Some(0));
        assert_eq!(parse_base_time("1970-01-01T00:00:00Z").ok(), Some(0));
        assert_eq!(
            parse_base_time("2000-03-01T00:00:00Z").ok(),
            Some(951_868_800_000_000_000)
        );
        assert_eq!(
            parse_base_time("2026-11-30T12:34:56Z").ok(),
            Some(1_796_042_096_000_000_000)
        );
        assert!(parse_base_time("yesterday").is_err());
        assert!(parse_base_time("2026-13-01T00:00:00Z").is_err());
    }
}
