//! Fused attention on the SHAPES.md attention shapes × dtype × {1, 2} threads, plus a naive
//! materialised softmax(QKᵀ)V baseline (plain f32 loops, written here) in the same run.
//!
//! Throughput is FLOP/s as `4·B·Hq·Nq·Nkv·D` (halved for causal): criterion's "elem/s". The
//! decode shape is also reported as GB/s of K+V read (group `attention_decode_bytes`).
//!
//! `cargo bench --bench attention` (filter e.g. `-- long2k/f32`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashkern_kernels::attention::{AttentionParams, Causal, attention};
use flashkern_kernels::testing::{Buffer as Buf, Rng};
use flashkern_kernels::{DType, View, ViewMut};
use std::time::Duration;

struct Shape {
    id: &'static str,
    b: usize,
    h_q: usize,
    h_kv: usize,
    n_q: usize,
    n_kv: usize,
    d: usize,
    causal: bool,
}

const SHAPES: &[Shape] = &[
    Shape { id: "minilm128", b: 1, h_q: 12, h_kv: 12, n_q: 128, n_kv: 128, d: 32, causal: false },
    Shape { id: "bert512", b: 1, h_q: 12, h_kv: 12, n_q: 512, n_kv: 512, d: 64, causal: false },
    Shape { id: "long2k", b: 1, h_q: 12, h_kv: 12, n_q: 2048, n_kv: 2048, d: 64, causal: false },
    Shape { id: "long2k_causal", b: 1, h_q: 12, h_kv: 12, n_q: 2048, n_kv: 2048, d: 64, causal: true },
    Shape { id: "long4k_d128_causal", b: 1, h_q: 8, h_kv: 8, n_q: 4096, n_kv: 4096, d: 128, causal: true },
    Shape { id: "decode_gqa", b: 1, h_q: 32, h_kv: 8, n_q: 1, n_kv: 4096, d: 128, causal: false },
];

impl Shape {
    fn flops(&self) -> u64 {
        let f = 4 * self.b * self.h_q * self.n_q * self.n_kv * self.d;
        (if self.causal { f / 2 } else { f }) as u64
    }
}

/// The dtype configurations: (name, q, k/v, out).
const DTYPES: &[(&str, DType, DType, DType)] = &[
    ("f32", DType::F32, DType::F32, DType::F32),
    ("bf16kv", DType::F32, DType::BF16, DType::F32),
    ("f16kv", DType::F32, DType::F16, DType::F32),
    ("bf16", DType::BF16, DType::BF16, DType::BF16),
];

fn contiguous(shape: [usize; 4]) -> Vec<usize> {
    vec![shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1]
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
    for s in SHAPES {
        let mut rng = Rng::new(1);
        let (q_shape, kv_shape) = ([s.b, s.h_q, s.n_q, s.d], [s.b, s.h_kv, s.n_kv, s.d]);
        let params =
            AttentionParams { causal: if s.causal { Causal::TopLeft } else { Causal::None }, ..Default::default() };
        group.throughput(Throughput::Elements(s.flops()));
        for &(name, qt, kvt, ot) in DTYPES {
            let q = Buf::random(qt, q_shape.iter().product(), &mut rng, -1.0, 1.0);
            let k = Buf::random(kvt, kv_shape.iter().product(), &mut rng, -1.0, 1.0);
            let v = Buf::random(kvt, kv_shape.iter().product(), &mut rng, -1.0, 1.0);
            let mut out = Buf::random(ot, q_shape.iter().product(), &mut rng, -1.0, 1.0);
            let qv = View::from_data("q", q.data(), &q_shape, &contiguous(q_shape)).unwrap();
            let kv = View::from_data("k", k.data(), &kv_shape, &contiguous(kv_shape)).unwrap();
            let vv = View::from_data("v", v.data(), &kv_shape, &contiguous(kv_shape)).unwrap();
            let mut ov = ViewMut::from_data("out", out.data_mut(), &q_shape, &contiguous(q_shape)).unwrap();
            for (threads, pool) in &pools {
                group.bench_function(BenchmarkId::new(format!("{}/{name}", s.id), format!("{threads}t")), |bench| {
                    bench.iter(|| pool.install(|| attention(&qv, &kv, &vv, &mut ov, &params, None).unwrap()))
                });
            }
        }
        // The naive baseline, f32, 1 thread (it materialises one head's [Nq, Nkv] at a time). Not
        // run on long4k_d128_causal: ≈ 9 s per iteration, too slow for criterion's 10 samples.
        if s.flops() > 20_000_000_000 {
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
    let s = &SHAPES[5];
    let mut rng = Rng::new(2);
    let (q_shape, kv_shape) = ([s.b, s.h_q, s.n_q, s.d], [s.b, s.h_kv, s.n_kv, s.d]);
    for &(name, qt, kvt, ot) in &DTYPES[..3] {
        let q = Buf::random(qt, q_shape.iter().product(), &mut rng, -1.0, 1.0);
        let k = Buf::random(kvt, kv_shape.iter().product(), &mut rng, -1.0, 1.0);
        let v = Buf::random(kvt, kv_shape.iter().product(), &mut rng, -1.0, 1.0);
        let mut out = Buf::random(ot, q_shape.iter().product(), &mut rng, -1.0, 1.0);
        let qv = View::from_data("q", q.data(), &q_shape, &contiguous(q_shape)).unwrap();
        let kv = View::from_data("k", k.data(), &kv_shape, &contiguous(kv_shape)).unwrap();
        let vv = View::from_data("v", v.data(), &kv_shape, &contiguous(kv_shape)).unwrap();
        let mut ov = ViewMut::from_data("out", out.data_mut(), &q_shape, &contiguous(q_shape)).unwrap();
        let bytes = 2 * kv_shape.iter().product::<usize>() * kvt.size();
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
