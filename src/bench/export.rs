//! `retrace bench export`: each export format over long traces, as `retrace export` runs it
//! (a process reading the file, writing to /dev/null): time, records per second, and peak
//! memory at two trace lengths, which shows whether memory grows with the trace.

use crate::bench::replay::kv_trace_bytes;
use crate::bench::BenchArgs;
use crate::summary::{bytes, group};
use anyhow::anyhow;
use retrace_replayer::export::Format;
use std::time::Instant;

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find this program: {e}"))?;
    let lengths = [args.replay_events, args.replay_events * 2];
    println!(
        "retrace bench export (kv traces of {} and {} records; one `retrace export -o FILE` process per run)",
        group(lengths[0]),
        group(lengths[1])
    );
    let mut files = Vec::new();
    for &n in &lengths {
        let (data, _) = kv_trace_bytes(n)?;
        let path = args.dir.join(format!("bench-export-{n}.trace"));
        std::fs::write(&path, &data).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let records = retrace_sim::Trace::load(&path)
            .map_err(anyhow::Error::msg)?
            .events
            .len() as u64;
        files.push((path, records, data.len() as u64));
    }
    println!(
        "  {:<10} {:>12} {:>10} {:>14} {:>12} {:>12}",
        "format", "records", "time", "records/s", "peak RSS", "output"
    );
    for format in Format::ALL {
        for (path, records, _) in &files {
            let out = args.dir.join(format!("bench-export.{}", format.name()));
            let started = Instant::now();
            let o = std::process::Command::new(&exe)
                .args([
                    "export",
                    &path.display().to_string(),
                    "--format",
                    format.name(),
                    "-o",
                ])
                .arg(&out)
                .arg("--report-peak-memory")
                .output()
                .map_err(|e| anyhow!("running export: {e}"))?;
            let took = started.elapsed();
            let stderr = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() {
                return Err(anyhow!("export {} failed: {stderr}", format.name()));
            }
            let rss = stderr
                .lines()
                .find_map(|l| l.strip_prefix("peak RSS "))
                .unwrap_or("?")
                .to_string();
            let size = std::fs::metadata(&out).map_or(0, |m| m.len());
            let _ = std::fs::remove_file(&out);
            println!(
                "  {:<10} {:>12} {:>9.2}s {:>12.2} M {:>12} {:>12}{}",
                format.name(),
                group(*records),
                took.as_secs_f64(),
                *records as f64 / took.as_secs_f64() / 1e6,
                rss,
                bytes(size),
                if format.two_passes() {
                    "  (two passes)"
                } else {
                    ""
                }
            );
        }
    }
    for (path, _, size) in &files {
        let _ = std::fs::remove_file(path);
        let _ = size;
    }
    Ok(crate::exit::OK)
}
