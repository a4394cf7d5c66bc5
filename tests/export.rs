//! `retrace export`: each format parsed back and checked against its rules and against the
//! trace's own causality.

mod common;

use common::{retrace, scratch_dir, stderr, stdout};
use retrace::replayer::{Causality, Steps};
use retrace::sim::trace::Record;
use retrace::sim::Trace;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A simulated trace of a scenario, written to `dir`.
fn simulate(dir: &Path, scenario: &str) -> PathBuf {
    let out = dir.join("t.trace");
    let o = retrace(&["run", scenario, "-o", out.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    out
}

fn export(trace: &Path, format: &str, extra: &[&str]) -> String {
    let mut args = vec!["export", trace.to_str().unwrap(), "--format", format];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert_eq!(o.status.code(), Some(0), "{format}: {}", stderr(&o));
    stdout(&o)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("the export is JSON")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

#[test]
fn perfetto_has_a_track_per_node_a_slice_per_event_and_matched_flows() {
    let dir = scratch_dir("export-perfetto");
    // webstack declares service times, so slices have real durations.
    let trace_path = simulate(&dir, "scenarios/webstack-lunchtime.toml");
    let trace = Trace::load(&trace_path).unwrap();
    let v = json(&export(&trace_path, "perfetto", &[]));
    let events = v["traceEvents"].as_array().unwrap();
    let threads: BTreeSet<i64> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["tid"].as_i64().unwrap())
        .collect();
    assert_eq!(threads.len(), trace.header.nodes.len());
    let steps = Steps::new(&trace.events);
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), steps.len(), "one slice per handled event");
    let mut with_duration = 0;
    for s in &slices {
        let i = s["args"]["event"].as_u64().unwrap() as usize;
        // Exact times: microseconds with nanosecond decimals.
        let ts_ns = (s["ts"].as_f64().unwrap() * 1000.0).round() as u64;
        assert_eq!(ts_ns, trace.events[i].time_ns);
        assert!(threads.contains(&s["tid"].as_i64().unwrap()));
        with_duration += usize::from(s["dur"].as_f64().unwrap() > 0.0);
    }
    assert!(
        with_duration > slices.len() / 4,
        "service times become durations"
    );
    let mut starts = BTreeMap::new();
    let mut finishes = BTreeMap::new();
    for e in events {
        match e["ph"].as_str().unwrap() {
            "s" => assert!(starts
                .insert(e["id"].as_u64().unwrap(), e["ts"].as_f64().unwrap())
                .is_none()),
            "f" => assert!(finishes
                .insert(e["id"].as_u64().unwrap(), e["ts"].as_f64().unwrap())
                .is_none()),
            _ => {}
        }
    }
    assert!(!starts.is_empty());
    assert_eq!(
        starts.keys().collect::<Vec<_>>(),
        finishes.keys().collect::<Vec<_>>(),
        "every flow has both ends"
    );
    for (id, ts) in &starts {
        assert!(finishes[id] >= *ts, "a message arrives after it is sent");
        assert!(matches!(
            trace.events[*id as usize].record,
            Record::Deliver { .. }
        ));
    }
}

/// Perfetto refused traces with a duplicated message: the flow id was the send's index,
/// used twice for one send delivered twice.
#[test]
fn perfetto_gives_each_delivery_of_a_duplicated_message_its_own_flow_id() {
    let dir = scratch_dir("export-perfetto-dup");
    let trace_path = simulate(&dir, "scenarios/kv-chaos.toml");
    let trace = Trace::load(&trace_path).unwrap();
    let duplicated: BTreeSet<u64> = trace
        .events
        .iter()
        .filter_map(|e| match e.record {
            Record::Duplicate { send } => Some(send),
            _ => None,
        })
        .collect();
    assert!(!duplicated.is_empty(), "kv-chaos duplicates messages");
    let v = json(&export(&trace_path, "perfetto", &[]));
    let mut ids = BTreeSet::new();
    let mut sends_seen_twice = 0;
    let mut per_send: BTreeMap<u64, u32> = BTreeMap::new();
    for e in v["traceEvents"].as_array().unwrap() {
        if e["ph"] == "s" {
            assert!(
                ids.insert(e["id"].as_u64().unwrap()),
                "flow id used twice: {e}"
            );
            let n = per_send
                .entry(e["args"]["send"].as_u64().unwrap())
                .or_default();
            *n += 1;
            sends_seen_twice += usize::from(*n == 2);
        }
    }
    assert!(sends_seen_twice > 0, "a duplicated send has two arrows");
}

#[test]
fn perfetto_marks_crashes_drops_and_the_violation() {
    let dir = scratch_dir("export-perfetto-faults");
    let trace_path = simulate(&dir, "scenarios/kv-ack-before-replicate.toml");
    let v = json(&export(&trace_path, "perfetto", &[]));
    let names: Vec<String> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "i")
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "crash"));
    assert!(names.iter().any(|n| n.starts_with("drop (")));
    assert!(names.iter().any(|n| n.starts_with("invariant broken")));
    // The kv model logs with `tracing`: its lines are instants too.
    assert!(names
        .iter()
        .any(|n| n.contains("acknowledged before any backup has it")));
}

/// (trace id, span id) -> parent span id, from OTLP.
fn otlp_spans(v: &Value) -> Vec<(String, String, Option<String>, u64, u64)> {
    let mut spans = Vec::new();
    for rs in v["resourceSpans"].as_array().unwrap() {
        let attrs = rs["resource"]["attributes"].as_array().unwrap();
        assert!(attrs.iter().any(|a| a["key"] == "service.name"));
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for s in ss["spans"].as_array().unwrap() {
                let start: u64 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
                let end: u64 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
                spans.push((
                    s["traceId"].as_str().unwrap().to_string(),
                    s["spanId"].as_str().unwrap().to_string(),
                    s.get("parentSpanId")
                        .map(|p| p.as_str().unwrap().to_string()),
                    start,
                    end,
                ));
            }
        }
    }
    spans
}

#[test]
fn otlp_has_a_trace_per_request_and_every_parent_exists() {
    let dir = scratch_dir("export-otlp");
    let trace_path = simulate(&dir, "scenarios/webstack-lunchtime.toml");
    let spans = otlp_spans(&json(&export(&trace_path, "otlp", &[])));
    assert!(spans.len() > 100);
    let ids: BTreeSet<(String, String)> =
        spans.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique within a trace");
    let mut roots = BTreeMap::new();
    for (t, s, parent, start, end) in &spans {
        assert!(is_hex(t, 32), "trace id {t}");
        assert!(is_hex(s, 16), "span id {s}");
        assert!(start <= end);
        match parent {
            Some(p) => assert!(
                ids.contains(&(t.clone(), p.clone())),
                "parent {p} of {s} in {t}"
            ),
            None => *roots.entry(t.clone()).or_insert(0) += 1,
        }
    }
    let traces: BTreeSet<&String> = spans.iter().map(|s| &s.0).collect();
    assert_eq!(roots.len(), traces.len(), "every request has its root span");
    assert!(roots.values().all(|&n| n == 1), "and only one");
}

#[test]
fn jaeger_references_resolve_and_ids_match_otlp() {
    let dir = scratch_dir("export-jaeger");
    let trace_path = simulate(&dir, "scenarios/webstack-lunchtime.toml");
    let v = json(&export(&trace_path, "jaeger", &[]));
    let mut jaeger_ids = BTreeSet::new();
    for t in v["data"].as_array().unwrap() {
        let tid = t["traceID"].as_str().unwrap();
        let spans = t["spans"].as_array().unwrap();
        let here: BTreeSet<&str> = spans
            .iter()
            .map(|s| s["spanID"].as_str().unwrap())
            .collect();
        for s in spans {
            assert_eq!(s["traceID"], tid);
            assert!(t["processes"][s["processID"].as_str().unwrap()]["serviceName"].is_string());
            for r in s["references"].as_array().unwrap() {
                assert_eq!(r["refType"], "CHILD_OF");
                assert!(here.contains(r["spanID"].as_str().unwrap()));
            }
            jaeger_ids.insert((tid.to_string(), s["spanID"].as_str().unwrap().to_string()));
        }
    }
    let otlp: BTreeSet<(String, String)> = otlp_spans(&json(&export(&trace_path, "otlp", &[])))
        .into_iter()
        .map(|s| (s.0, s.1))
        .collect();
    assert_eq!(jaeger_ids, otlp, "the same ids in both exports");
    // One request only.
    let one = &otlp.iter().next().unwrap().0;
    let r = u64::from_str_radix(&one[16..], 16).unwrap();
    let v = json(&export(
        &trace_path,
        "jaeger",
        &["--request", &format!("r{r}")],
    ));
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["traceID"], one.as_str());
}

#[test]
fn shiviz_clocks_are_the_traces_vector_clocks() {
    let dir = scratch_dir("export-shiviz");
    let trace_path = simulate(&dir, "scenarios/kv-ack-before-replicate.toml");
    let trace = Trace::load(&trace_path).unwrap();
    let steps = Steps::new(&trace.events);
    let causality = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    let names: Vec<&str> = trace.header.nodes.iter().map(|n| n.name.as_str()).collect();
    let text = export(&trace_path, "shiviz", &[]);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)")
    );
    assert_eq!(lines.next(), Some(""));
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len(), 2 * steps.len());
    let mut last_own: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, pair) in rest.chunks(2).enumerate() {
        let (host, clock) = pair[0].split_once(' ').unwrap();
        let clock: BTreeMap<String, u64> = serde_json::from_str(clock).unwrap();
        assert!(pair[1].starts_with(&format!("#{} ", steps.steps[s].input)));
        // The host's own entry counts its events one by one.
        let own = clock[host];
        assert_eq!(own, last_own.get(host).map_or(1, |n| n + 1));
        last_own.insert(host, own);
        // And the whole clock is the replayer's happens-before clock.
        let expected: BTreeMap<String, u64> = causality
            .vector_clock(s)
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (names[k].to_string(), u64::from(n)))
            .collect();
        assert_eq!(clock, expected, "event #{}", steps.steps[s].input);
    }
}

#[test]
fn dot_is_the_happens_before_graph_and_filters_by_request() {
    let dir = scratch_dir("export-dot");
    let trace_path = simulate(&dir, "scenarios/kv.toml");
    let trace = Trace::load(&trace_path).unwrap();
    let steps = Steps::new(&trace.events);
    let check = |text: &str| {
        assert!(text.starts_with("digraph happens_before {"));
        assert!(text.trim_end().ends_with('}'));
        let mut declared = BTreeSet::new();
        let mut edges = 0;
        for line in text.lines() {
            let line = line.trim();
            if let Some((a, b)) = line.split_once(" -> ") {
                let b = b.split(' ').next().unwrap();
                assert!(declared.contains(a) && declared.contains(b), "{line}");
                edges += 1;
            } else if line.contains("[label=") {
                declared.insert(line.split(' ').next().unwrap().to_string());
            }
        }
        (declared, edges)
    };
    let (all, edges) = check(&export(&trace_path, "dot", &["--all"]));
    let events = all.iter().filter(|v| v.starts_with('e')).count();
    assert_eq!(events, steps.len());
    assert!(
        edges >= steps.len() - trace.header.nodes.len(),
        "program order at least"
    );
    // One request's events only.
    let r = trace
        .events
        .iter()
        .find_map(|e| match &e.record {
            Record::External { request, .. } => Some(*request),
            _ => None,
        })
        .unwrap();
    let (some, _) = check(&export(
        &trace_path,
        "dot",
        &["--request", &r.0.to_string()],
    ));
    assert!(some.len() >= 3 && some.len() < 50, "{}", some.len());
    for v in some.iter().filter(|v| v.starts_with('e')) {
        let i: usize = v[1..].parse().unwrap();
        let carries = trace.events[i].record.request_ids().contains(&r);
        assert!(carries, "event {i}");
    }
}

#[test]
fn exports_are_byte_identical_for_one_trace_and_survive_a_torn_one() {
    let dir = scratch_dir("export-stable");
    let trace_path = simulate(&dir, "scenarios/pingpong.toml");
    for f in ["perfetto", "otlp", "jaeger", "shiviz", "dot"] {
        let base = ["--base-time", "2026-11-30T12:00:00Z"];
        assert_eq!(
            export(&trace_path, f, &base),
            export(&trace_path, f, &base),
            "{f}"
        );
    }
    let bytes = std::fs::read(&trace_path).unwrap();
    std::fs::write(&trace_path, &bytes[..bytes.len() - 9]).unwrap();
    let o = retrace(&[
        "export",
        trace_path.to_str().unwrap(),
        "--format",
        "perfetto",
    ]);
    // The valid prefix is exported; the torn tail is bad input (the one exit-code table).
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exported the"), "{}", stderr(&o));
    json(&stdout(&o));
    let o = retrace(&["export", trace_path.to_str().unwrap(), "--format", "svg"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected one of perfetto, otlp, jaeger, shiviz, dot"));
    let o = retrace(&["export", "no/such.trace", "--format", "dot"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such.trace"), "{}", stderr(&o));
}

/// Exports of runs without requests were empty files reported as "exported 113 records":
/// background work (boots, timers and the messages they cause) is exported too, as a trace
/// per piece of work, and an export that would be empty is an error, not a success.
#[test]
fn exports_of_a_run_without_requests_are_background_traces_and_never_empty() {
    let dir = scratch_dir("export-background");
    let trace_path = simulate(&dir, "scenarios/pingpong.toml");
    let trace = Trace::load(&trace_path).unwrap();
    assert!(
        !trace
            .events
            .iter()
            .any(|e| matches!(e.record, Record::External { .. })),
        "pingpong has no external requests"
    );
    let steps = Steps::new(&trace.events);
    let spans = otlp_spans(&json(&export(&trace_path, "otlp", &[])));
    assert_eq!(spans.len(), steps.len(), "a span per event");
    let ids: BTreeSet<(String, String)> =
        spans.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    for (t, _, parent, _, _) in &spans {
        assert!(t.starts_with("7265747261636501"), "background trace id {t}");
        if let Some(p) = parent {
            assert!(ids.contains(&(t.clone(), p.clone())));
        }
    }
    let jaeger = json(&export(&trace_path, "jaeger", &[]));
    let jaeger_spans: usize = jaeger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(jaeger_spans, steps.len());
    // A request that is not there: an error naming it, exit 2, and no file left behind.
    let out = dir.join("empty.json");
    let o = retrace(&[
        "export",
        trace_path.to_str().unwrap(),
        "--format",
        "jaeger",
        "--request",
        "r424242",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nothing to export as jaeger: request r424242 has no events"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "no empty file claims to be an export");
}

/// OTLP wrote one `resourceSpans` per span; collectors group by resource, one per node.
#[test]
fn otlp_has_one_resource_per_node_with_the_base_time_in_its_attributes() {
    let dir = scratch_dir("export-otlp-resources");
    let trace_path = simulate(&dir, "scenarios/raft.toml");
    let trace = Trace::load(&trace_path).unwrap();
    let v = json(&export(
        &trace_path,
        "otlp",
        &["--base-time", "2026-11-30T12:00:00Z"],
    ));
    let resources = v["resourceSpans"].as_array().unwrap();
    let mut names = BTreeSet::new();
    for rs in resources {
        let attrs = rs["resource"]["attributes"].as_array().unwrap();
        let attr = |k: &str| attrs.iter().find(|a| a["key"] == k).unwrap()["value"].clone();
        assert!(names.insert(attr("service.name")["stringValue"].to_string()));
        assert_eq!(
            attr("retrace.base_time_unix_nano")["intValue"],
            "1796040000000000000"
        );
    }
    assert_eq!(resources.len(), trace.header.nodes.len());
    for (_, _, _, start, _) in otlp_spans(&v) {
        assert!(start >= 1_796_040_000_000_000_000);
    }
}

/// Simulated traces were stamped 1970-01-01 (Jaeger's default search found nothing), spans at
/// time 0 were dropped by Jaeger's UI, and nanosecond tags above 2^53 lost digits in it.
#[test]
fn jaeger_times_default_to_now_are_never_zero_and_nanoseconds_are_strings() {
    let dir = scratch_dir("export-jaeger-times");
    let trace_path = simulate(&dir, "scenarios/raft.toml");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let v = json(&export(&trace_path, "jaeger", &[]));
    let first = &v["data"][0]["spans"][0];
    let start = first["startTime"].as_u64().unwrap();
    assert!(
        start.abs_diff(now_us) < 3_600_000_000,
        "{start} vs now {now_us}"
    );
    for tag in first["tags"].as_array().unwrap() {
        if tag["key"].as_str().unwrap().ends_with("_ns") {
            assert_eq!(tag["type"], "string", "{tag}");
            assert!(tag["value"].as_str().unwrap().parse::<u64>().is_ok());
        }
    }
    // Even with the base time at the epoch, no span starts at 0.
    let v = json(&export(&trace_path, "jaeger", &["--base-time", "0"]));
    for t in v["data"].as_array().unwrap() {
        for s in t["spans"].as_array().unwrap() {
            assert!(s["startTime"].as_u64().unwrap() > 0);
        }
    }
}

/// ShiViz showed message names without their fields.
#[test]
fn shiviz_events_carry_the_decoded_message_with_its_fields() {
    let dir = scratch_dir("export-shiviz-fields");
    let trace_path = simulate(&dir, "scenarios/kv.toml");
    let text = export(&trace_path, "shiviz", &[]);
    assert!(
        text.lines()
            .any(|l| l.contains("deliver Replicate { epoch: ") && l.contains("writes: [")),
        "{}",
        &text[..text.len().min(2_000)]
    );
}

/// `dot` marked neither drops nor the violation, and the whole demo-sized graph did not lay
/// out: by default it is the violation's neighbourhood, marked.
#[test]
fn dot_defaults_to_the_violations_neighbourhood_and_marks_drops_and_the_violation() {
    let dir = scratch_dir("export-dot-violation");
    let trace_path = simulate(&dir, "scenarios/kv-ack-before-replicate.toml");
    let trace = Trace::load(&trace_path).unwrap();
    let steps = Steps::new(&trace.events);
    let o = retrace(&[
        "export",
        trace_path.to_str().unwrap(),
        "--format",
        "dot",
        "--depth",
        "6",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--all draws the whole run"),
        "{}",
        stderr(&o)
    );
    let text = stdout(&o);
    let vertices: Vec<&str> = text.lines().filter(|l| l.contains("[label=")).collect();
    let events = vertices
        .iter()
        .filter(|l| l.trim().starts_with('e'))
        .count();
    assert!(
        events >= 6 && events <= 6 * trace.header.nodes.len(),
        "{events}"
    );
    assert!(events < steps.len() / 10);
    let violation = vertices
        .iter()
        .find(|l| l.contains("invariant broken"))
        .expect("the violation is drawn");
    let v = violation.trim().split(' ').next().unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("-> {v} [color=red"))),
        "the violating step points at it"
    );
    // The whole run marks every drop whose sender is drawn.
    let all = export(&trace_path, "dot", &["--all"]);
    let drops = trace
        .events
        .iter()
        .filter(|e| matches!(e.record, Record::Drop { .. }))
        .count();
    let marked = all.lines().filter(|l| l.contains(" dropped (")).count();
    assert!(
        drops > 0 && marked > 0 && marked <= drops,
        "{marked} of {drops}"
    );
}
