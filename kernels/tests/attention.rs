//! Fused attention vs the f64 reference on every ISA level: random shapes (D, Nq, Nkv from the
//! issue's lists), GQA ratios, every mask and combination, strided `[B,N,H,D]` inputs, every
//! dtype, huge logits, NaN rows, fully masked rows, split-KV decode, 1 vs 2 threads
//! bit-identical, the vectorised `exp` over the whole f32 line, and extra memory independent of N.
//!
//! ## Tolerance
//! Against the f64 reference, the fast kernel's errors come from (1) the f32 score dot product
//! `δs ≲ √D·u·Σ_c|q_c·k_c|·scale` (plus `u·cap` with a softcap), which moves every probability by
//! a relative `δs` and hence an output element by at most `2·δs·max_j|v_jc|`; (2) the exp (≤ 3 ulp)
//! and the f32 sums over keys (`√Nkv·u`), relative to `Σ_j p_j|v_jc| ≤ max_j|v_jc|`; (3) one final
//! rounding to the output dtype. So each element gets the scale `max_j|v_jc|·(1 + 2·S)` with `S`
//! the row's largest `Σ_c|q_c k_jc|·scale` (+ cap), and `Tolerance::accumulation(max(D, Nkv))`
//! (`4√terms·u` + 8u, see its docs) with `rel = 2·u_out`. The LSE gets scale `1 + 2·S`.

use flashkern_kernels::attention::{AttentionParams, Causal, attention};
use flashkern_kernels::isa::Isa;
use flashkern_kernels::reference;
use flashkern_kernels::simd::exp::{EXP_MAX_REL_ERROR, EXP_OVERFLOW, EXP_UNDERFLOW, exp_in_place_with};
use flashkern_kernels::testing::{Buffer as Buf, Rng, Tolerance, assert_close, nan_vec, on_every_isa};
use flashkern_kernels::{DType, View, ViewMut};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

// ---------------------------------------------------------------------------------------------
// A counting allocator: counts only threads that opted in (the memory test's thread and pool), so
// the other tests running in parallel in this binary do not disturb it.

struct Counting;
static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged; only bookkeeping is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            let now = CURRENT.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            CURRENT.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Test problems.

#[derive(Clone, Debug)]
struct Case {
    b: usize,
    h_kv: usize,
    ratio: usize,
    n_q: usize,
    n_kv: usize,
    d: usize,
    d_v: usize,
    causal: Causal,
    key_lengths: bool,
    /// 0 none, 1 full [B,H,Nq,Nkv], 2 broadcast [1,1,Nq,Nkv] with some −∞.
    mask: u8,
    window: Option<usize>,
    softcap: Option<f32>,
    /// Inputs stored `[B,N,H,D]` and viewed through strides.
    bnhd: bool,
    dtypes: [DType; 4],
    /// Magnitude of q and k entries (large → huge logits).
    magnitude: f32,
    /// A query row to poison with NaN.
    nan_row: bool,
    seed: u64,
}

impl Case {
    fn h_q(&self) -> usize {
        self.h_kv * self.ratio
    }
}

/// Inputs of a case, plus the mask and key lengths.
struct Inputs {
    q: Buf,
    k: Buf,
    v: Buf,
    mask: Vec<f32>,
    lengths: Vec<usize>,
}

/// Shape and strides of a `[B,H,N,D]` view whose memory is `[B,H,N,D]` or `[B,N,H,D]`.
fn layout(bnhd: bool, [b, h, n, d]: [usize; 4]) -> (Vec<usize>, Vec<usize>, usize) {
    let _ = b;
    if bnhd {
        (vec![b, h, n, d], vec![n * h * d, d, h * d, 1], b * n * h * d)
    } else {
        (vec![b, h, n, d], vec![h * n * d, n * d, d, 1], b * h * n * d)
    }
}

fn inputs(c: &Case) -> Inputs {
    let mut rng = Rng::new(c.seed);
    let (.., nq_len) = layout(c.bnhd, [c.b, c.h_q(), c.n_q, c.d]);
    let (.., k_len) = layout(c.bnhd, [c.b, c.h_kv, c.n_kv, c.d]);
    let (.., v_len) = layout(c.bnhd, [c.b, c.h_kv, c.n_kv, c.d_v]);
    let mag = c.magnitude;
    let mut q = Buf::random(c.dtypes[0], nq_len, &mut rng, -mag, mag);
    let k = Buf::random(c.dtypes[1], k_len, &mut rng, -mag, mag);
    let v = Buf::random(c.dtypes[2], v_len, &mut rng, -1.0, 1.0);
    if c.nan_row && c.d > 0 {
        // Poison one element of query (b=0, h=last, i=n_q/2).
        let (shape, strides, _) = layout(c.bnhd, [c.b, c.h_q(), c.n_q, c.d]);
        let idx = [0, shape[1] - 1, c.n_q / 2, c.d / 2];
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        q.set(off, f32::NAN);
    }
    let mask_len = match c.mask {
        1 => c.b * c.h_q() * c.n_q * c.n_kv,
        2 => c.n_q * c.n_kv,
        _ => 0,
    };
    let mask = (0..mask_len)
        .map(|_| if c.mask == 2 && rng.below(5) == 0 { f32::NEG_INFINITY } else { rng.uniform(-2.0, 2.0) })
        .collect();
    let lengths = (0..c.b).map(|_| rng.below(c.n_kv + 1)).collect();
    Inputs { q, k, v, mask, lengths }
}

struct Outputs {
    out: Vec<f32>,
    lse: Vec<f32>,
}

/// Runs `attention` (or the reference) on the case; outputs start as NaN.
fn run(c: &Case, x: &Inputs, fast: bool, out_dtype: DType) -> Outputs {
    let (qs, qst, _) = layout(c.bnhd, [c.b, c.h_q(), c.n_q, c.d]);
    let (ks, kst, _) = layout(c.bnhd, [c.b, c.h_kv, c.n_kv, c.d]);
    let (vs, vst, _) = layout(c.bnhd, [c.b, c.h_kv, c.n_kv, c.d_v]);
    let q = View::from_data("q", x.q.data(), &qs, &qst).unwrap();
    let k = View::from_data("k", x.k.data(), &ks, &kst).unwrap();
    let v = View::from_data("v", x.v.data(), &vs, &vst).unwrap();
    let mask = match c.mask {
        1 => Some(View::contiguous("additive_mask", &x.mask, &[c.b, c.h_q(), c.n_q, c.n_kv]).unwrap()),
        2 => Some(View::contiguous("additive_mask", &x.mask, &[1, 1, c.n_q, c.n_kv]).unwrap()),
        _ => None,
    };
    let params = AttentionParams {
        scale: None,
        causal: c.causal,
        key_lengths: c.key_lengths.then_some(&x.lengths[..]),
        additive_mask: mask,
        window_left: c.window,
        softcap: c.softcap,
    };
    let n_out = c.b * c.h_q() * c.n_q * c.d_v;
    let mut out = Buf::nan(out_dtype, n_out);
    let mut lse = nan_vec::<f32>(c.b * c.h_q() * c.n_q);
    {
        let mut o = ViewMut::from_data(
            "out",
            out.data_mut(),
            &[c.b, c.h_q(), c.n_q, c.d_v],
            &[c.h_q() * c.n_q * c.d_v, c.n_q * c.d_v, c.d_v, 1],
        )
        .unwrap();
        let mut l = ViewMut::contiguous("lse", &mut lse, &[c.b, c.h_q(), c.n_q]).unwrap();
        if fast {
            attention(&q, &k, &v, &mut o, &params, Some(&mut l)).unwrap();
        } else {
            reference::attention(&q, &k, &v, &mut o, &params, Some(&mut l)).unwrap();
        }
    }
    Outputs { out: out.to_f32(), lse }
}

/// Per-element error scales (see the module docs): `(out scale, lse scale)`.
fn scales(c: &Case, x: &Inputs) -> (Vec<f64>, Vec<f64>) {
    let q = x.q.to_f32();
    let k = x.k.to_f32();
    let v = x.v.to_f32();
    let (_, qst, _) = layout(c.bnhd, [c.b, c.h_q(), c.n_q, c.d]);
    let (_, kst, _) = layout(c.bnhd, [c.b, c.h_kv, c.n_kv, c.d]);
    let (_, vst, _) = layout(c.bnhd, [c.b, c.h_kv, c.n_kv, c.d_v]);
    let off = |st: &[usize], i: [usize; 4]| -> usize { i.iter().zip(st).map(|(a, b)| a * b).sum() };
    let scale = 1.0 / (c.d.max(1) as f64).sqrt();
    let mut out_scale = Vec::new();
    let mut lse_scale = Vec::new();
    for b in 0..c.b {
        for h in 0..c.h_q() {
            let g = h / c.ratio;
            let vmax: Vec<f64> = (0..c.d_v)
                .map(|cc| (0..c.n_kv).map(|j| f64::from(v[off(&vst, [b, g, j, cc])]).abs()).fold(0.0, f64::max))
                .collect();
            for i in 0..c.n_q {
                let mut s_max = 0.0f64;
                for j in 0..c.n_kv {
                    let s: f64 = (0..c.d)
                        .map(|cc| {
                            (f64::from(q[off(&qst, [b, h, i, cc])]) * f64::from(k[off(&kst, [b, g, j, cc])])).abs()
                        })
                        .sum();
                    s_max = s_max.max(s * scale);
                }
                if s_max.is_nan() {
                    s_max = 0.0;
                }
                let s_max = s_max + c.softcap.map_or(0.0, f64::from);
                out_scale.extend(vmax.iter().map(|m| m * (1.0 + 2.0 * s_max)));
                lse_scale.push(1.0 + 2.0 * s_max);
            }
        }
    }
    (out_scale, lse_scale)
}

fn check_case(c: &Case) {
    let x = inputs(c);
    let want = run(c, &x, false, DType::F32);
    let (out_scale, lse_scale) = scales(c, &x);
    let tol = Tolerance::accumulation(c.d.max(c.n_kv), c.dtypes[3]);
    let lse_tol = Tolerance::accumulation(c.d.max(c.n_kv), DType::F32);
    on_every_isa(Isa::Avx512, |isa| {
        let got = run(c, &x, true, c.dtypes[3]);
        assert_close(&format!("out at {isa} for {c:?}"), &got.out, &want.out, Some(&out_scale), tol);
        assert_close(&format!("lse at {isa} for {c:?}"), &got.lse, &want.lse, Some(&lse_scale), lse_tol);
    });
}

const DS: &[usize] = &[1, 8, 24, 32, 64, 80, 96, 128, 256];
const NS: &[usize] = &[1, 2, 7, 63, 64, 65, 130, 1000];
/// Budget of B·Hq·Nq·Nkv·(D + Dv) per case, to keep the reference cheap.
const BUDGET: usize = 600_000;

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![DType::F32, DType::F16, DType::BF16])
}

fn causal() -> impl Strategy<Value = Causal> {
    prop::sample::select(vec![Causal::None, Causal::TopLeft, Causal::BottomRight])
}

prop_compose! {
    fn case()(
        b in 1usize..=2,
        h_kv in 1usize..=2,
        ratio in prop::sample::select(vec![1usize, 2, 4, 8]),
        n_q in prop::sample::select(NS.to_vec()),
        n_kv in prop::sample::select(NS.to_vec()),
        d_idx in 0usize..DS.len(),
        dv_same in prop::bool::weighted(0.8),
        dv_idx in 0usize..DS.len(),
        causal in causal(),
        key_lengths in prop::bool::weighted(0.3),
        mask in 0u8..3,
        window in prop::option::weighted(0.25, 0usize..80),
        softcap in prop::option::weighted(0.15, 1.0f32..30.0),
        bnhd in any::<bool>(),
        dtypes in [dtype(), dtype(), dtype(), dtype()],
        seed in any::<u64>(),
    ) -> Case {
        let mask = if mask == 0 || seed % 3 == 0 { mask } else { 0 };
        let mut c = Case {
            b, h_kv, ratio, n_q, n_kv, d: DS[d_idx], d_v: 0, causal, key_lengths, mask, window, softcap, bnhd,
            dtypes, magnitude: 1.0, nan_row: false, seed,
        };
        c.d_v = if dv_same { c.d } else { DS[dv_idx] };
        // Shrink to the budget: fewer batches/heads, then smaller head dims, then fewer queries.
        let cost = |c: &Case| c.b * c.h_q() * c.n_q * c.n_kv * (c.d + c.d_v);
        if cost(&c) > BUDGET { c.b = 1; c.h_kv = 1; }
        while cost(&c) > BUDGET && c.ratio > 1 { c.ratio /= 2; }
        while cost(&c) > BUDGET && (c.d > 8 || c.d_v > 8) { c.d = (c.d / 2).max(1); c.d_v = (c.d_v / 2).max(1); }
        while cost(&c) > BUDGET { if c.n_q >= c.n_kv { c.n_q = 65 } else { c.n_kv = 130 } }
        c
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_on_random_problems(c in case()) {
        check_case(&c);
    }
}

fn base() -> Case {
    Case {
        b: 1,
        h_kv: 2,
        ratio: 2,
        n_q: 65,
        n_kv: 130,
        d: 32,
        d_v: 32,
        causal: Causal::None,
        key_lengths: false,
        mask: 0,
        window: None,
        softcap: None,
        bnhd: false,
        dtypes: [DType::F32; 4],
        magnitude: 1.0,
        nan_row: false,
        seed: 7,
    }
}

#[test]
fn windows_reaching_past_every_key_equal_no_window() {
    // Window arithmetic is signed; a window of usize::MAX must mean "no window" (it once
    // wrapped to −1 and masked almost every key), in the kernel and in the reference.
    for causal in [Causal::None, Causal::TopLeft, Causal::BottomRight] {
        for (n_q, n_kv) in [(1, 300), (65, 130), (130, 65)] {
            let none = Case { causal, n_q, n_kv, window: None, ..base() };
            let x = inputs(&none);
            for fast in [true, false] {
                let want = run(&none, &x, fast, DType::F32);
                for window in [n_q + n_kv, usize::MAX / 2, usize::MAX] {
                    let got = run(&Case { window: Some(window), ..none.clone() }, &x, fast, DType::F32);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got.out), bits(&want.out), "window {window}, {causal:?}, fast {fast}");
                }
            }
        }
    }
}

#[test]
fn every_mask_combination() {
    for causal in [Causal::None, Causal::TopLeft, Causal::BottomRight] {
        for (key_lengths, mask, window, softcap) in [
            (false, 0, None, None),
            (true, 0, None, None),
            (false, 1, None, None),
            (false, 2, Some(9), None),
            (true, 2, Some(40), Some(5.0)),
            (false, 0, Some(0), None),
        ] {
            for (n_q, n_kv) in [(65, 130), (130, 65), (64, 64)] {
                check_case(&Case { causal, key_lengths, mask, window, softcap, n_q, n_kv, ..base() });
            }
        }
    }
}

#[test]
fn every_gqa_ratio_and_dtype_with_strided_inputs() {
    for ratio in [1, 2, 4, 8] {
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let dtypes = [DType::F32, dt, dt, dt];
            check_case(&Case { ratio, dtypes, bnhd: true, causal: Causal::BottomRight, ..base() });
            check_case(&Case { ratio, dtypes: [dt; 4], bnhd: true, ..base() });
        }
    }
}

#[test]
fn huge_logits_stay_finite_and_accurate() {
    // |q|, |k| ~ 60 with D = 64: scores ~ 1e4.
    for causal in [Causal::None, Causal::TopLeft] {
        check_case(&Case { magnitude: 60.0, d: 64, d_v: 64, causal, ..base() });
    }
}

#[test]
fn nan_in_one_query_row_poisons_only_that_row() {
    let c = Case { nan_row: true, ..base() };
    check_case(&c); // the reference has NaN exactly in that row; compare() demands NaN ↔ NaN
    let x = inputs(&c);
    let got = run(&c, &x, true, DType::F32);
    let nans = got.out.iter().filter(|v| v.is_nan()).count();
    assert_eq!(nans, c.d_v, "exactly one output row is NaN");
}

#[test]
fn fully_masked_rows_give_zero_and_lse_minus_infinity() {
    // Bottom-right causal with Nq > Nkv masks the first Nq − Nkv rows entirely; key length 0 masks
    // a whole batch.
    let c = Case { causal: Causal::BottomRight, n_q: 130, n_kv: 65, b: 2, key_lengths: true, seed: 3, ..base() };
    let mut x = inputs(&c);
    x.lengths = vec![0, 40];
    let got = run(&c, &x, true, DType::F32);
    let rows = c.h_q() * c.n_q;
    assert!(got.out[..rows * c.d_v].iter().all(|&v| v == 0.0));
    assert!(got.lse[..rows].iter().all(|&v| v == f32::NEG_INFINITY));
    for h in 0..c.h_q() {
        let row = c.h_q() * c.n_q + h * c.n_q; // batch 1, row 0: masked by causality
        assert!(got.out[row * c.d_v..(row + 1) * c.d_v].iter().all(|&v| v == 0.0));
        assert_eq!(got.lse[row], f32::NEG_INFINITY);
    }
    check_case(&Case { key_lengths: false, ..c });
}

#[test]
fn decode_split_kv_matches_reference() {
    // Head dims: whole vectors at every level (K/V read in place, widened in registers), 128
    // (the benchmark's), and 24 (rows widened into padded scratch at AVX-512).
    for (n_q, n_kv, ratio, d) in [(1, 1000, 4, 64), (1, 4096, 8, 128), (7, 2000, 2, 24), (2, 1500, 1, 64)] {
        for causal in [Causal::None, Causal::BottomRight] {
            let dtypes = [DType::F32, DType::BF16, DType::F16, DType::F32];
            check_case(&Case { n_q, n_kv, ratio, h_kv: 1, d, d_v: d, causal, dtypes, key_lengths: true, ..base() });
        }
    }
}

#[test]
fn empty_and_degenerate_shapes() {
    check_case(&Case { n_kv: 0, ..base() });
    check_case(&Case { n_q: 0, ..base() });
    check_case(&Case { d_v: 0, ..base() });
    check_case(&Case { b: 0, ..base() });
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn one_and_two_threads_are_bit_identical() {
    let cases = [
        Case { n_q: 1000, n_kv: 1000, ratio: 1, h_kv: 2, d: 64, d_v: 64, causal: Causal::TopLeft, ..base() },
        Case {
            n_q: 1,
            n_kv: 4096,
            ratio: 4,
            h_kv: 2,
            d: 128,
            d_v: 128,
            dtypes: [DType::F32, DType::BF16, DType::BF16, DType::F32],
            ..base()
        },
        Case { n_q: 130, n_kv: 1000, ratio: 8, h_kv: 1, d: 96, d_v: 96, mask: 1, window: Some(100), ..base() },
    ];
    for c in &cases {
        let x = inputs(c);
        let runs: Vec<Outputs> = [1, 2]
            .iter()
            .map(|&n| {
                rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(|| run(c, &x, true, DType::F32))
            })
            .collect();
        assert_eq!(bits(&runs[0].out), bits(&runs[1].out), "{c:?}");
        assert_eq!(bits(&runs[0].lse), bits(&runs[1].lse), "{c:?}");
    }
}

#[test]
fn extra_memory_is_independent_of_sequence_length() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| COUNTED.with(|c| c.set(true)))
        .build()
        .unwrap();
    let peak_for = |n: usize| -> isize {
        let c = Case { n_q: n, n_kv: n, ratio: 1, h_kv: 2, d: 64, d_v: 64, causal: Causal::TopLeft, ..base() };
        let x = inputs(&c);
        let (qs, qst, _) = layout(false, [1, 2, n, 64]);
        let q = View::from_data("q", x.q.data(), &qs, &qst).unwrap();
        let k = View::from_data("k", x.k.data(), &qs, &qst).unwrap();
        let v = View::from_data("v", x.v.data(), &qs, &qst).unwrap();
        let mut out = vec![0f32; 2 * n * 64];
        let mut o = ViewMut::contiguous("out", &mut out, &[1, 2, n, 64]).unwrap();
        let params = AttentionParams { causal: Causal::TopLeft, ..AttentionParams::default() };
        pool.install(|| {
            COUNTED.with(|c| c.set(true));
            let before = CURRENT.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            attention(&q, &k, &v, &mut o, &params, None).unwrap();
            COUNTED.with(|c| c.set(false));
            PEAK.load(Ordering::Relaxed) - before
        })
    };
    let small = peak_for(256);
    let large = peak_for(4096);
    // The score matrix alone would be 2·4096²·4 B = 128 MiB; the kernel's scratch is O(tile) per
    // live task (≈ 40 KiB here). How many tasks are live at once depends on rayon's work stealing
    // (a thread may hold a suspended task while running a stolen one), so allow a few.
    assert!(large <= 1 << 20, "extra memory at N=4096: {large} B");
    assert!(large <= 4 * small.max(1 << 16), "extra memory grows with N: {small} B at 256, {large} B at 4096");
}

#[test]
fn exp_is_accurate_over_the_whole_f32_line() {
    // Every 251st f32 bit pattern (≈ 17M values, both signs, all exponents), plus edges and specials.
    let mut specials: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        EXP_UNDERFLOW,
        EXP_OVERFLOW,
        -87.3,
        88.3,
        -1e30,
        1e30,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        f32::MIN,
        f32::MAX,
        f32::MIN_POSITIVE,
    ];
    // Dense sampling of the range the softmax sees, [−100, 0].
    specials.extend((0..200_001).map(|i| -100.0 + i as f32 * 5e-4));
    let chunks = (0..u32::MAX / 251).collect::<Vec<u32>>();
    for isa in flashkern_kernels::isa::runnable_isas() {
        for no_overflow in [false, true] {
            let mut worst = 0.0f64;
            let batches =
                chunks.chunks(1 << 20).map(|c| c.iter().map(|&i| f32::from_bits(i * 251)).collect::<Vec<f32>>());
            for xs in std::iter::once(specials.clone()).chain(batches) {
                let mut got = xs.clone();
                exp_in_place_with(isa, &mut got, no_overflow);
                for (&x, &y) in xs.iter().zip(&got) {
                    if x.is_nan() {
                        assert!(y.is_nan(), "exp(NaN) at {isa}");
                    } else if x < EXP_UNDERFLOW {
                        assert_eq!(y, 0.0, "exp({x}) at {isa}");
                    } else if x > EXP_OVERFLOW {
                        // The softmax variant is only specified up to EXP_OVERFLOW.
                        assert!(no_overflow || y == f32::INFINITY, "exp({x}) = {y} at {isa}");
                    } else {
                        let want = f64::from(x).exp();
                        let err = (f64::from(y) - want).abs() / want;
                        worst = worst.max(err);
                        assert!(
                            err <= f64::from(EXP_MAX_REL_ERROR),
                            "exp({x}) = {y}, want {want} (rel {err:e}) at {isa}"
                        );
                    }
                }
            }
            eprintln!(
                "exp (no_overflow {no_overflow}) max relative error at {isa}: {worst:e} ({:.2} ulp of 1.0)",
                worst / f64::from(f32::EPSILON)
            );
        }
    }
}

/// A one-key cache view may carry any key stride (only index 0 exists); the kernels must not
/// compute with it (a fuzzer found the prefetcher multiplying it into a byte stride).
#[test]
fn a_single_key_view_accepts_any_key_stride() {
    let d = 16;
    let q = vec![0.5f32; 4 * d];
    let kv = vec![0.25f32; d];
    let huge = usize::MAX / 2;
    let q_view = View::contiguous("q", &q, &[1, 4, 1, d]).unwrap();
    let k_view = View::new("k", &kv, &[1, 1, 1, d], &[d, d, huge, 1]).unwrap();
    let v_view = View::new("v", &kv, &[1, 1, 1, d], &[d, d, huge, 1]).unwrap();
    on_every_isa(Isa::Avx512, |_| {
        let mut out = nan_vec::<f32>(4 * d);
        let mut out_view = ViewMut::contiguous("out", &mut out, &[1, 4, 1, d]).unwrap();
        attention(&q_view, &k_view, &v_view, &mut out_view, &AttentionParams::default(), None).unwrap();
        // One key: every output row is that key's value row.
        assert!(out.iter().all(|&x| x == 0.25), "{out:?}");
    });
}
