//! Ports for the nodes `retrace cluster` starts on 127.0.0.1.
//!
//! The launcher picks a node's ports, lets them go, and the node binds them a moment later
//! (and again after each restart). A port from the kernel's ephemeral range — what binding
//! port 0 returns — can be taken in between by any outgoing connection on the machine,
//! which gets its local port from that same range: CI saw a client node fail with "address
//! already in use" while other tests' clusters were connecting. So the ports come from just
//! below the ephemeral range, which outgoing connections never use, each checked free by
//! binding it, handed out by a process-wide cursor so two clusters started by one process
//! (parallel tests) never get the same port, starting from a point that differs per process.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// How many ports below the ephemeral range are used.
const SPAN: u32 = 12_000;
/// Below this, ports are left to the system's services.
const LOWEST: u32 = 1_024;
/// Linux's default start of the ephemeral range, if the system does not say.
const EPHEMERAL_START_DEFAULT: u32 = 32_768;

/// `n` distinct free ports on 127.0.0.1, outside the ephemeral range when it has room
/// below it (else from the kernel, as before).
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>, String> {
    let (low, high) = span();
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    // Bounded: one pass over the span at most.
    for _ in 0..high - low {
        if held.len() == n {
            break;
        }
        let port = low + cursor().fetch_add(1, Ordering::Relaxed) % (high - low);
        // Held until all are found, so no two are the same.
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(l);
        }
    }
    while held.len() < n {
        held.push(
            TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?,
        );
    }
    held.iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect()
}

/// The ports used: `[low, high)`, just below the ephemeral range.
fn span() -> (u32, u32) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(EPHEMERAL_START_DEFAULT)
        .min(u32::from(u16::MAX));
    let low = start.saturating_sub(SPAN).max(LOWEST);
    (low, start.max(low + 1))
}

/// Where this process hands out ports from next; it starts at a point drawn from the
/// process id and the clock (not a seeded stream: which ports a real cluster gets is not
/// part of any trace).
fn cursor() -> &'static AtomicU32 {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    CURSOR.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        AtomicU32::new(std::process::id().wrapping_mul(7_919) ^ nanos)
    })
}
