//! Matmul throughput on SHAPES.md's shapes × dtypes × {1, 2} threads, with the `gemm` crate
//! (x86-v4) f32 and f16 on the same shapes in the same run. Throughput is `2·M·N·K` elements,
//! so criterion's elem/s is FLOP/s.
//!
//! Variants: `f32` (per-call packing), `f32_packed` (prepacked weights), `bf16`/`f16` (A, B and C
//! all 16-bit, per-call packing), `bf16_packed` (bf16 A, prepacked bf16 weights, f32 C: the
//! `vdpbf16ps` kernel without per-call packing), `bf16w_packed`/`f16w_packed` (f32 activations, prepacked
//! weights kept 16-bit, f32 output), `bf16w_packed_as_f32` (the same weights widened to f32
//! panels at pack time), `gemm_f32`, `gemm_f16`.
//!
//! `cargo bench --bench matmul` (filter e.g. `-- sq1024`). With `FLASHKERN_BENCH_CPU_TIME=1`,
//! 1-thread runs are timed by the thread's on-CPU time (for a machine shared with other work).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashkern::bench::peer::gemm_bt;
use flashkern_kernels::matmul::{MatmulParams, PackedMatrix, matmul, matmul_packed};
use flashkern_kernels::testing::Rng;
use flashkern_kernels::{DType, Element, View, ViewMut, bf16, f16};
use std::hint::black_box;
use std::time::Duration;

const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("sq512", 512, 512, 512),
    ("sq1024", 1024, 1024, 1024),
    ("sq2048", 2048, 2048, 2048),
    ("minilm_up", 128, 384, 1536),
    ("minilm_down", 128, 1536, 384),
    ("gpt2_up", 512, 768, 3072),
    ("gpt2_down", 512, 3072, 768),
    ("gemv4096", 1, 4096, 4096),
];

/// `C = A·Bᵀ` with every operand of type `T`, B packed per call.
fn ours<T: Element>(a: &[T], b: &[T], c: &mut [T], m: usize, k: usize, n: usize) {
    let a = View::contiguous("a", a, &[m, k]).unwrap();
    let b = View::contiguous("b", b, &[n, k]).unwrap();
    let mut c = ViewMut::contiguous("c", c, &[m, n]).unwrap();
    matmul(&a, &b, None, &mut c, &MatmulParams::default()).unwrap();
}

fn ours_packed<T: Element>(a: &[T], b: &PackedMatrix, c: &mut [f32], m: usize, k: usize) {
    let a = View::contiguous("a", a, &[m, k]).unwrap();
    let mut c = ViewMut::contiguous("c", c, &[m, b.n()]).unwrap();
    matmul_packed(&a, b, None, &mut c, &MatmulParams::default()).unwrap();
}

/// The time this thread has spent on a CPU (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    Duration::from_nanos(stat.split_whitespace().next().and_then(|ns| ns.parse().ok()).expect("run time"))
}

fn bench(cr: &mut Criterion) {
    // On a shared, loaded machine wall time mostly measures the neighbours: with
    // FLASHKERN_BENCH_CPU_TIME=1 the 1-thread runs report on-CPU time of the running thread.
    let cpu_time = std::env::var_os("FLASHKERN_BENCH_CPU_TIME").is_some();
    let mut rng = Rng::new(1);
    for &(name, m, k, n) in SHAPES {
        let a: Vec<f32> = rng.vec(m * k, -1.0, 1.0);
        let b: Vec<f32> = rng.vec(n * k, -1.0, 1.0);
        let a16: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
        let b16: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
        let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
        let bh: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        let packed = PackedMatrix::pack(&View::contiguous("b", &b, &[n, k]).unwrap()).unwrap();
        let packed16 = PackedMatrix::pack(&View::contiguous("b", &b16, &[n, k]).unwrap()).unwrap();
        let packedh = PackedMatrix::pack(&View::contiguous("b", &bh, &[n, k]).unwrap()).unwrap();
        let packed16_as32 = PackedMatrix::pack_as(&View::contiguous("b", &b16, &[n, k]).unwrap(), DType::F32).unwrap();
        let mut c = vec![0f32; m * n];
        let mut c16 = vec![bf16::ZERO; m * n];
        let mut ch = vec![f16::ZERO; m * n];
        let mut group = cr.benchmark_group(format!("matmul/{name}"));
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut run = |id: &str, f: &mut (dyn FnMut() + Send)| {
                group.bench_function(BenchmarkId::new(id, format!("{threads}t")), |bencher| {
                    pool.install(|| {
                        if cpu_time && threads == 1 {
                            bencher.iter_custom(|iters| {
                                let start = thread_cpu_time();
                                for _ in 0..iters {
                                    f();
                                }
                                thread_cpu_time() - start
                            })
                        } else {
                            bencher.iter(&mut *f)
                        }
                    })
                });
            };
            run("f32", &mut || ours(black_box(&a), &b, &mut c, m, k, n));
            run("f32_packed", &mut || ours_packed(black_box(&a), &packed, &mut c, m, k));
            run("bf16", &mut || ours(black_box(&a16), &b16, &mut c16, m, k, n));
            run("bf16_packed", &mut || ours_packed(black_box(&a16), &packed16, &mut c, m, k));
            run("f16", &mut || ours(black_box(&ah), &bh, &mut ch, m, k, n));
            run("bf16w_packed", &mut || ours_packed(black_box(&a), &packed16, &mut c, m, k));
            run("bf16w_packed_as_f32", &mut || ours_packed(black_box(&a), &packed16_as32, &mut c, m, k));
            run("f16w_packed", &mut || ours_packed(black_box(&a), &packedh, &mut c, m, k));
            // The gemm crate on the pool it runs in (the same wrapper `flashkern bench` uses).
            run("gemm_f32", &mut || gemm_bt(black_box(&a), &b, &mut c, [m, k, n]));
            run("gemm_f16", &mut || gemm_bt(black_box(&ah), &bh, &mut ch, [m, k, n]));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
