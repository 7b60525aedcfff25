//! The scheduler's single timer queue: which key is due next.
//!
//! A binary min-heap of (due time, key) with lazy deletion: rescheduling or
//! cancelling a key only bumps its generation in a map, and heap entries with
//! an old generation are skipped when they surface. Stale entries are
//! compacted away once they outnumber live ones, so memory stays near one
//! heap entry per key.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Utc};

/// Below this many heap entries, compaction is not worth a rebuild.
const COMPACT_FLOOR: usize = 64;

/// A timer queue of keys, each due at most once.
#[derive(Debug, Clone)]
pub struct DueQueue<K: Clone + Eq + Hash> {
    heap: BinaryHeap<Entry<K>>,
    /// The generation and due time of each key's live heap entry.
    live: HashMap<K, (u64, DateTime<Utc>)>,
    next_generation: u64,
}

#[derive(Debug, Clone)]
struct Entry<K> {
    due: DateTime<Utc>,
    generation: u64,
    key: K,
}

// Ordered by due time, then by generation so equal times pop in the order
// they were scheduled; reversed because `BinaryHeap` is a max-heap.
impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.generation).cmp(&(self.due, self.generation))
    }
}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation
    }
}

impl<K> Eq for Entry<K> {}

impl<K: Clone + Eq + Hash> Default for DueQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash> DueQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        DueQueue {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_generation: 0,
        }
    }

    /// Makes `key` due at `due`, replacing any earlier time for it.
    pub fn schedule(&mut self, key: K, due: DateTime<Utc>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(key.clone(), (generation, due));
        self.heap.push(Entry {
            due,
            generation,
            key,
        });
        self.tidy();
    }

    /// Removes `key`; returns whether it was queued.
    pub fn cancel(&mut self, key: &K) -> bool {
        let removed = self.live.remove(key).is_some();
        if removed {
            self.tidy();
        }
        removed
    }

    /// When `key` is due, if it is queued.
    pub fn due_of(&self, key: &K) -> Option<DateTime<Utc>> {
        self.live.get(key).map(|&(_, due)| due)
    }

    /// The earliest due time in the queue.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        // `tidy` keeps a live entry on top.
        self.heap.peek().map(|e| e.due)
    }

    /// Removes and returns every key due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<K> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|e| e.due <= now) {
            let Some(entry) = self.heap.pop() else { break };
            if self.is_live(&entry) {
                self.live.remove(&entry.key);
                due.push(entry.key);
            }
        }
        self.tidy();
        due
    }

    /// How many keys are queued.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no key is queued.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn is_live(&self, entry: &Entry<K>) -> bool {
        is_live(&self.live, entry)
    }

    /// Drops stale entries from the top, and rebuilds the heap when stale
    /// entries outnumber live ones.
    fn tidy(&mut self) {
        if self.heap.len() > COMPACT_FLOOR && self.heap.len() > 2 * self.live.len() {
            let live = &self.live;
            self.heap.retain(|e| is_live(live, e));
            self.heap.shrink_to(2 * self.live.len().max(COMPACT_FLOOR));
        }
        while self.heap.peek().is_some_and(|e| !self.is_live(e)) {
            self.heap.pop();
        }
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

fn is_live<K: Eq + Hash>(live: &HashMap<K, (u64, DateTime<Utc>)>, entry: &Entry<K>) -> bool {
    live.get(&entry.key)
        .is_some_and(|&(generation, _)| generation == entry.generation)
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
        q.schedule("c", t(30));
        q.schedule("a", t(10));
        q.schedule("b", t(20));
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_due(), Some(t(10)));
        assert_eq!(q.pop_due(t(5)), Vec::<&str>::new());
        assert_eq!(q.pop_due(t(20)), vec!["a", "b"]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_due(), Some(t(30)));
        assert_eq!(q.pop_due(t(100)), vec!["c"]);
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn rescheduling_replaces_the_earlier_entry() {
        let mut q = DueQueue::new();
        q.schedule("a", t(10));
        q.schedule("b", t(15));
        q.schedule("a", t(20));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_due(), Some(t(15)));
        assert_eq!(q.due_of(&"a"), Some(t(20)));
        // The old 10-minute entry for "a" is gone, and "a" pops only once.
        assert_eq!(q.pop_due(t(12)), Vec::<&str>::new());
        assert_eq!(q.pop_due(t(60)), vec!["b", "a"]);
        // Moving earlier works too.
        q.schedule("x", t(50));
        q.schedule("x", t(40));
        assert_eq!(q.next_due(), Some(t(40)));
        assert_eq!(q.pop_due(t(45)), vec!["x"]);
        assert_eq!(q.pop_due(t(100)), Vec::<&str>::new());
    }

    #[test]
    fn cancel_removes_a_key() {
        let mut q = DueQueue::new();
        q.schedule(1, t(10));
        q.schedule(2, t(20));
        assert!(q.cancel(&1));
        assert!(!q.cancel(&1));
        assert!(!q.cancel(&3));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_due(), Some(t(20)));
        assert_eq!(q.pop_due(t(100)), vec![2]);
        // A cancelled key can come back.
        q.schedule(1, t(5));
        assert_eq!(q.pop_due(t(5)), vec![1]);
    }

    #[test]
    fn equal_due_times_pop_in_scheduling_order() {
        let mut q = DueQueue::new();
        for k in ["c", "a", "b"] {
            q.schedule(k, t(0));
        }
        assert_eq!(q.pop_due(t(0)), vec!["c", "a", "b"]);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut q = DueQueue::new();
        for k in 0..100_000u32 {
            q.schedule(k, t(i64::from(k % 1000)));
        }
        // Reschedule every key ten times: the heap must not grow tenfold.
        for round in 1..=10 {
            for k in 0..100_000u32 {
                q.schedule(k, t(i64::from(k % 1000) + round));
            }
        }
        assert_eq!(q.len(), 100_000);
        assert!(q.heap_len() <= 200_000, "heap holds {}", q.heap_len());
        // Cancel most keys: the heap shrinks along with them.
        for k in 1_000..100_000u32 {
            q.cancel(&k);
        }
        assert!(
            q.heap_len() <= 2 * 1_000 + COMPACT_FLOOR,
            "heap holds {}",
            q.heap_len()
        );
        let popped = q.pop_due(t(2_000));
        assert_eq!(popped.len(), 1_000);
        assert!(q.is_empty());
    }
}
