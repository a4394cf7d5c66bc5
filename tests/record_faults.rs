//! Recording under faults an operator meets: a disk that fills while the cluster runs, and
//! logs corrupted after the fact. Real `retrace node` processes on 127.0.0.1.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory on a real 512 KiB tmpfs, unmounted on drop — or, where this process may
/// not mount (not root), a plain directory and the recorder's injected disk-full writer.
struct SmallDisk {
    dir: PathBuf,
    mounted: bool,
}

impl SmallDisk {
    fn new(name: &str) -> SmallDisk {
        let dir = scratch_dir(name);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        eprintln!(
            "{}",
            if mounted {
                "full disk: a real 512 KiB tmpfs"
            } else {
                "full disk: cannot mount here; the injected disk-full writer (512 KiB per log)"
            }
        );
        SmallDisk { dir, mounted }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_retrace"));
        c.args(args).current_dir(root());
        if !self.mounted {
            c.env(retrace_recorder::log::INJECT_DISK_FULL_ENV, "524288");
        }
        c.output().expect("retrace runs")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}

#[test]
fn a_recording_cluster_on_a_full_filesystem_keeps_answering_and_its_logs_verify_merge_and_replay() {
    let disk = SmallDisk::new("full-disk");
    let rec = disk.dir.join("rec");
    let rec_s = rec.to_str().unwrap();
    let o = disk.cmd(&[
        "cluster",
        "scenarios/kv.toml",
        "--record",
        rec_s,
        "--duration",
        "9s",
        "--closed-loop",
        "4",
    ]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // Every node kept serving to the end and stopped cleanly: none died printing.
    assert!(!out.contains("exited"), "{out}");
    assert!(
        err.contains("recording stopped"),
        "the operator is told\n{err}"
    );
    let requests = out.lines().find(|l| l.starts_with("requests")).unwrap();
    assert!(requests.contains(" 0 failed"), "{requests}");
    // The marker needs no room on the full disk: the manifest carries it.
    let manifest = retrace_recorder::manifest::Manifest::read(&rec).unwrap();
    let stopped = manifest
        .nodes
        .iter()
        .flat_map(|n| &n.incarnations)
        .filter(|i| i.recording_stopped.is_some())
        .count();
    assert!(stopped > 0, "{manifest:?}");

    // Cut logs end at their last complete step: no false mismatch, and each cut is named.
    let o = retrace(&["verify", rec_s]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("; 0 mismatches"), "{out}");
    assert!(
        err.contains("note: ") && err.contains("recording stopped"),
        "{err}"
    );
    // The merged trace replays without divergence.
    let trace = rec.join("incident.trace");
    // The trace goes beside the disk, which is full.
    let trace = PathBuf::from(disk.dir.parent().unwrap()).join(format!(
        "{}.trace",
        trace.file_stem().unwrap().to_string_lossy()
    ));
    let o = retrace(&["merge", rec_s, "-o", trace.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&["replay", trace.to_str().unwrap(), "--headless"]);
    assert!(
        stdout(&o).contains("replay    ok:"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// Frame boundaries of a log: the offset each frame starts at.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 10; // magic and version
    while at < bytes.len() {
        offsets.push(at);
        let (mut len, mut shift, mut i) = (0usize, 0, at);
        loop {
            let b = bytes[i];
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        at = i + 4 + len;
    }
    offsets
}

fn flip_in_record(log: &Path, record: usize) {
    let mut bytes = std::fs::read(log).unwrap();
    // Frame 0 is the header; record r is frame r + 1. Flip a byte of its body.
    let at = frame_offsets(&bytes)[record + 1] + 6;
    bytes[at] ^= 0x55;
    std::fs::write(log, bytes).unwrap();
}

/// A short recorded kv run in a fresh directory.
fn recorded_kv(name: &str, duration: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let d = dir.to_str().unwrap();
    let o = retrace(&[
        "cluster",
        "scenarios/kv.toml",
        "--record",
        d,
        "--duration",
        duration,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    dir
}

#[test]
fn verify_refuses_a_log_whose_checksum_fails_at_record_1_instead_of_saying_0_mismatches() {
    let dir = recorded_kv("verify-flipped", "1500ms");
    let d = dir.to_str().unwrap();
    flip_in_record(&dir.join("replica-2.0.log"), 1);
    let o = retrace(&["verify", d]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}{err}", stdout(&o));
    assert!(err.contains("replica-2.0.log cut at record 1"), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("bytes unreadable"), "{err}");
    assert!(
        stdout(&o).contains("1 logs could not be read"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn verify_refuses_a_run_with_a_log_it_cannot_read() {
    let dir = recorded_kv("verify-missing", "1s");
    let d = dir.to_str().unwrap();
    std::fs::remove_file(dir.join("client-1.0.log")).unwrap();
    let o = retrace(&["verify", d]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("not verified: client-1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_manifest_pointing_10007_nodes_at_one_log_is_refused_before_reading_any() {
    let dir = scratch_dir("manifest-many");
    let node = |i: usize| {
        serde_json::json!({"name": format!("n{i}"), "role": "r", "peer_addr": "", "client_addr": "",
            "incarnations": [{"log": "one.log", "started_wall_ns": 0, "ended": "stopped"}]})
    };
    let manifest = serde_json::json!({
        "model": "kv", "scenario_name": "kv.toml", "scenario_toml": "model = \"kv\"",
        "recording": true, "fsync": "batch", "started_wall_ns": 0, "ended_wall_ns": 0,
        "nodes": (0..10_007).map(node).collect::<Vec<_>>(),
        "workload": {"sent": 0, "answered": 0, "errors": 0, "p50_us": 0, "p99_us": 0, "throughput_per_s": 0.0},
        "warnings": []
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    for cmd in ["merge", "verify"] {
        let out = dir.join("t.trace");
        let args: Vec<&str> = match cmd {
            "merge" => vec!["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()],
            _ => vec!["verify", dir.to_str().unwrap()],
        };
        let o = retrace(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("manifest.json: lists 10007 nodes; a run has 1 to 256"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    // And one log listed twice is refused too.
    let two = serde_json::json!({
        "model": "kv", "scenario_name": "kv.toml", "scenario_toml": "model = \"kv\"",
        "recording": true, "fsync": "batch", "started_wall_ns": 0, "ended_wall_ns": 0,
        "nodes": [node(0), node(1)],
        "workload": {"sent": 0, "answered": 0, "errors": 0, "p50_us": 0, "p99_us": 0, "throughput_per_s": 0.0},
        "warnings": []
    });
    std::fs::write(dir.join("manifest.json"), two.to_string()).unwrap();
    let o = retrace(&["verify", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`one.log` is listed twice"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn merge_refuses_a_log_whose_timer_fires_without_being_set_instead_of_writing_an_unreadable_trace()
{
    use retrace_recorder::log::{read_log, Fsync, LogRecord, LogWriter};
    let dir = recorded_kv("merge-unset-timer", "1s");
    let path = dir.join("replica-2.0.log");
    let log = read_log(&path).unwrap();
    let mut w = LogWriter::create(&path, &log.header, Fsync::Never, true).unwrap();
    let mut forged = false;
    for mut r in log.records {
        if let LogRecord::Timer { timer, .. } = &mut r {
            if !forged {
                *timer = 999_999;
                forged = true;
            }
        }
        w.append(r).unwrap();
    }
    w.flush().unwrap();
    assert!(forged, "replica-2 fired a timer");
    let out = dir.join("t.trace");
    let o = retrace(&["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("replica-2: life 0: timer 999999 fires but its log never set it"),
        "{}",
        stderr(&o)
    );
}

/// `retrace cluster` printed nothing while it ran: it says where its logs go as it starts
/// (and, on a terminal, shows its progress).
#[test]
fn cluster_says_where_its_logs_go_as_it_starts() {
    use std::io::BufRead;
    let dir = scratch_dir("cluster-says");
    let mut child = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["cluster", "scenarios/pingpong.toml", "--record"])
        .arg(&dir)
        .args(["--duration", "3s"])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    let running = child.try_wait().unwrap().is_none();
    let status = child.wait().unwrap();
    assert!(running, "the first line came before the run ended: {first}");
    assert!(status.success());
    assert!(
        first.starts_with(
            "starting  2 nodes of scenarios/pingpong.toml for 3.0s; logs and manifest.json in"
        ),
        "{first}"
    );
    assert!(first.contains(dir.to_str().unwrap()), "{first}");
}
