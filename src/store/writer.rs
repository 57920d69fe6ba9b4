//! The background writer for exchanges kept by shadowing.
//!
//! Comparisons finish in mirror tasks, many at once; each kept exchange is
//! handed to one writer task through a bounded queue with `try_send`, so a
//! slow or stuck database can never pile up work (or memory) in the mirror
//! tasks: when the queue is full the exchange is dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::{SampleRow, Store};

/// Exchanges waiting to be written; beyond this they are dropped.
const QUEUE: usize = 1024;
/// Exchanges taken from the queue at once.
const BATCH: usize = 64;

/// A handle to the store plus its background sample writer.
pub struct StoreHandle {
    store: Arc<dyn Store>,
    samples: mpsc::Sender<(SampleRow, u32)>,
    dropped: Counter,
    dropped_total: AtomicU64,
}

impl StoreHandle {
    /// Starts the writer task; it ends when the handle is dropped.
    /// `dropped` counts exchanges the queue had no room for.
    pub fn start(store: Arc<dyn Store>, dropped: Counter) -> Arc<StoreHandle> {
        let (tx, mut rx) = mpsc::channel::<(SampleRow, u32)>(QUEUE);
        let writer = store.clone();
        tokio::spawn(async move {
            // Take whatever has queued up at once: one wake-up per batch.
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                for (sample, max) in batch.drain(..) {
                    if let Err(error) = writer.insert_sample(&sample, max).await {
                        tracing::warn!(%error, route = %sample.route, "could not keep a shadow exchange");
                    }
                }
            }
        });
        Arc::new(StoreHandle {
            store,
            samples: tx,
            dropped,
            dropped_total: AtomicU64::new(0),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Queues an exchange to keep (at most `max_per_endpoint` per endpoint
    /// and kind, newest win); drops it when the queue is full.
    pub fn keep_sample(&self, sample: SampleRow, max_per_endpoint: u32) {
        if self.samples.try_send((sample, max_per_endpoint)).is_err() {
            self.dropped.inc();
            let dropped = self.dropped_total.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the store is behind: shadow exchanges are being dropped"
                );
            }
        }
    }

    /// Exchanges dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }
}
