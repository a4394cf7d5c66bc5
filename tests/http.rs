//! HTTP at the cluster's edge: `curl` against a recorded node, requests the port refuses,
//! and the same HTTP workload in the simulator — each request and response recorded with
//! the external request it carried, and replayed.

mod common;
use common::*;
use retrace_sim::trace::{Record, Trace};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn curl(args: &[&str]) -> String {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (.ci/run installs it)");
    assert!(o.status.success(), "curl {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Sends raw bytes and reads until the server closes or `responses` responses came.
fn raw(addr: &str, bytes: &[u8], responses: usize) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() < responses
        || !String::from_utf8_lossy(&got).ends_with('\n')
    {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn curl_against_a_recorded_kv_node_is_recorded_merged_and_replayed() {
    let dir = scratch_dir("http-curl");
    let (mut cluster, manifest) = start_cluster("tests/data/kv-http.toml", &dir, "4s");
    let addr = manifest.nodes[3].client_addr.to_string();
    let url = format!("http://{addr}/kv/curl%20key");

    let put = curl(&["-X", "PUT", "--data", "hello from curl", &url]);
    assert!(put.contains("\"version\""), "{put}");
    let get = curl(&[&url]);
    assert!(get.contains("\"value\":\"hello from curl\""), "{get}");
    // A route kv does not serve: the mapping's 404, and the node never sees it.
    let nope = curl(&["-i", &format!("http://{addr}/nope")]);
    assert!(nope.starts_with("HTTP/1.1 404"), "{nope}");
    // Two requests in one write (pipelining) are answered in order on one connection.
    let two = raw(
        &addr,
        b"GET /kv/curl%20key HTTP/1.1\r\nHost: x\r\n\r\nPUT /kv/p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2",
        2,
    );
    let first = two.find("hello from curl").expect(&two);
    let second = two.find("\"version\"").expect(&two);
    assert!(first < second, "{two}");

    // What the port refuses: a status, the connection closed, the node unharmed.
    let refused = [
        (&b"GET / HTTP/9.9\r\n\r\n"[..], "400"),
        (
            b"PUT /kv/a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
            "400",
        ),
        (
            b"PUT /kv/a HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            "413",
        ),
        (
            b"PUT /kv/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            "501",
        ),
    ];
    for (bytes, status) in refused {
        let answer = raw(&addr, bytes, 1);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    let mut flood = b"GET /kv/a HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        flood.extend_from_slice(format!("X-H{i}: y\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    assert!(raw(&addr, &flood, 1).starts_with("HTTP/1.1 431"));
    let get = curl(&[&url]);
    assert!(get.contains("hello from curl"), "still serving: {get}");

    assert!(cluster.wait().unwrap().success());
    let o = retrace(&["verify", dir.to_str().unwrap()]);
    assert!(stdout(&o).contains("; 0 mismatches"), "{}", stdout(&o));
    let out = dir.join("merged.trace");
    let o = retrace(&["merge", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&["replay", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("replay    ok"), "{}", stdout(&o));

    // curl's PUT is in the trace as the request that started its request id, headers and
    // body in full, and its response beside the answer.
    let trace = Trace::load(&out).unwrap();
    let puts: Vec<_> = trace
        .events
        .iter()
        .filter_map(|e| match &e.record {
            Record::HttpRequest { request, http }
                if http.method == "PUT" && http.target == "/kv/curl%20key" =>
            {
                Some((e.index, *request, http.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    let (at, request, http) = &puts[0];
    assert_eq!(http.body, b"hello from curl");
    assert!(http.header("user-agent").unwrap().starts_with("curl/"));
    // In its external request's step: after the input and its timing records.
    let step = &trace.events[(*at as usize).saturating_sub(4)..*at as usize];
    assert!(
        step.iter()
            .any(|e| matches!(&e.record, Record::External { request: r, .. } if r == request)),
        "the HTTP request sits in its external request's step: {step:?}"
    );
    let response = trace.events.iter().find_map(|e| match &e.record {
        Record::HttpResponse { request: r, http } if r == request => Some(http.clone()),
        _ => None,
    });
    let response = response.expect("the PUT's response is recorded");
    assert_eq!(response.status, 200);
    assert!(String::from_utf8_lossy(&response.body).contains("version"));
    // The refused ones never reached a node.
    assert!(!trace.events.iter().any(|e| matches!(
        &e.record,
        Record::HttpRequest { http, .. } if http.target == "/nope"
    )));
    // The launcher's own workload spoke HTTP too.
    let workload = trace
        .events
        .iter()
        .filter(|e| matches!(&e.record, Record::HttpRequest { http, .. } if http.target.starts_with("/kv/k")))
        .count();
    assert!(workload > 50, "{workload} workload requests over HTTP");

    let o = retrace(&["show", out.to_str().unwrap()]);
    assert!(
        stdout(&o).contains(r#"http-request r"#)
            && stdout(&o).contains(r#"PUT /kv/curl%20key "hello from curl""#),
        "show names the request"
    );
}

#[test]
fn the_simulators_http_workload_records_what_the_real_port_would_and_replays() {
    let dir = scratch_dir("http-sim");
    let out = dir.join("kv-http.trace");
    let again = dir.join("again.trace");
    for path in [&out, &again] {
        let o = retrace(&[
            "run",
            "tests/data/kv-http.toml",
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let trace = Trace::load(&out).unwrap();
    let (mut requests, mut responses, mut externals) = (0, 0, 0);
    for (i, e) in trace.events.iter().enumerate() {
        match &e.record {
            Record::External { request, .. } => {
                externals += 1;
                assert!(
                    matches!(&trace.events[i + 1].record,
                        Record::HttpRequest { request: r, .. } if r == request),
                    "the request that carried {request} follows it"
                );
            }
            Record::HttpRequest { http, .. } => {
                requests += 1;
                assert!(http.target.starts_with("/kv/k"), "{http:?}");
                assert!(http.method == "GET" || http.method == "PUT");
            }
            Record::HttpResponse { http, .. } => {
                responses += 1;
                assert!(matches!(http.status, 200 | 404), "{http:?}");
            }
            _ => {}
        }
    }
    assert!(
        externals > 50 && requests == externals,
        "{externals} {requests}"
    );
    assert!(responses > 50, "{responses}");
    let o = retrace(&["replay", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    // Exports carry the HTTP request on its span, by OpenTelemetry's names.
    let otlp = dir.join("otlp.json");
    let o = retrace(&[
        "export",
        out.to_str().unwrap(),
        "--format",
        "otlp",
        "-o",
        otlp.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&otlp).unwrap();
    assert!(text.contains(r#"{"key":"http.request.method","value":{"stringValue":"PUT"}}"#));
    assert!(text.contains(r#"{"key":"http.response.status_code","value":{"intValue":"200"}}"#));
}
