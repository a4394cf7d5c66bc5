use super::{
    BodyDecoder, BodyError, Event, Header, Validator, FORMAT_VERSION, MAGIC, MAX_FRAME_BYTES,
};
use crate::codec;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

/// The trace cannot be read at all: nothing before the first record is usable.
#[derive(Debug)]
pub enum TraceError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    NotATrace {
        path: PathBuf,
    },
    UnsupportedVersion {
        path: PathBuf,
        version: u16,
    },
    BadHeader {
        path: PathBuf,
        reason: String,
    },
    /// A record that decodes but says something no writer says (see [`Validator`]):
    /// consumers would index past their arrays, so the whole trace is refused.
    Invalid {
        path: PathBuf,
        tail: TailError,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            TraceError::NotATrace { path } => {
                write!(f, "{}: not a retrace trace (bad magic bytes at offset 0)", path.display())
            }
            TraceError::UnsupportedVersion { path, version } => write!(
                f,
                "{}: trace format version {version} is not supported (this build reads {FORMAT_VERSION})",
                path.display()
            ),
            TraceError::BadHeader { path, reason } => {
                write!(f, "{}: unreadable trace header at offset 10: {reason}", path.display())
            }
            TraceError::Invalid { path, tail } => write!(f, "{}: {tail}", path.display()),
        }
    }
}

impl std::error::Error for TraceError {}

/// What is wrong with the first bad frame of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailErrorKind {
    /// The file ends inside a frame: a write was cut short (crash, full disk).
    Torn { needed: u64, available: u64 },
    /// A frame claims more bytes than any record may have.
    AbsurdLength { len: u64 },
    /// The frame's CRC32 does not match its bytes.
    BadChecksum { expected: u32, actual: u32 },
    /// The frame is intact but its record does not decode.
    BadRecord(BodyError),
    /// Reading failed.
    Io(String),
    /// The record decodes but its structure is impossible (a node past the cluster, a
    /// link to a record of the wrong kind): not a torn tail but a forged or broken file.
    Invalid(String),
}

impl TailError {
    /// Whether the trace is broken inside rather than cut short: a consumer must refuse
    /// it (exit 2) instead of using the prefix.
    pub fn is_structural(&self) -> bool {
        matches!(self.kind, TailErrorKind::Invalid(_))
    }
}

/// The first bad frame: everything before `offset` (records `0..index`) is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailError {
    pub offset: u64,
    pub index: u64,
    pub kind: TailErrorKind,
}

impl fmt::Display for TailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} at byte offset {}: ", self.index, self.offset)?;
        match &self.kind {
            TailErrorKind::Torn { needed, available } => {
                write!(
                    f,
                    "torn frame (needs {needed} bytes, only {available} left)"
                )
            }
            TailErrorKind::AbsurdLength { len } => {
                write!(
                    f,
                    "frame length {len} exceeds the {MAX_FRAME_BYTES}-byte limit"
                )
            }
            TailErrorKind::BadChecksum { expected, actual } => {
                write!(
                    f,
                    "checksum mismatch (frame says {expected:08x}, bytes give {actual:08x})"
                )
            }
            TailErrorKind::BadRecord(e) => write!(f, "corrupt record: {e}"),
            TailErrorKind::Io(e) => write!(f, "read error: {e}"),
            TailErrorKind::Invalid(e) => write!(f, "invalid record: {e}"),
        }
    }
}

/// Reads one frame (`uvarint len | crc32 | body`, as [`super::frame_into`] writes it) into
/// `body`, checking its length bound and checksum; advances `offset` past it. `Ok(false)` is a
/// clean end of input (no byte of a new frame). Used for trace files, node logs and network
/// frames alike.
pub fn read_frame(
    r: &mut impl Read,
    body: &mut Vec<u8>,
    offset: &mut u64,
) -> Result<bool, TailErrorKind> {
    read_frame_with(r, body, offset, |_| Ok(()))
}

/// [`read_frame`], asking `reserve` for the frame's size once its length is known and
/// checked, before any byte of its body is read: a network reader uses it to hold a share
/// of the node's inbound byte budget for the frame, so many connections each sending part
/// of a large frame cannot together hold more memory than the budget.
pub fn read_frame_with(
    r: &mut impl Read,
    body: &mut Vec<u8>,
    offset: &mut u64,
    reserve: impl FnOnce(u64) -> Result<(), TailErrorKind>,
) -> Result<bool, TailErrorKind> {
    let io = |e: io::Error| TailErrorKind::Io(e.to_string());
    // The length varint, byte by byte: EOF before its first byte is the clean end.
    let mut len: u64 = 0;
    let mut consumed = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        let n = r.read(&mut b).map_err(io)?;
        if n == 0 {
            if consumed == 0 {
                return Ok(false);
            }
            return Err(TailErrorKind::Torn {
                needed: 1,
                available: 0,
            });
        }
        consumed += 1;
        len |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        if shift >= 63 {
            return Err(TailErrorKind::AbsurdLength { len: u64::MAX });
        }
    }
    if len > MAX_FRAME_BYTES {
        return Err(TailErrorKind::AbsurdLength { len });
    }
    let needed = 4 + len;
    reserve(needed)?;
    body.clear();
    // `take` + `read_to_end` grows the buffer only as bytes arrive, so a short file with a
    // plausible-but-wrong length never allocates the claimed size.
    let got = r.take(needed).read_to_end(body).map_err(io)? as u64;
    if got < needed {
        return Err(TailErrorKind::Torn {
            needed,
            available: got,
        });
    }
    let expected = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let actual = crate::codec::crc32(&body[4..]);
    if expected != actual {
        return Err(TailErrorKind::BadChecksum { expected, actual });
    }
    body.drain(..4);
    *offset += consumed + needed;
    Ok(true)
}

/// Where a record starts in a trace file, with what decoding it needs from before it
/// (see [`BodyDecoder::resume`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    /// Byte offset of the record's frame.
    pub offset: u64,
    pub index: u64,
    /// The time of the record before it (0 for the first).
    pub time_ns: u64,
    /// The node of the step open before it, if any.
    pub step_node: Option<crate::NodeId>,
}

/// Reads up to `count` records starting at `at` into `out` (which it clears), checking each
/// frame's length and checksum. A torn frame, or a trace that ends early, ends the run
/// without an error (what follows is the caller's to know from its index); a frame that is
/// there but bad is an error, with the record's index. The records are not validated:
/// callers get `at` from an index built by a validating pass over the same file.
pub fn read_records_at<R: Read + io::Seek>(
    input: &mut R,
    at: RecordPosition,
    count: usize,
    out: &mut Vec<Event>,
) -> Result<(), TailError> {
    out.clear();
    let mut offset = at.offset;
    let fail = |offset: u64, index: u64, kind: TailErrorKind| TailError {
        offset,
        index,
        kind,
    };
    input
        .seek(io::SeekFrom::Start(at.offset))
        .map_err(|e| fail(offset, at.index, TailErrorKind::Io(e.to_string())))?;
    let mut decoder = BodyDecoder::resume(at.index, at.time_ns, at.step_node);
    let mut body = Vec::new();
    // Bounded by `count`; every frame read is bounded by `read_frame`.
    for k in 0..count as u64 {
        let start = offset;
        match read_frame(input, &mut body, &mut offset) {
            Ok(true) => {}
            Ok(false) | Err(TailErrorKind::Torn { .. }) => return Ok(()),
            Err(kind) => return Err(fail(start, at.index + k, kind)),
        }
        let event = decoder
            .decode(&body)
            .map_err(|e| fail(start, at.index + k, TailErrorKind::BadRecord(e)))?;
        out.push(event);
    }
    Ok(())
}

/// A streaming reader over a trace's records. It stops at the first bad frame and keeps the
/// error in [`TraceReader::tail_error`].
pub struct TraceReader<R> {
    input: R,
    decoder: BodyDecoder,
    body: Vec<u8>,
    offset: u64,
    index: u64,
    tail: Option<TailError>,
    done: bool,
    /// `None` for a reader opened in the middle of a file ([`TraceReader::open_at`]).
    validator: Option<Validator>,
}

impl TraceReader<BufReader<File>> {
    /// Opens a trace file and reads its header.
    pub fn open(path: &Path) -> Result<(Header, Self), TraceError> {
        let file = File::open(path).map_err(|error| TraceError::Io {
            path: path.to_owned(),
            error,
        })?;
        Self::new(BufReader::with_capacity(1 << 20, file), path)
    }

    /// A reader of the trace at `path` from the record at `at` on. Its records are not
    /// validated (links and node ids need the records before them): callers get `at` from
    /// an index built by a validating pass over the same file, and check node ids against
    /// the header themselves.
    pub fn open_at(path: &Path, at: RecordPosition) -> Result<Self, TraceError> {
        let io = |error| TraceError::Io {
            path: path.to_owned(),
            error,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(io::SeekFrom::Start(at.offset)).map_err(io)?;
        Ok(TraceReader {
            input: BufReader::with_capacity(1 << 20, file),
            decoder: BodyDecoder::resume(at.index, at.time_ns, at.step_node),
            body: Vec::new(),
            offset: at.offset,
            index: at.index,
            tail: None,
            done: false,
            validator: None,
        })
    }
}

impl<R: Read> TraceReader<R> {
    /// Reads the header from `input`; `path` only names the source in errors.
    pub fn new(mut input: R, path: &Path) -> Result<(Header, Self), TraceError> {
        let path_buf = || path.to_owned();
        let mut magic = [0u8; 10];
        let mut filled = 0;
        while filled < magic.len() {
            match input.read(&mut magic[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(TraceError::Io {
                        path: path_buf(),
                        error,
                    })
                }
            }
        }
        if filled < 10 || magic[..8] != MAGIC {
            return Err(TraceError::NotATrace { path: path_buf() });
        }
        let version = u16::from_le_bytes([magic[8], magic[9]]);
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion {
                path: path_buf(),
                version,
            });
        }
        let mut body = Vec::new();
        let mut offset = 10;
        match read_frame(&mut input, &mut body, &mut offset) {
            Ok(true) => {}
            Ok(false) => {
                return Err(TraceError::BadHeader {
                    path: path_buf(),
                    reason: "missing".into(),
                })
            }
            Err(kind) => {
                let reason = TailError {
                    offset: 10,
                    index: 0,
                    kind,
                }
                .to_string();
                return Err(TraceError::BadHeader {
                    path: path_buf(),
                    reason,
                });
            }
        }
        let header: Header = codec::decode(&body).map_err(|e| TraceError::BadHeader {
            path: path_buf(),
            reason: e.to_string(),
        })?;
        let validator = Validator::new(&header).map_err(|reason| TraceError::BadHeader {
            path: path_buf(),
            reason,
        })?;
        let reader = TraceReader {
            input,
            decoder: BodyDecoder::default(),
            body,
            offset,
            index: 0,
            tail: None,
            done: false,
            validator: Some(validator),
        };
        Ok((header, reader))
    }

    /// The first bad frame met, once iteration has stopped on it.
    pub fn tail_error(&self) -> Option<&TailError> {
        self.tail.as_ref()
    }

    /// Byte offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many records it has handed out.
    pub fn records_read(&self) -> u64 {
        self.index
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let start = self.offset;
        let fail = |this: &mut Self, kind| {
            this.tail = Some(TailError {
                offset: start,
                index: this.index,
                kind,
            });
            this.done = true;
            None
        };
        match read_frame(&mut self.input, &mut self.body, &mut self.offset) {
            Ok(true) => {}
            Ok(false) => {
                self.done = true;
                return None;
            }
            Err(kind) => return fail(self, kind),
        }
        match self.decoder.decode(&self.body) {
            Ok(event) => match self.validator.as_mut().map_or(Ok(()), |v| v.check(&event)) {
                Ok(()) => {
                    self.index += 1;
                    Some(event)
                }
                Err(e) => {
                    self.offset = start;
                    fail(self, TailErrorKind::Invalid(e))
                }
            },
            Err(e) => {
                self.offset = start;
                fail(self, TailErrorKind::BadRecord(e))
            }
        }
    }
}

/// A whole trace loaded in memory: the valid prefix, and what stopped the reading if the
/// file did not end cleanly.
#[derive(Debug)]
pub struct Trace {
    pub header: Header,
    pub events: Vec<Event>,
    pub tail: Option<TailError>,
}

impl Trace {
    /// Loads a trace file.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let (header, reader) = TraceReader::open(path)?;
        Self::collect(header, reader, path)
    }

    /// Every record of `reader`; a structural error refuses the whole trace (a torn tail
    /// keeps the prefix).
    fn collect<R: Read>(
        header: Header,
        mut reader: TraceReader<R>,
        path: &Path,
    ) -> Result<Trace, TraceError> {
        let events: Vec<Event> = reader.by_ref().collect();
        match reader.tail.take() {
            Some(tail) if tail.is_structural() => Err(TraceError::Invalid {
                path: path.to_owned(),
                tail,
            }),
            tail => Ok(Trace {
                header,
                events,
                tail,
            }),
        }
    }

    /// Whether the trace ends with its end record: a run that was cut short (a crash of the
    /// writer, a full disk) leaves a trace without one, even when no frame is torn.
    pub fn is_complete(&self) -> bool {
        self.tail.is_none()
            && self
                .events
                .last()
                .is_some_and(|e| matches!(e.record, super::Record::End { .. }))
    }

    /// Loads a trace held in memory; `name` names it in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Trace, TraceError> {
        let (header, reader) = TraceReader::new(bytes, Path::new(name))?;
        Self::collect(header, reader, Path::new(name))
    }
}
