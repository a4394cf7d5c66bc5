//! The trace file: one versioned binary format for every source of runs.
//!
//! Layout: the 8-byte magic `RETRACE\0`, the format version (u16, little endian), then
//! *frames*. A frame is `uvarint body length`, `CRC32 of the body` (u32, little endian),
//! `body`. The first frame holds the [`Header`] (bincode, through [`crate::codec`]); every
//! later frame holds one [`Record`]. A crash while writing leaves at worst a torn last frame,
//! which the reader reports while keeping every complete record before it.

mod header;
mod reader;
mod record;
mod validate;
mod writer;

pub use header::{Header, NodeInfo, Origin};
pub use reader::{
    read_frame, read_frame_with, read_records_at, RecordPosition, TailError, TailErrorKind, Trace,
    TraceError, TraceReader,
};
pub use record::{
    BodyDecoder, BodyEncoder, BodyError, DropReason, Event, FaultRecord, InputHead, Outcome,
    Record, WireEvent,
};
pub use validate::Validator;
pub use writer::{frame_into, TraceOut, TraceWriter};

/// The first bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"RETRACE\0";
/// The version of the format this build writes and reads. 2: node code's draws inside a
/// request come from that request's stream (`rng::StepRng`), so a version-1 trace would
/// re-execute with other numbers and diverge; it is refused instead. 3: a timer carries the
/// node's typed timer value, encoded (`Tag`), not a number.
pub const FORMAT_VERSION: u16 = 3;
/// No frame may claim more than this; a larger length is corruption, not a reason to allocate.
pub const MAX_FRAME_BYTES: u64 = 16 << 20;
