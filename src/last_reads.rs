//! The last answer of each admin read of a fleet's store, so that reads
//! answer from the last known state while the store is lost (SPEC §9)
//! instead of failing.
//!
//! Kept by key (the read and its filter, not its limit: an answer is cut
//! to the limit asked). Bounded: an answer larger than a quarter of
//! [`BUDGET`] is not kept, and the oldest answers go first beyond it. The
//! size is that of the answer's JSON, the form it is served in.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// The most bytes of remembered answers, all reads together.
pub const BUDGET: usize = 32 << 20;

#[derive(Default)]
pub struct LastReads {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// Increases with every remembered answer: the smallest is the oldest.
    next_seq: u64,
}

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    bytes: usize,
    seq: u64,
}

impl LastReads {
    /// Keeps `value` as the last answer of `key`, replacing the one before.
    pub fn remember<T>(&self, key: &str, value: &T)
    where
        T: Clone + Serialize + Send + Sync + 'static,
    {
        let bytes = serde_json::to_vec(value).map_or(usize::MAX, |json| json.len());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.entries.remove(key) {
            inner.bytes -= old.bytes;
        }
        if bytes > BUDGET / 4 {
            return;
        }
        while inner.bytes + bytes > BUDGET {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.seq)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.bytes;
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += bytes;
        inner.entries.insert(
            key.to_string(),
            Entry {
                value: Arc::new(value.clone()),
                bytes,
                seq,
            },
        );
    }

    /// The last answer of `key`, if one was kept.
    pub fn recall<T>(&self, key: &str) -> Option<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entries.get(key)?.value.downcast_ref::<T>().cloned()
    }

    /// Bytes kept now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_answer_of_a_key_is_recalled() {
        let reads = LastReads::default();
        assert_eq!(reads.recall::<Vec<u32>>("a"), None);
        reads.remember("a", &vec![1u32, 2]);
        reads.remember("a", &vec![3u32]);
        assert_eq!(reads.recall::<Vec<u32>>("a"), Some(vec![3]));
        // Another type under the same key is not confused with it.
        assert_eq!(reads.recall::<String>("a"), None);
        assert_eq!(reads.bytes(), "[3]".len());
    }

    #[test]
    fn the_budget_holds_and_the_oldest_answers_go_first() {
        let reads = LastReads::default();
        let big = "x".repeat(BUDGET / 5);
        for key in ["first", "second", "third", "fourth", "fifth"] {
            reads.remember(key, &big);
        }
        assert!(reads.bytes() <= BUDGET, "{}", reads.bytes());
        assert_eq!(reads.recall::<String>("first"), None);
        assert_eq!(reads.recall::<String>("fifth"), Some(big));
        // Too large for the budget: not kept, and the key's older answer
        // is forgotten rather than served as if it were the last.
        let huge = "y".repeat(BUDGET / 3);
        reads.remember("fifth", &huge);
        assert_eq!(reads.recall::<String>("fifth"), None);
    }
}
