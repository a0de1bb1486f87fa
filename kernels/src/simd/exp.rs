//! A vectorised f32 `exp`, written once against [`pulp::Simd`] (used by the attention softmax).
//!
//! Method: `exp(x) = 2ⁿ · exp(r)` with `n = round(x·log₂e)` (by the 1.5·2²³ "magic" addition),
//! `r = x − n·ln2` in two Cody–Waite parts (the high part has 9 significant bits, so `n·ln2_hi` is
//! exact), `exp(r)` by a degree-5 polynomial `1 + r + c₂r² + … + c₅r⁵` on `|r| ≤ ln2/2` (fitted
//! for minimax relative error, 1.05·10⁻⁷ in exact arithmetic, 1.7·10⁻⁷ with f32 Horner), and `2ⁿ`
//! built from the exponent bits (at AVX-512, applied by `vscalefps` instead: the same values).
//!
//! ## Accuracy and range (tested over the whole f32 line in `kernels/tests/attention.rs`)
//! - For `x` in [[`EXP_UNDERFLOW`], [`EXP_OVERFLOW`]] the relative error is at most
//!   [`EXP_MAX_REL_ERROR`] (3 ulp of 1.0, 3.6·10⁻⁷) on every ISA level; measured 1.45 ulp with FMA
//!   (AVX2/AVX-512), 1.61 ulp on the scalar level (separate multiply and add).
//! - `x < EXP_UNDERFLOW` (≈ −87.34, where `eˣ` drops below the smallest normal f32 1.18·10⁻³⁸)
//!   gives `+0`, and so does `−∞`: the absolute error is below 1.2·10⁻³⁸ (subnormals are flushed).
//! - `x > EXP_OVERFLOW` (≈ 88.38) gives `+∞`, and so does `+∞`: the last 0.35 of the finite range
//!   (values 2.4·10³⁸ … f32::MAX) saturates early. The softmax only evaluates `x ≤ 0`.
//! - NaN gives NaN.

use crate::isa::Isa;
use pulp::{Simd, WithSimd};

/// Below this argument `exp` returns `+0` (it is `ln` of the smallest normal f32, −126·ln 2).
pub const EXP_UNDERFLOW: f32 = -87.336_54;
/// Above this argument `exp` returns `+∞` (127.5·ln 2: the largest `x` whose `n` is 127).
pub const EXP_OVERFLOW: f32 = 88.376_26;
/// The documented bound on the relative error in [`EXP_UNDERFLOW`, `EXP_OVERFLOW`]: 3 ulp of 1.0.
pub const EXP_MAX_REL_ERROR: f32 = 3.0 * f32::EPSILON;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2²³: adding it rounds a float of magnitude < 2²² to an integer held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// c₅ down to c₂ of the polynomial (a relative-error minimax fit, rounded to f32).
const POLY: [f32; 4] = [0.008_312_506, 0.041_890_096, 0.166_671_14, 0.499_992_3];

/// `exp` of every lane (see the module docs for accuracy and the saturating range).
#[inline(always)]
pub fn exp_f32s<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let y = exp_no_overflow_f32s(simd, x);
    simd.select_f32s(simd.greater_than_f32s(x, simd.splat_f32s(EXP_OVERFLOW)), simd.splat_f32s(f32::INFINITY), y)
}

/// [`exp_f32s`] for arguments `x ≤ EXP_OVERFLOW` (and −∞, NaN): two instructions cheaper; larger
/// arguments give unspecified finite or infinite values. The softmax only has arguments ≤ 0.
#[inline(always)]
pub fn exp_no_overflow_f32s<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let magic = simd.splat_f32s(MAGIC);
    // k = magic + round(x·log2e); out-of-range lanes compute garbage that the selects below replace.
    let k = simd.mul_add_e_f32s(x, simd.splat_f32s(LOG2_E), magic);
    let n = simd.sub_f32s(k, magic);
    let r = simd.negate_mul_add_e_f32s(n, simd.splat_f32s(LN2_HI), x);
    let r = simd.negate_mul_add_e_f32s(n, simd.splat_f32s(LN2_LO), r);
    let mut p = simd.splat_f32s(POLY[0]);
    for c in &POLY[1..] {
        p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(*c));
    }
    p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(1.0));
    p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(1.0));
    #[cfg(target_arch = "x86_64")]
    if super::native::<S>() == super::Native::Avx512 {
        use pulp::bytemuck::cast;
        // SAFETY: a `V4` token exists only where AVX-512 F was detected.
        return cast(unsafe { x86::scale_by_exp2(cast(p), cast(n), cast(x)) });
    }
    // The low bits of k hold n (two's complement, offset by the magic's own mantissa bit 22, which
    // the shift discards): (k_bits << 23) + (127 << 23) are the bits of 2ⁿ for n in [−126, 127].
    let k_bits = simd.transmute_u32s_f32s(k);
    let scale_bits = simd.add_u32s(simd.wrapping_dyn_shl_u32s(k_bits, simd.splat_u32s(23)), simd.splat_u32s(127 << 23));
    let y = simd.mul_f32s(p, simd.transmute_f32s_u32s(scale_bits));
    simd.select_f32s(simd.less_than_f32s(x, simd.splat_f32s(EXP_UNDERFLOW)), simd.splat_f32s(0.0), y)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::EXP_UNDERFLOW;
    use pulp::f32x16;
    use std::arch::x86_64::*;

    /// `p·2ⁿ`, and `+0` where `x < EXP_UNDERFLOW` (NaN `x` keeps its NaN `p`), by `vscalefps`
    /// under the compare's zeroing mask: two instructions where building `2ⁿ` from its bits and
    /// selecting takes five. The same values: both round the exact product once.
    #[target_feature(enable = "avx512f")]
    pub(super) fn scale_by_exp2(p: f32x16, n: f32x16, x: f32x16) -> f32x16 {
        // SAFETY: f32x16 and __m512 are both 16 packed f32.
        let as_m512 = |v: f32x16| unsafe { core::mem::transmute::<f32x16, __m512>(v) };
        let (p, n, x) = (as_m512(p), as_m512(n), as_m512(x));
        // Not-less-than, unordered: true for NaN, so a NaN argument stays NaN.
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(EXP_UNDERFLOW));
        let y = _mm512_maskz_scalef_ps(keep, p, n);
        // SAFETY: as above.
        unsafe { core::mem::transmute::<__m512, f32x16>(y) }
    }
}

/// Replaces every value by its `exp` ([`exp_f32s`], or [`exp_no_overflow_f32s`] — the softmax's
/// variant — with `no_overflow`) at level `isa`.
pub fn exp_in_place_with(isa: Isa, values: &mut [f32], no_overflow: bool) {
    struct Op<'a>(&'a mut [f32], bool);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let f = |x| if self.1 { exp_no_overflow_f32s(simd, x) } else { exp_f32s(simd, x) };
            let (head, tail) = S::as_mut_simd_f32s(self.0);
            for v in head {
                *v = f(*v);
            }
            if !tail.is_empty() {
                let v = f(simd.partial_load_f32s(tail));
                simd.partial_store_f32s(tail, v);
            }
        }
    }
    crate::simd::vectorize(isa, Op(values, no_overflow));
}
