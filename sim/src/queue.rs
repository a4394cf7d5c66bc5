//! The event queue: pending events ordered by (time, sequence number).
//!
//! Entries live in a slab; the heap holds small keys. Cancelling an entry frees its slot at
//! once and leaves a stale key behind that is skipped when popped (the key's sequence number
//! no longer matches the slot's).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key {
    time_ns: u64,
    seq: u64,
    slot: u32,
}

/// A handle to a queued entry, for cancellation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Handle {
    slot: u32,
    seq: u64,
}

pub struct EventQueue<T> {
    heap: BinaryHeap<Reverse<Key>>,
    slab: Vec<Option<(u64, T)>>,
    free: Vec<u32>,
    next_seq: u64,
    live: usize,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            live: 0,
        }
    }
}

impl<T> EventQueue<T> {
    /// Queues `item` at `time_ns`; among equal times, earlier pushes pop first.
    pub fn push(&mut self, time_ns: u64, item: T) -> Handle {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.place(time_ns, seq, item)
    }

    /// Stores `item` in a free slot under key (`time_ns`, `seq`).
    fn place(&mut self, time_ns: u64, seq: u64, item: T) -> Handle {
        let slot = match self.free.pop() {
            Some(slot) => {
                debug_assert!(self.slab[slot as usize].is_none());
                self.slab[slot as usize] = Some((seq, item));
                slot
            }
            None => {
                let slot = u32::try_from(self.slab.len()).expect("more than 2^32 pending events");
                self.slab.push(Some((seq, item)));
                slot
            }
        };
        self.heap.push(Reverse(Key { time_ns, seq, slot }));
        self.live += 1;
        Handle { slot, seq }
    }

    /// Removes a queued entry; `None` if it already popped or was cancelled.
    pub fn cancel(&mut self, handle: Handle) -> Option<T> {
        let entry = self.slab.get_mut(handle.slot as usize)?;
        match entry {
            Some((seq, _)) if *seq == handle.seq => {
                let (_, item) = entry.take()?;
                self.free.push(handle.slot);
                self.live -= 1;
                Some(item)
            }
            _ => None,
        }
    }

    /// Time of the earliest live entry.
    pub fn peek_time(&mut self) -> Option<u64> {
        self.skip_stale();
        self.heap.peek().map(|Reverse(k)| k.time_ns)
    }

    /// Removes and returns the earliest live entry.
    // Inlined so that the popped event is built where the caller keeps it: the move of an
    // event out of the queue is a large share of a ping-pong step.
    #[inline]
    pub fn pop(&mut self) -> Option<(u64, T)> {
        self.skip_stale();
        let Reverse(key) = self.heap.pop()?;
        let (_, item) = self.slab[key.slot as usize]
            .take()
            .expect("skip_stale left a live key on top");
        self.free.push(key.slot);
        self.live -= 1;
        Some((key.time_ns, item))
    }

    /// Removes and returns the earliest live entry with its sequence number, so that it can
    /// be put back in the same place with [`EventQueue::restore`].
    pub fn pop_keyed(&mut self) -> Option<(u64, u64, T)> {
        self.skip_stale();
        let Reverse(key) = self.heap.pop()?;
        let (seq, item) = self.slab[key.slot as usize]
            .take()
            .expect("skip_stale left a live key on top");
        self.free.push(key.slot);
        self.live -= 1;
        Some((key.time_ns, seq, item))
    }

    /// Puts back an entry taken with [`EventQueue::pop_keyed`], in its old place.
    pub fn restore(&mut self, time_ns: u64, seq: u64, item: T) -> Handle {
        debug_assert!(seq < self.next_seq, "restore only what was popped");
        self.place(time_ns, seq, item)
    }

    fn skip_stale(&mut self) {
        while let Some(Reverse(key)) = self.heap.peek() {
            match &self.slab[key.slot as usize] {
                Some((seq, _)) if *seq == key.seq => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_pop_in_push_order_and_cancelled_entries_vanish() {
        let mut q = EventQueue::default();
        let a = q.push(5, 'a');
        q.push(5, 'b');
        q.push(1, 'c');
        assert_eq!(q.cancel(a), Some('a'));
        assert_eq!(q.cancel(a), None);
        q.push(5, 'd'); // reuses a's slot; the stale key must not pop it early
        assert_eq!(q.pop(), Some((1, 'c')));
        assert_eq!(q.pop(), Some((5, 'b')));
        assert_eq!(q.pop(), Some((5, 'd')));
        assert_eq!(q.pop(), None);
    }
}
