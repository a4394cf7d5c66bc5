//! A timer's tag as runtimes and traces keep it: the node's timer value (its `Node::Timer`),
//! encoded. Runtimes never look inside; the node's code gets the typed value back when the
//! timer fires, and tools decode it to show it. Most tags are an enum variant and a number
//! or two, so small ones are kept inline: setting a timer allocates nothing.

use crate::codec;
use serde::Serialize;
use std::fmt;

/// The largest encoded timer value retrace accepts (a timer carries a reminder, not data);
/// bounds what a trace or log decoder reads.
pub const TAG_BYTES_MAX: usize = 4096;

const INLINE: usize = 22;

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Tag {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Tag {
    /// The tag of `value`. Panics when the value does not encode or is larger than
    /// [`TAG_BYTES_MAX`]: either is a bug in node code (its timer type), which retrace
    /// reports where it happens rather than recording a timer it could not replay.
    pub fn of<T: Serialize + fmt::Debug>(value: &T) -> Tag {
        let mut inline = [0u8; INLINE];
        if let Ok(n) = codec::encode_into_slice(value, &mut inline) {
            return Tag::Inline(n as u8, inline);
        }
        let bytes = codec::encode(value)
            .unwrap_or_else(|e| panic!("timer value {value:?} failed to encode: {e}"));
        assert!(
            bytes.len() <= TAG_BYTES_MAX,
            "timer value {value:?} encodes to {} bytes, more than the {TAG_BYTES_MAX} a timer may carry",
            bytes.len()
        );
        Tag::Heap(bytes.into_boxed_slice())
    }

    /// A tag read from a trace or log (the caller has bounded its length).
    pub fn from_bytes(bytes: &[u8]) -> Tag {
        if bytes.len() <= INLINE {
            let mut inline = [0u8; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Tag::Inline(bytes.len() as u8, inline)
        } else {
            Tag::Heap(bytes.into())
        }
    }

    /// The tag of a plain number (tests, and models whose timer type is `u64`).
    pub fn number(n: u64) -> Tag {
        Tag::of(&n)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Tag::Inline(n, bytes) => &bytes[..*n as usize],
            Tag::Heap(bytes) => bytes,
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tags_stay_inline_and_large_ones_round_trip() {
        let t = Tag::of(&7u64);
        assert!(matches!(t, Tag::Inline(1, _)));
        assert_eq!(codec::decode::<u64>(t.as_bytes()).unwrap(), 7);
        let long = "x".repeat(100);
        let t = Tag::of(&long);
        assert!(matches!(t, Tag::Heap(_)));
        assert_eq!(codec::decode::<String>(t.as_bytes()).unwrap(), long);
        assert_eq!(Tag::from_bytes(t.as_bytes()), t);
    }

    #[test]
    #[should_panic(expected = "more than the 4096")]
    fn a_huge_timer_value_is_refused_where_it_is_set() {
        Tag::of(&vec![0u8; 5000]);
    }
}
