//! Peer connections over TCP (or mutual TLS over TCP), on std threads, with every
//! resource an outsider can make a node spend bounded.
//!
//! Why threads and not an async runtime: a node has a handful of peers and clients, so a
//! thread per connection costs little; the node's handlers run on one thread that owns the
//! node, exactly as in the simulator; and nothing here needs a reactor whose scheduling
//! would be one more source of nondeterminism to reason about. rustls fits this model as it
//! is: a `StreamOwned` is a blocking `Read + Write` over the socket.
//!
//! Each peer gets one writer thread fed by a bounded queue: per-peer order is the queue's
//! order over one connection. A broken connection is re-dialled with exponential backoff and
//! the frame that may not have arrived is sent again (the receiver drops duplicates by
//! message id). Incoming connections get a reader thread each that checks every frame and
//! hands messages to the node's event loop through a bounded channel, so a slow node pushes
//! back on its senders through TCP.
//!
//! What an attacker on the network cannot do (see [`Limits`]): open more than a bounded
//! number of connections per port (so threads are bounded), hold a connection that never
//! introduces itself or stalls inside a frame, or make the node hold more than a bounded
//! number of bytes of frames not yet handled (each frame holds a [`Permit`] of the node's
//! [`ByteBudget`] from the moment its length is read until the node has handled it). Over
//! TLS, a peer is who its certificate says ([`crate::tls`]).

use crate::diag;
use crate::tls::{self, Tls};
use crate::wire::{self, Envelope, Wire};
use retrace_sim::trace::TailErrorKind;
use rustls::{ClientConnection, ServerConnection, StreamOwned};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Frames queued per peer before a send waits.
pub const OUTBOUND_QUEUE_FRAMES: usize = 4096;
/// How long a send waits for room in a full queue before the message is dropped.
pub const OUTBOUND_WAIT: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Bytes gathered into one write when several frames are queued.
const WRITE_BATCH_BYTES: usize = 64 << 10;
/// How often a blocked read wakes to check its deadline.
const READ_TICK: Duration = Duration::from_millis(250);
/// How long a dial (connect and TLS handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node's peer links are carried.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Mutual TLS: a peer's identity is its certificate's.
    Tls(Arc<Tls>),
    /// Plain TCP: anyone who can reach the port can claim to be any node. Only with
    /// `--insecure-plaintext`.
    Plaintext,
}

/// Bounds on what connections may cost a node. Defaults are documented in the README's
/// reliability section.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections per port (peers, clients); more are closed at once.
    pub peer_connections_max: usize,
    pub client_connections_max: usize,
    /// A new connection must complete its TLS handshake and introduce itself within this.
    pub hello_timeout: Duration,
    /// A frame that has begun must be complete within this.
    pub stall_timeout: Duration,
    /// A client connection may wait this long between requests.
    pub client_idle_timeout: Duration,
    /// Bytes of frames read but not yet handled by the node, over all connections.
    pub inbound_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            peer_connections_max: 64,
            client_connections_max: 256,
            hello_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            client_idle_timeout: Duration::from_secs(120),
            inbound_bytes_max: 64 << 20,
        }
    }
}

/// Frames up to this size are "small": ordinary messages and requests.
pub const SMALL_FRAME_BYTES: u64 = 64 << 10;

/// The node's budget of inbound bytes not yet handled. A quarter of it is kept for small
/// frames, so that large frames held by a slow or hostile sender (each can claim up to
/// `MAX_FRAME_BYTES` and then trickle) cannot starve ordinary traffic.
#[derive(Debug)]
pub struct ByteBudget {
    used: std::sync::Mutex<(u64, u64)>,
    max: u64,
}

/// A share of a [`ByteBudget`], given back when dropped (after the node handled the frame).
#[derive(Debug)]
pub struct Permit {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut used) = self.budget.used.lock() {
            used.0 -= self.bytes;
            if self.bytes > SMALL_FRAME_BYTES {
                used.1 -= self.bytes;
            }
        }
    }
}

impl ByteBudget {
    pub fn new(max: u64) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: std::sync::Mutex::new((0, 0)),
            max,
        })
    }

    /// Takes `bytes` of the budget, waiting until `deadline` for others to give theirs back.
    pub fn acquire(self: &Arc<Self>, bytes: u64, deadline: Instant) -> Option<Permit> {
        let large = bytes > SMALL_FRAME_BYTES;
        let large_max = self.max - self.max / 4;
        if bytes > if large { large_max } else { self.max } {
            return None;
        }
        loop {
            if let Ok(mut used) = self.used.lock() {
                let (all, big) = *used;
                if all + bytes <= self.max && (!large || big + bytes <= large_max) {
                    used.0 += bytes;
                    if large {
                        used.1 += bytes;
                    }
                    return Some(Permit {
                        budget: self.clone(),
                        bytes,
                    });
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.lock().map_or(0, |u| u.0)
    }
}

/// A socket whose reads give up at a deadline (`None`: wait for ever) instead of blocking.
pub struct Deadline {
    sock: TcpStream,
    pub deadline: Option<Instant>,
}

/// How long a write to a connection that does not read may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Deadline {
    pub fn new(sock: TcpStream) -> io::Result<Deadline> {
        sock.set_read_timeout(Some(READ_TICK))?;
        sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Deadline {
            sock,
            deadline: None,
        })
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.sock.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// An accepted connection, plain or TLS.
pub enum Incoming {
    Plain(Deadline),
    Tls(Box<StreamOwned<ServerConnection, Deadline>>),
}

impl Incoming {
    fn accept(sock: TcpStream, transport: &Transport) -> io::Result<Incoming> {
        let _ = sock.set_nodelay(true);
        let sock = Deadline::new(sock)?;
        Ok(match transport {
            Transport::Plaintext => Incoming::Plain(sock),
            Transport::Tls(tls) => {
                let conn = ServerConnection::new(tls.server.clone()).map_err(io::Error::other)?;
                Incoming::Tls(Box::new(StreamOwned::new(conn, sock)))
            }
        })
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        match self {
            Incoming::Plain(s) => s.deadline = deadline,
            Incoming::Tls(s) => s.sock.deadline = deadline,
        }
    }

    /// Whether the other end proved it is node `node` (always, over plain TCP).
    fn is_node(&self, node: u32) -> bool {
        match self {
            Incoming::Plain(_) => true,
            Incoming::Tls(s) => tls::peer_is(s.conn.peer_certificates(), node),
        }
    }
}

impl Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Incoming::Plain(s) => s.read(buf),
            Incoming::Tls(s) => s.read(buf),
        }
    }
}

/// The sending side of one peer link.
pub struct PeerLink {
    tx: SyncSender<Vec<u8>>,
    pub dropped: Arc<AtomicU64>,
}

impl PeerLink {
    /// Starts the writer thread that dials node `to` at `addr` and introduces itself with
    /// `hello`.
    pub fn start(
        to: u32,
        addr: SocketAddr,
        hello: Vec<u8>,
        transport: Transport,
        stop: Arc<AtomicBool>,
    ) -> io::Result<PeerLink> {
        let (tx, rx) = sync_channel::<Vec<u8>>(OUTBOUND_QUEUE_FRAMES);
        let dropped = Arc::new(AtomicU64::new(0));
        thread::Builder::new()
            .name(format!("peer-writer-{addr}"))
            .spawn(move || writer_loop(to, addr, hello, transport, rx, stop))?;
        Ok(PeerLink { tx, dropped })
    }

    /// Queues a framed message; waits a little for room, then drops it (a peer that cannot
    /// keep up looks like a lossy network, never like a hung node).
    pub fn send(&self, frame: Vec<u8>) {
        let deadline = Instant::now() + OUTBOUND_WAIT;
        let mut frame = frame;
        loop {
            match self.tx.try_send(frame) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(f)) => {
                    if Instant::now() >= deadline {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    frame = f;
                    thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
}

/// Connects to node `to` at `addr` (with the TLS handshake, checking its certificate names
/// node `to`) and sends `hello`.
fn dial(
    to: u32,
    addr: SocketAddr,
    hello: &[u8],
    transport: &Transport,
) -> io::Result<Box<dyn Write + Send>> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    let _ = sock.set_nodelay(true);
    // A peer that accepts but never answers must not hang the writer for ever.
    sock.set_read_timeout(Some(DIAL_TIMEOUT))?;
    sock.set_write_timeout(Some(DIAL_TIMEOUT))?;
    let mut out: Box<dyn Write + Send> = match transport {
        Transport::Plaintext => Box::new(sock),
        Transport::Tls(tls) => {
            let conn = ClientConnection::new(tls.client.clone(), Tls::server_name(to))
                .map_err(io::Error::other)?;
            let mut s = StreamOwned::new(conn, sock);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            Box::new(s)
        }
    };
    out.write_all(hello)?;
    out.flush()?;
    Ok(out)
}

fn writer_loop(
    to: u32,
    addr: SocketAddr,
    hello: Vec<u8>,
    transport: Transport,
    rx: Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<Box<dyn Write + Send>> = None;
    let mut backoff = BACKOFF_MIN;
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES);
    loop {
        if batch.is_empty() {
            match rx.recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => return,
            }
            while batch.len() < WRITE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if conn.is_none() {
            match dial(to, addr, &hello, &transport) {
                Ok(c) => {
                    conn = Some(c);
                    backoff = BACKOFF_MIN;
                }
                Err(_) => {
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        if let Some(s) = conn.as_mut() {
            match s.write_all(&batch).and_then(|()| s.flush()) {
                Ok(()) => batch.clear(),
                // Resend the whole batch on a fresh connection; the receiver drops what it
                // already has by message id.
                Err(_) => conn = None,
            }
        }
    }
}

/// A connection's place in a port's counts: open until dropped, and "pending" until it
/// has said who it is ([`Slot::established`]).
pub struct Slot {
    counts: Arc<Counts>,
    pending: bool,
}

#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    pending: AtomicUsize,
}

impl Slot {
    /// The connection has introduced itself: it no longer counts against the pending cap.
    pub fn established(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.counts.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.established();
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections on `listener` and runs `handle` on a thread of its own for each,
/// at most `max` at once and at most `pending_max` of them not yet introduced: the rest
/// are closed as they arrive. So a flood of connections costs a bounded number of
/// threads, and connections that never say who they are cannot take the places real
/// peers reconnect into.
pub fn serve<F>(
    listener: TcpListener,
    max: usize,
    pending_max: usize,
    label: String,
    stop: Arc<AtomicBool>,
    handle: F,
) -> io::Result<()>
where
    F: Fn(TcpStream, Slot) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let counts = Arc::new(Counts::default());
    thread::Builder::new()
        .name(format!("listener-{label}"))
        .spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let open = counts.open.load(Ordering::Acquire);
                let pending = counts.pending.load(Ordering::Acquire);
                if open >= max || pending >= pending_max {
                    diag::warn(format_args!(
                        "[{label}] {open} connections open ({pending} not yet introduced; limits {max} and {pending_max}): refusing one from {}",
                        conn.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string())
                    ));
                    continue; // dropped: closed
                }
                counts.open.fetch_add(1, Ordering::AcqRel);
                counts.pending.fetch_add(1, Ordering::AcqRel);
                let slot = Slot {
                    counts: counts.clone(),
                    pending: true,
                };
                let handle = handle.clone();
                // On a failed spawn the closure, and with it the slot, is dropped.
                let _ = thread::Builder::new()
                    .name(format!("conn-{label}"))
                    .spawn(move || handle(conn, slot));
            }
        })?;
    Ok(())
}

/// What a peer reader needs from the node.
pub struct PeerPort {
    pub node_count: usize,
    pub transport: Transport,
    pub limits: Limits,
    pub budget: Arc<ByteBudget>,
    pub label: String,
}

/// Accepts peer connections and hands each checked message to `deliver(envelope, permit)`,
/// which returns false once the node is shutting down.
pub fn serve_peers<F>(
    listener: TcpListener,
    port: PeerPort,
    stop: Arc<AtomicBool>,
    deliver: F,
) -> io::Result<()>
where
    F: Fn(Envelope, Permit) -> bool + Send + Sync + 'static,
{
    let max = port.limits.peer_connections_max;
    let label = port.label.clone();
    let port = Arc::new(port);
    serve(listener, max, max / 2, label, stop, move |conn, slot| {
        read_peer(conn, slot, &port, &deliver)
    })
}

/// Why a peer connection was closed (for the one warning line it gets).
fn read_peer(
    conn: TcpStream,
    mut slot: Slot,
    port: &PeerPort,
    deliver: &impl Fn(Envelope, Permit) -> bool,
) {
    let remote = conn
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let label = &port.label;
    let refuse = |why: &str| {
        diag::warn(format_args!(
            "[{label}] peer {remote}: {why}; closing the connection"
        ))
    };
    let stream = match Incoming::accept(conn, &port.transport) {
        Ok(s) => s,
        Err(e) => return refuse(&e.to_string()),
    };
    let mut input = BufReader::with_capacity(64 << 10, stream);
    let mut body = Vec::new();
    let mut from: Option<(u32, u32)> = None;
    // The handshake and the hello must come promptly; after that an authenticated peer
    // may be quiet for as long as it likes.
    input
        .get_mut()
        .set_deadline(Some(Instant::now() + port.limits.hello_timeout));
    loop {
        if from.is_some() {
            input.get_mut().set_deadline(None);
        }
        match input.fill_buf() {
            Ok([]) => return,
            Ok(_) => {}
            // A peer killed between frames (no TLS close_notify) is a normal end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && from.is_some() => return,
            Err(e) => return refuse(&format!("{e} waiting for a frame")),
        }
        // A frame has begun: it must be complete before the stall deadline.
        let deadline = Instant::now() + port.limits.stall_timeout;
        if from.is_some() {
            input.get_mut().set_deadline(Some(deadline));
        }
        let mut permit = None;
        let read = wire::read_with(&mut input, &mut body, |bytes| {
            permit = port.budget.acquire(bytes, deadline);
            match permit {
                Some(_) => Ok(()),
                None => Err(TailErrorKind::Io(format!(
                    "the node's inbound budget ({} bytes) has no room for a {bytes}-byte frame",
                    port.budget.max
                ))),
            }
        });
        match read {
            Ok(None) => return,
            Ok(Some(Wire::Hello { node, incarnation })) if from.is_none() => {
                if node as usize >= port.node_count {
                    return refuse(&format!(
                        "hello from node {node}, but the cluster has {} nodes",
                        port.node_count
                    ));
                }
                if !input.get_ref().is_node(node) {
                    return refuse(&format!(
                        "hello as node {node}, but its certificate is not node {node}'s"
                    ));
                }
                from = Some((node, incarnation));
                slot.established();
            }
            Ok(Some(Wire::Msg(env))) => {
                let Some((node, incarnation)) = from else {
                    return refuse("message before hello");
                };
                if env.id.node != node || env.id.incarnation != incarnation {
                    return refuse(&format!("message id {} does not match its hello", env.id));
                }
                let Some(permit) = permit else {
                    return refuse("a frame without its budget");
                };
                if !deliver(env, permit) {
                    return; // the node is shutting down
                }
            }
            Ok(Some(Wire::Hello { .. })) => return refuse("second hello"),
            Err(e) => return refuse(&e.to_string()),
        }
    }
}
