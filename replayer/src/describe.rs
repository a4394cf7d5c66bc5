//! Events as people read them: one dense line per trace record.

use retrace_sim::trace::{Event, FaultRecord, Header, Record, WireEvent};
use retrace_sim::{codec, format_ns, NodeId, RequestId, ServiceEvent, ServiceOp};

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How encoded values read: messages and timer tags, as the model that made them knows
/// them. A closure over message payloads is one, with timers shown as numbers (or bytes).
pub trait Describe {
    /// An encoded message, on one line.
    fn message(&self, payload: &[u8]) -> String;
    /// An encoded timer value (`Node::Timer`), on one line.
    fn timer(&self, tag: &[u8]) -> String {
        timer_without_model(tag)
    }
    /// Bytes to or from a black-box service, on one line: decoded where the model knows the
    /// protocol, else as text or hex.
    fn service_bytes(&self, bytes: &[u8]) -> String {
        retrace_sim::http::show_bytes(bytes, 120)
    }
}

impl<F: Fn(&[u8]) -> String> Describe for F {
    fn message(&self, payload: &[u8]) -> String {
        self(payload)
    }
}

/// A timer tag read without its model: the number it is, if it is one, else its bytes.
pub fn timer_without_model(tag: &[u8]) -> String {
    match codec::decode::<u64>(tag) {
        Ok(n) => n.to_string(),
        Err(_) => {
            let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            format!("<{hex}>")
        }
    }
}

/// One dense line describing a trace event: index, time, node, kind, detail. `describe`
/// renders message payloads and timer tags.
pub fn event_line(header: &Header, event: &Event, describe: &dyn Describe) -> String {
    let node = event
        .node
        .map(|id| node_name(header, id))
        .unwrap_or_default();
    format!(
        "{:>8} {:>13} {:<10} {:<12} {}",
        event.index,
        format_ns(event.time_ns),
        node,
        event.record.kind(),
        event_detail(header, event, describe)
    )
}

/// A node's name from the trace header (`n7` if the header does not know it).
pub fn node_name(header: &Header, id: NodeId) -> String {
    header
        .nodes
        .get(id.index())
        .map_or_else(|| format!("n{}", id.0), |n| n.name.clone())
}

/// What an event says, without its index, time, node and kind.
pub fn event_detail(header: &Header, event: &Event, describe: &dyn Describe) -> String {
    let name = |id: NodeId| node_name(header, id);
    let ids = |ids: &[RequestId]| {
        if ids.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ids.iter().map(|r| r.to_string()).collect();
            format!(" [{}]", list.join(","))
        }
    };
    match &event.record {
        Record::Start { seed, .. } => format!("seed {seed:016x}"),
        Record::Restart {
            seed,
            storage_digest,
            ..
        } => {
            format!("seed {seed:016x}, storage {storage_digest:016x}")
        }
        Record::Resume { snapshot, .. } => format!(
            "from a snapshot ({} bytes of state, {} pending timer(s), {} stored keys): what came before is not in this trace",
            snapshot.state.len(),
            snapshot.timers.len(),
            snapshot.storage.synced.len()
        ),
        Record::Deliver {
            from,
            send,
            request_ids,
            payload,
            ..
        } => {
            let send = match send {
                Some(s) => format!("send #{s}"),
                None => "its send unrecorded".to_string(),
            };
            format!(
                "from {} ({send}){} {}",
                name(*from),
                ids(request_ids),
                describe.message(payload)
            )
        }
        Record::Timer {
            timer,
            tag,
            set,
            request_ids,
            ..
        } => {
            format!(
                "timer t{} {} (set #{set}){}",
                timer.0,
                describe.timer(tag.as_bytes()),
                ids(request_ids)
            )
        }
        Record::External {
            request, payload, ..
        } => format!("{request} {}", describe.message(payload)),
        Record::Crash { .. } => "volatile state and unsynced writes lost".to_string(),
        Record::Fault(FaultRecord::Cut { id, links }) => {
            let shown: Vec<String> = links
                .iter()
                .take(6)
                .map(|(a, b)| format!("{}->{}", name(*a), name(*b)))
                .collect();
            let more = if links.len() > 6 {
                format!(" (+{} more)", links.len() - 6)
            } else {
                String::new()
            };
            format!("cut #{id}: {}{more}", shown.join(" "))
        }
        Record::Fault(FaultRecord::Heal { id }) => format!("heal cut #{id}"),
        Record::Fault(FaultRecord::ClockJump { node, by_ns }) => {
            let sign = if *by_ns < 0 { "-" } else { "+" };
            format!(
                "clock of {} jumps {sign}{}",
                name(*node),
                format_ns(by_ns.unsigned_abs())
            )
        }
        Record::Drop { send, reason } => {
            format!("message of send #{send} lost ({})", reason.as_str())
        }
        Record::Duplicate { send } => format!("message of send #{send} duplicated"),
        Record::Send { to, digest } => format!("to {} (digest {digest:016x})", name(*to)),
        Record::TimerSet {
            timer,
            tag,
            after_ns,
        } => format!(
            "t{} {} in {}",
            timer.0,
            describe.timer(tag.as_bytes()),
            format_ns(*after_ns)
        ),
        Record::TimerCancel { timer } => format!("t{}", timer.0),
        Record::Annotate { text } => format!("{text:?}"),
        Record::ClockRead { value_ns } => format_ns(*value_ns),
        Record::Respond { request, digest } => format!("{request} (digest {digest:016x})"),
        Record::Violation {
            step,
            invariant,
            message,
        } => format!("after #{step}: {invariant}: {message}"),
        Record::End { outcome } => outcome.as_str().to_string(),
        Record::Busy { ns } => format!("service time {}", format_ns(*ns)),
        Record::Queued { ns } => format!("waited {} for the node", format_ns(*ns)),
        Record::Log {
            level,
            target,
            text,
        } => format!("{} {target}: {text}", retrace_sim::logs::level_name(*level)),
        Record::HttpRequest { request, http } => format!("{request} {http}"),
        Record::HttpResponse { request, http } => format!("{request} {http}"),
        Record::Wire { conn, event } => match event {
            WireEvent::Open {
                tap,
                client,
                upstream,
            } => format!("conn {conn} on tap {tap}: {client} -> {upstream} opened"),
            WireEvent::Data { to_upstream, bytes } => format!(
                "conn {conn} {} {} bytes {}",
                if *to_upstream { "-> upstream" } else { "<- upstream" },
                bytes.len(),
                retrace_sim::http::show_bytes(bytes, 120)
            ),
            WireEvent::Close { reason } => format!("conn {conn} closed: {reason}"),
        },
        Record::ServiceIn {
            conn,
            cause,
            request_ids,
            event,
            ..
        } => {
            let cause = match cause {
                Some(c) => format!("answers #{c}"),
                None => "its cause unrecorded".to_string(),
            };
            let what = match event {
                ServiceEvent::Data { bytes } => {
                    format!("data {} bytes {}", bytes.len(), describe.service_bytes(bytes))
                }
                ServiceEvent::Closed { reason } => format!("closed: {reason}"),
                other => other.kind().to_string(),
            };
            format!("{conn} {what} ({cause}){}", ids(request_ids))
        }
        Record::ServiceOut { conn, op } => match op {
            ServiceOp::Connect {
                service,
                timeout_ns,
            } => match timeout_ns {
                0 => format!("{conn} connect to {service}"),
                t => format!("{conn} connect to {service} (timeout {})", format_ns(*t)),
            },
            ServiceOp::Write { bytes } => format!(
                "{conn} write {} bytes {}",
                bytes.len(),
                describe.service_bytes(bytes)
            ),
            ServiceOp::Close => format!("{conn} close"),
        },
        Record::StorageImage { entries } => {
            let size: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
            format!("found {} stored keys ({size} bytes)", entries.len())
        }
    }
}
