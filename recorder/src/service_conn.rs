//! A node's connections to black-box services in the real runtime (see
//! `retrace_sim::service`): one thread per connection connects and writes, one more reads;
//! what they see reaches the node's loop as inputs, which the runtime records in full before
//! the handler runs. Threads, as for peer links (`net.rs`): a node holds few service
//! connections, and a blocking socket per thread keeps each one's order obvious.
//!
//! Everything here is bounded: connections per node, writes queued per connection (a
//! service that stops reading gets its connection closed, not the node's memory), the bytes
//! one read hands over.

use retrace_sim::service::reason;
use retrace_sim::{RequestId, ServiceEvent};
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

/// At most this many service connections a node holds open; more are refused (the node gets
/// `Closed`), so a node that leaks connections does not exhaust the host.
pub const SERVICE_CONNS_MAX: usize = 256;
/// At most this many writes wait for one connection's socket; a service that stops reading
/// past them has its connection closed.
pub const SERVICE_WRITES_QUEUED_MAX: usize = 1024;
/// The most one read hands the node as one `Data` event.
pub const SERVICE_READ_BYTES_MAX: usize = 64 * 1024;
/// How long a connect may take when the node gave no timeout.
pub const SERVICE_CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How a connection's threads hand an event to the node's loop; false once the node is gone.
pub type Deliver = Box<dyn Fn(ServiceEvent) -> bool + Send + Sync>;

struct Open {
    writes: SyncSender<Vec<u8>>,
    timeout: Option<Duration>,
    /// When the earliest write not answered since times out.
    deadline: Option<Instant>,
    /// The request ids of the step that last used the connection: its events belong to them.
    ids: Vec<RequestId>,
}

/// The node's service connections, and the events the runtime makes itself.
pub struct ServiceConns {
    addrs: BTreeMap<String, Option<SocketAddr>>,
    open: BTreeMap<u64, Open>,
    /// Counter for connection ids (made unique in the run by the runtime).
    pub next_id: u64,
    /// Events no thread reports (an unknown service, too many connections, a service that
    /// stopped reading, a timeout): handled as inputs after the step that caused them.
    pub local: VecDeque<(u64, Vec<RequestId>, ServiceEvent)>,
}

impl ServiceConns {
    /// `addrs`: each service the scenario declares, and its address if it has one.
    pub fn new(addrs: BTreeMap<String, Option<SocketAddr>>) -> Self {
        ServiceConns {
            addrs,
            open: BTreeMap::new(),
            next_id: 0,
            local: VecDeque::new(),
        }
    }

    fn refuse(&mut self, conn: u64, ids: Vec<RequestId>, reason: String) {
        self.local
            .push_back((conn, ids, ServiceEvent::Closed { reason }));
    }

    /// Opens connection `conn` (its connect record is committed): a thread connects, then
    /// writes what the node queues; another reads. `deliver` hands their events to the loop.
    pub fn connect(
        &mut self,
        conn: u64,
        service: &str,
        timeout_ns: u64,
        ids: Vec<RequestId>,
        deliver: Deliver,
    ) {
        let addr = match self.addrs.get(service) {
            None => return self.refuse(conn, ids, reason::unknown(service)),
            Some(None) => {
                return self.refuse(
                    conn,
                    ids,
                    format!("service `{service}` has no address in the scenario"),
                )
            }
            Some(Some(addr)) => *addr,
        };
        if self.open.len() >= SERVICE_CONNS_MAX {
            return self.refuse(
                conn,
                ids,
                format!("the node holds {SERVICE_CONNS_MAX} service connections already"),
            );
        }
        let timeout = (timeout_ns > 0).then(|| Duration::from_nanos(timeout_ns));
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(SERVICE_WRITES_QUEUED_MAX);
        let connect_timeout = timeout.unwrap_or(SERVICE_CONNECT_TIMEOUT_DEFAULT);
        let spawned = thread::Builder::new()
            .name(format!("service-{service}"))
            .spawn(move || {
                let stream = match TcpStream::connect_timeout(&addr, connect_timeout) {
                    Ok(s) => s,
                    Err(e) => {
                        deliver(ServiceEvent::Closed {
                            reason: format!("cannot connect to {addr}: {e}"),
                        });
                        return;
                    }
                };
                let _ = stream.set_nodelay(true);
                let reader = match stream.try_clone() {
                    Ok(r) => r,
                    Err(e) => {
                        deliver(ServiceEvent::Closed {
                            reason: format!("cannot read the connection: {e}"),
                        });
                        return;
                    }
                };
                if !deliver(ServiceEvent::Connected) {
                    return;
                }
                let deliver = std::sync::Arc::new(deliver);
                let reads = deliver.clone();
                if thread::Builder::new()
                    .name("service-read".into())
                    .spawn(move || read_loop(reader, &**reads))
                    .is_err()
                {
                    deliver(ServiceEvent::Closed {
                        reason: "cannot start a thread to read the connection".into(),
                    });
                    return;
                }
                // Ends when the node closes the connection (drops the sender) or a write
                // fails; the reader then sees the connection end and says why.
                for bytes in rx {
                    if (&stream).write_all(&bytes).is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown(Shutdown::Both);
            });
        if spawned.is_err() {
            return self.refuse(conn, ids, "cannot start a thread to connect".into());
        }
        self.open.insert(
            conn,
            Open {
                writes: tx,
                timeout,
                deadline: None,
                ids,
            },
        );
    }

    /// Queues a write (its record is committed). Writes on a connection that is closed go
    /// nowhere, as on a dead socket.
    pub fn write(&mut self, conn: u64, bytes: Vec<u8>, ids: Vec<RequestId>) {
        let Some(open) = self.open.get_mut(&conn) else {
            return;
        };
        open.ids = ids;
        if let (Some(t), None) = (open.timeout, open.deadline) {
            open.deadline = Some(Instant::now() + t);
        }
        match open.writes.try_send(bytes) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                let ids = open.ids.clone();
                self.open.remove(&conn);
                self.refuse(
                    conn,
                    ids,
                    format!(
                        "the service stopped reading ({SERVICE_WRITES_QUEUED_MAX} writes queued)"
                    ),
                );
            }
        }
    }

    /// Closes a connection: its threads end, and nothing more arrives on it.
    pub fn close(&mut self, conn: u64) {
        self.open.remove(&conn);
    }

    /// A thread's event for `conn`: the request ids it belongs to, or `None` when the node
    /// no longer holds the connection (it closed it, or it timed out), so nothing arrives.
    pub fn arrived(&mut self, conn: u64, event: &ServiceEvent) -> Option<Vec<RequestId>> {
        let open = self.open.get_mut(&conn)?;
        let ids = open.ids.clone();
        match event {
            ServiceEvent::Data { .. } => open.deadline = None,
            ServiceEvent::Closed { .. } | ServiceEvent::TimedOut => {
                self.open.remove(&conn);
            }
            ServiceEvent::Connected => {}
        }
        Some(ids)
    }

    /// The earliest deadline of an unanswered write.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().filter_map(|o| o.deadline).min()
    }

    /// Closes every connection whose unanswered write timed out, and queues its `TimedOut`.
    pub fn expire(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.deadline.is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in due {
            if let Some(open) = self.open.remove(&conn) {
                self.local
                    .push_back((conn, open.ids, ServiceEvent::TimedOut));
            }
        }
    }
}

fn read_loop(mut stream: TcpStream, deliver: &(dyn Fn(ServiceEvent) -> bool + Send + Sync)) {
    let mut buf = vec![0u8; SERVICE_READ_BYTES_MAX];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                deliver(ServiceEvent::Closed {
                    reason: reason::CLOSED.into(),
                });
                return;
            }
            Ok(n) => {
                if !deliver(ServiceEvent::Data {
                    bytes: buf[..n].to_vec(),
                }) {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                let reason = if e.kind() == ErrorKind::ConnectionReset {
                    reason::RESET.to_string()
                } else {
                    format!("the connection failed: {e}")
                };
                deliver(ServiceEvent::Closed { reason });
                return;
            }
        }
    }
}
