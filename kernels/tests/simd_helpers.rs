//! The in-register helpers kernels share: widening loads are exact for every 16-bit pattern,
//! narrowing stores round bit-exactly like `half` (every rounding boundary, NaN, ±∞,
//! subnormals), and the 4-way horizontal sums and maxima match f64, on every ISA level this
//! machine runs; the blocked transpose matches an element-by-element one.

use flashkern_kernels::isa::runnable_isas;
use flashkern_kernels::simd::load::LoadF32;
use flashkern_kernels::simd::reduce::{max4, sum4};
use flashkern_kernels::simd::store::StoreF32;
use flashkern_kernels::simd::transpose::transpose;
use flashkern_kernels::simd::vectorize;
use flashkern_kernels::testing::Rng;
use flashkern_kernels::{bf16, f16};
use pulp::{Simd, WithSimd};

/// Loads every vector of `row` with `load_f32s` and stores it back as f32.
#[derive(Clone)]
struct LoadAll<'a, E>(&'a [E]);

impl<E: LoadF32> WithSimd for LoadAll<'_, E> {
    type Output = Vec<f32>;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
        let lanes = S::F32_LANES;
        let mut out = vec![0f32; self.0.len() / lanes * lanes];
        for (i, chunk) in S::as_mut_simd_f32s(&mut out).0.iter_mut().enumerate() {
            *chunk = E::load_f32s(simd, self.0, i);
        }
        out
    }
}

/// Every level this machine runs, by name, and pulp's 16-lane AVX2 backend (`V3_512b`), which
/// must take the portable paths (its lane count matches AVX-512's, its instructions do not).
fn backends<Op: WithSimd + Clone>(op: Op) -> Vec<(String, Op::Output)> {
    let mut runs: Vec<_> =
        runnable_isas().into_iter().map(|isa| (isa.to_string(), vectorize(isa, op.clone()))).collect();
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        runs.push(("V3_512b".to_string(), pulp::x86::V3_512b(v3).vectorize(op)));
    }
    runs
}

fn check_loads<E: LoadF32>(values: &[E]) {
    for (isa, got) in backends(LoadAll(values)) {
        assert!(got.len() + 16 > values.len(), "{isa}: only {} of {} loaded", got.len(), values.len());
        for (i, (g, v)) in got.iter().zip(values).enumerate() {
            let want = v.to_f32();
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{isa}: element {i}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn widening_loads_are_exact_for_every_16_bit_pattern() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    check_loads(&bits.iter().map(|&b| bf16::from_bits(b)).collect::<Vec<_>>());
    check_loads(&bits.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>());
    let mut rng = Rng::new(7);
    check_loads(&(0..4096).map(|_| f32::from_bits(rng.next_u64() as u32)).collect::<Vec<_>>());
}

/// The four sums and four maxima of the first four vectors, and the lanes per vector.
struct Reduce4<'a>(&'a [f32]);

impl WithSimd for Reduce4<'_> {
    type Output = ([f32; 4], [f32; 4], usize);
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let lanes = S::F32_LANES;
        let v: [S::f32s; 4] = std::array::from_fn(|t| S::as_simd_f32s(&self.0[t * lanes..(t + 1) * lanes]).0[0]);
        (sum4(simd, v), max4(simd, v), lanes)
    }
}

#[test]
fn four_way_horizontal_sums_and_maxima_match_f64() {
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let values: Vec<f32> = (0..64).map(|_| rng.uniform(-1e3, 1e3)).collect();
        for isa in runnable_isas() {
            let (sums, maxima, lanes) = vectorize(isa, Reduce4(&values));
            for (t, (g, mx)) in sums.iter().zip(maxima).enumerate() {
                let slice = &values[t * lanes..(t + 1) * lanes];
                let want_max = slice.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(mx, want_max, "{isa}: max {t}");
                let want: f64 = slice.iter().map(|&x| f64::from(x)).sum();
                let scale: f64 = slice.iter().map(|&x| f64::from(x).abs()).sum();
                assert!(
                    (f64::from(*g) - want).abs() <= 4.0 * f64::from(f32::EPSILON) * scale,
                    "{isa}: sum {t}: {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn four_way_maxima_of_masked_and_nan_rows() {
    // Row 0 fully masked (−∞), row 1 with one NaN lane, rows 2 and 3 ordinary.
    let mut values: Vec<f32> = (0..64).map(|i| (i % 7) as f32 - 3.0).collect();
    for isa in runnable_isas() {
        let lanes = vectorize(isa, Reduce4(&values)).2;
        values[..lanes].fill(f32::NEG_INFINITY);
        values[lanes + lanes / 2] = f32::NAN;
        let (sums, maxima, _) = vectorize(isa, Reduce4(&values));
        assert_eq!(maxima[0], f32::NEG_INFINITY, "{isa}: fully masked row");
        let others = values[lanes..2 * lanes].iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        assert!(maxima[1].is_nan() || maxima[1] == others, "{isa}: NaN row gave {}", maxima[1]);
        assert!(sums[1].is_nan(), "{isa}: the sum must carry the NaN");
        values = (0..64).map(|i| (i % 7) as f32 - 3.0).collect();
    }
}

/// Stores every vector of `values` with `store_f32s`, or (`pairs`) two at a time with
/// `store2_f32s` and any odd last one with `store_f32s` (the tail is left at zero).
#[derive(Clone)]
struct StoreAll<'a, E> {
    values: &'a [f32],
    pairs: bool,
    dtype: std::marker::PhantomData<E>,
}

impl<E: StoreF32> WithSimd for StoreAll<'_, E> {
    type Output = Vec<E>;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<E> {
        let vectors = S::as_simd_f32s(self.values).0;
        let mut out = vec![E::from_f32(0.0); vectors.len() * S::F32_LANES];
        let singles_from = if self.pairs { vectors.len() / 2 * 2 } else { 0 };
        for pair in 0..singles_from / 2 {
            E::store2_f32s(simd, [vectors[2 * pair], vectors[2 * pair + 1]], &mut out, pair);
        }
        for (i, &v) in vectors.iter().enumerate().skip(singles_from) {
            E::store_f32s(simd, v, &mut out, i);
        }
        out
    }
}

fn check_stores<E: StoreF32>(values: &[f32], bits: impl Fn(E) -> u16) {
    for pairs in [false, true] {
        for (isa, got) in backends(StoreAll::<E> { values, pairs, dtype: std::marker::PhantomData }) {
            assert!(got.len() + 16 > values.len(), "{isa}: only {} of {} stored", got.len(), values.len());
            for (i, (&g, &v)) in got.iter().zip(values).enumerate() {
                let want = E::from_f32(v);
                assert_eq!(bits(g), bits(want), "{isa}, pairs {pairs}: element {i} ({v:e}, bits {:#x})", v.to_bits());
            }
        }
    }
}

#[test]
fn narrowing_stores_round_like_half() {
    // Every 16-bit value widened, and its neighbours around both formats' half-way points.
    let mut probes = Vec::new();
    for h in 0..=u16::MAX {
        let b = u32::from(h) << 16;
        let f = f16::from_bits(h).to_f32().to_bits();
        for delta in [0u32, 1, 0x7fff, 0x8000, 0x8001] {
            probes.push(f32::from_bits(b.wrapping_add(delta)));
        }
        for delta in [0u32, 1, 0xfff, 0x1000, 0x1001] {
            probes.push(f32::from_bits(f.wrapping_add(delta)));
            probes.push(f32::from_bits(f.wrapping_sub(delta)));
        }
    }
    let mut rng = Rng::new(3);
    probes.extend((0..4096).map(|_| f32::from_bits(rng.next_u64() as u32)));
    check_stores::<bf16>(&probes, |x| x.to_bits());
    check_stores::<f16>(&probes, |x| x.to_bits());
}

#[test]
fn blocked_transpose_matches_element_by_element() {
    let mut rng = Rng::new(13);
    for (rows, cols) in [(1, 1), (8, 8), (16, 16), (17, 33), (64, 32), (24, 40), (5, 48), (48, 5), (31, 17), (9, 15)] {
        let (ld_src, ld_dst) = (cols + 3, rows + 5);
        let src: Vec<f32> = (0..rows * ld_src).map(|_| rng.uniform(-1.0, 1.0)).collect();
        for isa in runnable_isas() {
            let mut dst = vec![f32::NAN; cols * ld_dst];
            transpose(isa, &src, ld_src, (rows, cols), &mut dst, ld_dst);
            for c in 0..cols {
                for r in 0..rows {
                    assert_eq!(dst[c * ld_dst + r], src[r * ld_src + c], "{isa}: {rows}x{cols} at ({r}, {c})");
                }
                // Padding columns of the destination are left alone.
                assert!(dst[c * ld_dst + rows..][..ld_dst - rows].iter().all(|x| x.is_nan()), "{isa}: wrote padding");
            }
        }
    }
}
