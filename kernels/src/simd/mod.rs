//! The raw-SIMD layer: ISA dispatch onto pulp's generic `Simd`, 16-bit conversions,
//! a vectorised `exp`, and the small helpers kernels share.
//!
//! Kernel bodies are written once against [`pulp::Simd`] (a `WithSimd` impl) and run under
//! [`vectorize`], which picks pulp's AVX-512 (`V4`), AVX2 (`V3`) or scalar backend for the
//! level the kernel chose. Instructions pulp lacks (f16/bf16 conversion, `vdpbf16ps`) live in
//! small `#[target_feature]` functions beside the generic code they accelerate.

pub mod convert;
pub mod exp;
pub mod load;
pub mod prefetch;
pub mod reduce;
pub mod store;
pub mod transpose;

use crate::isa::{Isa, detected_isa};
use pulp::{Simd, WithSimd};

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
                    return Simd::vectorize(simd, op);
                }
            }
            Isa::Scalar => {}
        }
    }
    Simd::vectorize(pulp::Scalar::new(), op)
}
