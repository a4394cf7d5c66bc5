//! Black-box services (`[services.NAME]`, `Ctx::connect`): the webcache example recorded
//! against a real redis-server, merged and replayed with Redis stopped; services that answer
//! garbage, reset or hang give the node inputs it handles; the simulator plays the service,
//! with its faults, deterministically.

mod common;

use common::{read, retrace, root, scratch_dir, stderr, stdout};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped webcache scenario with its cache at `addr`.
fn scenario_with_cache(dir: &Path, base: &str, addr: SocketAddr) -> String {
    let text =
        read(&root().join("scenarios").join(base)).replace("127.0.0.1:6379", &addr.to_string());
    let path = dir.join(base);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A redis-server of the distribution's package on a free port, without persistence.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Redis {
        let addr = retrace_recorder::ports::free_addrs(1).unwrap()[0];
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (`.ci/run` installs Debian's redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, addr }
    }

    /// A command's raw reply, over a fresh connection.
    fn command(&self, command: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.write_all(command).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_cluster(scenario: &str, dir: &Path, duration: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["cluster", scenario, "--record"])
        .arg(dir)
        .args(["--duration", duration])
        .current_dir(root())
        .output()
        .expect("the retrace binary runs");
    assert!(out.status.success(), "cluster failed: {}", stderr(&out));
    stdout(&out)
}

/// The count after `label` in the cluster's `requests` line ("588 sent, 588 answered").
fn count(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with("requests"))
        .unwrap_or_else(|| panic!("no requests line in:\n{summary}"));
    let before = line.split(label).next().unwrap();
    before
        .rsplit([' ', ','])
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count before {label:?} in {line:?}"))
}

#[test]
fn webcache_recorded_against_a_real_redis_replays_without_it() {
    let dir = scratch_dir("webcache-redis");
    let redis = Redis::start();
    let scenario = scenario_with_cache(&dir, "webcache.toml", redis.addr);
    let logs = dir.join("logs");
    let summary = run_cluster(&scenario, &logs, "2s");
    let sent = count(&summary, "sent");
    assert!(sent > 100, "{summary}");
    assert_eq!(count(&summary, "answered"), sent, "{summary}");
    // The web tier filled the real cache: a value a client read is in Redis.
    let size = redis.command(b"*1\r\n$6\r\nDBSIZE\r\n");
    assert!(
        size.starts_with(b":") && size != b":0\r\n",
        "redis holds nothing"
    );
    redis.stop();

    let trace = dir.join("webcache.trace");
    let merged = retrace(&[
        "merge",
        logs.to_str().unwrap(),
        "-o",
        trace.to_str().unwrap(),
    ]);
    assert!(merged.status.success(), "{}", stderr(&merged));
    let verified = retrace(&["verify", logs.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("0 mismatches"),
        "{}",
        stdout(&verified)
    );

    // Redis is stopped: every answer it gave comes from the trace.
    let replayed = retrace(&["replay", trace.to_str().unwrap()]);
    assert!(
        replayed.status.success(),
        "{}{}",
        stdout(&replayed),
        stderr(&replayed)
    );
    assert!(
        stdout(&replayed).contains("replay    ok"),
        "{}",
        stdout(&replayed)
    );

    let shown = stdout(&retrace(&["show", trace.to_str().unwrap()]));
    assert!(shown.contains("c0 connect to cache"), "{shown}");
    // RESP both ways, in full, shown as redis-cli shows it.
    assert!(shown.contains("write 21 bytes GET k"), "{shown}");
    assert!(
        shown.contains("data 5 bytes (nil)"),
        "a miss from Redis: {shown}"
    );
    assert!(shown.contains("write 36 bytes SET k"), "a fill: {shown}");
    // A reply from Redis belongs to the request whose command it answers.
    let answer = shown
        .lines()
        .find(|l| l.contains("service-in") && l.contains("data"))
        .unwrap();
    assert!(
        answer.contains("(answers #") && answer.contains("[r"),
        "{answer}"
    );

    // The profiler counts the time spent waiting on Redis as its own segment.
    let profiled = retrace(&["profile", trace.to_str().unwrap()]);
    assert!(profiled.status.success(), "{}", stderr(&profiled));
    assert!(
        stdout(&profiled).contains("waiting on cache at web-"),
        "{}",
        stdout(&profiled)
    );
}

/// What a fake service does with a connection.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Answers every read with bytes that are not RESP.
    Garbage,
    /// Closes every connection as soon as something arrives, with a reset.
    Reset,
    /// Reads and never answers.
    Hang,
}

/// A TCP server on a free port that misbehaves as told, until the test process ends.
fn fake_service(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                if let Misbehaviour::Reset = how {
                    // Closing a socket with unread data makes the kernel reset the
                    // connection.
                    let _ = s.peek(&mut buf);
                    return;
                }
                let mut held = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    match how {
                        Misbehaviour::Garbage => {
                            let _ = s.write_all(b"\x00\xffthis is not RESP\r\n");
                        }
                        // Keeps the connection (and what arrived) without a word.
                        _ => held.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_service_that_answers_garbage_resets_or_hangs_gives_the_node_inputs_it_handles() {
    for (how, name, expect) in [
        (
            Misbehaviour::Garbage,
            "garbage",
            "cache connection lost: not RESP",
        ),
        (Misbehaviour::Reset, "reset", "service-in   c0 closed"),
        (Misbehaviour::Hang, "hang", "timed out"),
    ] {
        let dir = scratch_dir(&format!("webcache-{name}"));
        let scenario = scenario_with_cache(&dir, "webcache.toml", fake_service(how));
        let logs = dir.join("logs");
        let summary = run_cluster(&scenario, &logs, "1500ms");
        // Every request is answered from the database: the node handled each failure.
        let sent = count(&summary, "sent");
        assert!(sent > 50, "{name}: {summary}");
        assert_eq!(count(&summary, "answered"), sent, "{name}: {summary}");

        let trace = dir.join("t.trace");
        let merged = retrace(&[
            "merge",
            logs.to_str().unwrap(),
            "-o",
            trace.to_str().unwrap(),
        ]);
        assert!(merged.status.success(), "{name}: {}", stderr(&merged));
        let shown = stdout(&retrace(&["show", trace.to_str().unwrap()]));
        assert!(shown.contains(expect), "{name}: no {expect:?} in the trace");
        let replayed = retrace(&["replay", trace.to_str().unwrap()]);
        assert!(
            replayed.status.success(),
            "{name}: {}{}",
            stdout(&replayed),
            stderr(&replayed)
        );
        let verified = retrace(&["verify", logs.to_str().unwrap()]);
        assert!(verified.status.success(), "{name}: {}", stdout(&verified));
    }
}

#[test]
fn a_service_with_nothing_listening_is_a_closed_connection_not_a_crash() {
    let dir = scratch_dir("webcache-refused");
    // A port nothing listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let scenario = scenario_with_cache(&dir, "webcache.toml", addr);
    let logs = dir.join("logs");
    let summary = run_cluster(&scenario, &logs, "1s");
    assert_eq!(
        count(&summary, "answered"),
        count(&summary, "sent"),
        "{summary}"
    );
    let trace = dir.join("t.trace");
    assert!(retrace(&[
        "merge",
        logs.to_str().unwrap(),
        "-o",
        trace.to_str().unwrap()
    ])
    .status
    .success());
    let shown = stdout(&retrace(&["show", trace.to_str().unwrap()]));
    assert!(shown.contains("closed: cannot connect to"), "{shown}");
}

#[test]
fn the_simulators_cache_with_faults_is_deterministic_and_replays() {
    let dir = scratch_dir("webcache-sim");
    let a = dir.join("a.trace");
    let b = dir.join("b.trace");
    for out in [&a, &b] {
        let o = retrace(&[
            "run",
            "scenarios/webcache-stale.toml",
            "-o",
            out.to_str().unwrap(),
        ]);
        // The scenario's seed finds the stale read: a violation is its expected outcome.
        assert!(
            stdout(&o).contains("reads see acknowledged writes"),
            "{}",
            stdout(&o)
        );
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let replayed = retrace(&["replay", a.to_str().unwrap()]);
    assert!(
        stdout(&replayed).contains("replay    ok"),
        "{}",
        stdout(&replayed)
    );

    // Every fault kind shows up somewhere over a few seeds, and each run still replays.
    let mut seen = [false; 3];
    for seed in 1..=12 {
        let out = dir.join(format!("s{seed}.trace"));
        let o = retrace(&[
            "run",
            "scenarios/webcache-stale.toml",
            "--seed",
            &seed.to_string(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.code().is_some(), "{}", stderr(&o));
        let shown = stdout(&retrace(&["show", out.to_str().unwrap()]));
        seen[0] |= shown.contains("closed: connection reset by the service");
        seen[1] |= shown.contains("timed out");
        seen[2] |= shown.contains("cache connection lost");
        let replayed = retrace(&["replay", out.to_str().unwrap()]);
        assert!(
            stdout(&replayed).contains("replay    ok"),
            "seed {seed}: {}",
            stdout(&replayed)
        );
    }
    assert_eq!(
        seen, [true; 3],
        "resets, hangs and their handling over 12 seeds"
    );
}

#[test]
fn fuzz_finds_the_stale_cache_and_hands_over_a_trace_that_replays() {
    let dir = scratch_dir("webcache-fuzz");
    let o = retrace(&[
        "fuzz",
        "scenarios/webcache-stale.toml",
        "--cases",
        "20",
        "--jobs",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let out = stdout(&o);
    assert!(out.contains("VIOLATED"), "{out}{}", stderr(&o));
    assert!(out.contains("stale read"), "{out}");
    let trace = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "trace"))
        .expect("fuzz wrote a trace");
    let replayed = retrace(&["replay", trace.to_str().unwrap()]);
    assert!(
        stdout(&replayed).contains("violated"),
        "the replay shows the violation: {}",
        stdout(&replayed)
    );
}

#[test]
fn the_cache_is_a_track_in_perfetto_and_a_resource_of_client_spans_in_otlp() {
    let dir = scratch_dir("webcache-export");
    let trace = dir.join("t.trace");
    let o = retrace(&[
        "run",
        "scenarios/webcache.toml",
        "-o",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let perfetto = dir.join("t.json");
    let o = retrace(&[
        "export",
        trace.to_str().unwrap(),
        "--format",
        "perfetto",
        "-o",
        perfetto.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&read(&perfetto)).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let track = events
        .iter()
        .find(|e| e["name"] == "thread_name" && e["args"]["name"] == "cache (service)")
        .expect("a track for the cache");
    let calls: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["cat"] == "service" && e["ph"] == "X" && e["tid"] == track["tid"])
        .collect();
    assert!(calls.len() > 100, "{} calls", calls.len());
    // Decoded by the model's RESP codec, both ways.
    assert!(calls.iter().any(
        |c| c["name"].as_str().unwrap().starts_with("GET k") && c["args"]["answer"] == "(nil)"
    ));
    assert!(calls.iter().all(|c| c["dur"].as_f64().unwrap() > 0.0));

    let otlp = dir.join("t.otlp.json");
    let o = retrace(&[
        "export",
        trace.to_str().unwrap(),
        "--format",
        "otlp",
        "-o",
        otlp.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&read(&otlp)).unwrap();
    let cache_spans: Vec<&serde_json::Value> = json["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "cache")
        })
        .flat_map(|r| r["scopeSpans"][0]["spans"].as_array().unwrap())
        .collect();
    assert!(!cache_spans.is_empty());
    // Client spans, each under the span of the step that wrote to the cache.
    assert!(cache_spans
        .iter()
        .all(|s| s["kind"] == 3 && s["parentSpanId"].is_string()));
}

/// A window cut out of a trace renumbers a service event's links (its program order and the
/// operation it answers); it used to keep them as they were, and the cut panicked writing
/// a link that pointed forward.
#[test]
fn cutting_a_window_of_a_trace_with_service_traffic_renumbers_its_links() {
    let dir = scratch_dir("webcache-cut");
    let trace = dir.join("t.trace");
    let window = dir.join("w.trace");
    assert!(retrace(&[
        "run",
        "scenarios/webcache.toml",
        "-o",
        trace.to_str().unwrap()
    ])
    .status
    .success());
    let cut = retrace(&[
        "cut",
        trace.to_str().unwrap(),
        "--around",
        "3000",
        "--records",
        "1000",
        "-o",
        window.to_str().unwrap(),
    ]);
    assert!(cut.status.success(), "{}", stderr(&cut));
    let replayed = retrace(&["replay", window.to_str().unwrap()]);
    assert!(
        stdout(&replayed).contains("replay    ok"),
        "{}{}",
        stdout(&replayed),
        stderr(&replayed)
    );
    let shown = stdout(&retrace(&["show", window.to_str().unwrap()]));
    assert!(shown.contains("service-in"), "{shown}");
}
