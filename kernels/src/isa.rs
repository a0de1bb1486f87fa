//! Instruction-set levels: detected once, capped by `FLASHKERN_MAX_ISA`, [`set_max_isa`] or a
//! scoped per-thread cap, and recorded per kernel call so tests can assert which path ran.
//!
//! A kernel reads [`effective_isa`] once, on the calling thread, at entry, and passes the level
//! down into its worker tasks; a cap therefore applies to whole calls, never half of one.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::LocalKey;

/// An instruction-set level, ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD (the only level on non-x86 targets).
    Scalar = 0,
    /// x86-64-v3 (AVX2, FMA, BMI2, ...) plus F16C.
    Avx2 = 1,
    /// x86-64-v4 (AVX-512 F/BW/CD/DQ/VL).
    Avx512 = 2,
    /// x86-64-v4 plus AVX512_BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`).
    Avx512Bf16 = 3,
}

impl Isa {
    /// Every level, least capable first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16];

    /// The level's name as accepted by [`Isa::parse`] and `FLASHKERN_MAX_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// Parses a level name (case-insensitive; `avx512_bf16` and `avx512-bf16` also accepted).
    pub fn parse(name: &str) -> Result<Isa> {
        let normal = name.trim().to_ascii_lowercase().replace(['_', '-'], "");
        Isa::ALL.into_iter().find(|isa| isa.name() == normal).ok_or_else(|| {
            Error::invalid(
                "isa",
                format!("unknown ISA level {name:?}; expected one of scalar, avx2, avx512, avx512bf16"),
            )
        })
    }

    fn from_u8(v: u8) -> Isa {
        Isa::ALL[usize::from(v.min(3))]
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The most capable level this CPU runs (detected once, then cached).
pub fn detected_isa() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use pulp::x86::{V3, V4};
    let v4 = V4::try_new().is_some();
    let v3 = V3::try_new().is_some() && std::arch::is_x86_feature_detected!("f16c");
    match (v3, v4, std::arch::is_x86_feature_detected!("avx512bf16")) {
        (true, true, true) => Isa::Avx512Bf16,
        (true, true, false) => Isa::Avx512,
        (true, false, _) => Isa::Avx2,
        _ => Isa::Scalar,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// Sentinel for "no cap set yet; read the environment".
const UNSET: u8 = u8::MAX;
static GLOBAL_CAP: AtomicU8 = AtomicU8::new(UNSET);

/// The cap from `FLASHKERN_MAX_ISA`, if set and valid. An invalid value is ignored by the
/// kernels (they cannot fail on it); [`env_cap`] reports it so front ends can.
fn global_cap() -> Isa {
    let cap = GLOBAL_CAP.load(Ordering::Relaxed);
    if cap != UNSET {
        return Isa::from_u8(cap);
    }
    let from_env = env_cap().ok().flatten().unwrap_or(Isa::Avx512Bf16);
    // Another thread may have called set_max_isa meanwhile; its value wins.
    let _ = GLOBAL_CAP.compare_exchange(UNSET, from_env as u8, Ordering::Relaxed, Ordering::Relaxed);
    Isa::from_u8(GLOBAL_CAP.load(Ordering::Relaxed))
}

/// Reads and parses `FLASHKERN_MAX_ISA`: `Ok(None)` when unset, an error naming the bad value.
pub fn env_cap() -> Result<Option<Isa>> {
    match std::env::var("FLASHKERN_MAX_ISA") {
        Ok(value) => Isa::parse(&value).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::invalid("FLASHKERN_MAX_ISA", "the value is not valid UTF-8"))
        }
    }
}

/// Caps the level every later kernel call in this process uses (overrides `FLASHKERN_MAX_ISA`).
/// `None` removes the cap. A cap above [`detected_isa`] has no effect.
pub fn set_max_isa(cap: Option<Isa>) {
    GLOBAL_CAP.store(cap.unwrap_or(Isa::Avx512Bf16) as u8, Ordering::Relaxed);
}

thread_local! {
    static THREAD_CAP: Cell<Isa> = const { Cell::new(Isa::Avx512Bf16) };
    static LAST_DISPATCH: Cell<Option<Isa>> = const { Cell::new(None) };
    static THREAD_BF16_DOT: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `f` with the level capped at `cap` for kernel calls made *from this thread* (the
/// global cap still applies). Tests use it to run each ISA in parallel test threads.
pub fn with_max_isa<R>(cap: Isa, f: impl FnOnce() -> R) -> R {
    with_thread_value(&THREAD_CAP, cap, f)
}

/// Runs `f` with the thread-local `key` set to `value`, restoring the old value afterwards, even
/// when `f` panics (a test's failure must not leak its setting into the next test on the thread).
fn with_thread_value<T: Copy + 'static, R>(key: &'static LocalKey<Cell<T>>, value: T, f: impl FnOnce() -> R) -> R {
    struct Restore<T: Copy + 'static>(&'static LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|c| c.replace(value)));
    f()
}

/// Whether bf16 × bf16 matmuls use the `vdpbf16ps` kernel where the level allows it (otherwise
/// they widen to f32 and use the FMA kernel; the two sum in different orders).
///
/// The default follows the CPU, because the instruction's speed does: AMD Zen 4/5 run it at twice
/// the f32 FMA rate, Intel Sapphire/Emerald Rapids at half (measured: widening is 1.25–1.6× faster
/// there). So it is on for AMD and off elsewhere. `FLASHKERN_BF16_DOT=on|off`, [`set_bf16_dot`]
/// or, for one thread, [`with_bf16_dot`] override it.
pub fn bf16_dot_enabled() -> bool {
    if let Some(on) = THREAD_BF16_DOT.with(Cell::get) {
        return on;
    }
    match GLOBAL_BF16_DOT.load(Ordering::Relaxed) {
        0 => false,
        1 => true,
        _ => {
            let on = env_bf16_dot().ok().flatten().unwrap_or_else(vdpbf16ps_is_fast);
            // Another thread may have called set_bf16_dot meanwhile; its value wins.
            let _ = GLOBAL_BF16_DOT.compare_exchange(UNSET, on as u8, Ordering::Relaxed, Ordering::Relaxed);
            GLOBAL_BF16_DOT.load(Ordering::Relaxed) == 1
        }
    }
}

static GLOBAL_BF16_DOT: AtomicU8 = AtomicU8::new(UNSET);

/// Reads and parses `FLASHKERN_BF16_DOT` (`on`/`off`, also `1`/`0`): `Ok(None)` when unset.
pub fn env_bf16_dot() -> Result<Option<bool>> {
    let bad = |why| Error::invalid("FLASHKERN_BF16_DOT", why);
    match std::env::var("FLASHKERN_BF16_DOT") {
        Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
            "on" | "1" => Ok(Some(true)),
            "off" | "0" => Ok(Some(false)),
            _ => Err(bad("expected on or off")),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(bad("the value is not valid UTF-8")),
    }
}

/// Sets whether later bf16 × bf16 matmuls in this process use `vdpbf16ps` (overrides
/// `FLASHKERN_BF16_DOT`); `None` restores the per-CPU default.
pub fn set_bf16_dot(on: Option<bool>) {
    GLOBAL_BF16_DOT.store(on.map_or_else(|| vdpbf16ps_is_fast() as u8, u8::from), Ordering::Relaxed);
}

/// Runs `f` with the `vdpbf16ps` choice fixed for kernel calls made from this thread. Tests use
/// it to cover both bf16 × bf16 paths on any CPU.
pub fn with_bf16_dot<R>(on: bool, f: impl FnOnce() -> R) -> R {
    with_thread_value(&THREAD_BF16_DOT, Some(on), f)
}

/// The per-CPU default of [`bf16_dot_enabled`]: AMD's cores run `vdpbf16ps` at full rate.
fn vdpbf16ps_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vendor = std::arch::x86_64::__cpuid(0);
        let name = [vendor.ebx, vendor.edx, vendor.ecx].map(u32::to_le_bytes);
        name.concat() == *b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The level a kernel called now, from this thread, runs: the detected level under every cap.
pub fn effective_isa() -> Isa {
    detected_isa().min(global_cap()).min(THREAD_CAP.with(Cell::get))
}

/// Every level this machine can run, least capable first.
pub fn runnable_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|&isa| isa <= detected_isa()).collect()
}

/// Records the level whose code a kernel is about to run (called on the caller's thread).
pub(crate) fn record_dispatch(isa: Isa) {
    LAST_DISPATCH.with(|c| c.set(Some(isa)));
}

/// The level the last kernel called from this thread actually ran, then clears the record.
/// Tests assert on it so an ISA path they meant to cover cannot silently be skipped.
pub fn take_last_dispatch() -> Option<Isa> {
    LAST_DISPATCH.with(Cell::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_dot_choice_is_scoped_to_the_thread_and_restored() {
        let default = bf16_dot_enabled();
        with_bf16_dot(!default, || {
            assert_eq!(bf16_dot_enabled(), !default);
            with_bf16_dot(default, || assert_eq!(bf16_dot_enabled(), default));
            assert_eq!(bf16_dot_enabled(), !default);
            let other = std::thread::spawn(bf16_dot_enabled).join().unwrap();
            assert_eq!(other, default, "another thread keeps the process-wide choice");
        });
        assert_eq!(bf16_dot_enabled(), default);
    }

    #[test]
    fn parse_accepts_every_name_and_rejects_others() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()).unwrap(), isa);
        }
        assert_eq!(Isa::parse("AVX512_BF16").unwrap(), Isa::Avx512Bf16);
        let err = Isa::parse("sse9").unwrap_err().to_string();
        assert!(err.contains("sse9") && err.contains("avx512bf16"), "{err}");
    }

    #[test]
    fn thread_cap_limits_and_restores() {
        let before = effective_isa();
        with_max_isa(Isa::Scalar, || assert_eq!(effective_isa(), Isa::Scalar));
        assert_eq!(effective_isa(), before);
    }
}
