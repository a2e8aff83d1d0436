//! Where index searches run. By default on the HTTP worker that took the request, with
//! no hand-off: an IVF-PQ search with re-ranking is about 0.1 ms of CPU, and a separate
//! pool adds two thread hops per request (wake a searcher, wake the worker again). With
//! searches inline and one Redis connection per worker, `bench serve` at 5,000 req/s on
//! 2 cores makes 15k context switches/s, against 27k with a search pool and a shared
//! Redis connection; latency with a two-thread pool measured the same as inline within
//! the machine's noise (p50 0.88–1.02 ms both).
//!
//! With `search_threads = N` searches run on a dedicated pool of N threads of their own,
//! never on the actix workers and never queued behind other blocking work (Redis
//! fallbacks, snapshot loading, index rebuilds use tokio's blocking pool): worth it when
//! one search is long (large IVF-flat catalogs) and cheap requests should not wait
//! behind it. Its queue is bounded: when it is full a request fails fast with 503
//! instead of waiting.
//!
//! Micro-batching concurrent queries into one FAISS call was measured and not kept:
//! `recsys bench index` on a 2-core machine shows one batched call beating two threads of
//! single queries only for IVF-flat at 1M items (+17%) and losing elsewhere (IVF-flat at
//! 100k −30%, IVF-PQ + re-rank at 1M −14%): FAISS parallelises a batch over the same two
//! cores the threads would use.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use recsys_index::ItemIndex;
use tokio::sync::oneshot;

use crate::{Result, ServingError};

struct Job {
    index: Arc<ItemIndex>,
    query: Vec<f32>,
    k: usize,
    exclude: Vec<u64>,
    reply: oneshot::Sender<Result<Vec<(u64, f32)>>>,
}

pub struct SearchPool {
    /// `None`: inline, on the calling thread.
    tx: Option<SyncSender<Job>>,
    threads: usize,
}

impl std::fmt::Debug for SearchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl SearchPool {
    /// `threads` searchers behind a queue of `queue` waiting searches; 0 threads: every
    /// search runs inline on the thread that asks for it.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        if threads == 0 {
            return Ok(Self { tx: None, threads });
        }
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("search-{n}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Self {
            tx: Some(tx),
            threads,
        })
    }

    /// Top-`k` of `query` in `index` but for the rows in `exclude`, searched inline or
    /// on the pool.
    pub async fn search(
        &self,
        index: &Arc<ItemIndex>,
        query: &[f32],
        k: usize,
        exclude: &[u64],
    ) -> Result<Vec<(u64, f32)>> {
        let Some(tx) = &self.tx else {
            INLINE_SINGLE_THREADED.with(|set| {
                if !set.replace(true) {
                    recsys_index::single_threaded_searches();
                }
            });
            return index
                .search_excluding(query, k, exclude)
                .map_err(|e| ServingError::Internal(e.to_string()));
        };
        let (reply, answer) = oneshot::channel();
        match tx.try_send(Job {
            index: index.clone(),
            query: query.to_vec(),
            k,
            exclude: exclude.to_vec(),
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ServingError::Unavailable(
                    "search queue is full; retry shortly".into(),
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServingError::Internal("search pool stopped".into()));
            }
        }
        answer
            .await
            .map_err(|_| ServingError::Internal("search thread failed".into()))?
    }
}

thread_local! {
    /// Whether this thread's OpenMP team is already down to one (inline searches).
    static INLINE_SINGLE_THREADED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Takes jobs until every sender is gone (the pool was dropped).
fn worker(rx: &Mutex<Receiver<Job>>) {
    // Parallelism comes from the pool's threads, one query each.
    recsys_index::single_threaded_searches();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else {
            return;
        };
        let result = job
            .index
            .search_excluding(&job.query, job.k, &job.exclude)
            .map_err(|e| ServingError::Internal(e.to_string()));
        // The requester may have gone away (client disconnected): nothing to do.
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recsys_index::IndexConfig;

    fn index() -> Arc<ItemIndex> {
        let vectors: Vec<f32> = (0..100).flat_map(|i| [i as f32, 1.0]).collect();
        let ids: Vec<u64> = (0..100).collect();
        Arc::new(ItemIndex::build(2, &IndexConfig::default(), &ids, &vectors).unwrap())
    }

    #[tokio::test]
    async fn searches_on_the_pool_and_inline() {
        for threads in [2, 0] {
            let pool = SearchPool::new(threads, 16).unwrap();
            assert_eq!(pool.tx.is_some(), threads > 0);
            let hits = pool.search(&index(), &[1.0, 0.0], 3, &[]).await.unwrap();
            assert_eq!(
                hits.iter().map(|h| h.0).collect::<Vec<_>>(),
                vec![99, 98, 97]
            );
            let hits = pool.search(&index(), &[1.0, 0.0], 3, &[98]).await.unwrap();
            assert_eq!(
                hits.iter().map(|h| h.0).collect::<Vec<_>>(),
                vec![99, 97, 96]
            );
            let err = pool.search(&index(), &[1.0], 3, &[]).await.unwrap_err();
            assert!(err.to_string().contains("dimension"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_full_queue_fails_fast() {
        // No searcher and a queue of one: the first job waits, the second is refused.
        let (tx, rx) = sync_channel::<Job>(1);
        let pool = SearchPool {
            tx: Some(tx),
            threads: 1,
        };
        let (a, b) = (index(), index());
        let first = pool.search(&a, &[1.0, 0.0], 1, &[]);
        let second = pool.search(&b, &[1.0, 0.0], 1, &[]);
        let (first, second) = tokio::join!(
            async { tokio::time::timeout(std::time::Duration::from_millis(50), first).await },
            second
        );
        assert!(
            first.is_err(),
            "nobody serves the queue, so the first waits"
        );
        assert!(matches!(second, Err(ServingError::Unavailable(_))));
        drop(rx);
    }
}
