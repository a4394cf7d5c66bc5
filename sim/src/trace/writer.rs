use super::{BodyEncoder, Header, FORMAT_VERSION, MAGIC};
use crate::codec::{self, put_uvarint};
use std::io::{self, Write};

/// Flush the frame buffer to the sink once it holds this much.
const FLUSH_BYTES: usize = 256 << 10;

/// Appends one frame to `buf`: the body written by `body`, prefixed by its length and CRC32.
/// Room for a one-byte length is reserved up front so that the common small record is
/// written in place, without a scratch copy.
#[inline]
pub fn frame_into(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 5]);
    body(buf);
    let len = buf.len() - start - 5;
    let crc = crate::codec::crc32(&buf[start + 5..]);
    if len < 0x80 {
        buf[start] = len as u8;
        buf[start + 1..start + 5].copy_from_slice(&crc.to_le_bytes());
    } else {
        let mut head = Vec::with_capacity(14);
        put_uvarint(&mut head, len as u64);
        head.extend_from_slice(&crc.to_le_bytes());
        buf.splice(start..start + 5, head);
    }
}

/// A trace being written: frames accumulate in a buffer that is flushed to the sink.
pub struct TraceWriter {
    buf: Vec<u8>,
    sink: Option<Box<dyn Write>>,
    bytes_flushed: u64,
    error: Option<io::Error>,
}

impl TraceWriter {
    /// A writer that keeps the whole trace in memory (see [`TraceWriter::into_bytes`]).
    pub fn in_memory(header: &Header) -> Self {
        Self::start(header, None)
    }

    /// A writer that streams to `sink`.
    pub fn to_sink(header: &Header, sink: Box<dyn Write>) -> Self {
        Self::start(header, Some(sink))
    }

    fn start(header: &Header, sink: Option<Box<dyn Write>>) -> Self {
        let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let header_bytes = codec::encode(header).unwrap_or_else(|e| {
            // Only strings and vectors: encoding cannot fail short of a bincode bug.
            panic!("encoding a trace header failed: {e}")
        });
        frame_into(&mut buf, |out| out.extend_from_slice(&header_bytes));
        TraceWriter {
            buf,
            sink,
            bytes_flushed: 0,
            error: None,
        }
    }

    #[inline]
    fn maybe_flush(&mut self) {
        if self.sink.is_some() && self.buf.len() >= FLUSH_BYTES {
            self.flush_buf();
        }
    }

    fn flush_buf(&mut self) {
        if let Some(sink) = self.sink.as_mut() {
            if self.error.is_none() {
                if let Err(e) = sink.write_all(&self.buf) {
                    self.error = Some(e);
                }
            }
            self.bytes_flushed += self.buf.len() as u64;
            self.buf.clear();
        }
    }

    /// Bytes written so far, buffered or not.
    pub fn len_bytes(&self) -> u64 {
        self.bytes_flushed + self.buf.len() as u64
    }

    /// Flushes everything; reports the first I/O error met while writing, if any.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_buf();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(sink) = self.sink.as_mut() {
            sink.flush()?;
        }
        Ok(self.len_bytes())
    }

    /// The whole trace of an in-memory writer.
    pub fn into_bytes(self) -> Vec<u8> {
        debug_assert!(self.sink.is_none(), "into_bytes on a streaming writer");
        self.buf
    }
}

/// The simulator's view of its trace: record indices are always counted (causal links
/// need them), bytes are produced only when a writer is attached.
pub struct TraceOut {
    pub enc: BodyEncoder,
    pub writer: Option<TraceWriter>,
}

impl TraceOut {
    pub fn new(writer: Option<TraceWriter>) -> Self {
        TraceOut {
            enc: BodyEncoder::default(),
            writer,
        }
    }

    /// Whether records are being encoded at all.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Appends one record written by `body` and returns its index.
    #[inline]
    pub fn push(&mut self, body: impl FnOnce(&mut BodyEncoder, &mut Vec<u8>)) -> u64 {
        let index = self.enc.index;
        if let Some(w) = self.writer.as_mut() {
            let enc = &mut self.enc;
            frame_into(&mut w.buf, |out| body(enc, out));
            w.maybe_flush();
        }
        self.enc.index += 1;
        index
    }

    /// The index the next record will get.
    #[inline]
    pub fn next_index(&self) -> u64 {
        self.enc.index
    }
}
