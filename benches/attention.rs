//! Fused attention on the SHAPES.md attention shapes × dtype × {1, 2} threads, plus a naive
//! materialised softmax(QKᵀ)V baseline (plain f32 loops, written here) in the same run.
//!
//! Throughput is FLOP/s as `4·B·Hq·Nq·Nkv·D` (halved for causal): criterion's "elem/s". The
//! decode shape is also reported as GB/s of K+V read (group `attention_decode_bytes`).
//!
//! `cargo bench --bench attention` (filter e.g. `-- long2k/f32`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashkern::bench::shapes::{ATTENTION, AttentionShape as Shape};
use flashkern_kernels::attention::{AttentionParams, Causal, attention};
use flashkern_kernels::testing::{Buffer as Buf, Rng};
use flashkern_kernels::{DType, View, ViewMut};
use std::time::Duration;

/// The dtype configurations: (name, q, k/v, out).
const DTYPES: &[(&str, DType, DType, DType)] = &[
    ("f32", DType::F32, DType::F32, DType::F32),
    ("bf16kv", DType::F32, DType::BF16, DType::F32),
    ("f16kv", DType::F32, DType::F16, DType::F32),
    ("bf16", DType::BF16, DType::BF16, DType::BF16),
];

/// Random q, k, v and an output for shape `s` in the given dtypes.
struct Inputs {
    q: Buf,
    k: Buf,
    v: Buf,
    out: Buf,
    q_shape: [usize; 4],
    kv_shape: [usize; 4],
}

impl Inputs {
    fn new(s: &Shape, (qt, kvt, ot): (DType, DType, DType), rng: &mut Rng) -> Inputs {
        let (q_shape, kv_shape) = ([s.b, s.h_q, s.n_q, s.d], [s.b, s.h_kv, s.n_kv, s.d]);
        let random =
            |dtype, shape: [usize; 4], rng: &mut Rng| Buf::random(dtype, shape.iter().product(), rng, -1.0, 1.0);
        let (q, k, v) = (random(qt, q_shape, rng), random(kvt, kv_shape, rng), random(kvt, kv_shape, rng));
        Inputs { q, k, v, out: random(ot, q_shape, rng), q_shape, kv_shape }
    }

    /// Contiguous `[B, H, N, D]` views of q, k, v and the output.
    fn views(&mut self) -> (View<'_>, View<'_>, View<'_>, ViewMut<'_>) {
        (
            self.q.contiguous("q", &self.q_shape).unwrap(),
            self.k.contiguous("k", &self.kv_shape).unwrap(),
            self.v.contiguous("v", &self.kv_shape).unwrap(),
            self.out.contiguous_mut("out", &self.q_shape).unwrap(),
        )
    }
}

/// Naive materialised attention in f32: S = QKᵀ·scale (whole [Nq, Nkv] matrix per head), softmax
/// rows, O = P·V. Dot products use 16 independent partial sums so the compiler vectorises them.
fn naive(s: &Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], scores: &mut [f32]) {
    let (d, r) = (s.d, s.h_q / s.h_kv);
    let scale = 1.0 / (d as f32).sqrt();
    for h in 0..s.h_q {
        let qh = &q[h * s.n_q * d..(h + 1) * s.n_q * d];
        let g = h / r;
        let kh = &k[g * s.n_kv * d..(g + 1) * s.n_kv * d];
        let vh = &v[g * s.n_kv * d..(g + 1) * s.n_kv * d];
        for (i, qi) in qh.chunks_exact(d).enumerate() {
            let row = &mut scores[i * s.n_kv..(i + 1) * s.n_kv];
            for (j, (sc, kj)) in row.iter_mut().zip(kh.chunks_exact(d)).enumerate() {
                let mut acc = [0f32; 16];
                for (qc, kc) in qi.chunks_exact(16).zip(kj.chunks_exact(16)) {
                    for t in 0..16 {
                        acc[t] += qc[t] * kc[t];
                    }
                }
                let masked = s.causal && j > i + s.n_kv - s.n_q;
                *sc = if masked { f32::NEG_INFINITY } else { acc.iter().sum::<f32>() * scale };
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
        let oh = &mut out[h * s.n_q * d..(h + 1) * s.n_q * d];
        for (i, oi) in oh.chunks_exact_mut(d).enumerate() {
            oi.fill(0.0);
            for (p, vj) in scores[i * s.n_kv..(i + 1) * s.n_kv].iter().zip(vh.chunks_exact(d)) {
                for (o, x) in oi.iter_mut().zip(vj) {
                    *o += p * x;
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let pools: Vec<(usize, rayon::ThreadPool)> =
        [1, 2].into_iter().map(|n| (n, rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap())).collect();
    let mut group = c.benchmark_group("attention");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for s in ATTENTION {
        let mut rng = Rng::new(1);
        let (q_shape, kv_shape) = ([s.b, s.h_q, s.n_q, s.d], [s.b, s.h_kv, s.n_kv, s.d]);
        let params =
            AttentionParams { causal: if s.causal { Causal::TopLeft } else { Causal::None }, ..Default::default() };
        group.throughput(Throughput::Elements(s.flops() as u64));
        for &(name, qt, kvt, ot) in DTYPES {
            let mut inputs = Inputs::new(s, (qt, kvt, ot), &mut rng);
            let (qv, kv, vv, mut ov) = inputs.views();
            for (threads, pool) in &pools {
                group.bench_function(BenchmarkId::new(format!("{}/{name}", s.id), format!("{threads}t")), |bench| {
                    bench.iter(|| pool.install(|| attention(&qv, &kv, &vv, &mut ov, &params, None).unwrap()))
                });
            }
        }
        // The naive baseline, f32, 1 thread (it materialises one head's [Nq, Nkv] at a time). Not
        // run on long4k_d128_causal: ≈ 9 s per iteration, too slow for criterion's 10 samples.
        if s.flops() > 20e9 {
            continue;
        }
        let q: Vec<f32> = rng.vec(q_shape.iter().product(), -1.0, 1.0);
        let k: Vec<f32> = rng.vec(kv_shape.iter().product(), -1.0, 1.0);
        let v: Vec<f32> = rng.vec(kv_shape.iter().product(), -1.0, 1.0);
        let mut out = vec![0f32; q.len()];
        let mut scores = vec![0f32; s.n_q * s.n_kv];
        group.bench_function(BenchmarkId::new(format!("{}/naive_f32", s.id), "1t"), |bench| {
            bench.iter(|| naive(s, &q, &k, &v, &mut out, &mut scores))
        });
    }
    group.finish();

    // Decode as bandwidth: bytes of K + V read.
    let mut group = c.benchmark_group("attention_decode_bytes");
    group.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let s = ATTENTION.iter().find(|s| s.is_decode()).expect("SHAPES.md has a decode shape");
    let mut rng = Rng::new(2);
    for &(name, qt, kvt, ot) in &DTYPES[..3] {
        let mut inputs = Inputs::new(s, (qt, kvt, ot), &mut rng);
        let bytes = 2 * inputs.kv_shape.iter().product::<usize>() * kvt.size();
        let (qv, kv, vv, mut ov) = inputs.views();
        group.throughput(Throughput::Bytes(bytes as u64));
        for (threads, pool) in &pools {
            group.bench_function(BenchmarkId::new(format!("decode_gqa/{name}"), format!("{threads}t")), |bench| {
                bench.iter(|| {
                    pool.install(|| attention(&qv, &kv, &vv, &mut ov, &AttentionParams::default(), None).unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
