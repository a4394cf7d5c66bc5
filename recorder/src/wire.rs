//! What travels between nodes: frames in the trace format's framing (`uvarint len | crc32 |
//! body`, at most `MAX_FRAME_BYTES`), each body a bincode [`Wire`] value. The runtime adds the causal metadata; node code
//! never sees it.

use retrace_sim::codec::{self, CodecError};
use retrace_sim::trace::{frame_into, read_frame_with, TailErrorKind};
use serde::{Deserialize, Serialize};
use std::io::Read;

/// A message id: the sending node, its incarnation, and a sequence number per incarnation.
/// Unique across a recording; duplicates from reconnects are recognised by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    pub node: u32,
    pub incarnation: u32,
    pub seq: u64,
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}.{}#{}", self.node, self.incarnation, self.seq)
    }
}

/// A message with the causal metadata the runtime adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: MsgId,
    /// Index, in the sender's log, of the event whose handler sent this.
    pub sender_event: u64,
    /// The sender's Lamport clock at the send.
    pub lamport: u64,
    /// The request ids of the event that sent it.
    pub request_ids: Vec<u64>,
    /// The message, encoded by the codec.
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// The first frame on a connection: who is calling.
    Hello {
        node: u32,
        incarnation: u32,
    },
    Msg(Envelope),
}

/// Appends one framed wire value to `out`.
pub fn encode(wire: &Wire, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let body = codec::encode(wire)?;
    frame_into(out, |o| o.extend_from_slice(&body));
    Ok(())
}

/// Why a frame from a peer was refused.
#[derive(Debug)]
pub enum WireError {
    Frame(TailErrorKind),
    Decode(CodecError),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Frame(TailErrorKind::Torn { needed, available }) => {
                write!(
                    f,
                    "connection closed inside a frame ({available} of {needed} bytes)"
                )
            }
            WireError::Frame(TailErrorKind::AbsurdLength { len }) => {
                write!(f, "frame length {len} exceeds the limit")
            }
            WireError::Frame(TailErrorKind::BadChecksum { .. }) => {
                f.write_str("frame checksum mismatch")
            }
            WireError::Frame(TailErrorKind::BadRecord(e)) => write!(f, "bad frame: {e}"),
            WireError::Frame(TailErrorKind::Io(e)) => write!(f, "read error: {e}"),
            WireError::Frame(TailErrorKind::Invalid(e)) => write!(f, "invalid frame: {e}"),
            WireError::Decode(e) => write!(f, "undecodable frame: {e}"),
        }
    }
}

/// Reads the next wire value; `Ok(None)` at a clean end of stream.
pub fn read(input: &mut impl Read, body: &mut Vec<u8>) -> Result<Option<Wire>, WireError> {
    read_with(input, body, |_| Ok(()))
}

/// [`read`], reserving the frame's size with `reserve` before its body is read (see
/// `retrace_sim::trace::read_frame_with`).
pub fn read_with(
    input: &mut impl Read,
    body: &mut Vec<u8>,
    reserve: impl FnOnce(u64) -> Result<(), TailErrorKind>,
) -> Result<Option<Wire>, WireError> {
    let mut offset = 0;
    match read_frame_with(input, body, &mut offset, reserve) {
        Ok(false) => Ok(None),
        Ok(true) => codec::decode(body).map(Some).map_err(WireError::Decode),
        Err(kind) => Err(WireError::Frame(kind)),
    }
}
