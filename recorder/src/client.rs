//! The client port: requests from outside the cluster. Each frame is a 4-byte big-endian
//! length and that many bytes of JSON: a request is the model's message type as JSON; a
//! reply is `{"reply": <message>}` or `{"error": "..."}`.

use crate::log::RecordError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// No client frame may claim more than this.
pub const MAX_CLIENT_FRAME_BYTES: u32 = 1 << 20;

pub fn write_frame(out: &mut impl Write, json: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(json.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    let mut buf = Vec::with_capacity(4 + json.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(json);
    out.write_all(&buf)
}

/// Why a client frame was refused.
#[derive(Debug)]
pub enum FrameError {
    Closed,
    TooLong(u32),
    Truncated,
    /// The node's inbound byte budget had no room for the frame in time.
    Busy(u32),
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::TooLong(n) => write!(
                f,
                "frame of {n} bytes exceeds the {MAX_CLIENT_FRAME_BYTES}-byte limit"
            ),
            FrameError::Truncated => f.write_str("connection closed inside a frame"),
            FrameError::Busy(n) => write!(
                f,
                "no room in the node's inbound budget for a {n}-byte frame"
            ),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one frame; the length is checked before anything is allocated.
pub fn read_frame(input: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    read_frame_with(input, |_| true)
}

/// [`read_frame`], asking `reserve` for the frame's length before reading its body (a
/// node holds a share of its inbound byte budget for it); `false` refuses the frame.
pub fn read_frame_with(
    input: &mut impl Read,
    reserve: impl FnOnce(u32) -> bool,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_CLIENT_FRAME_BYTES {
        return Err(FrameError::TooLong(len));
    }
    if !reserve(len) {
        return Err(FrameError::Busy(len));
    }
    let mut body = Vec::new();
    let n = input
        .take(u64::from(len))
        .read_to_end(&mut body)
        .map_err(FrameError::Io)?;
    if n < len as usize {
        return Err(FrameError::Truncated);
    }
    Ok(body)
}

/// A connection to a node's client port.
pub struct Client {
    stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { stream })
    }

    /// How long [`Client::request`] waits for a reply (30 s unless set).
    pub fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
    }

    /// Sends one request (JSON) and waits for its reply (JSON).
    pub fn request(&mut self, json: &[u8]) -> Result<serde_json::Value, RecordError> {
        write_frame(&mut self.stream, json).map_err(|e| format!("sending: {e}"))?;
        let reply = read_frame(&mut self.stream).map_err(|e| format!("reading the reply: {e}"))?;
        serde_json::from_slice(&reply).map_err(|e| RecordError(format!("reply is not JSON: {e}")))
    }
}
