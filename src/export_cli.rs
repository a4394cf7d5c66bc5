//! `retrace export`: a trace in the formats other tools open, streamed from the file.

use crate::cli::exit;
use crate::registry::Registry;
use crate::summary::group;
use clap::Args;
use retrace_replayer::export::{export as write_export, Format, Options};
use retrace_sim::trace::TraceReader;
use retrace_sim::RequestId;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

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
    /// Print the process's peak memory on standard error when done (for `bench export`)
    #[arg(long, hide = true)]
    report_peak_memory: bool,
}

pub fn export(registry: &Registry, args: &ExportArgs) -> Result<u8, String> {
    let format = Format::parse(&args.format).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        format!(
            "--format `{}`: expected one of {}",
            args.format,
            names.join(", ")
        )
    })?;
    let request = match &args.request {
        Some(r) => {
            Some(RequestId(r.trim_start_matches('r').parse().map_err(
                |_| format!("--request `{r}` is not a request id"),
            )?))
        }
        None => None,
    };
    let (header, mut reader) = TraceReader::open(&args.trace).map_err(|e| e.to_string())?;
    // Labels name messages by the model's variant when this binary knows the model.
    let entry = registry.get(&header.model);
    let message_name = |p: &[u8]| match entry {
        Some(e) => e.message_name(p),
        None => format!("message ({} bytes)", p.len()),
    };
    let ends = if format.two_passes() {
        let (_, first) = TraceReader::open(&args.trace).map_err(|e| e.to_string())?;
        Some(retrace_replayer::export::request_ends(first))
    } else {
        None
    };
    let options = Options {
        request,
        message_name: &message_name,
        request_ends: ends.as_ref(),
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, &mut out);
    let walked = write_export(&header, reader.by_ref(), format, &options, &mut out)
        .map_err(|e| format!("writing the export: {e}"))?;
    drop(out);
    if let Some(tail) = reader.tail_error().filter(|t| t.is_structural()) {
        return Err(format!(
            "{}: {tail}; the export stops there and is not usable",
            args.trace.display()
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
            "exported  {} records ({} events) of {} as {} to {}",
            group(walked.records),
            group(walked.steps),
            args.trace.display(),
            format.name(),
            path.display()
        );
    }
    if args.report_peak_memory {
        eprintln!("peak RSS {}", crate::bench_replay::peak_rss());
    }
    Ok(exit::after_reading(reader.tail_error(), exit::OK))
}
