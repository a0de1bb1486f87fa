//! Test support shared by the unit tests, the integration tests, the benches and the fuzz
//! targets: deterministic random data, NaN-filled outputs, the tolerance model, a comparison
//! that reports the worst element, and a runner that executes a check under every ISA level
//! the machine supports and asserts the kernel really ran that level.

use crate::dtype::{DType, Element};
use crate::isa::{Isa, runnable_isas, take_last_dispatch, with_max_isa};

/// Sizes that straddle every vector width and tile edge (plus a few hundred).
pub const AWKWARD_SIZES: &[usize] = &[1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 300];

/// A small deterministic generator (SplitMix64): tests and fuzzers derive data from a seed
/// so a failure reproduces from the seed alone.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` values uniform in `[lo, hi)`, rounded to `T`.
    pub fn vec<T: Element>(&mut self, n: usize, lo: f32, hi: f32) -> Vec<T> {
        (0..n).map(|_| T::from_f32(self.uniform(lo, hi))).collect()
    }
}

pub use crate::tensor::Buffer;

impl Buffer {
    /// `n` values uniform in `[lo, hi)`, rounded to `dtype`.
    pub fn random(dtype: DType, n: usize, rng: &mut Rng, lo: f32, hi: f32) -> Buffer {
        match dtype {
            DType::F32 => Buffer::F32(rng.vec(n, lo, hi)),
            DType::F16 => Buffer::F16(rng.vec(n, lo, hi)),
            DType::BF16 => Buffer::BF16(rng.vec(n, lo, hi)),
        }
    }
}

/// `n` NaNs: fill outputs with this so any element a kernel forgets to write fails the test.
pub fn nan_vec<T: Element>(n: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); n]
}

/// Widens a slice to f32.
pub fn to_f32<T: Element>(values: &[T]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

/// Runs `check` once for every ISA level this machine runs, with the level capped on this
/// thread, and asserts that the kernel the check called recorded `level.min(top)` — the
/// highest level it has code for being `top`. A path that silently fell back fails the test.
///
/// Levels this CPU lacks cannot run; the first call in a process says which on stderr (shown
/// by `cargo test -- --nocapture`), so a run on a smaller machine is visibly partial.
pub fn on_every_isa(top: Isa, mut check: impl FnMut(Isa)) {
    static REPORT_SKIPPED: std::sync::Once = std::sync::Once::new();
    REPORT_SKIPPED.call_once(|| {
        let runnable = runnable_isas();
        let skipped: Vec<String> =
            Isa::ALL.iter().filter(|level| !runnable.contains(level)).map(|level| level.to_string()).collect();
        if !skipped.is_empty() {
            eprintln!("note: this CPU cannot run ISA levels {}; their kernels go untested here", skipped.join(", "));
        }
    });
    for level in runnable_isas() {
        take_last_dispatch();
        with_max_isa(level, || check(level));
        let ran = take_last_dispatch();
        assert_eq!(ran, Some(level.min(top)), "asked for ISA {level}, the kernel recorded {ran:?}");
    }
}

/// An element-wise bound `|got − want| ≤ abs·scale + rel·|want|`.
///
/// `scale` is the magnitude the computation's rounding errors are proportional to (for a dot
/// product `Σ|aᵢ·bᵢ|`, for a norm `|γ|`), supplied per element by the test; `rel` covers the
/// final rounding to the output dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Multiplies the per-element error scale.
    pub abs: f64,
    /// Multiplies `|want|`.
    pub rel: f64,
}

impl Tolerance {
    /// f32 accumulation over `terms` terms against an f64 reference, then rounding to `output`.
    ///
    /// Blocked/vectorised summation has error ≲ `c·log₂(terms)·u` in practice and `terms·u`
    /// at worst (u = 2⁻²⁴); we allow `4·√terms·u` plus a few ulps, which has margin over what the
    /// kernels do and still catches any wrong term (an error of one term is ≈ 1/terms of scale).
    /// `inputs` is the coarsest input dtype: inputs are exact in it, so it adds nothing here.
    pub fn accumulation(terms: usize, output: DType) -> Tolerance {
        let u32 = f64::from(f32::EPSILON) / 2.0;
        Tolerance { abs: 8.0 * u32 + 4.0 * (terms.max(1) as f64).sqrt() * u32, rel: 2.0 * output.unit_roundoff() }
    }
}

/// Compares `got` with the reference `want` element-wise under `tol`, `scale[i]` (or 1) being
/// element `i`'s error scale. NaN must match NaN and infinities must match exactly. Returns a
/// report of the worst offender and the failure count.
pub fn compare(got: &[f32], want: &[f32], scale: Option<&[f64]>, tol: Tolerance) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length differs: got {}, want {}", got.len(), want.len()));
    }
    let mut failures = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            let s = scale.map_or(1.0, |s| s[i]);
            let bound = tol.abs * s + tol.rel * f64::from(w).abs();
            let err = (f64::from(g) - f64::from(w)).abs();
            if worst.is_none_or(|(_, e)| err / bound.max(f64::MIN_POSITIVE) > e) {
                worst = Some((i, err / bound.max(f64::MIN_POSITIVE)));
            }
            err <= bound
        };
        if !ok {
            failures += 1;
            if failures == 1 {
                worst = Some((i, f64::INFINITY));
            }
        }
    }
    if failures == 0 {
        return Ok(());
    }
    let (i, ratio) = worst.unwrap_or((0, 0.0));
    Err(format!(
        "{failures} of {} elements out of tolerance {tol:?}; first/worst at {i}: got {}, want {} (error/bound {ratio:.2}, scale {:?})",
        got.len(),
        got[i],
        want[i],
        scale.map(|s| s[i])
    ))
}

/// [`compare`] that panics with the report, prefixed by `what`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], scale: Option<&[f64]>, tol: Tolerance) {
    if let Err(report) = compare(got, want, scale, tol) {
        panic!("{what}: {report}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_catches_nan_mismatch_and_large_errors() {
        let tol = Tolerance { abs: 1e-6, rel: 0.0 };
        assert!(compare(&[1.0, f32::NAN], &[1.0, f32::NAN], None, tol).is_ok());
        assert!(compare(&[1.0, 0.0], &[1.0, f32::NAN], None, tol).is_err());
        assert!(compare(&[1.1], &[1.0], None, tol).unwrap_err().contains("got 1.1"));
        assert!(compare(&[f32::INFINITY], &[f32::NEG_INFINITY], None, tol).is_err());
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let a: Vec<f32> = Rng::new(7).vec(100, -2.0, 3.0);
        assert_eq!(a, Rng::new(7).vec::<f32>(100, -2.0, 3.0));
        assert!(a.iter().all(|x| (-2.0..3.0).contains(x)));
    }
}
