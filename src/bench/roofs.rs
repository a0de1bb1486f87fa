//! This machine's roofs, measured in-process: f32 FMA throughput at the widest ISA level
//! that runs, `vdpbf16ps` throughput where the CPU has AVX512_BF16, and read / copy bandwidth
//! at a given working-set size.

use flashkern_kernels::isa::{Isa, effective_isa};
use flashkern_kernels::simd::vectorize;
use pulp::{Simd, WithSimd};
use std::time::Instant;

/// Independent accumulators: enough to cover FMA latency × issue width on current x86 cores
/// (4 cycles × 2 ports), and few enough that they and the two constants stay in AVX2's 16
/// registers (16 chains spilled there and measured half the real rate).
const CHAINS: usize = 12;

struct FmaLoop {
    iterations: usize,
}

impl WithSimd for FmaLoop {
    type Output = (f32, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let mut acc = [simd.splat_f32s(0.0); CHAINS];
        let scale = simd.splat_f32s(0.999_999);
        let step = simd.splat_f32s(1e-7);
        for _ in 0..self.iterations {
            for a in &mut acc {
                *a = simd.mul_add_f32s(*a, scale, step);
            }
        }
        let sum = acc.iter().fold(simd.splat_f32s(0.0), |s, a| simd.add_f32s(s, *a));
        (simd.reduce_sum_f32s(sum), size_of::<S::f32s>() / size_of::<f32>())
    }
}

/// FLOP/s of `run(iterations)` (which returns its FLOPs per iteration), timed for about
/// `seconds` after a short probe sizes the iteration count.
fn timed_rate(seconds: f64, mut run: impl FnMut(usize) -> usize) -> f64 {
    let probe = 1 << 16;
    let start = Instant::now();
    run(probe);
    let per_iteration = start.elapsed().as_secs_f64() / probe as f64;
    let iterations = ((seconds / per_iteration.max(1e-12)) as usize).max(probe);
    let start = Instant::now();
    let flops = run(iterations);
    (iterations * flops) as f64 / start.elapsed().as_secs_f64()
}

/// The sum of `rate()` over `threads` threads running it concurrently, in GFLOP/s.
fn gflops_on_threads(threads: usize, rate: impl Fn() -> f64 + Sync) -> f64 {
    let rates: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(&rate)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
    });
    rates.iter().sum::<f64>() / 1e9
}

/// Aggregate f32 FMA GFLOP/s of `threads` threads, each running the chains concurrently.
pub fn fma_gflops(threads: usize) -> f64 {
    let isa = effective_isa();
    gflops_on_threads(threads, || {
        timed_rate(0.3, |iterations| {
            let (sink, lanes) = vectorize(isa, FmaLoop { iterations });
            std::hint::black_box(sink);
            CHAINS * lanes * 2
        })
    })
}

/// Aggregate `vdpbf16ps` GFLOP/s (2 FLOPs per bf16 pair product) of `threads` threads, or
/// `None` when the CPU (or the ISA cap) has no AVX512_BF16.
pub fn bf16_dot_gflops(threads: usize) -> Option<f64> {
    if effective_isa() < Isa::Avx512Bf16 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the effective ISA (never above the detected one) includes AVX512_BF16.
        Some(gflops_on_threads(threads, || timed_rate(0.3, |iterations| unsafe { dot_bf16::run(iterations) })))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
mod dot_bf16 {
    use super::CHAINS;
    use core::arch::x86_64::*;

    /// `iterations` rounds of `CHAINS` independent `vdpbf16ps` (16 lanes × 2 products each).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn chains(iterations: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        let (a, b) = (_mm512_set1_epi32(0x3f80_3f80), _mm512_set1_epi32(0x0001_0001));
        // SAFETY: a bit-pattern reinterpretation of 512-bit integer vectors as bf16 vectors.
        let (a, b) =
            unsafe { (core::mem::transmute::<__m512i, __m512bh>(a), core::mem::transmute::<__m512i, __m512bh>(b)) };
        for _ in 0..iterations {
            for x in &mut acc {
                *x = _mm512_dpbf16_ps(*x, a, b);
            }
        }
        let sum = acc.iter().fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
        _mm512_reduce_add_ps(sum)
    }

    /// Runs the chains for `iterations` rounds, returning the FLOPs per round.
    ///
    /// # Safety
    /// As for [`chains`].
    pub(super) unsafe fn run(iterations: usize) -> usize {
        // SAFETY: the caller guarantees the features.
        std::hint::black_box(unsafe { chains(iterations) });
        CHAINS * 16 * 4
    }
}

/// GB/s of `threads` threads each streaming reads over its own `bytes / threads` buffer.
pub fn read_gbps(bytes: usize, threads: usize) -> f64 {
    bandwidth(bytes, threads, false)
}

/// GB/s (bytes read + bytes written) of `threads` threads each copying half of its share of
/// `bytes` into the other half.
pub fn copy_gbps(bytes: usize, threads: usize) -> f64 {
    bandwidth(bytes, threads, true)
}

fn bandwidth(bytes: usize, threads: usize, copy: bool) -> f64 {
    let per_thread = (bytes / threads.max(1) / 4).max(1024);
    let rates: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut buffer = vec![1f32; per_thread];
                    let pass = |buffer: &mut [f32]| {
                        if copy {
                            let (src, dst) = buffer.split_at_mut(per_thread / 2);
                            dst[..src.len()].copy_from_slice(src);
                            std::hint::black_box(&dst[0]);
                        } else {
                            std::hint::black_box(sum(buffer));
                        }
                    };
                    pass(&mut buffer); // warm the caches and the page tables
                    let start = Instant::now();
                    let mut passes = 0usize;
                    while start.elapsed().as_secs_f64() < 0.2 {
                        pass(&mut buffer);
                        passes += 1;
                    }
                    let moved = if copy { per_thread / 2 * 2 * 4 } else { per_thread * 4 };
                    (passes * moved) as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
    });
    rates.iter().sum::<f64>() / 1e9
}

struct Sum<'a>(&'a [f32]);

impl WithSimd for Sum<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (head, tail) = S::as_simd_f32s(self.0);
        let mut acc = [simd.splat_f32s(0.0); 8];
        let mut chunks = head.chunks_exact(8);
        for chunk in &mut chunks {
            for (a, x) in acc.iter_mut().zip(chunk) {
                *a = simd.add_f32s(*a, *x);
            }
        }
        let mut total = acc.iter().fold(simd.splat_f32s(0.0), |s, a| simd.add_f32s(s, *a));
        for x in chunks.remainder() {
            total = simd.add_f32s(total, *x);
        }
        simd.reduce_sum_f32s(total) + tail.iter().sum::<f32>()
    }
}

fn sum(values: &[f32]) -> f32 {
    vectorize(effective_isa(), Sum(values))
}
