//! Peer connections over TCP, on std threads.
//!
//! Why threads and not an async runtime: a node has a handful of peers and clients, so a
//! thread per connection costs little; the node's handlers run on one thread that owns the
//! node, exactly as in the simulator; and nothing here needs a dependency or a reactor whose
//! scheduling would be one more source of nondeterminism to reason about.
//!
//! Each peer gets one writer thread fed by a bounded queue: per-peer order is the queue's
//! order over one connection. A broken connection is re-dialled with exponential backoff and
//! the frame that may not have arrived is sent again (the receiver drops duplicates by
//! message id). Incoming connections get a reader thread each that checks every frame and
//! hands messages to the node's event loop through a bounded channel, so a slow node pushes
//! back on its senders through TCP.

use crate::wire::{self, Envelope, Wire};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The sending side of one peer link.
pub struct PeerLink {
    tx: SyncSender<Vec<u8>>,
    pub dropped: Arc<AtomicU64>,
}

impl PeerLink {
    /// Starts the writer thread that dials `addr` and introduces itself with `hello`.
    pub fn start(addr: SocketAddr, hello: Vec<u8>, stop: Arc<AtomicBool>) -> PeerLink {
        let (tx, rx) = sync_channel::<Vec<u8>>(OUTBOUND_QUEUE_FRAMES);
        let dropped = Arc::new(AtomicU64::new(0));
        thread::Builder::new()
            .name(format!("peer-writer-{addr}"))
            .spawn(move || writer_loop(addr, hello, rx, stop))
            .expect("spawn a writer thread");
        PeerLink { tx, dropped }
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

fn writer_loop(addr: SocketAddr, hello: Vec<u8>, rx: Receiver<Vec<u8>>, stop: Arc<AtomicBool>) {
    let mut conn: Option<TcpStream> = None;
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
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(mut s) => {
                    let _ = s.set_nodelay(true);
                    if s.write_all(&hello).is_ok() {
                        conn = Some(s);
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(_) => {
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        if let Some(s) = conn.as_mut() {
            match s.write_all(&batch) {
                Ok(()) => batch.clear(),
                // Resend the whole batch on a fresh connection; the receiver drops what it
                // already has by message id.
                Err(_) => conn = None,
            }
        }
    }
}

/// Accepts peer connections and hands each message to `deliver(from, incarnation, envelope)`,
/// which returns false once the node is shutting down.
pub fn serve_peers<F>(listener: TcpListener, deliver: F, label: String, stop: Arc<AtomicBool>)
where
    F: Fn(u32, u32, Envelope) -> bool + Send + Clone + 'static,
{
    thread::Builder::new()
        .name("peer-listener".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let deliver = deliver.clone();
                let label = label.clone();
                let _ = thread::Builder::new()
                    .name("peer-reader".into())
                    .spawn(move || read_peer(conn, deliver, &label));
            }
        })
        .expect("spawn the peer listener");
}

fn read_peer(conn: TcpStream, deliver: impl Fn(u32, u32, Envelope) -> bool, label: &str) {
    let remote = conn
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let _ = conn.set_nodelay(true);
    let mut input = BufReader::with_capacity(64 << 10, conn);
    let mut body = Vec::new();
    let mut from: Option<(u32, u32)> = None;
    loop {
        match wire::read(&mut input, &mut body) {
            Ok(None) => return,
            Ok(Some(Wire::Hello { node, incarnation })) if from.is_none() => {
                from = Some((node, incarnation))
            }
            Ok(Some(Wire::Msg(env))) => {
                let Some((node, incarnation)) = from else {
                    crate::diag::warn(format_args!(
                        "[{label}] peer {remote}: message before hello; closing the connection"
                    ));
                    return;
                };
                if env.id.node != node || env.id.incarnation != incarnation {
                    crate::diag::warn(format_args!(
                        "[{label}] peer {remote}: message id {} does not match its hello; closing",
                        env.id
                    ));
                    return;
                }
                if !deliver(node, incarnation, env) {
                    return; // the node is shutting down
                }
            }
            Ok(Some(Wire::Hello { .. })) => {
                crate::diag::warn(format_args!(
                    "[{label}] peer {remote}: second hello; closing the connection"
                ));
                return;
            }
            Err(e) => {
                crate::diag::warn(format_args!(
                    "[{label}] peer {remote}: {e}; closing the connection"
                ));
                return;
            }
        }
    }
}
