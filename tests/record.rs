//! The recorder, end to end: real `retrace node` processes on 127.0.0.1, started by
//! `retrace cluster`, SIGKILLed and restarted, attacked with hostile frames; then `verify`
//! and `merge` on what they left.

mod common;
use common::*;
use retrace_recorder::log::{read_log, LogRecord};
use retrace_recorder::manifest::{Ended, Manifest};
use retrace_sim::trace::Record;
use retrace_sim::Trace;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// What one input looked like, comparable between a node log and a merged trace.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Start(u64),
    Deliver(u32, Vec<u8>),
    Timer(Vec<u8>),
    External(Vec<u8>),
}

fn log_inputs(dir: &Path, manifest: &Manifest, node: usize) -> Vec<Input> {
    let mut out = Vec::new();
    for inc in &manifest.nodes[node].incarnations {
        let log = read_log(&dir.join(&inc.log)).expect("log reads");
        for r in log.records {
            match r {
                LogRecord::Start { seed, .. } => out.push(Input::Start(seed)),
                LogRecord::Deliver { id, payload, .. } => {
                    out.push(Input::Deliver(id.node, payload))
                }
                LogRecord::Timer { tag, .. } => out.push(Input::Timer(tag)),
                LogRecord::External { payload, .. } => out.push(Input::External(payload)),
                _ => {}
            }
        }
    }
    out
}

fn trace_inputs(trace: &Trace, node: usize) -> Vec<Input> {
    trace
        .events
        .iter()
        .filter(|e| e.record.input_node().is_some_and(|n| n.index() == node))
        .filter_map(|e| match &e.record {
            Record::Start { seed, .. } | Record::Restart { seed, .. } => Some(Input::Start(*seed)),
            Record::Deliver { from, payload, .. } => Some(Input::Deliver(from.0, payload.clone())),
            Record::Timer { tag, .. } => Some(Input::Timer(tag.as_bytes().to_vec())),
            Record::External { payload, .. } => Some(Input::External(payload.clone())),
            _ => None,
        })
        .collect()
}

fn record(scenario: &str, dir: &Path, extra: &[&str]) -> Manifest {
    let mut args = vec!["cluster", scenario, "--record", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "cluster failed\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    Manifest::read(dir).expect("manifest")
}

fn verify_and_merge(dir: &Path) -> Trace {
    let o = retrace(&["verify", dir.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify failed\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("; 0 mismatches"), "{}", stdout(&o));
    let out = dir.join("merged.trace");
    let o = retrace(&["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "merge failed\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let trace = Trace::load(&out).expect("merged trace loads");
    assert!(trace.is_complete(), "merged trace ends with its end record");
    trace
}

#[test]
fn a_recorded_kv_cluster_verifies_and_merges_into_the_same_inputs() {
    let dir = scratch_dir("record-kv");
    // fsync always: the killed node's last records are on disk before anything it sent.
    let manifest = record(
        "scenarios/kv.toml",
        &dir,
        &["--duration", "2500ms", "--fsync", "always"],
    );
    assert!(manifest.workload.answered > 100, "{:?}", manifest.workload);
    // kv.toml kills replica-0 at 2s.
    assert_eq!(manifest.nodes[0].incarnations[0].ended, Ended::Killed);
    assert!(manifest.nodes[1..]
        .iter()
        .all(|n| n.incarnations.iter().all(|i| i.ended == Ended::Stopped)));

    let trace = verify_and_merge(&dir);
    for node in 0..manifest.nodes.len() {
        let from_log = log_inputs(&dir, &manifest, node);
        assert!(from_log.len() > 10, "{}", manifest.nodes[node].name);
        assert_eq!(
            trace_inputs(&trace, node),
            from_log,
            "{}: merged inputs equal the log's",
            manifest.nodes[node].name
        );
    }
    // Causality holds in the merged order: every delivery comes after its send.
    for e in &trace.events {
        if let Record::Deliver {
            send: Some(send), ..
        } = e.record
        {
            assert!(send < e.index);
            assert!(matches!(
                trace.events[send as usize].record,
                Record::Send { .. }
            ));
        }
    }
    assert!(
        trace
            .events
            .iter()
            .any(|e| matches!(e.record, Record::Crash { .. })),
        "the kill is in the trace"
    );
}

#[test]
fn repeated_sigkills_leave_readable_logs_and_lose_no_committed_record() {
    let dir = scratch_dir("record-kill");
    let manifest = record("tests/data/kv-kill-loop.toml", &dir, &["--fsync", "always"]);
    let killed: usize = manifest
        .nodes
        .iter()
        .flat_map(|n| &n.incarnations)
        .filter(|i| i.ended == Ended::Killed)
        .count();
    assert_eq!(killed, 4, "every planned kill happened");
    for n in &manifest.nodes {
        for inc in &n.incarnations {
            let log = read_log(&dir.join(&inc.log))
                .expect("every log reads up to its last complete record");
            assert!(
                matches!(log.records.first(), Some(LogRecord::Start { .. })),
                "{}",
                inc.log
            );
            if inc.ended == Ended::Stopped {
                assert!(
                    log.is_complete(),
                    "{}: a clean stop ends with its stop record",
                    inc.log
                );
            }
        }
    }
    // Outputs leave a node only after its log holds them: every delivered message has its
    // send in the sender's log, so nothing becomes a black box.
    let o = retrace(&[
        "merge",
        dir.to_str().unwrap(),
        "-o",
        dir.join("m.trace").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("shown as external inputs"),
        "{}",
        stdout(&o)
    );
    verify_and_merge(&dir);

    // Replaying the incident against changed code shows where behaviour changes: the same
    // logs verified as if the replicas had the ack-before-replicate bug.
    let mut changed = manifest.clone();
    changed.scenario_toml = changed
        .scenario_toml
        .replace("clients = 2", "clients = 2\nbug = \"ack-before-replicate\"");
    assert_ne!(changed.scenario_toml, manifest.scenario_toml);
    changed.write(&dir).unwrap();
    let o = retrace(&["verify", dir.to_str().unwrap()]);
    // Exit 3: the code re-executing the log does other than it recorded.
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("MISMATCH  replica-"), "{text}");
    assert!(
        text.contains("expected (log):") && text.contains("actual (code):"),
        "{text}"
    );
}

#[test]
fn hostile_frames_are_refused_and_the_node_keeps_serving() {
    let dir = scratch_dir("record-hostile");
    let mut cluster = std::process::Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args([
            "cluster",
            "scenarios/kv.toml",
            "--record",
            dir.to_str().unwrap(),
            "--duration",
            "3s",
        ])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest = wait_for_manifest(&dir);
    let peer = &manifest.nodes[1].peer_addr;
    let client = &manifest.nodes[3].client_addr;
    let attacks: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", // garbage
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // absurd length
        &[0x20, 1, 2, 3, 4, 9, 9],            // truncated frame
        &[0x03, 0, 0, 0, 0, 1, 2, 3],         // bad checksum
    ];
    for bytes in attacks {
        let mut s = TcpStream::connect(peer).unwrap();
        s.write_all(bytes).unwrap();
    }
    {
        // The client port: an oversized frame, then a well-framed request that is not JSON.
        let mut s = TcpStream::connect(client).unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    }
    let o = retrace(&["client", client, "not json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(200));
    // Still serving: a real request through the attacked client node and replica.
    let o = retrace(&[
        "client",
        client,
        r#"{"Op":{"Put":{"key":"k1","value":"after-attack"}}}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("PutOk"), "{}", stdout(&o));
    assert!(cluster.wait().unwrap().success());
    let err = read(&dir.join("replica-1.0.stderr"));
    assert!(err.contains("closing the connection"), "{err}");
    assert!(err.matches("closing").count() >= 4, "{err}");
    let err = read(&dir.join("client-0.0.stderr"));
    assert!(err.contains("exceeds"), "{err}");
    // The attacked nodes' logs are intact and re-execute exactly.
    verify_and_merge(&dir);
}

#[test]
fn a_full_disk_stops_recording_but_not_the_node_unless_strict() {
    let dir = scratch_dir("record-full");
    let ports: Vec<String> = retrace_recorder::ports::free_addrs(3)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let start = |strict: bool| {
        let mut args = vec![
            "node".to_string(),
            "scenarios/pingpong.toml".into(),
            "--id".into(),
            "0".into(),
            "--peers".into(),
            format!("{},{}", ports[0], ports[1]),
            "--client".into(),
            ports[2].clone(),
            "--log".into(),
            "/dev/full".into(),
            "--storage".into(),
            dir.join("s").to_str().unwrap().into(),
            "--fsync".into(),
            "never".into(),
            "--insecure-plaintext".into(),
        ];
        if strict {
            args.push("--record-strict".into());
        }
        std::process::Command::new(env!("CARGO_BIN_EXE_retrace"))
            .args(&args)
            .current_dir(root())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut node = start(false);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        node.try_wait().unwrap().is_none(),
        "the node keeps running without its recording"
    );
    drop(node.stdin.take());
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: writing /dev/full"), "{err}");
    assert!(err.contains("INCOMPLETE"), "{err}");

    let node = start(true);
    let out = node.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("recording failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two bugs met in the first recorded incident replayed end to end: a SIGKILLed node's
/// lost log tail (fsync batch) made merge turn the deliveries of its unlogged sends into
/// external requests (the wrong handler ran, replay diverged), and its restart found
/// storage written by steps the log lost (replay regenerated different storage and
/// diverged at the restart).
#[test]
fn a_killed_node_with_a_lost_log_tail_still_replays_without_divergence() {
    let dir = scratch_dir("record-lost-tail");
    record(
        "scenarios/kv-ack-before-replicate.toml",
        &dir,
        &[
            "--duration",
            "3500ms",
            "--fsync",
            "batch",
            "--closed-loop",
            "8",
        ],
    );
    let out = dir.join("incident.trace");
    let o = retrace(&["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let trace = Trace::load(&out).unwrap();
    // The restart carries the storage the process found.
    assert!(trace
        .events
        .iter()
        .any(|e| matches!(e.record, Record::StorageImage { .. })));
    let o = retrace(&["replay", out.to_str().unwrap(), "--headless"]);
    // 1 when the run lost a write (this buggy store usually does), never 3 (a divergence).
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("replay    ok:"), "{}", stdout(&o));
}
