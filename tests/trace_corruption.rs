//! A trace is untrusted input: a flipped byte, a torn tail or an absurd length yield the
//! valid prefix and a clear error; hostile bytes never panic or over-allocate.

mod common;
use common::*;
use proptest::prelude::*;
use retrace_models::PingPongModel;
use retrace_sim::trace::{TailErrorKind, TraceError, TraceReader};
use retrace_sim::{scenario, Simulation, Trace, TraceSink};

fn pingpong_trace() -> Vec<u8> {
    let path = root().join("scenarios/pingpong.toml");
    let s = scenario::parse::<PingPongModel>("pingpong.toml", &read(&path)).unwrap();
    Simulation::<PingPongModel>::new(&s, 1, TraceSink::Memory)
        .run()
        .trace
        .unwrap()
}

/// Byte offset where each record starts, as the streaming reader reports it.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let (_, mut reader) = TraceReader::new(bytes, std::path::Path::new("t")).unwrap();
    let mut offsets = vec![reader.offset() as usize];
    while reader.next().is_some() {
        offsets.push(reader.offset() as usize);
    }
    offsets
}

#[test]
fn a_truncated_tail_keeps_every_complete_record() {
    let bytes = pingpong_trace();
    let full = Trace::from_bytes(&bytes, "t").unwrap();
    assert!(full.tail.is_none());
    assert!(full.is_complete());
    let boundaries = record_offsets(&bytes);
    for cut in 1..=60 {
        let len = bytes.len() - cut;
        let t = Trace::from_bytes(&bytes[..len], "t").unwrap();
        assert!(!t.is_complete(), "a cut trace lacks its end record");
        assert!(t.events.len() < full.events.len());
        assert_eq!(
            t.events[..],
            full.events[..t.events.len()],
            "the prefix is intact"
        );
        if boundaries.contains(&len) {
            assert!(
                t.tail.is_none(),
                "a cut between frames leaves whole frames only"
            );
        } else {
            let tail = t.tail.expect("a torn tail is reported");
            assert!(matches!(tail.kind, TailErrorKind::Torn { .. }), "{tail}");
            assert!(tail.to_string().contains("torn frame"), "{tail}");
            assert_eq!(tail.offset as usize, boundaries[t.events.len()]);
        }
    }
}

#[test]
fn a_flipped_byte_is_caught_by_the_checksum() {
    let bytes = pingpong_trace();
    let full = Trace::from_bytes(&bytes, "t").unwrap();
    let middle = bytes.len() / 2;
    let mut bad = bytes.clone();
    bad[middle] ^= 0x40;
    let t = Trace::from_bytes(&bad, "t").unwrap();
    let tail = t.tail.expect("corruption is reported");
    assert!(
        matches!(
            tail.kind,
            TailErrorKind::BadChecksum { .. }
                | TailErrorKind::AbsurdLength { .. }
                | TailErrorKind::Torn { .. }
        ),
        "{tail}"
    );
    assert!(tail.offset as usize <= middle);
    assert!(!t.events.is_empty());
    assert_eq!(t.events[..], full.events[..t.events.len()]);
}

#[test]
fn an_absurd_length_is_refused_without_allocating_it() {
    let bytes = pingpong_trace();
    let at = record_offsets(&bytes)[10];
    let mut bad = bytes[..at].to_vec();
    // A frame claiming ~2^62 bytes.
    bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    bad.extend_from_slice(&bytes[at..]);
    let t = Trace::from_bytes(&bad, "t").unwrap();
    assert_eq!(t.events.len(), 10);
    let tail = t.tail.unwrap();
    assert!(
        matches!(tail.kind, TailErrorKind::AbsurdLength { .. }),
        "{tail}"
    );
    assert_eq!(tail.offset as usize, at);
    assert!(tail.to_string().contains("exceeds"), "{tail}");
}

#[test]
fn a_file_that_is_not_a_trace_is_rejected_by_name() {
    match Trace::from_bytes(b"model = \"kv\"\n", "scenario.toml") {
        Err(e @ TraceError::NotATrace { .. }) => assert!(e
            .to_string()
            .starts_with("scenario.toml: not a retrace trace")),
        other => panic!("{other:?}"),
    }
    let mut future = pingpong_trace();
    future[8] = 99;
    let e = Trace::from_bytes(&future, "t").unwrap_err();
    assert!(e.to_string().contains("version 99 is not supported"), "{e}");
}

#[test]
fn show_prints_the_valid_prefix_then_fails_clearly() {
    let dir = scratch_dir("show-torn");
    let path = dir.join("torn.trace");
    let bytes = pingpong_trace();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let o = retrace(&["show", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("torn.trace: record"), "{err}");
    assert!(err.contains("torn frame"), "{err}");
    assert!(err.contains("the valid prefix"), "{err}");
    assert!(stdout(&o).lines().count() > 100, "the prefix was printed");

    std::fs::write(&path, b"garbage").unwrap();
    let o = retrace(&["show", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a retrace trace"), "{}", stderr(&o));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn hostile_bytes_never_panic(noise in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..3000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut bytes = pingpong_trace();
        bytes.truncate(cut.max(10));
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        bytes.extend_from_slice(&noise);
        let _ = Trace::from_bytes(&bytes, "fuzz");
        let mut raw = retrace_sim::trace::MAGIC.to_vec();
        raw.extend_from_slice(&1u16.to_le_bytes());
        raw.extend_from_slice(&noise);
        let _ = Trace::from_bytes(&raw, "fuzz");
    }
}
