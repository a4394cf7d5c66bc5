//! The one codec of retrace. Everything that turns values into bytes goes through here:
//! payloads and headers through bincode 2 (so the encoding can change without touching
//! callers), and the trace records' compact varint fields through the primitives below.
//!
//! Decoding is for untrusted bytes: every length is bounded before anything is allocated,
//! and nothing here panics on hostile input.

use serde::{de::DeserializeOwned, Serialize};
use std::fmt;

/// The largest value bincode may decode from one buffer; also bounds trace frames.
pub const DECODE_LIMIT_BYTES: usize = 64 << 20;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT_BYTES>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| CodecError(e.to_string()))
}

/// Encodes `value` into `out` if it fits; the number of bytes written.
pub fn encode_into_slice<T: Serialize + ?Sized>(
    value: &T,
    out: &mut [u8],
) -> Result<usize, CodecError> {
    bincode::serde::encode_into_slice(value, out, config()).map_err(|e| CodecError(e.to_string()))
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a whole buffer; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| CodecError(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// A 64-bit FNV-1a digest: stable across platforms and releases, which the trace needs
/// (a `DefaultHasher` is not).
pub fn digest(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// CRC-32 (IEEE, the same as `crc32fast`) tables for slicing-by-8, built at compile time.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
            k += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

/// CRC-32 of one trace frame body. Most bodies are a few dozen bytes, where an inlined
/// table walk beats `crc32fast`'s dispatch to its SIMD kernel; long bodies go to that kernel.
#[inline]
pub fn crc32(bytes: &[u8]) -> u32 {
    if bytes.len() >= 128 {
        return crc32fast::hash(bytes);
    }
    let mut crc = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        crc = CRC_TABLES[7][(lo & 0xff) as usize]
            ^ CRC_TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ CRC_TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ CRC_TABLES[4][(lo >> 24) as usize]
            ^ CRC_TABLES[3][c[4] as usize]
            ^ CRC_TABLES[2][c[5] as usize]
            ^ CRC_TABLES[1][c[6] as usize]
            ^ CRC_TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ CRC_TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

/// Appends `v` as LEB128.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as LEB128.
#[inline]
pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Why a varint-level read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The buffer ended inside a value.
    End,
    /// A varint longer than ten bytes, or a length that exceeds what is left.
    Malformed,
}

/// A bounds-checked cursor over one record's bytes.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn u8(&mut self) -> Result<u8, ReadError> {
        let b = *self.bytes.get(self.pos).ok_or(ReadError::End)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvarint(&mut self) -> Result<u64, ReadError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(ReadError::Malformed);
                }
                return Ok(value);
            }
        }
        Err(ReadError::Malformed)
    }

    pub fn ivarint(&mut self) -> Result<i64, ReadError> {
        let z = self.uvarint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub fn u32varint(&mut self) -> Result<u32, ReadError> {
        u32::try_from(self.uvarint()?).map_err(|_| ReadError::Malformed)
    }

    /// A length-prefixed byte string; the length is checked against what is left before
    /// anything is copied.
    pub fn bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let len = self.uvarint()?;
        if len > self.remaining() as u64 {
            return Err(ReadError::Malformed);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.bytes[start..self.pos])
    }

    /// A count of items that each take at least one byte, checked against what is left.
    pub fn count(&mut self) -> Result<usize, ReadError> {
        let n = self.uvarint()?;
        if n > self.remaining() as u64 {
            return Err(ReadError::Malformed);
        }
        Ok(n as usize)
    }

    pub fn u64_le(&mut self) -> Result<u64, ReadError> {
        let end = self.pos.checked_add(8).ok_or(ReadError::End)?;
        let slice = self.bytes.get(self.pos..end).ok_or(ReadError::End)?;
        self.pos = end;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(slice);
        Ok(u64::from_le_bytes(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert_eq!(Cursor::new(&out).uvarint(), Ok(v));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -1_000_000] {
            let mut out = Vec::new();
            put_ivarint(&mut out, v);
            assert_eq!(Cursor::new(&out).ivarint(), Ok(v));
        }
    }

    #[test]
    fn crc32_matches_crc32fast_at_every_length() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(
                crc32(&data[..len]),
                crc32fast::hash(&data[..len]),
                "length {len}"
            );
        }
    }

    #[test]
    fn overlong_varint_is_malformed_not_a_panic() {
        let bytes = [0xffu8; 12];
        assert_eq!(Cursor::new(&bytes).uvarint(), Err(ReadError::Malformed));
        assert_eq!(Cursor::new(&[0x80]).uvarint(), Err(ReadError::End));
    }

    #[test]
    fn absurd_length_is_rejected_before_allocation() {
        let mut out = Vec::new();
        put_uvarint(&mut out, u64::MAX / 2);
        assert_eq!(Cursor::new(&out).bytes(), Err(ReadError::Malformed));
    }

    #[test]
    fn bincode_limit_stops_hostile_vec_lengths() {
        // A Vec<u64> claiming 2^60 elements must be refused, not allocated.
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }
}
