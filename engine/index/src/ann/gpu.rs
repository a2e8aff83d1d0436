//! The `gpu` feature: searches go to a FAISS GPU copy of the index; adds, removals,
//! snapshots and the exact re-ranking stay on the CPU copy, which remains the master.
//!
//! FAISS's GPU resources object is not thread-safe and GPU indexes do not take
//! concurrent searches, so one thread owns the resources and every GPU index, and search
//! requests reach it through a channel. It keeps a GPU copy of the most recently searched
//! index version (`uid`) and copies the next version over when the catalog swaps. An
//! index kind FAISS cannot move to the GPU (the 4-bit fast-scan PQ of the size-based
//! default is one: use a factory such as `IVF4096,PQ32` on GPU machines) or a machine
//! without a GPU falls back to CPU search, logged once per index version.
//!
//! This path needs nvcc and the CUDA toolkit to build and cannot be built on the CPU-only
//! development machines. Its Rust side is linted on every test run against the `faiss`
//! 0.13 GPU API with FAISS linked dynamically (`deploy/dev test` runs `cargo clippy -p
//! recsys-index --no-default-features --features gpu`: `check` links nothing, so no
//! libfaiss is needed).

use std::sync::mpsc::{Sender, channel, sync_channel};
use std::sync::{Mutex, OnceLock};

use faiss::Index;
use faiss::gpu::StandardGpuResources;

use super::ffi::faiss_err;
use super::item_index::ItemIndex;
use crate::Result;

/// A borrowed index handed to the GPU thread. The requester blocks until the reply
/// arrives, and the GPU thread never touches the index after replying.
pub(super) struct IndexRef(*const ItemIndex);

// SAFETY: `ItemIndex` is `Sync` (FAISS CPU indexes may be read from any thread), and
// the pointer is only dereferenced while the requester waits for the reply, so the
// index outlives every use.
#[allow(unsafe_code)]
unsafe impl Send for IndexRef {}

pub(super) struct Request {
    index: IndexRef,
    queries: Vec<f32>,
    k: usize,
    reply: std::sync::mpsc::SyncSender<Option<Result<Vec<i64>>>>,
}

/// The GPU thread's request queue; `None` when no GPU could be initialised.
pub(super) fn queue() -> Option<&'static Mutex<Sender<Request>>> {
    static QUEUE: OnceLock<Option<Mutex<Sender<Request>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = channel::<Request>();
            let (ready_tx, ready_rx) = sync_channel::<bool>(1);
            std::thread::Builder::new()
                .name("faiss-gpu".into())
                .spawn(move || {
                    let res = match StandardGpuResources::new() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(error = %e, "no FAISS GPU; searching on the CPU");
                            let _ = ready_tx.send(false);
                            return;
                        }
                    };
                    let _ = ready_tx.send(true);
                    // (uid, GPU copy or None when that version cannot go to the GPU)
                    let mut cached = None;
                    for req in rx {
                        // SAFETY: see `IndexRef`; the reply is sent after the last use.
                        #[allow(unsafe_code)]
                        let index = unsafe { &*req.index.0 };
                        let uid = index.uid;
                        if cached.as_ref().is_none_or(|(u, _)| *u != uid) {
                            let copy = match index.inner.to_gpu(&res, 0) {
                                Ok(g) => Some(g),
                                Err(e) => {
                                    tracing::warn!(
                                        factory = %index.factory,
                                        error = %e,
                                        "index kind not supported on the GPU; CPU search"
                                    );
                                    None
                                }
                            };
                            cached = Some((uid, copy));
                        }
                        let answer = cached.as_mut().and_then(|(_, g)| g.as_mut()).map(|g| {
                            g.search(&req.queries, req.k).map_err(faiss_err).map(|r| {
                                r.labels
                                    .iter()
                                    .map(|l| l.get().map_or(-1, |v| v as i64))
                                    .collect()
                            })
                        });
                        let _ = req.reply.send(answer);
                    }
                })
                .ok()?;
            ready_rx
                .recv()
                .ok()
                .filter(|ok| *ok)
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// Labels of the `n × k` nearest candidates from the GPU copy, or `None` to search
/// on the CPU instead.
pub(super) fn search(
    index: &ItemIndex,
    queries: &[f32],
    _n: usize,
    k: usize,
) -> Option<Result<Vec<i64>>> {
    let tx = queue()?;
    let (reply, answer) = sync_channel(1);
    let request = Request {
        index: IndexRef(index),
        queries: queries.to_vec(),
        k,
        reply,
    };
    tx.lock().ok()?.send(request).ok()?;
    answer.recv().ok().flatten()
}
