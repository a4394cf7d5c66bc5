//! Untrusted input at every edge of the CLI — traces whose frames pass their checksums but
//! whose structure is forged, and scenario, schedule and manifest files at or past their
//! limits — gets a located error and exit 2 from every consumer; nothing panics, hangs or
//! allocates in proportion to what a file claims rather than what it holds.

mod common;
use common::*;
use retrace_models::PingPongModel;
use retrace_sim::trace::{Header, NodeInfo, TraceOut, TraceWriter};
use retrace_sim::{scenario, Record, Simulation, Trace, TraceSink};
use std::path::Path;

fn pingpong_trace() -> Trace {
    let path = root().join("scenarios/pingpong.toml");
    let s = scenario::parse::<PingPongModel>("pingpong.toml", &read(&path)).unwrap();
    let bytes = Simulation::<PingPongModel>::new(&s, 1, TraceSink::Memory)
        .run()
        .trace
        .unwrap();
    Trace::from_bytes(&bytes, "pingpong").unwrap()
}

/// Writes `header` and `trace`'s records, each passed through `edit` first, with valid
/// framing and checksums: what a forger (or a buggy writer) could produce.
fn forged(header: &Header, trace: &Trace, mut edit: impl FnMut(u64, &mut Record)) -> Vec<u8> {
    let mut out = TraceOut::new(Some(TraceWriter::in_memory(header)));
    for e in &trace.events {
        let mut record = e.record.clone();
        edit(e.index, &mut record);
        out.push(|enc, buf| enc.record(buf, e.time_ns, &record));
    }
    out.writer.expect("in memory").into_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// Every command that reads a trace, on `path`.
fn consumers(path: &str) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<&str>> = vec![
        vec!["show", path],
        vec!["replay", path, "--headless"],
        vec!["why", path, "5"],
        vec!["profile", path],
    ];
    for format in ["perfetto", "otlp", "jaeger", "shiviz", "dot"] {
        all.push(vec!["export", path, "--format", format, "-o", "/dev/null"]);
    }
    all.into_iter()
        .map(|a| a.into_iter().map(String::from).collect())
        .collect()
}

fn assert_refused_by_every_consumer(path: &str, expected: &str) {
    for args in consumers(path) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = retrace(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_delivery_linked_to_a_record_that_is_not_a_send_is_refused_by_every_consumer() {
    let dir = scratch_dir("forged-send-link");
    let trace = pingpong_trace();
    let mut forged_at = None;
    let bytes = forged(&trace.header, &trace, |index, r| {
        if let Record::Deliver { send, .. } = r {
            if forged_at.is_none() {
                *send = Some(0); // record 0 is a start, not a send
                forged_at = Some(index);
            }
        }
    });
    let path = write(&dir, "forged.trace", &bytes);
    let at = forged_at.expect("the trace has a delivery");
    assert_refused_by_every_consumer(&path, &format!("record {at} at byte offset"));
    assert_refused_by_every_consumer(&path, "points at record 0, which is not a send");
}

#[test]
fn a_record_naming_a_node_past_the_cluster_is_refused_by_every_consumer() {
    let dir = scratch_dir("forged-node");
    let trace = pingpong_trace();
    let bytes = forged(&trace.header, &trace, |_, r| {
        if let Record::Send { to, .. } = r {
            to.0 = 7;
        }
    });
    let path = write(&dir, "forged.trace", &bytes);
    assert_refused_by_every_consumer(&path, "is node 7, but the trace has 2 nodes");
}

#[test]
fn a_header_with_zero_nodes_is_refused_by_every_consumer() {
    let dir = scratch_dir("zero-nodes");
    let trace = pingpong_trace();
    let header = Header {
        nodes: Vec::new(),
        ..trace.header.clone()
    };
    let path = write(&dir, "zero.trace", &forged(&header, &trace, |_, _| {}));
    assert_refused_by_every_consumer(&path, "the header lists 0 nodes; a trace has 1 to 256");
}

#[test]
fn a_header_claiming_100000_nodes_is_refused_by_every_consumer() {
    let dir = scratch_dir("many-nodes");
    let trace = pingpong_trace();
    let header = Header {
        nodes: (0..100_000)
            .map(|i| NodeInfo {
                name: format!("n{i}"),
                role: "r".into(),
            })
            .collect(),
        ..trace.header.clone()
    };
    let bytes = forged(&header, &trace, |_, _| {});
    assert!(bytes.len() < 2 << 20, "a small file: {} bytes", bytes.len());
    let path = write(&dir, "many.trace", &bytes);
    assert_refused_by_every_consumer(&path, "the header lists 100000 nodes");
}

#[test]
fn kv_with_100000_clients_is_refused_at_its_option() {
    let dir = scratch_dir("kv-clients");
    let source = read(&root().join("scenarios/kv.toml")).replace("clients = 4", "clients = 100000");
    let path = write(&dir, "kv-many.toml", source.as_bytes());
    let out = retrace(&["run", &path, "--no-trace"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("model_options.clients`: must be between 1 and 192"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_scenario_from_dev_zero_is_refused_without_reading_it_all() {
    let out = retrace(&["run", "/dev/zero", "--no-trace"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("/dev/zero: cannot read scenario: larger than the 1048576-byte limit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_17_mb_description_is_refused_so_every_trace_written_can_be_read() {
    let dir = scratch_dir("huge-description");
    let source = read(&root().join("scenarios/pingpong.toml")).replace(
        "description = \"one message in flight over a lossy, jittery link\"",
        &format!("description = \"{}\"", "x".repeat(17 << 20)),
    );
    let path = write(&dir, "huge.toml", source.as_bytes());
    let out = retrace(&[
        "run",
        &path,
        "-o",
        &dir.join("t.trace").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("byte limit"), "{}", stderr(&out));
    // At the limit, what is written reads back.
    let fits = read(&root().join("scenarios/pingpong.toml")).replace(
        "description = \"one message in flight over a lossy, jittery link\"",
        &format!("description = \"{}\"", "x".repeat((1 << 20) - 400)),
    );
    let path = write(&dir, "fits.toml", fits.as_bytes());
    let trace = dir.join("fits.trace").display().to_string();
    let out = retrace(&["run", &path, "-o", &trace]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = retrace(&["show", &trace, "--limit", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_schedule_shifting_the_workload_by_2_pow_64_is_refused_instead_of_hanging() {
    let dir = scratch_dir("schedule-shift");
    let schedule = serde_json::json!({
        "format": 2,
        "model": "kv",
        "scenario": "scenarios/kv.toml",
        "seed": 1,
        "strategy": "random",
        "invariant": "",
        "schedule": { "choices": [], "workload_shift_ns": u64::MAX },
    });
    let path = write(&dir, "s.json", schedule.to_string().as_bytes());
    let out = retrace(&[
        "run",
        "scenarios/kv.toml",
        "--schedule",
        &path,
        "--no-trace",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("schedule.workload_shift_ns = 18446744073709551615 exceeds"),
        "{}",
        stderr(&out)
    );
}

/// One exit-code table for every command: `replay --headless` printed "invariant …
/// violated", then "replay ok", and exited 0; a truncated trace exited 0 from `replay`,
/// `why` and `profile` while `show` exited 2.
#[test]
fn every_trace_command_follows_the_one_exit_code_table() {
    let dir = scratch_dir("exit-table");
    let trace = pingpong_trace();
    let clean = write(
        &dir,
        "clean.trace",
        &forged(&trace.header, &trace, |_, _| {}),
    );
    let mut changed = false;
    let diverging = forged(&trace.header, &trace, |_, r| {
        if let Record::Send { digest, .. } = r {
            if !changed {
                *digest ^= 1; // the code will send something else than the trace says
                changed = true;
            }
        }
    });
    let diverging = write(&dir, "diverging.trace", &diverging);
    let bytes = std::fs::read(&clean).unwrap();
    let torn = write(&dir, "torn.trace", &bytes[..bytes.len() - 5]);
    let code = |args: &[&str]| retrace(args).status.code();
    assert_eq!(code(&["replay", &clean, "--headless"]), Some(0));
    assert_eq!(code(&["replay", &diverging, "--headless"]), Some(3));
    assert_eq!(code(&["replay", &torn, "--headless"]), Some(2));
    for args in [
        vec!["show", torn.as_str()],
        vec!["why", torn.as_str(), "5"],
        vec!["profile", torn.as_str()],
        vec![
            "export",
            torn.as_str(),
            "--format",
            "dot",
            "-o",
            "/dev/null",
        ],
    ] {
        assert_eq!(code(&args), Some(2), "{args:?}");
    }
    // A violation replayed is a violation (1), as it was when the run found it.
    let kv = dir.join("kv.trace");
    let kv = kv.to_str().unwrap();
    let ran = code(&["run", "scenarios/kv-ack-before-replicate.toml", "-o", kv]);
    assert_eq!(ran, Some(1));
    assert_eq!(code(&["replay", kv, "--headless"]), Some(1));
}
