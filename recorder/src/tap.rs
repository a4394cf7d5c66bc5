//! `retrace tap`: a TCP proxy between two processes retrace does not host (an application
//! and its database, say), recording both directions in full as a black box's log.
//!
//! Each accepted connection gets its own connection to the upstream and two pump threads,
//! one per direction. A pump records each chunk it reads, then forwards it; records go to one
//! writer thread through a bounded queue, so a disk slower than the traffic slows the
//! traffic instead of losing bytes. The log is a node log's format (`log.rs`: framed,
//! checksummed, group-committed), one file per run of the tap (`NAME.tap.K.log`), which
//! `merge` places in a recorded run's trace by time, as `Wire` records with no causal link
//! to any node: none was observed.

use crate::diag;
use crate::log::{wall_now_ns, Fsync, LogHeader, LogRecord, LogWriter, RecordError};
use retrace_sim::trace::WireEvent;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How much a pump reads at a time (and so the most one record holds).
const CHUNK_BYTES: usize = 64 * 1024;
/// Records waiting for the writer: bounded, so a slow disk applies backpressure.
const QUEUE_RECORDS: usize = 4096;
/// How often the writer commits when no record arrives.
const COMMIT_TICK: Duration = Duration::from_millis(5);
/// How long a connection to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// What a tap's log says it was written by (how `merge` tells a tap's log from a node's).
pub const TAP_WRITER: &str = "retrace tap";

/// How to run a tap.
#[derive(Clone, Debug)]
pub struct TapOptions {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// Connections proxied at once; more are closed on accept.
    pub connections_max: usize,
}

/// The file a tap's run `k` logs to.
pub fn tap_log_path(dir: &Path, name: &str, k: u32) -> PathBuf {
    dir.join(format!("{name}.tap.{k}.log"))
}

/// A running tap: its listener is bound (its address known) before `run` serves it.
pub struct Tap {
    listener: TcpListener,
    opts: TapOptions,
    pub log_path: PathBuf,
}

impl Tap {
    /// Binds the listener and picks the log file: the first run number not yet used.
    pub fn bind(opts: TapOptions) -> Result<Tap, RecordError> {
        if opts.name.is_empty() || opts.name.contains(['/', '\\', '.']) {
            return Err(RecordError(format!(
                "tap name {:?}: give a plain name (it names the log file)",
                opts.name
            )));
        }
        std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
        let listener = TcpListener::bind(opts.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
        let log_path = (0..u32::MAX)
            .map(|k| tap_log_path(&opts.dir, &opts.name, k))
            .find(|p| !p.exists())
            .ok_or("no free log file name")?;
        Ok(Tap {
            listener,
            opts,
            log_path,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends (the log is committed as it goes: a killed tap keeps
    /// what its last commit held).
    pub fn run(self) -> Result<(), RecordError> {
        let header = LogHeader {
            name: self.opts.name.clone(),
            writer: TAP_WRITER.to_string(),
            fsync: format!("{:?}", self.opts.fsync),
            ..LogHeader::default()
        };
        let log = LogWriter::create(&self.log_path, &header, self.opts.fsync, true)?;
        let (tx, rx) = sync_channel::<LogRecord>(QUEUE_RECORDS);
        let writer = thread::Builder::new()
            .name("tap-log".into())
            .spawn(move || write_log(log, rx))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let open = Arc::new(AtomicUsize::new(0));
        let next_conn = AtomicU64::new(0);
        for client in self.listener.incoming() {
            if writer.is_finished() {
                break;
            }
            let Ok(client) = client else { continue };
            if open.load(Ordering::Acquire) >= self.opts.connections_max {
                diag::warn(format_args!(
                    "[tap {}] {} connections already: closing a new one",
                    self.opts.name, self.opts.connections_max
                ));
                continue;
            }
            open.fetch_add(1, Ordering::AcqRel);
            let conn = next_conn.fetch_add(1, Ordering::Relaxed);
            let (tx, held, opts) = (tx.clone(), open.clone(), self.opts.clone());
            let spawned = thread::Builder::new()
                .name(format!("tap-{conn}"))
                .spawn(move || {
                    proxy(client, conn, &opts, &tx);
                    held.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                open.fetch_sub(1, Ordering::AcqRel);
            }
        }
        drop(tx);
        match writer.join() {
            Ok(result) => result,
            Err(_) => Err(RecordError("the tap's log writer panicked".into())),
        }
    }
}

/// The writer: appends what the pumps send and commits as the log's policy says — also
/// when nothing arrives, since a group commit writes only once its interval has passed, and
/// a tap killed in a quiet moment must not have held its last records back.
fn write_log(mut log: LogWriter, rx: Receiver<LogRecord>) -> Result<(), RecordError> {
    loop {
        match rx.recv_timeout(COMMIT_TICK) {
            Ok(record) => {
                let _ = log.append(record);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return log.flush(),
        }
        log.commit()?;
    }
}

fn record(tx: &SyncSender<LogRecord>, conn: u64, event: WireEvent) {
    let _ = tx.send(LogRecord::Tap {
        wall_ns: wall_now_ns(),
        conn,
        event,
    });
}

/// One proxied connection, from open to close.
fn proxy(client: TcpStream, conn: u64, opts: &TapOptions, tx: &SyncSender<LogRecord>) {
    let peer = client
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    record(
        tx,
        conn,
        WireEvent::Open {
            tap: opts.name.clone(),
            client: peer,
            upstream: opts.upstream.to_string(),
        },
    );
    let upstream = match TcpStream::connect_timeout(&opts.upstream, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("upstream {} unreachable: {e}", opts.upstream);
            diag::warn(format_args!("[tap {}] {reason}", opts.name));
            record(tx, conn, WireEvent::Close { reason });
            return;
        }
    };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
        record(
            tx,
            conn,
            WireEvent::Close {
                reason: "cannot share the sockets between threads".into(),
            },
        );
        return;
    };
    let back_tx = tx.clone();
    let back = thread::Builder::new()
        .name(format!("tap-{conn}-back"))
        .spawn(move || pump(upstream2, client2, conn, false, &back_tx));
    let forward_end = pump(client, upstream, conn, true, tx);
    let back_end = match back {
        Ok(handle) => handle.join().unwrap_or_else(|_| "a pump failed".into()),
        Err(e) => format!("cannot start a thread: {e}"),
    };
    record(
        tx,
        conn,
        WireEvent::Close {
            reason: format!("{forward_end}; {back_end}"),
        },
    );
}

/// Copies one direction until its reader ends: records each chunk, then forwards it. When
/// it ends it closes the other side's writing half (so the far end sees the close too), and
/// says how it ended.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    conn: u64,
    to_upstream: bool,
    tx: &SyncSender<LogRecord>,
) -> String {
    let (source, sink) = if to_upstream {
        ("client", "upstream")
    } else {
        ("upstream", "client")
    };
    let mut buf = vec![0u8; CHUNK_BYTES];
    let end = loop {
        match from.read(&mut buf) {
            Ok(0) => break format!("{source} closed"),
            Ok(n) => {
                record(
                    tx,
                    conn,
                    WireEvent::Data {
                        to_upstream,
                        bytes: buf[..n].to_vec(),
                    },
                );
                if let Err(e) = to.write_all(&buf[..n]) {
                    break format!("writing to the {sink}: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("reading from the {source}: {e}"),
        }
    };
    // A client that closes cleanly may still wait for the rest of its answer: the upstream
    // gets a half-close and answers on. Anything else ends both directions at once — an
    // upstream that closed or failed takes nothing more, and the other pump would otherwise
    // wait on a client that may never speak again.
    let clean = to_upstream && end.ends_with("closed");
    let _ = to.shutdown(if clean {
        Shutdown::Write
    } else {
        Shutdown::Both
    });
    let _ = from.shutdown(if clean {
        Shutdown::Read
    } else {
        Shutdown::Both
    });
    end
}

/// One record of a tap's log, as the trace takes it: when, on which connection (unique
/// among every tap log read together), what.
#[derive(Clone, Debug)]
pub struct TapRecord {
    pub wall_ns: u64,
    pub conn: u64,
    pub event: WireEvent,
}

/// Whether a log file's name is a tap's (`NAME.tap.K.log`).
pub fn is_tap_log_name(file_name: &str) -> bool {
    file_name
        .strip_suffix(".log")
        .and_then(|s| s.rsplit_once('.'))
        .is_some_and(|(rest, k)| rest.ends_with(".tap") && k.parse::<u32>().is_ok())
}

/// Every tap log in `dirs`, read (a torn tail cut off and named in `problems`), its
/// records between `from_ns` and `to_ns` in time order. Connections are numbered afresh,
/// 0, 1, 2, ... in the order their logs (by name) and their openings came, so that they
/// are unique among all the taps.
pub fn load_taps(
    dirs: &[PathBuf],
    from_ns: u64,
    to_ns: u64,
    problems: &mut Vec<String>,
) -> Result<(Vec<TapRecord>, usize), RecordError> {
    let mut paths = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        paths.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_tap_log_name)
                }),
        );
    }
    paths.sort();
    let mut records = Vec::new();
    let mut numbers: std::collections::BTreeMap<(usize, u64), u64> = Default::default();
    for (k, path) in paths.iter().enumerate() {
        let log = match crate::log::read_log(path) {
            Ok(log) => log,
            Err(e) => {
                problems.push(format!("{e}; left out"));
                continue;
            }
        };
        if log.header.writer != TAP_WRITER {
            problems.push(format!("{}: not a tap's log; left out", path.display()));
            continue;
        }
        if let Some(cut) = &log.cut {
            problems.push(format!("{}: {cut}", path.display()));
        }
        for r in log.records {
            if let LogRecord::Tap {
                wall_ns,
                conn,
                event,
            } = r
            {
                if (from_ns..=to_ns).contains(&wall_ns) {
                    let next = numbers.len() as u64;
                    let conn = *numbers.entry((k, conn)).or_insert(next);
                    records.push(TapRecord {
                        wall_ns,
                        conn,
                        event,
                    });
                }
            }
        }
    }
    // Stable: a log's own order stands among records of the same nanosecond.
    records.sort_by_key(|r| r.wall_ns);
    Ok((records, paths.len()))
}
