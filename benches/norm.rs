//! Fused residual + LayerNorm / RMSNorm on the SHAPES.md LayerNorm shapes × dtype (f32, bf16,
//! f16; every tensor in that dtype) × variant × {1, 2} threads, against the unfused two-step
//! (a separate add pass writing `h = x + r` to memory, then a plain norm of `h`) and a plain
//! copy of the same working-set bytes, all in the same run.
//!
//! Variants: `post` (LayerNorm(x + r)·γ + β → out), `pre` (the same, also writing h to
//! `sum_out`), `rms` (RMSNorm(x + r)·γ → out). Throughput is `Bytes`: x, r, γ, β read once and
//! out (plus the sum for `pre`) written once, as SHAPES.md counts; the unfused two-step is
//! credited with the same bytes, so its GB/s is directly comparable. `copy` copies a buffer of
//! half the variant's byte count into another (read + write = the same working-set bytes).
//!
//! Run: `cargo bench --bench norm` (optionally a filter, e.g. `-- ln_big`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flashkern::kernels::simd::convert;
use flashkern::kernels::testing::Rng;
use flashkern::kernels::{Element, bf16, f16};
use flashkern::norm::{NormInputs, NormKind, NormParams, add_norm};
use flashkern::{DType, View, ViewMut};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const SHAPES: [(&str, usize, usize); 4] =
    [("ln_minilm", 128, 384), ("ln_gpt2", 512, 768), ("ln_big", 16384, 768), ("ln_wide", 2048, 4096)];

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Post,
    Pre,
    Rms,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Post => "post",
            Variant::Pre => "pre",
            Variant::Rms => "rms",
        }
    }

    fn kind(self) -> NormKind {
        if self == Variant::Rms { NormKind::RmsNorm } else { NormKind::LayerNorm }
    }

    /// Bytes counted as SHAPES.md says.
    fn bytes(self, rows: usize, hidden: usize, size: usize) -> u64 {
        let matrices = if self == Variant::Pre { 4 } else { 3 };
        let vectors = if self == Variant::Rms { 1 } else { 2 };
        ((matrices * rows * hidden + vectors * hidden) * size) as u64
    }
}

/// `h = x + r` element-wise, in blocks over rayon: the add pass of the unfused two-step.
/// 16-bit data goes through the crate's vectorised conversions; the f32 add is a plain loop.
trait AddPass: Element {
    fn add_block(x: &[Self], r: &[Self], h: &mut [Self], xa: &mut [f32], ra: &mut [f32]);
}

impl AddPass for f32 {
    fn add_block(x: &[f32], r: &[f32], h: &mut [f32], _: &mut [f32], _: &mut [f32]) {
        for ((h, x), r) in h.iter_mut().zip(x).zip(r) {
            *h = x + r;
        }
    }
}

macro_rules! add_pass_16 {
    ($t:ty, $widen:path, $round:path) => {
        impl AddPass for $t {
            fn add_block(x: &[$t], r: &[$t], h: &mut [$t], xa: &mut [f32], ra: &mut [f32]) {
                let n = x.len();
                $widen(x, &mut xa[..n]).unwrap();
                $widen(r, &mut ra[..n]).unwrap();
                for (a, b) in xa[..n].iter_mut().zip(&ra[..n]) {
                    *a += b;
                }
                $round(&xa[..n], h).unwrap();
            }
        }
    };
}
add_pass_16!(bf16, convert::bf16_to_f32, convert::f32_to_bf16);
add_pass_16!(f16, convert::f16_to_f32, convert::f32_to_f16);

const ADD_BLOCK: usize = 8192;

fn add_pass<T: AddPass>(x: &[T], r: &[T], h: &mut [T]) {
    h.par_chunks_mut(ADD_BLOCK).zip(x.par_chunks(ADD_BLOCK)).zip(r.par_chunks(ADD_BLOCK)).for_each_init(
        || (vec![0f32; ADD_BLOCK], vec![0f32; ADD_BLOCK]),
        |(xa, ra), ((h, x), r)| T::add_block(x, r, h, xa, ra),
    );
}

fn copy_pass(src: &[u8], dst: &mut [u8]) {
    const BLOCK: usize = 256 * 1024;
    dst.par_chunks_mut(BLOCK).zip(src.par_chunks(BLOCK)).for_each(|(d, s)| d.copy_from_slice(s));
}

fn bench_dtype<T: AddPass>(
    c: &mut Criterion,
    pools: &[(usize, rayon::ThreadPool)],
    name: &str,
    rows: usize,
    hidden: usize,
) {
    let dtype = T::DTYPE;
    let mut rng = Rng::new(7);
    let n = rows * hidden;
    let x: Vec<T> = rng.vec(n, -2.0, 2.0);
    let r: Vec<T> = rng.vec(n, -1.0, 1.0);
    let gamma: Vec<T> = rng.vec(hidden, 0.5, 1.5);
    let beta: Vec<T> = rng.vec(hidden, -0.5, 0.5);
    let mut out = vec![T::default(); n];
    let mut sum = vec![T::default(); n];
    let shape = [rows, hidden];
    let mut group = c.benchmark_group(format!("norm/{name}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(800));
    for variant in [Variant::Post, Variant::Pre, Variant::Rms] {
        let bytes = variant.bytes(rows, hidden, dtype.size());
        let params = NormParams { kind: variant.kind(), eps: 1e-5 };
        for (threads, pool) in pools {
            let id = |what: &str| format!("{dtype}/{}/{threads}t/{what}", variant.name());
            group.throughput(Throughput::Bytes(bytes));
            let xv = View::contiguous("x", &x, &shape).unwrap();
            let rv = View::contiguous("residual", &r, &shape).unwrap();
            let gv = View::contiguous("gamma", &gamma, &[hidden]).unwrap();
            let bv = (variant != Variant::Rms).then(|| View::contiguous("beta", &beta, &[hidden]).unwrap());
            let fused = NormInputs { x: xv, residual: Some(rv), bias: None, gamma: gv, beta: bv };
            // The timing loop itself runs inside the pool, so each iteration is a plain call
            // from a pool thread (no cross-thread hand-off per iteration).
            group.bench_function(id("fused"), |b| {
                pool.install(|| {
                    b.iter(|| {
                        let mut o = ViewMut::contiguous("out", &mut out, &shape).unwrap();
                        let mut s = ViewMut::contiguous("sum_out", &mut sum, &shape).unwrap();
                        let s = (variant == Variant::Pre).then_some(&mut s);
                        add_norm(black_box(&fused), &params, &mut o, s).unwrap();
                    })
                })
            });
            group.bench_function(id("unfused"), |b| {
                pool.install(|| {
                    b.iter(|| {
                        // Pre-norm keeps h (it is the sum output); post-norm writes it to a temporary.
                        add_pass(black_box(&x), &r, &mut sum);
                        let hv = View::contiguous("x", &sum, &shape).unwrap();
                        let inputs = NormInputs { x: hv, residual: None, bias: None, gamma: gv, beta: bv };
                        let mut o = ViewMut::contiguous("out", &mut out, &shape).unwrap();
                        add_norm(&inputs, &params, &mut o, None).unwrap();
                    })
                })
            });
            if variant != Variant::Rms {
                let half = (bytes / 2) as usize;
                let src = vec![1u8; half];
                let mut dst = vec![0u8; half];
                group.bench_function(id("copy"), |b| pool.install(|| b.iter(|| copy_pass(black_box(&src), &mut dst))));
            }
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let pools: Vec<(usize, rayon::ThreadPool)> =
        [1, 2].into_iter().map(|t| (t, rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap())).collect();
    for (name, rows, hidden) in SHAPES {
        for dtype in DType::ALL {
            match dtype {
                DType::F32 => bench_dtype::<f32>(c, &pools, name, rows, hidden),
                DType::BF16 => bench_dtype::<bf16>(c, &pools, name, rows, hidden),
                DType::F16 => bench_dtype::<f16>(c, &pools, name, rows, hidden),
            }
        }
    }
}

criterion_group!(norm, benches);
criterion_main!(norm);
