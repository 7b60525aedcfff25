//! The scheduler's single timer queue: which key is due next.
//!
//! Keys are small dense numbers (a secret's position in the policy), so a queue holding
//! every secret of a large policy costs 12 bytes per key and no per-key allocation: an
//! indexed binary min-heap of keys, and per key its due time and place in the heap, which
//! is what lets a key be rescheduled or cancelled in place (O(log n)) instead of leaving
//! stale entries behind. Due times are kept in whole seconds, rounded up: a key is never
//! due early, and at most a second late.

use chrono::{DateTime, Utc};

use super::Stamp;

/// Marks a key that is not queued.
const NOT_QUEUED: u32 = u32::MAX;

/// A timer queue of keys `0..n`, each due at most once.
#[derive(Debug, Clone, Default)]
pub struct DueQueue {
    /// Queued keys, a min-heap by (due time, key).
    heap: Vec<u32>,
    /// Per key: when it is due and where it sits in `heap`.
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    due: Stamp,
    position: u32,
}

impl DueQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue with room for keys `0..keys` (others still fit; they grow it).
    pub fn with_keys(keys: usize) -> Self {
        DueQueue {
            heap: Vec::with_capacity(keys),
            slots: vec![
                Slot {
                    due: Stamp::floor(DateTime::<Utc>::MIN_UTC),
                    position: NOT_QUEUED,
                };
                keys
            ],
        }
    }

    /// Makes `key` due at `due` (rounded up to the second), replacing any earlier time
    /// for it.
    pub fn schedule(&mut self, key: u32, due: DateTime<Utc>) {
        let due = Stamp::ceil(due);
        let index = key as usize;
        if index >= self.slots.len() {
            self.slots.resize(
                index + 1,
                Slot {
                    due,
                    position: NOT_QUEUED,
                },
            );
        }
        self.slots[index].due = due;
        match self.slots[index].position {
            NOT_QUEUED => {
                self.heap.push(key);
                let last = self.heap.len() - 1;
                self.slots[index].position = last as u32;
                self.sift_up(last);
            }
            position => {
                let position = position as usize;
                self.sift_up(position);
                self.sift_down(self.slots[index].position as usize);
            }
        }
    }

    /// Removes `key`; returns whether it was queued.
    pub fn cancel(&mut self, key: u32) -> bool {
        match self.slots.get(key as usize).map(|s| s.position) {
            None | Some(NOT_QUEUED) => false,
            Some(position) => {
                self.remove_at(position as usize);
                true
            }
        }
    }

    /// When `key` is due, if it is queued.
    pub fn due_of(&self, key: u32) -> Option<DateTime<Utc>> {
        self.slots
            .get(key as usize)
            .filter(|s| s.position != NOT_QUEUED)
            .map(|s| s.due.time())
    }

    /// The earliest due time in the queue.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.heap
            .first()
            .map(|&key| self.slots[key as usize].due.time())
    }

    /// Removes and returns every key due at or before `now`, earliest first (equal times
    /// in key order).
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<u32> {
        let now = Stamp::floor(now);
        let mut due = Vec::new();
        while let Some(&key) = self.heap.first() {
            if self.slots[key as usize].due > now {
                break;
            }
            self.remove_at(0);
            due.push(key);
        }
        due
    }

    /// How many keys are queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no key is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn before(&self, a: u32, b: u32) -> bool {
        (self.slots[a as usize].due, a) < (self.slots[b as usize].due, b)
    }

    fn place(&mut self, position: usize, key: u32) {
        self.heap[position] = key;
        self.slots[key as usize].position = position as u32;
    }

    fn remove_at(&mut self, position: usize) {
        let key = self.heap[position];
        self.slots[key as usize].position = NOT_QUEUED;
        let last = self.heap.pop().expect("a queued key is in the heap");
        if position < self.heap.len() {
            self.place(position, last);
            self.sift_up(position);
            self.sift_down(self.slots[last as usize].position as usize);
        }
    }

    fn sift_up(&mut self, mut position: usize) {
        let key = self.heap[position];
        while position > 0 {
            let parent = (position - 1) / 2;
            let above = self.heap[parent];
            if !self.before(key, above) {
                break;
            }
            self.place(position, above);
            position = parent;
        }
        self.place(position, key);
    }

    fn sift_down(&mut self, mut position: usize) {
        let key = self.heap[position];
        loop {
            let left = 2 * position + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.before(self.heap[right], self.heap[left])
            {
                right
            } else {
                left
            };
            let below = self.heap[child];
            if !self.before(below, key) {
                break;
            }
            self.place(position, below);
            position = child;
        }
        self.place(position, key);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap() + TimeDelta::minutes(minutes)
    }

    #[test]
    fn pops_due_keys_earliest_first_and_leaves_the_rest() {
        let mut q = DueQueue::new();
        q.schedule(2, t(30));
        q.schedule(0, t(10));
        q.schedule(1, t(20));
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_due(), Some(t(10)));
        assert_eq!(q.pop_due(t(5)), Vec::<u32>::new());
        assert_eq!(q.pop_due(t(20)), vec![0, 1]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_due(), Some(t(30)));
        assert_eq!(q.pop_due(t(100)), vec![2]);
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn rescheduling_replaces_the_earlier_entry() {
        let mut q = DueQueue::with_keys(3);
        q.schedule(0, t(10));
        q.schedule(1, t(15));
        q.schedule(0, t(20));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_due(), Some(t(15)));
        assert_eq!(q.due_of(0), Some(t(20)));
        // The old 10-minute entry for 0 is gone, and 0 pops only once.
        assert_eq!(q.pop_due(t(12)), Vec::<u32>::new());
        assert_eq!(q.pop_due(t(60)), vec![1, 0]);
        // Moving earlier works too.
        q.schedule(2, t(50));
        q.schedule(2, t(40));
        assert_eq!(q.next_due(), Some(t(40)));
        assert_eq!(q.pop_due(t(45)), vec![2]);
        assert_eq!(q.pop_due(t(100)), Vec::<u32>::new());
    }

    #[test]
    fn cancel_removes_a_key() {
        let mut q = DueQueue::new();
        q.schedule(1, t(10));
        q.schedule(2, t(20));
        assert!(q.cancel(1));
        assert!(!q.cancel(1));
        assert!(!q.cancel(3));
        assert!(!q.cancel(1_000));
        assert_eq!(q.len(), 1);
        assert_eq!(q.due_of(1), None);
        assert_eq!(q.next_due(), Some(t(20)));
        assert_eq!(q.pop_due(t(100)), vec![2]);
        // A cancelled key can come back.
        q.schedule(1, t(5));
        assert_eq!(q.pop_due(t(5)), vec![1]);
    }

    #[test]
    fn due_times_are_whole_seconds_and_never_early() {
        let mut q = DueQueue::new();
        let soon = t(30) + TimeDelta::milliseconds(1);
        q.schedule(3, soon);
        assert_eq!(q.due_of(3), Some(t(30) + TimeDelta::seconds(1)));
        assert_eq!(q.next_due(), Some(t(30) + TimeDelta::seconds(1)));
        assert_eq!(q.pop_due(soon), Vec::<u32>::new());
        assert_eq!(
            q.pop_due(t(30) + TimeDelta::milliseconds(999)),
            Vec::<u32>::new()
        );
        assert_eq!(q.pop_due(t(30) + TimeDelta::seconds(1)), vec![3]);
    }

    #[test]
    fn equal_due_times_pop_in_key_order() {
        let mut q = DueQueue::new();
        for k in [2, 0, 1] {
            q.schedule(k, t(0));
        }
        assert_eq!(q.pop_due(t(0)), vec![0, 1, 2]);
    }

    /// Against a plain sorted list: many reschedules, cancels and pops in a mixed order.
    #[test]
    fn agrees_with_a_sorted_list_under_churn() {
        let mut q = DueQueue::with_keys(1_000);
        let mut model: Vec<Option<i64>> = vec![None; 1_000];
        // A fixed pseudo-random sequence (xorshift), so failures reproduce.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let key = (next() % 1_000) as u32;
            match next() % 4 {
                0 | 1 => {
                    let minutes = (next() % 500) as i64;
                    q.schedule(key, t(minutes));
                    model[key as usize] = Some(minutes);
                }
                2 => assert_eq!(q.cancel(key), model[key as usize].take().is_some()),
                _ => {
                    let now = (round / 40) as i64;
                    let mut expected: Vec<(i64, u32)> = model
                        .iter()
                        .enumerate()
                        .filter_map(|(k, m)| m.filter(|&m| m <= now).map(|m| (m, k as u32)))
                        .collect();
                    expected.sort();
                    for &(_, k) in &expected {
                        model[k as usize] = None;
                    }
                    let expected: Vec<u32> = expected.into_iter().map(|(_, k)| k).collect();
                    assert_eq!(q.pop_due(t(now)), expected, "round {round}");
                }
            }
            assert_eq!(q.len(), model.iter().flatten().count());
            assert_eq!(q.next_due(), model.iter().flatten().min().map(|&m| t(m)));
        }
    }

    #[test]
    fn holding_100_000_keys_costs_12_bytes_each() {
        let mut q = DueQueue::with_keys(100_000);
        for k in 0..100_000u32 {
            q.schedule(k, t(i64::from(k % 1000)));
        }
        // Rescheduling every key ten times leaves nothing behind.
        for round in 1..=10 {
            for k in 0..100_000u32 {
                q.schedule(k, t(i64::from(k % 1000) + round));
            }
        }
        assert_eq!(q.len(), 100_000);
        assert_eq!(q.heap.capacity(), 100_000);
        assert_eq!(q.slots.len(), 100_000);
        assert_eq!(std::mem::size_of::<Slot>() + std::mem::size_of::<u32>(), 12);
        let popped = q.pop_due(t(2_000));
        assert_eq!(popped.len(), 100_000);
        assert!(
            popped
                .windows(2)
                .all(|w| q.slots[w[0] as usize].due <= q.slots[w[1] as usize].due)
        );
        assert!(q.is_empty());
    }
}
