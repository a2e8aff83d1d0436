//! The FAISS C API called directly: concurrent searches through a shared reference, an
//! id-selector search, OpenMP's per-thread team size, and the CPU check of the AVX2 build.

use faiss::index::IndexImpl;

use crate::{IndexError, Result};

pub(crate) fn faiss_err(e: faiss::error::Error) -> IndexError {
    IndexError::Index(e.to_string())
}

// libgomp, which FAISS links (`-lgomp`): the OpenMP team size of the calling thread.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn omp_set_num_threads(n: std::ffi::c_int);
}

/// Makes FAISS searches from the calling thread run on that thread alone. A single
/// query has nothing to split, but each search still opens an OpenMP region whose idle
/// team then spins on the cores other requests need; threads that serve many concurrent
/// single queries (HTTP workers searching inline, or a serving search pool) call this
/// once.
#[allow(unsafe_code)]
pub fn single_threaded_searches() {
    // SAFETY: sets a per-thread OpenMP setting; no pointers, no shared state.
    unsafe { omp_set_num_threads(1) }
}

/// Whether this CPU runs the FAISS this binary links. FAISS is compiled with AVX2, FMA
/// and F16C on x86-64 (`.cargo/config.toml`); on a CPU without them the first search
/// would die on an illegal instruction, so commands that touch an index call this first.
pub fn check_cpu() -> Result<()> {
    #[cfg(faiss_avx2)]
    {
        let missing: Vec<&str> = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("popcnt", std::arch::is_x86_feature_detected!("popcnt")),
        ]
        .into_iter()
        .filter_map(|(name, present)| (!present).then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(IndexError::Index(format!(
                "this build's FAISS uses {} which this CPU lacks; rebuild FAISS without \
                 them: `cargo clean -p faiss-sys && CXXFLAGS_x86_64_unknown_linux_gnu= \
                 cargo build` (see .cargo/config.toml)",
                missing.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether the linked FAISS was compiled with AVX2 (as `.cargo/config.toml` asks).
pub const FAISS_AVX2: bool = cfg!(faiss_avx2);

/// Searches a FAISS index that may be shared between threads.
///
/// FAISS CPU indexes allow any number of concurrent searches as long as nothing writes
/// to them (search is `const` in C++); the `faiss` crate nevertheless exposes `search` on
/// `IndexImpl` through `&mut self`, which would force a lock around every query. Indexes
/// that serve queries are never written (writers change a staging clone and swap it in),
/// so the C API is called directly with a shared reference. Returns `n × k` labels, -1
/// where fewer than `k` results exist.
#[allow(unsafe_code)]
pub(super) fn search_shared(
    index: &IndexImpl,
    queries: &[f32],
    n: usize,
    k: usize,
) -> Result<Vec<i64>> {
    let mut distances = vec![0f32; n * k];
    let mut labels = vec![-1i64; n * k];
    // SAFETY: `index` is a live FAISS index owned by `IndexImpl` for the duration of the
    // call; `queries` holds `n × d` floats (checked by the caller), and both output buffers
    // hold `n × k` elements as `faiss_Index_search` requires. FAISS does not keep the
    // pointers after returning.
    let code = unsafe {
        faiss_sys::faiss_Index_search(
            index.inner_ptr(),
            n as faiss_sys::idx_t,
            queries.as_ptr(),
            k as faiss_sys::idx_t,
            distances.as_mut_ptr(),
            labels.as_mut_ptr(),
        )
    };
    if code != 0 {
        return Err(IndexError::Index(format!(
            "search failed: {}",
            last_faiss_error()
        )));
    }
    Ok(labels)
}

/// [`search_shared`] for one query, over only the ids whose bit is set in `keep` (bit
/// `id % 8` of byte `id / 8`); `nprobe` for IVF kinds, which search parameters would
/// otherwise reset to FAISS's default of 1.
#[allow(unsafe_code)]
pub(super) fn search_shared_keeping(
    index: &IndexImpl,
    query: &[f32],
    k: usize,
    keep: &[u8],
    nprobe: Option<usize>,
) -> Result<Vec<i64>> {
    use faiss_sys::{FaissIDSelector, FaissSearchParameters};
    /// Frees the FAISS objects of one search, in reverse order of creation.
    struct Owned(*mut FaissIDSelector, *mut FaissSearchParameters);
    impl Drop for Owned {
        fn drop(&mut self) {
            // SAFETY: each pointer is null or was returned by its `_new` below and is
            // freed once, here; the parameters only borrow the selector, so they go first.
            unsafe {
                if !self.1.is_null() {
                    faiss_sys::faiss_SearchParameters_free(self.1);
                }
                if !self.0.is_null() {
                    faiss_sys::faiss_IDSelector_free(self.0);
                }
            }
        }
    }
    let mut owned = Owned(std::ptr::null_mut(), std::ptr::null_mut());
    let mut distances = vec![0f32; k];
    let mut labels = vec![-1i64; k];
    // SAFETY: `IDSelectorBitmap` keeps a pointer to `keep` (it does not copy it), which
    // outlives the search; every object is freed by `owned` after the search returns.
    // `index` is live for the call, `query` holds one vector of the index's dimension
    // (checked by the caller) and both output buffers hold `k` elements. The only
    // combinators of FAISS's C API (`IDSelectorNot` & co.) lack a `return` on success
    // in this version, so the selector is the bitmap alone.
    let code = unsafe {
        let mut bitmap: *mut faiss_sys::FaissIDSelectorBitmap = std::ptr::null_mut();
        let mut code =
            faiss_sys::faiss_IDSelectorBitmap_new(&mut bitmap, keep.len(), keep.as_ptr());
        owned.0 = bitmap.cast();
        if code == 0 {
            code = match nprobe {
                Some(nprobe) => {
                    faiss_sys::faiss_SearchParametersIVF_new_with(&mut owned.1, owned.0, nprobe, 0)
                }
                None => faiss_sys::faiss_SearchParameters_new(&mut owned.1, owned.0),
            };
        }
        if code == 0 {
            code = faiss_sys::faiss_Index_search_with_params(
                index.inner_ptr(),
                1,
                query.as_ptr(),
                k as faiss_sys::idx_t,
                owned.1,
                distances.as_mut_ptr(),
                labels.as_mut_ptr(),
            );
        }
        code
    };
    if code != 0 {
        return Err(IndexError::Index(format!(
            "search excluding ids failed: {}",
            last_faiss_error()
        )));
    }
    Ok(labels)
}

/// FAISS's message for the last failed call on this thread.
#[allow(unsafe_code)]
pub(super) fn last_faiss_error() -> String {
    // SAFETY: FAISS returns a NUL-terminated message owned by its thread-local error
    // state, valid until the next FAISS call on this thread.
    unsafe {
        let p = faiss_sys::faiss_get_last_error();
        if p.is_null() {
            "unknown error".to_owned()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}
