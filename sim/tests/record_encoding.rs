//! Every record kind round-trips through its encoding: what `BodyEncoder::record` writes,
//! `BodyDecoder::decode` reads back as the same record, index and (for timed records) time,
//! whatever the values — the wire format's deltas, varints and links included.

use proptest::prelude::*;
use retrace_sim::http::{HttpRequest, HttpResponse};
use retrace_sim::trace::{
    BodyDecoder, BodyEncoder, DropReason, FaultRecord, Outcome, Record, WireEvent,
};
use retrace_sim::{ConnId, NodeId, RequestId, ServiceEvent, ServiceOp, Tag, TimerId};

/// A record at `index`, whose links point backwards (at most `index` records back).
fn record(index: u64) -> BoxedStrategy<Record> {
    let node = (0u32..300).prop_map(NodeId);
    let back = if index == 0 {
        Just(None).boxed()
    } else {
        prop::option::of(0..index).boxed()
    };
    let ids = prop::collection::vec(any::<u64>().prop_map(RequestId), 0..4);
    let bytes = prop::collection::vec(any::<u8>(), 0..64);
    let text = "[a-z \\n]{0,24}";
    let mut kinds: Vec<BoxedStrategy<Record>> = vec![
        (node.clone(), back.clone(), any::<u64>())
            .prop_map(|(node, prev, seed)| Record::Start { node, prev, seed })
            .boxed(),
        (node.clone(), back.clone(), any::<u64>(), any::<u64>())
            .prop_map(|(node, prev, seed, storage_digest)| Record::Restart {
                node,
                prev,
                seed,
                storage_digest,
            })
            .boxed(),
        (
            node.clone(),
            back.clone(),
            node.clone(),
            back.clone(),
            ids.clone(),
            bytes.clone(),
        )
            .prop_map(
                |(node, prev, from, send, request_ids, payload)| Record::Deliver {
                    node,
                    prev,
                    from,
                    send,
                    request_ids,
                    payload,
                },
            )
            .boxed(),
        (node.clone(), back.clone(), any::<u64>(), bytes.clone())
            .prop_map(|(node, prev, r, payload)| Record::External {
                node,
                prev,
                request: RequestId(r),
                payload,
            })
            .boxed(),
        (node.clone(), back.clone())
            .prop_map(|(node, prev)| Record::Crash { node, prev })
            .boxed(),
        (
            any::<u32>(),
            prop::collection::vec((node.clone(), node.clone()), 0..5),
        )
            .prop_map(|(id, links)| Record::Fault(FaultRecord::Cut { id, links }))
            .boxed(),
        any::<u32>()
            .prop_map(|id| Record::Fault(FaultRecord::Heal { id }))
            .boxed(),
        (node.clone(), any::<i64>())
            .prop_map(|(node, by_ns)| Record::Fault(FaultRecord::ClockJump { node, by_ns }))
            .boxed(),
        (node.clone(), any::<u64>())
            .prop_map(|(to, digest)| Record::Send { to, digest })
            .boxed(),
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
        )
            .prop_map(|(t, tag, after_ns)| Record::TimerSet {
                timer: TimerId(t),
                tag: Tag::from_bytes(&tag),
                after_ns,
            })
            .boxed(),
        any::<u64>()
            .prop_map(|t| Record::TimerCancel { timer: TimerId(t) })
            .boxed(),
        text.prop_map(|text| Record::Annotate { text }).boxed(),
        any::<u64>()
            .prop_map(|value_ns| Record::ClockRead { value_ns })
            .boxed(),
        (any::<u64>(), any::<u64>())
            .prop_map(|(r, digest)| Record::Respond {
                request: RequestId(r),
                digest,
            })
            .boxed(),
        prop_oneof![
            Just(Outcome::TimeLimit),
            Just(Outcome::Quiescent),
            Just(Outcome::EventLimit),
            Just(Outcome::Violation),
            Just(Outcome::Recorded)
        ]
        .prop_map(|outcome| Record::End { outcome })
        .boxed(),
        any::<u64>().prop_map(|ns| Record::Busy { ns }).boxed(),
        any::<u64>().prop_map(|ns| Record::Queued { ns }).boxed(),
        prop::collection::vec((text, bytes.clone()), 0..4)
            .prop_map(|entries| Record::StorageImage { entries })
            .boxed(),
        (any::<u8>(), text, text)
            .prop_map(|(level, target, text)| Record::Log {
                level: level % 5,
                target,
                text,
            })
            .boxed(),
        (
            any::<u64>(),
            (text, text),
            prop::collection::vec((text, text), 0..4),
            bytes.clone(),
        )
            .prop_map(|(r, (method, target), headers, body)| Record::HttpRequest {
                request: RequestId(r),
                http: Box::new(HttpRequest {
                    method,
                    target,
                    headers,
                    body,
                }),
            })
            .boxed(),
        (
            any::<u64>(),
            any::<u16>(),
            prop::collection::vec((text, text), 0..4),
            bytes.clone(),
        )
            .prop_map(|(r, status, headers, body)| Record::HttpResponse {
                request: RequestId(r),
                http: Box::new(HttpResponse {
                    status,
                    headers,
                    body,
                }),
            })
            .boxed(),
        (any::<u64>(), (text, text, text))
            .prop_map(|(conn, (tap, client, upstream))| Record::Wire {
                conn,
                event: WireEvent::Open {
                    tap,
                    client,
                    upstream,
                },
            })
            .boxed(),
        (any::<u64>(), any::<bool>(), bytes.clone())
            .prop_map(|(conn, to_upstream, bytes)| Record::Wire {
                conn,
                event: WireEvent::Data { to_upstream, bytes },
            })
            .boxed(),
        (any::<u64>(), text)
            .prop_map(|(conn, reason)| Record::Wire {
                conn,
                event: WireEvent::Close { reason },
            })
            .boxed(),
        (
            node.clone(),
            back.clone(),
            any::<u64>(),
            back.clone(),
            ids.clone(),
            prop_oneof![
                Just(ServiceEvent::Connected),
                bytes.clone().prop_map(|bytes| ServiceEvent::Data { bytes }),
                text.prop_map(|reason| ServiceEvent::Closed { reason }),
                Just(ServiceEvent::TimedOut),
            ],
        )
            .prop_map(
                |(node, prev, conn, cause, request_ids, event)| Record::ServiceIn {
                    node,
                    prev,
                    conn: ConnId(conn),
                    cause,
                    request_ids,
                    event,
                },
            )
            .boxed(),
        (
            any::<u64>(),
            prop_oneof![
                (text, any::<u64>()).prop_map(|(service, timeout_ns)| ServiceOp::Connect {
                    service,
                    timeout_ns
                }),
                bytes.clone().prop_map(|bytes| ServiceOp::Write { bytes }),
                Just(ServiceOp::Close),
            ],
        )
            .prop_map(|(conn, op)| Record::ServiceOut {
                conn: ConnId(conn),
                op,
            })
            .boxed(),
    ];
    if index > 0 {
        let link = (0..index).boxed();
        kinds.extend([
            (
                node,
                back,
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
                link.clone(),
                ids,
            )
                .prop_map(|(node, prev, timer, tag, set, request_ids)| Record::Timer {
                    node,
                    prev,
                    timer: TimerId(timer),
                    tag: Tag::from_bytes(&tag),
                    set,
                    request_ids,
                })
                .boxed(),
            (
                link.clone(),
                prop_oneof![
                    Just(DropReason::Loss),
                    Just(DropReason::Partition),
                    Just(DropReason::NodeDown),
                    Just(DropReason::NoSuchNode)
                ],
            )
                .prop_map(|(send, reason)| Record::Drop { send, reason })
                .boxed(),
            link.clone()
                .prop_map(|send| Record::Duplicate { send })
                .boxed(),
            (link, text, text)
                .prop_map(|(step, invariant, message)| Record::Violation {
                    step,
                    invariant,
                    message,
                })
                .boxed(),
        ]);
    }
    prop::strategy::Union::new(kinds).boxed()
}

/// A run of records, each with a time. It opens with a boot: outputs belong to a step, and
/// the decoder refuses one outside any.
fn records() -> impl Strategy<Value = Vec<(u64, Record)>> {
    (1usize..40).prop_flat_map(|n| {
        let boot = (any::<u64>(), (0u32..300, any::<u64>()))
            .prop_map(|(t, (node, seed))| {
                (
                    t,
                    Record::Start {
                        node: NodeId(node),
                        prev: None,
                        seed,
                    },
                )
            })
            .boxed();
        std::iter::once(boot)
            .chain((1..n as u64).map(|i| (any::<u64>(), record(i)).boxed()))
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_record_kind_round_trips(run in records()) {
        let mut enc = BodyEncoder::default();
        let mut dec = BodyDecoder::default();
        let mut last_time = 0u64;
        for (k, (time_ns, record)) in run.iter().enumerate() {
            let mut body = Vec::new();
            enc.record(&mut body, *time_ns, record);
            enc.index += 1;
            let e = dec.decode(&body).map_err(|err| {
                TestCaseError::fail(format!("{record:?} does not decode: {err:?}"))
            })?;
            prop_assert_eq!(&e.record, record);
            prop_assert_eq!(e.index, k as u64);
            // Untimed records carry the time of the last timed one.
            if record.is_timed() {
                last_time = *time_ns;
            }
            prop_assert_eq!(e.time_ns, last_time);
        }
    }
}
