//! The MF sampled-softmax step written out by hand for the CPU.
//!
//! The gradient of the in-batch softmax over dot products is short enough to write down:
//! with `z = U·Iᵀ/τ − log q`, `p = softmax(z)` per event and weights `w`, the loss is
//! `Σₑ wₑ (logsumexp(zₑ) − zₑ,pos) / W` and `∂L/∂(U·Iᵀ) = G = wₑ (p − onehot) / (τ W)`, so
//! `∂L/∂U_batch = G·I` and `∂L/∂I = Gᵀ·U_batch`. That is three matrix products and one
//! pass of softmax, instead of burn's autodiff graph with its intermediate tensors.
//! The products go to the BLAS FAISS already links (OpenBLAS here, threaded): at these
//! shapes (1024 × 1000 × 64) it was 3–5× faster than burn-flex's `gemm` kernel (0.8–1.2
//! ms against 2.8–5.2 ms per product, `step_time` below). The softmax pass runs its rows on the
//! rayon pool with a vectorised `exp` (AVX2 and FMA when the CPU has them). The burn
//! path stays for other devices and is this module's test oracle.
#![allow(unsafe_code)] // BLAS is a C (Fortran) entry point over raw pointers.

use rayon::prelude::*;

use crate::loss::Targets;

/// Loss and gradients of one step; the gradients are empty when the loss is not finite.
pub(crate) struct Step {
    pub loss: f32,
    /// One row per unique user (`users` order).
    pub user_grads: Vec<f32>,
    /// One row per candidate item.
    pub item_grads: Vec<f32>,
}

// The BLAS FAISS links (`-lblas`; OpenBLAS on Debian with libopenblas-dev). The
// Fortran entry point is the one every BLAS has.
#[link(name = "blas")]
unsafe extern "C" {
    fn sgemm_(
        transa: *const u8,
        transb: *const u8,
        m: *const i32,
        n: *const i32,
        k: *const i32,
        alpha: *const f32,
        a: *const f32,
        lda: *const i32,
        b: *const f32,
        ldb: *const i32,
        beta: *const f32,
        c: *mut f32,
        ldc: *const i32,
    );
}

/// The layout of a `rows × cols` operand from its (row, column) strides: `(transposed,
/// leading dimension)` as column-major BLAS sees the buffer. A single row or column has
/// both strides 1, and then the layout is the one whose leading dimension BLAS accepts
/// (at least the length of a stored row): with the first reading, a one-row Gᵀ of a
/// batch with one distinct item had a leading dimension of 1, which BLAS refuses with a
/// message and no result.
fn layout((rs, cs): (usize, usize), rows: usize, cols: usize) -> (bool, usize) {
    if cs == 1 && (rows == 1 || rs >= cols) {
        (false, rs.max(cols).max(1))
    } else {
        assert_eq!(rs, 1, "an operand must have unit row or column stride");
        (true, cs.max(rows).max(1))
    }
}

/// `dst (m×n, row-major) = scale · lhs · rhs`, with strides given as (row, column)
/// per operand (one of them 1). Row-major `C = A·B` is column-major `Cᵀ = Bᵀ·Aᵀ`, which
/// is what BLAS is asked for.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    scale: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (lhs_t, lda) = layout(lhs_strides, m, k);
    let (rhs_t, ldb) = layout(rhs_strides, k, n);
    // Every element BLAS touches lies inside the slices.
    assert!(dst.len() >= m * n);
    if k > 0 {
        let last = |t: bool, ld: usize, rows: usize, cols: usize| {
            if t {
                (cols - 1) * ld + rows - 1
            } else {
                (rows - 1) * ld + cols - 1
            }
        };
        assert!(lhs.len() > last(lhs_t, lda, m, k));
        assert!(rhs.len() > last(rhs_t, ldb, k, n));
    }
    let int = |x: usize| i32::try_from(x).expect("matrix dimension fits in i32");
    let (m, n, k, lda, ldb) = (int(m), int(n), int(k), int(lda), int(ldb));
    let beta = 0.0f32;
    let (ta, tb) = (
        if rhs_t { b'T' } else { b'N' },
        if lhs_t { b'T' } else { b'N' },
    );
    // SAFETY: the asserts above bound every read and write; `dst` is a unique borrow
    // and the inputs are shared borrows, so nothing aliases a write.
    unsafe {
        sgemm_(
            &ta,
            &tb,
            &n,
            &m,
            &k,
            &scale,
            rhs.as_ptr(),
            &ldb,
            lhs.as_ptr(),
            &lda,
            &beta,
            dst.as_mut_ptr(),
            &n,
        );
    }
}

/// `exp(x)` for `x ≤ 0`, relative error below 2·10⁻⁷·(1 + |x|): `2^(x·log₂e)` split into
/// an integer power (the exponent bits) and a degree-6 polynomial for the fraction in
/// [−½, ½]. Results below 2⁻¹²⁵ are clamped up to it (a softmax never notices).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // 1.5·2²³: adding it leaves an integer in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let t = x.max(-125.0 * std::f32::consts::LN_2) * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = t - n;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355 + f * 0.000_154_035_3)))));
    // 2ⁿ from its exponent bits: n + 127 sits in the low bits of (n + 127 + SHIFTER),
    // and the shift drops everything above them. No float-to-int conversion, so the
    // loop vectorises (a saturating `as` cast would not).
    p * f32::from_bits((n + 127.0 + SHIFTER).to_bits() << 23)
}

/// One event's row: logits in, `G` out; returns the event's loss `logsumexp − z_pos`.
#[inline(always)]
fn softmax_row(row: &mut [f32], log_q: &[f32], pos: usize, scale: f32) -> f32 {
    const L: usize = 8;
    for (z, q) in row.iter_mut().zip(log_q) {
        *z -= q;
    }
    let z_pos = row[pos];
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for l in lanes {
        max = if l > max { l } else { max };
    }
    let mut sums = [0.0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            c[l] = exp_nonpositive(c[l] - max);
            sums[l] += c[l];
        }
    }
    let mut sum = 0.0f32;
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x - max);
        sum += *x;
    }
    sum += sums.iter().sum::<f32>();
    let k = scale / sum;
    for x in row.iter_mut() {
        *x *= k;
    }
    row[pos] -= scale;
    max + sum.ln() - z_pos
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_row_avx2(row: &mut [f32], log_q: &[f32], pos: usize, scale: f32) -> f32 {
    softmax_row(row, log_q, pos, scale)
}

/// [`softmax_row`] with AVX2 and FMA when `wide`.
#[inline]
fn softmax_row_dispatch(wide: bool, row: &mut [f32], log_q: &[f32], pos: usize, scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` is only true when the CPU has the features the function was
        // compiled for.
        return unsafe { softmax_row_avx2(row, log_q, pos, scale) };
    }
    let _ = wide;
    softmax_row(row, log_q, pos, scale)
}

/// One sampled-softmax step: `users` are the unique user rows (`nu × d`), `user_pos`
/// each event's position among them, `items` the candidate rows (`n × d`).
///
/// Three BLAS products (BLAS threads them) around one softmax pass over the logits,
/// rows in parallel on the rayon pool.
pub(crate) fn softmax_step(
    users: &[f32],
    items: &[f32],
    user_pos: &[i64],
    d: usize,
    t: &Targets,
) -> Step {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch {
            batch_users,
            g,
            batch_grads,
        } = &mut *scratch;
        step_with(users, items, user_pos, d, t, batch_users, g, batch_grads)
    })
}

/// Buffers one step needs, kept per thread between steps: reallocating the logits
/// (`batch × candidates` floats, 4 MB at 1024 × 1000) every step fragments the heap
/// while the tables grow.
#[derive(Default)]
struct Scratch {
    batch_users: Vec<f32>,
    g: Vec<f32>,
    batch_grads: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Sets `v` to `len` zeros, keeping its allocation.
fn zeroed(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.clear();
    v.resize(len, 0.0);
    v
}

#[allow(clippy::too_many_arguments)]
fn step_with(
    users: &[f32],
    items: &[f32],
    user_pos: &[i64],
    d: usize,
    t: &Targets,
    batch_users: &mut Vec<f32>,
    g: &mut Vec<f32>,
    batch_grads: &mut Vec<f32>,
) -> Step {
    let b = user_pos.len();
    let n = items.len() / d;
    let batch_users = zeroed(batch_users, b * d);
    for (dst, &p) in batch_users.chunks_exact_mut(d).zip(user_pos) {
        let p = p as usize;
        dst.copy_from_slice(&users[p * d..(p + 1) * d]);
    }
    let total_weight: f32 = t.weights.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let inv_t = 1.0 / t.temperature;
    // Logits, then G in place.
    let g = zeroed(g, b * n);
    matmul(b, n, d, g, batch_users, (d, 1), items, (1, d), inv_t);
    #[cfg(target_arch = "x86_64")]
    let wide = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    let g_scale = inv_t / total_weight;
    // Rows in parallel, their losses summed in row order: a parallel sum would add in
    // whatever order the threads finish, and a restored model must reproduce the loss
    // bit for bit.
    let per_event: Vec<f32> = g
        .par_chunks_mut(n)
        .zip(t.positive.par_iter().zip(t.weights.par_iter()))
        .map(|(row, (&pos, &w))| {
            w * softmax_row_dispatch(wide, row, &t.log_q, pos as usize, w * g_scale)
        })
        .collect();
    let loss = per_event.iter().sum::<f32>() / total_weight;
    if !loss.is_finite() {
        return Step {
            loss,
            user_grads: Vec::new(),
            item_grads: Vec::new(),
        };
    }
    // ∂L/∂U_batch = G·I, summed into the unique users.
    let batch_grads = zeroed(batch_grads, b * d);
    matmul(b, d, n, batch_grads, g, (n, 1), items, (d, 1), 1.0);
    let mut user_grads = vec![0.0f32; users.len()];
    for (src, &p) in batch_grads.chunks_exact(d).zip(user_pos) {
        let p = p as usize;
        for (acc, x) in user_grads[p * d..(p + 1) * d].iter_mut().zip(src) {
            *acc += x;
        }
    }
    // ∂L/∂I = Gᵀ·U_batch.
    let mut item_grads = vec![0.0f32; n * d];
    matmul(
        n,
        d,
        b,
        &mut item_grads,
        g,
        (1, n),
        batch_users,
        (d, 1),
        1.0,
    );
    Step {
        loss,
        user_grads,
        item_grads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::LossKind;

    #[test]
    fn exp_matches_std_closely() {
        for k in 0..=100_000 {
            let x = -(k as f32) * 0.0008; // 0 down to −80
            let want = x.exp();
            let got = exp_nonpositive(x);
            // The rounding of x·log₂e grows the relative error with |x|.
            assert!(
                (got - want).abs() <= 2e-7 * (1.0 + x.abs()) * want,
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e4) >= 0.0 && exp_nonpositive(-1e4) < 1e-37);
    }

    #[test]
    fn matmul_strides_cover_plain_and_transposed_operands() {
        // a: 2×3, b: 3×2.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut c = [0.0; 4];
        matmul(2, 2, 3, &mut c, &a, (3, 1), &b, (2, 1), 1.0);
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
        // aᵀ·aᵀᵀ = aᵀ·a (3×3) from a's storage.
        let mut c = [0.0; 9];
        matmul(3, 3, 2, &mut c, &a, (1, 3), &a, (3, 1), 2.0);
        assert_eq!(c[0], 2.0 * (1.0 + 16.0));
        assert_eq!(c[5], 2.0 * (2.0 * 3.0 + 5.0 * 6.0));
    }

    #[test]
    fn matmul_takes_a_single_row_or_column_whatever_its_strides() {
        // Gᵀ·U of a batch of 3 events with one distinct item: Gᵀ is 1×3 with strides
        // (1, 1), U is 3×2.
        let g = [1.0, 2.0, 3.0];
        let u = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        let mut c = [0.0; 2];
        matmul(1, 2, 3, &mut c, &g, (1, 1), &u, (2, 1), 1.0);
        assert_eq!(c, [14.0, 140.0]);
        // G·I with one item: G is 3×1 with strides (1, 1), I is 1×2.
        let i = [5.0, 7.0];
        let mut c = [0.0; 6];
        matmul(3, 2, 1, &mut c, &g, (1, 1), &i, (2, 1), 1.0);
        assert_eq!(c, [5.0, 7.0, 10.0, 14.0, 15.0, 21.0]);
    }

    #[test]
    fn softmax_row_is_the_gradient_of_logsumexp() {
        let mut row = vec![0.3, -1.0, 2.0, 0.0, 1.5, -0.2, 0.7, 0.1, 0.9, -3.0];
        let q = vec![0.0; row.len()];
        let z = row.clone();
        let loss = softmax_row(&mut row, &q, 2, 1.0);
        let max = z.iter().copied().fold(f32::MIN, f32::max);
        let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        assert!((loss - (lse - z[2])).abs() < 1e-6);
        assert!(
            row.iter().sum::<f32>().abs() < 1e-6,
            "softmax − onehot sums to 0"
        );
        assert!(row[2] < 0.0);
        let _ = LossKind::Softmax;
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::loss::LossKind;

    /// `cargo test -p recsys-engine --lib fused::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn step_time() {
        let (d, b, n) = (64, 1024, 1000);
        let users: Vec<f32> = (0..b * d)
            .map(|k| ((k * 7919) % 1000) as f32 * 1e-4)
            .collect();
        let items: Vec<f32> = (0..n * d)
            .map(|k| ((k * 104_729) % 1000) as f32 * 1e-4)
            .collect();
        let pos: Vec<i64> = (0..b as i64).collect();
        let t = Targets {
            positive: (0..b).map(|k| (k % n) as i64).collect(),
            negative: Vec::new(),
            weights: vec![1.0; b],
            log_q: vec![0.0; n],
            temperature: 1.0,
            kind: LossKind::Softmax,
        };
        for _ in 0..20 {
            softmax_step(&users, &items, &pos, d, &t);
        }
        let steps = 300;
        let start = std::time::Instant::now();
        for _ in 0..steps {
            std::hint::black_box(softmax_step(&users, &items, &pos, d, &t));
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
        eprintln!(
            "fused step b={b} n={n} d={d}: {ms:.2} ms ({:.0} events/s)",
            b as f64 / ms * 1e3
        );
        // The three products alone.
        let mut g = vec![0.0f32; b * n];
        let mut dub = vec![0.0f32; b * d];
        let mut di = vec![0.0f32; n * d];
        let time = |f: &mut dyn FnMut()| {
            for _ in 0..10 {
                f();
            }
            let s = std::time::Instant::now();
            for _ in 0..100 {
                f();
            }
            s.elapsed().as_secs_f64() * 10.0
        };
        let a = time(&mut || matmul(b, n, d, &mut g, &users, (d, 1), &items, (1, d), 1.0));
        let c = time(&mut || matmul(b, d, n, &mut dub, &g, (n, 1), &items, (d, 1), 1.0));
        let e = time(&mut || matmul(n, d, b, &mut di, &g, (1, n), &users, (d, 1), 1.0));
        eprintln!("U·Iᵀ {a:.2} ms, G·I {c:.2} ms, Gᵀ·U {e:.2} ms");
    }
}
