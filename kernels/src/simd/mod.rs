//! The raw-SIMD layer: ISA dispatch onto pulp's generic `Simd`, 16-bit conversions,
//! a vectorised `exp`, and the small helpers kernels share.
//!
//! Kernel bodies are written once against [`pulp::Simd`] (a `WithSimd` impl) and run under
//! [`vectorize`], which picks pulp's AVX-512 (`V4`), AVX2 (`V3`) or scalar backend for the
//! level the kernel chose. Instructions pulp lacks (f16/bf16 conversion, `vdpbf16ps`) live in
//! small `#[target_feature]` functions beside the generic code they accelerate.

pub mod aligned;
pub mod convert;
pub mod exp;
pub mod load;
pub mod prefetch;
pub mod reduce;
pub mod store;
pub mod transpose;

use crate::isa::{Isa, detected_isa};
use pulp::{Simd, WithSimd};

/// The `#[target_feature]` paths a generic body may take under the backend `S`, as proven by
/// its token type: pulp's `V4` token exists only where AVX-512 F/BW/CD/DQ/VL were detected,
/// `V3` only where AVX2 and FMA were. The lane count alone proves nothing (pulp's `V3_512b`
/// has 16 lanes on AVX2), so other backends take the portable path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Native {
    /// `S` is `V4`.
    Avx512,
    /// `S` is `V3`.
    Avx2,
    /// Anything else: no target-feature code.
    Portable,
}

/// [`Native`] of `S` (a compile-time constant after monomorphisation).
#[inline(always)]
pub(crate) fn native<S: Simd>() -> Native {
    #[cfg(target_arch = "x86_64")]
    {
        use core::any::TypeId;
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V4>() {
            return Native::Avx512;
        }
        if TypeId::of::<S>() == TypeId::of::<pulp::x86::V3>() {
            return Native::Avx2;
        }
    }
    Native::Portable
}

/// Whether F16C may be used beside a `V3` token (which does not imply it): our AVX2 level
/// requires it, so this is the cached detection, not a per-call CPUID.
#[inline(always)]
pub(crate) fn f16c_detected() -> bool {
    detected_isa() >= Isa::Avx2
}

/// Runs `op` with the SIMD backend for `isa` (clamped to what this CPU has, so asking for
/// more than the machine runs is safe and simply gets less).
#[inline]
pub fn vectorize<Op: WithSimd>(isa: Isa, op: Op) -> Op::Output {
    let isa = isa.min(detected_isa());
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::x86::{V3, V4};
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => {
                if let Some(simd) = V4::try_new() {
                    return Simd::vectorize(simd, op);
                }
            }
            Isa::Avx2 => {
                if let Some(simd) = V3::try_new() {
                    // SAFETY: our AVX2 level (`isa` is clamped to the detected one) requires
                    // F16C beside the AVX2/FMA/BMI features the `V3` token proves.
                    return unsafe { with_v3_and_f16c(simd, op) };
                }
            }
            Isa::Scalar => {}
        }
    }
    Simd::vectorize(pulp::Scalar::new(), op)
}

/// `op` under `V3`, compiled with F16C as well. pulp's own `V3` entry point leaves F16C out, so
/// the f16 conversions in [`load`] and [`store`] (which need it) would not inline into the body
/// and every 8-lane f16 load or store would become a call; here they inline.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,f16c")]
fn with_v3_and_f16c<Op: WithSimd>(simd: pulp::x86::V3, op: Op) -> Op::Output {
    op.with_simd(simd)
}
