//! Chrome trace-event JSON, which Perfetto UI and chrome://tracing open: one track (thread)
//! per node, a complete slice per handled event lasting its service time, a flow arrow from
//! each send to its delivery, instant markers for crashes, faults, drops, annotations, log
//! lines and violations. Each service the nodes call is a track of its own: a slice from a
//! node's write to the service's answer (the time spent in the black box and on the wire),
//! named by what was written, with a flow arrow from the writing step.

use super::walk::{Cause, StepInfo, Visitor};
use super::{
    call_text, http_attributes, json_str, label, micros, node_name, AttrValue, CallText, Options,
};
use retrace_sim::trace::{Event, FaultRecord, Header, Record, WireEvent};
use std::io::{self, Write};

/// At most this many service tracks (a scenario declares at most 64 services).
const SERVICE_TRACKS_MAX: usize = 64;

pub struct Perfetto<'a> {
    out: &'a mut dyn Write,
    header: &'a Header,
    options: &'a Options<'a>,
    slices: u64,
    /// The services, in track order (after the nodes').
    services: Vec<String>,
}

const PID: u32 = 1;

impl<'a> Perfetto<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        writeln!(out, "{{\"displayTimeUnit\":\"ns\",\"traceEvents\":[")?;
        write!(
            out,
            "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{PID},\"tid\":0,\"args\":{{\"name\":{}}}}}",
            json_str(&format!("{} ({})", header.scenario_name, header.model))
        )?;
        for (k, n) in header.nodes.iter().enumerate() {
            write!(
                out,
                ",\n{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{PID},\"tid\":{},\"args\":{{\"name\":{}}}}}",
                k + 1,
                json_str(&n.name)
            )?;
            write!(
                out,
                ",\n{{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":{PID},\"tid\":{},\"args\":{{\"sort_index\":{k}}}}}",
                k + 1
            )?;
        }
        let services = retrace_sim::scenario::service_names(&header.scenario_toml);
        let mut p = Perfetto {
            out,
            header,
            options,
            slices: 0,
            services: Vec::new(),
        };
        for s in services {
            p.service_track(&s)?;
        }
        Ok(p)
    }

    /// The track of service `name`, made (and named) the first time it is needed.
    fn service_track(&mut self, name: &str) -> io::Result<Option<usize>> {
        let name = if name.is_empty() { "service" } else { name };
        let nodes = self.header.nodes.len();
        if let Some(at) = self.services.iter().position(|s| s == name) {
            return Ok(Some(nodes + 1 + at));
        }
        if self.services.len() >= SERVICE_TRACKS_MAX {
            return Ok(None);
        }
        self.services.push(name.to_string());
        let k = nodes + self.services.len() - 1;
        write!(
            self.out,
            ",\n{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{PID},\"tid\":{},\"args\":{{\"name\":{}}}}}",
            k + 1,
            json_str(&format!("{name} (service)"))
        )?;
        write!(
            self.out,
            ",\n{{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":{PID},\"tid\":{},\"args\":{{\"sort_index\":{k}}}}}",
            k + 1
        )?;
        Ok(Some(k + 1))
    }

    /// The service call this step's input completes: a slice on the service's track from
    /// the write to the answer, with a flow arrow from the writing step.
    fn service_call(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        let Some(call) = s.service_call else {
            return Ok(());
        };
        let CallText {
            service,
            written: shown,
            answer,
        } = call_text(call, &s.input.record, self.options);
        let Some(track) = self.service_track(service)? else {
            return Ok(());
        };
        write!(
            self.out,
            ",\n{{\"ph\":\"X\",\"name\":{},\"cat\":\"service\",\"pid\":{PID},\"tid\":{track},\"ts\":{},\"dur\":{},\"args\":{{\"conn\":{},\"write\":{},\"answer_event\":{},\"request\":{},\"answer\":{}}}}}",
            json_str(&shown.chars().take(60).collect::<String>()),
            micros(call.start_ns),
            micros(s.input.time_ns.saturating_sub(call.start_ns)),
            json_str(&call.conn.to_string()),
            call.write,
            s.input.index,
            json_str(&shown),
            json_str(&answer)
        )?;
        write!(
            self.out,
            ",\n{{\"ph\":\"s\",\"id\":{},\"name\":\"service\",\"cat\":\"service\",\"pid\":{PID},\"tid\":{},\"ts\":{}}}",
            call.write,
            call.writer_node.index() + 1,
            micros(call.start_ns)
        )?;
        write!(
            self.out,
            ",\n{{\"ph\":\"f\",\"bp\":\"e\",\"id\":{},\"name\":\"service\",\"cat\":\"service\",\"pid\":{PID},\"tid\":{track},\"ts\":{}}}",
            call.write,
            micros(call.start_ns)
        )?;
        self.slices += 1;
        Ok(())
    }

    fn instant(
        &mut self,
        name: &str,
        tid: Option<usize>,
        ts_ns: u64,
        args: &str,
    ) -> io::Result<()> {
        match tid {
            Some(t) => write!(
                self.out,
                ",\n{{\"ph\":\"i\",\"s\":\"t\",\"name\":{},\"pid\":{PID},\"tid\":{},\"ts\":{},\"args\":{{{args}}}}}",
                json_str(name),
                t,
                micros(ts_ns)
            ),
            None => write!(
                self.out,
                ",\n{{\"ph\":\"i\",\"s\":\"g\",\"name\":{},\"pid\":{PID},\"tid\":0,\"ts\":{},\"args\":{{{args}}}}}",
                json_str(name),
                micros(ts_ns)
            ),
        }
    }
}

impl Visitor for Perfetto<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        let tid = s.node.index() + 1;
        let ts = s.input.time_ns;
        let ids: Vec<String> = s
            .request_ids
            .iter()
            .map(|r| json_str(&r.to_string()))
            .collect();
        // Requests answered from outside their own steps (`respond_to`) are named too.
        let answers = if s.answered.is_empty() {
            String::new()
        } else {
            let a: Vec<String> = s
                .answered
                .iter()
                .map(|(r, _)| json_str(&r.to_string()))
                .collect();
            format!(",\"answers\":[{}]", a.join(","))
        };
        let http: String = http_attributes(s.rest)
            .into_iter()
            .map(|(key, value)| match value {
                AttrValue::Str(text) => format!(",{}:{}", json_str(key), json_str(&text)),
                AttrValue::Int(n) => format!(",{}:{n}", json_str(key)),
            })
            .collect();
        write!(
            self.out,
            ",\n{{\"ph\":\"X\",\"name\":{},\"cat\":\"{}\",\"pid\":{PID},\"tid\":{tid},\"ts\":{},\"dur\":{},\"args\":{{\"event\":{},\"queued_ns\":{},\"requests\":[{}]{answers}{http}}}}}",
            json_str(&label(s.input, self.options)),
            s.input.record.kind(),
            micros(ts),
            micros(s.busy_ns),
            s.input.index,
            s.queued_ns,
            ids.join(",")
        )?;
        self.slices += 1;
        if let Some(c) = s.cause.filter(|c| c.by_message) {
            // Both ends of the flow are written at the delivery, so every arrow has two. Its
            // id is the delivery's index, not the send's: a duplicated message is one send
            // delivered twice, and Perfetto refuses a flow id used twice.
            let flow = s.input.index;
            write!(
                self.out,
                ",\n{{\"ph\":\"s\",\"id\":{flow},\"name\":\"message\",\"cat\":\"message\",\"pid\":{PID},\"tid\":{},\"ts\":{},\"args\":{{\"send\":{}}}}}",
                c.node.index() + 1,
                micros(c.time_ns),
                c.link
            )?;
            write!(
                self.out,
                ",\n{{\"ph\":\"f\",\"bp\":\"e\",\"id\":{flow},\"name\":\"message\",\"cat\":\"message\",\"pid\":{PID},\"tid\":{tid},\"ts\":{}}}",
                micros(ts)
            )?;
        }
        if let Record::Crash { .. } = s.input.record {
            self.instant("crash", Some(tid), ts, "")?;
        }
        self.service_call(s)?;
        for e in s.rest {
            match &e.record {
                Record::Annotate { text } => {
                    self.instant(text, Some(tid), ts, &format!("\"event\":{}", e.index))?
                }
                Record::Log { level, text, .. } => self.instant(
                    text,
                    Some(tid),
                    ts,
                    &format!(
                        "\"event\":{},\"level\":\"{}\"",
                        e.index,
                        retrace_sim::logs::level_name(*level)
                    ),
                )?,
                _ => {}
            }
        }
        Ok(())
    }

    fn world(&mut self, e: &Event, _: Option<&Cause>) -> io::Result<()> {
        let args = format!("\"event\":{}", e.index);
        match &e.record {
            Record::Drop { reason, .. } => self.instant(
                &format!("drop ({})", reason.as_str()),
                None,
                e.time_ns,
                &args,
            ),
            Record::Duplicate { .. } => self.instant("duplicate", None, e.time_ns, &args),
            // A tap's traffic (a black box no node hosts): global instants, with the bytes.
            Record::Wire { conn, event } => {
                let (name, detail) = match event {
                    WireEvent::Open {
                        tap,
                        client,
                        upstream,
                    } => (
                        format!("tap {tap}: conn {conn} opened"),
                        format!("{client} -> {upstream}"),
                    ),
                    WireEvent::Data { to_upstream, bytes } => (
                        format!(
                            "conn {conn} {} {} B",
                            if *to_upstream { "->" } else { "<-" },
                            bytes.len()
                        ),
                        retrace_sim::http::show_bytes(bytes, 256),
                    ),
                    WireEvent::Close { reason } => (format!("conn {conn} closed"), reason.clone()),
                };
                let args = format!("{args},\"detail\":{}", json_str(&detail));
                self.instant(&name, None, e.time_ns, &args)
            }
            Record::Fault(FaultRecord::ClockJump { node, by_ns }) => self.instant(
                &format!("clock of {} jumps {by_ns}ns", node_name(self.header, *node)),
                Some(node.index() + 1),
                e.time_ns,
                &args,
            ),
            Record::Fault(FaultRecord::Cut { id, .. }) => {
                self.instant(&format!("partition #{id}"), None, e.time_ns, &args)
            }
            Record::Fault(FaultRecord::Heal { id }) => {
                self.instant(&format!("heal #{id}"), None, e.time_ns, &args)
            }
            Record::Violation {
                invariant, message, ..
            } => self.instant(
                &format!("invariant broken: {invariant}"),
                None,
                e.time_ns,
                &format!("{args},\"message\":{}", json_str(message)),
            ),
            Record::End { outcome } => self.instant(
                &format!("end: {}", outcome.as_str()),
                None,
                e.time_ns,
                &args,
            ),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        writeln!(self.out, "\n]}}")?;
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.slices
    }
}
