//! `retrace tap`: a proxy between processes retrace does not host, recording both
//! directions as a black box's log that `merge` places in a run's trace by time.

mod common;
use common::*;
use retrace_recorder::tap::load_taps;
use retrace_sim::trace::{Record, Trace, WireEvent};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts a tap on a free port; returns the process and the address it listens on.
fn start_tap(name: &str, upstream: &str, dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args([
            "tap",
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
        ])
        .arg("--log")
        .arg(dir)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "tapping  127.0.0.1:PORT -> ..."
    let addr = line.split_whitespace().nth(1).expect(&line).to_string();
    (child, addr)
}

#[test]
fn a_tap_between_curl_and_a_recorded_node_is_merged_by_time_and_replays() {
    let dir = scratch_dir("tap-curl");
    let (mut cluster, manifest) = start_cluster("tests/data/kv-http.toml", &dir, "3s");
    let node = manifest.nodes[3].client_addr.to_string();
    let (mut tap, addr) = start_tap("web", &node, &dir);
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            "PUT",
            "--data",
            "through the tap",
        ])
        .arg(format!("http://{addr}/kv/tapped"))
        .output()
        .expect("curl runs (.ci/run installs it)");
    assert!(
        stdout(&o).contains("\"version\""),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // Killed, not stopped: what the tap committed is what the merge gets.
    std::thread::sleep(Duration::from_millis(100));
    tap.kill().unwrap();
    tap.wait().unwrap();
    assert!(cluster.wait().unwrap().success());

    let out = dir.join("merged.trace");
    let o = retrace(&["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&["replay", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let trace = Trace::load(&out).unwrap();
    let find = |f: &dyn Fn(&Record) -> bool| trace.events.iter().position(|e| f(&e.record));
    let opened = find(
        &|r| matches!(r, Record::Wire { event: WireEvent::Open { tap, .. }, .. } if tap == "web"),
    )
    .expect("the connection's opening");
    let request = find(&|r| {
        matches!(r, Record::Wire { event: WireEvent::Data { to_upstream: true, bytes }, .. }
            if bytes.starts_with(b"PUT /kv/tapped HTTP/1.1\r\n"))
    })
    .expect("curl's request, byte for byte");
    let external = find(&|r| match r {
        Record::HttpRequest { http, .. } => http.target == "/kv/tapped",
        _ => false,
    })
    .expect("the node's record of the same request");
    let response = find(&|r| {
        matches!(r, Record::Wire { event: WireEvent::Data { to_upstream: false, bytes }, .. }
            if bytes.starts_with(b"HTTP/1.1 200 OK\r\n"))
    })
    .expect("the node's response as the tap passed it back");
    let closed = find(&|r| {
        matches!(
            r,
            Record::Wire {
                event: WireEvent::Close { .. },
                ..
            }
        )
    })
    .expect("the connection's end");
    // Placed by time: the tap saw the request before the node did, and the response after.
    assert!(opened < request && request < external && external < response && response < closed);
    // A world event: no node's step, no causal link.
    assert_eq!(trace.events[request].node, None);

    // `capture` around the request finds the tap's log by its name and keeps its traffic.
    let around = trace.events[request].time_ns.to_string();
    let cut = dir.join("captured.trace");
    let o = retrace(&[
        "capture",
        dir.to_str().unwrap(),
        "--around",
        &around,
        "--before",
        "500ms",
        "--after",
        "500ms",
        "-o",
        cut.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let wires = |t: &Trace| {
        t.events
            .iter()
            .filter(|e| matches!(e.record, Record::Wire { .. }))
            .count()
    };
    let captured = Trace::load(&cut).unwrap();
    assert_eq!(wires(&captured), wires(&trace));
    let o = retrace(&["replay", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// An upstream that answers one `PING` with `PONG`, then goes away for good.
fn one_shot_upstream() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"PING");
        s.write_all(b"PONG").unwrap();
        // The listener and the connection drop here: the upstream is gone.
    });
    (addr, handle)
}

#[test]
fn a_tap_that_loses_its_upstream_keeps_its_log_readable() {
    let dir = scratch_dir("tap-lost");
    let (upstream, server) = one_shot_upstream();
    let (mut tap, addr) = start_tap("cache", &upstream, &dir);

    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"PING").unwrap();
    let mut answer = [0u8; 4];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"PONG");
    server.join().unwrap();
    // The upstream's end reaches the client as an end of stream.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // With the upstream gone, a new client is closed at once.
    let mut second = TcpStream::connect(&addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = second.read_to_end(&mut rest);
    assert!(rest.is_empty());
    std::thread::sleep(Duration::from_millis(100));
    tap.kill().unwrap();
    tap.wait().unwrap();

    // A torn tail (the kill could have come mid-write) is cut off, and said.
    let log = dir.join("cache.tap.0.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[0x42, 0, 0, 0, 1, 2, 3]).unwrap();
    let mut problems = Vec::new();
    let (records, logs) =
        load_taps(std::slice::from_ref(&dir), 0, u64::MAX, &mut problems).unwrap();
    assert_eq!(logs, 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("cache.tap.0.log"), "{problems:?}");
    let shown: Vec<String> = records
        .iter()
        .map(|r| match &r.event {
            WireEvent::Open { tap, .. } => format!("{} open {tap}", r.conn),
            WireEvent::Data { to_upstream, bytes } => format!(
                "{} {} {}",
                r.conn,
                if *to_upstream { "->" } else { "<-" },
                String::from_utf8_lossy(bytes)
            ),
            WireEvent::Close { reason } => format!("{} close {reason}", r.conn),
        })
        .collect();
    // Each connection's records in its order (the two connections' may interleave: the
    // first's close and the second's opening race).
    let of =
        |conn: &str| -> Vec<&String> { shown.iter().filter(|s| s.starts_with(conn)).collect() };
    let first = of("0 ");
    assert_eq!(
        first[..3],
        ["0 open cache", "0 -> PING", "0 <- PONG"],
        "{shown:?}"
    );
    assert!(first[3].starts_with("0 close "), "{shown:?}");
    let second = of("1 ");
    assert_eq!(second[0], "1 open cache", "{shown:?}");
    assert!(
        second[1].starts_with(&format!("1 close upstream {upstream} unreachable")),
        "{shown:?}"
    );
    assert_eq!(shown.len(), 6, "{shown:?}");
}
