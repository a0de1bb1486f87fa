//! Matrix multiplication in the linear-layer layout:
//! `C[M,N] = act(α·A[M,K]·B[N,K]ᵀ + β·C + bias[N])`.
//!
//! B is a logical `[N, K]` view with any strides, so nn.Linear weights (`[N,K]` row-major,
//! strides `[K, 1]`) and Conv1D / plain `A·B` weights (`[K,N]` row-major, viewed as `[N,K]` with
//! strides `[1, N]`) both work without copies.
//!
//! ## Paths
//! - **Blocked** (BLIS-style, `driver`): B packed into 64-column panels ([`PackedMatrix`], or
//!   per call), A into 6-row panels, a 6 × 64 f32 FMA register tile on AVX-512 (4 × 64 over bf16
//!   panels; 1 × 64 on AVX2, scalar fallback), 16-bit panels widened in registers, K blocks of
//!   96 accumulated in an f32 scratch tile, then the fused
//!   epilogue (α, β, bias, vectorised GELU) and one rounding into C.
//! - **bf16 × bf16** on AVX512_BF16 CPUs: the same driver with a `vdpbf16ps` tile (twice the
//!   f32 FMA rate on Zen 4, 1.85× on Zen 5). Used only when A itself is bf16; f32 activations are never rounded.
//! - **Skinny** (M ≤ 4, unpacked K-contiguous weights, `gemv`): streams each weight row once,
//!   no packing. Prepacked skinny calls run the blocked driver with one row tile.
//!
//! ## Threading and determinism
//! A grid of C tiles (set by M, N, K; for M ≤ 16 also by whether the pool has several
//! threads) is spread over the caller's rayon pool; no split-K, and each element is summed in
//! the same order in any tile, so any thread count gives the same bits. Problems under ~4 MFLOP (skinny: 64 Ki
//! weights) run on the calling thread. Different paths (skinny vs blocked, `vdpbf16ps` vs f32
//! FMA, ISA levels) sum in different orders and agree within the accumulation tolerance.

mod activation;
#[allow(unsafe_code)]
mod driver;
mod gemv;
#[allow(unsafe_code)]
mod kernel;
mod pack;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::simd::aligned::AlignedVec;
use crate::tensor::{View, ViewMut};

/// The elementwise function applied after bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `x·Φ(x)` with the exact error function (BERT).
    GeluErf,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (GPT-2's `gelu_new`).
    GeluTanh,
}

/// Scalars and epilogue of a matmul.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulParams {
    /// Multiplies `A·Bᵀ`.
    pub alpha: f32,
    /// Multiplies the old `C`; when exactly 0, `C` is never read (it may hold NaN).
    pub beta: f32,
    /// Applied last, after bias.
    pub activation: Activation,
}

impl Default for MatmulParams {
    fn default() -> Self {
        MatmulParams { alpha: 1.0, beta: 0.0, activation: Activation::None }
    }
}

/// The problem size of a validated matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Rows of A and C.
    pub m: usize,
    /// Rows of B (columns of C).
    pub n: usize,
    /// The reduction length.
    pub k: usize,
}

/// Packing copies every logical element of an operand, so an operand may not present more
/// elements than its buffer holds: a stride-0 broadcast over a huge `k` would ask for an
/// allocation of any size (and abort when it fails). Views of distinct elements always pass.
fn require_packable(arg: &'static str, view: &View) -> Result<()> {
    let logical = view.shape().iter().try_fold(1usize, |total, &extent| total.checked_mul(extent));
    match logical {
        Some(elements) if elements <= view.data().len() => Ok(()),
        _ => Err(Error::view(
            arg,
            format!(
                "shape {:?} with strides {:?} repeats elements of its {}-element buffer beyond its size; \
                 matmul packs its operands, so materialise such a broadcast first",
                view.shape(),
                view.strides(),
                view.data().len()
            ),
        )),
    }
}

/// Checks ranks and shapes of a matmul's arguments and returns its dimensions.
pub fn check_shapes(a: &View, b: &View, bias: Option<&View>, c: &ViewMut) -> Result<MatmulDims> {
    a.layout().require_rank("a", 2)?;
    b.layout().require_rank("b", 2)?;
    c.layout().require_rank("c", 2)?;
    require_packable("a", a)?;
    require_packable("b", b)?;
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let n = b.shape()[0];
    if b.shape()[1] != k {
        return Err(Error::shape("b", [n, k], b.shape()));
    }
    if c.shape() != [m, n] {
        return Err(Error::shape("c", [m, n], c.shape()));
    }
    if let Some(bias) = bias
        && bias.shape() != [n]
    {
        return Err(Error::shape("bias", [n], bias.shape()));
    }
    Ok(MatmulDims { m, n, k })
}

/// `C = act(α·A·Bᵀ + β·C + bias)`; see the module docs.
///
/// A `[M,K]`, B `[N,K]` (any strides; `[K,N]` storage is strides `[1,N]`), bias `[N]`, C `[M,N]`
/// (any exclusive strides); each f32, f16 or bf16. Products are accumulated in f32 (16-bit
/// inputs widened exactly), the epilogue runs in f32 and C is rounded once. β = 0 never reads C.
/// NaN/Inf propagate to the outputs they touch. Runs on the caller's rayon pool over a fixed
/// tile grid (bit-identical for any thread count); small problems stay on the calling thread.
/// B is packed per call: for weights used more than once, [`PackedMatrix::pack`] them once and
/// call [`matmul_packed`].
pub fn matmul(a: &View, b: &View, bias: Option<&View>, c: &mut ViewMut, params: &MatmulParams) -> Result<()> {
    let dims = check_shapes(a, b, bias, c)?;
    let isa = crate::isa::effective_isa();
    if dims.m <= gemv::MAX_ROWS && (b.strides()[1] == 1 || dims.k == 1) && dims.n > 0 && dims.k > 0 {
        let run = isa.min(Isa::Avx512).min(crate::isa::detected_isa());
        crate::isa::record_dispatch(run);
        let a_rows = pack::widen_rows(a, run);
        let skinny = gemv::Skinny { m: dims.m, n: dims.n, k: dims.k, a: &a_rows, b, bias, params: *params, isa: run };
        if dims.m > 0 {
            skinny.run(&c.shared());
        }
        return Ok(());
    }
    match b.data() {
        crate::Data::BF16(src) if dot_bf16(isa, a) => {
            let pairs = pack::pack_b_bf16_pairs(b, src);
            let panels = BPanels::Packed(driver::PanelsRef::BF16(&pairs));
            pack::with_per_call_buffers(|_, a_buf| run_packed(a, panels, bias, c, params, dims, isa, a_buf))
        }
        _ => pack::with_per_call_buffers(|b_buf, a_buf| {
            run_packed(a, BPanels::PerCall { b, buf: b_buf }, bias, c, params, dims, isa, a_buf)
        }),
    }
}

/// Packed B panels beyond this size are packed one group of task columns at a time (see
/// [`BPanels::PerCall`]).
const GROUPED_PACK_BYTES: usize = 4 << 20;

/// The B panels a call runs on.
enum BPanels<'b> {
    /// Packed already: prepacked weights, or bf16 pairs packed for this call.
    Packed(driver::PanelsRef<'b>),
    /// f32 panels of `b`, packed for this call into `buf`: all at once or, when they exceed
    /// [`GROUPED_PACK_BYTES`], two columns of tasks at a time, each group used while it is in
    /// cache. Packing everything first writes the panels out to DRAM and reads them back
    /// (9.4 MB each way for GPT-2's FFN-up weights). The tasks are the same either way.
    PerCall { b: &'b View<'b>, buf: &'b mut AlignedVec },
}

/// Weights `B[N, K]` packed once (at model load) for repeated [`matmul_packed`] calls.
///
/// Layout: `⌈N/64⌉` panels of 64 columns (the N tail zero-padded), stored in f32 (`[K][64]`,
/// 64-byte aligned), f16 (`[K][64]`) or bf16 (`[⌈K/2⌉][64][2]`: k pairs interleaved, the
/// `vdpbf16ps` operand layout). 16-bit panels take half the bytes and are widened to f32
/// exactly, in registers. The layout is the same for every ISA
/// level, so one packed matrix serves any later cap. Immutable and `Sync`: share it across
/// threads.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    panels: Panels,
    n: usize,
    k: usize,
}

#[derive(Clone, Debug)]
enum Panels {
    F32(AlignedVec),
    BF16(Vec<crate::bf16>),
    F16(Vec<crate::f16>),
}

impl PackedMatrix {
    /// Packs a logical `[N, K]` view (any strides, any dtype), keeping 16-bit weights in their
    /// own type (see [`PackedMatrix::pack_as`]).
    pub fn pack(b: &View) -> Result<PackedMatrix> {
        Self::pack_as(b, b.dtype())
    }

    /// Packs `b` with panels stored as `storage`: `DType::F32` widens 16-bit weights once, at
    /// pack time (twice the memory, no per-call widening); a 16-bit `storage` must equal `b`'s
    /// dtype (no rounding happens here). Measured on Zen 4 with f32 activations, 1 thread:
    /// 16-bit panels (widened in registers by the micro-kernel) run the compute-bound shapes
    /// as fast as f32 panels or up to 10 % faster, and GEMV ~3.3× faster (half the bytes).
    /// bf16 panels with bf16 activations use `vdpbf16ps` where the CPU has it.
    pub fn pack_as(b: &View, storage: DType) -> Result<PackedMatrix> {
        b.layout().require_rank("b", 2)?;
        require_packable("b", b)?;
        let (n, k) = (b.shape()[0], b.shape()[1]);
        let panels = match (storage, b.data()) {
            (DType::F32, _) => Panels::F32(pack::pack_b(b, crate::isa::effective_isa())),
            (DType::BF16, crate::Data::BF16(src)) => Panels::BF16(pack::pack_b_bf16_pairs(b, src)),
            (DType::F16, crate::Data::F16(src)) => Panels::F16(pack::pack_b_16(b, src)),
            (storage, _) => {
                return Err(Error::invalid(
                    "storage",
                    format!("cannot store {} weights as {storage}: 16-bit storage must match the weights", b.dtype()),
                ));
            }
        };
        Ok(PackedMatrix { panels, n, k })
    }

    /// Rows of B (output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of B (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The dtype the panels are stored in.
    pub fn storage(&self) -> DType {
        match self.panels {
            Panels::F32(_) => DType::F32,
            Panels::BF16(_) => DType::BF16,
            Panels::F16(_) => DType::F16,
        }
    }
}

/// [`matmul`] with prepacked weights (`b` is the packed logical `[N, K]` matrix).
pub fn matmul_packed(
    a: &View,
    b: &PackedMatrix,
    bias: Option<&View>,
    c: &mut ViewMut,
    params: &MatmulParams,
) -> Result<()> {
    a.layout().require_rank("a", 2)?;
    c.layout().require_rank("c", 2)?;
    require_packable("a", a)?;
    let (m, k) = (a.shape()[0], a.shape()[1]);
    if b.k != k {
        return Err(Error::shape("b", [b.n, k], [b.n, b.k]));
    }
    if c.shape() != [m, b.n] {
        return Err(Error::shape("c", [m, b.n], c.shape()));
    }
    if let Some(bias) = bias {
        bias.layout().require_rank("bias", 1)?;
        if bias.shape() != [b.n] {
            return Err(Error::shape("bias", [b.n], bias.shape()));
        }
    }
    let isa = crate::isa::effective_isa();
    let panels = match &b.panels {
        Panels::F32(buf) => driver::PanelsRef::F32(buf),
        Panels::BF16(buf) => driver::PanelsRef::BF16(buf),
        Panels::F16(buf) => driver::PanelsRef::F16(buf),
    };
    let dims = MatmulDims { m, n: b.n, k };
    pack::with_per_call_buffers(|_, a_buf| run_packed(a, BPanels::Packed(panels), bias, c, params, dims, isa, a_buf))
}

/// Packs A into `a_buf` (this thread's per-call buffer) and runs the blocked driver over the
/// B panels `b`.
#[allow(clippy::too_many_arguments)]
fn run_packed(
    a: &View,
    b: BPanels,
    bias: Option<&View>,
    c: &mut ViewMut,
    params: &MatmulParams,
    dims: MatmulDims,
    isa: Isa,
    a_buf: &mut AlignedVec,
) -> Result<()> {
    let bf16_panels = matches!(b, BPanels::Packed(driver::PanelsRef::BF16(_)));
    let dot = bf16_panels && dot_bf16(isa, a);
    let run = if dot { Isa::Avx512Bf16 } else { isa.min(Isa::Avx512).min(crate::isa::detected_isa()) };
    crate::isa::record_dispatch(run);
    let lanes = match run {
        Isa::Avx512 | Isa::Avx512Bf16 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 1,
    };
    // bf16 pair panels widened in registers need room for a pair's 8 vectors: 4-row tiles
    // (16 accumulators) instead of 6 (24).
    let pairs = bf16_panels && !dot;
    let mr = if pairs && lanes == 16 { kernel::PAIRS_MR } else { kernel::mr_for_lanes(lanes) };
    let parallel = dims.m.saturating_mul(dims.n).saturating_mul(dims.k) >= 1 << 21;
    let a_pairs = match a.data() {
        crate::Data::BF16(src) if dot => pack::pack_a_bf16_pairs(a, src, mr),
        _ => {
            pack::pack_a_into(a, mr, run, parallel, a_buf);
            Vec::new()
        }
    };
    let problem = driver::Problem {
        m: dims.m,
        n: dims.n,
        k: dims.k,
        mr,
        a: if dot { &[] } else { a_buf },
        b: driver::PanelsRef::F32(&[]),
        panel0: 0,
        bias,
        params: *params,
        isa: run,
        a_pairs: dot.then_some(&a_pairs[..]),
    };
    let out = c.shared();
    match b {
        BPanels::Packed(b) => driver::Problem { b, ..problem }.run(&out),
        BPanels::PerCall { b, buf } => {
            let panels = dims.n.div_ceil(kernel::NR);
            let bytes = panels * dims.k * kernel::NR * std::mem::size_of::<f32>();
            let group = if bytes > GROUPED_PACK_BYTES { 2 * problem.task_panels() } else { panels.max(1) };
            for g0 in (0..panels).step_by(group) {
                let group = g0..(g0 + group).min(panels);
                pack::pack_b_into(b, isa, group.clone(), buf);
                driver::Problem { b: driver::PanelsRef::F32(buf), panel0: g0, ..problem }.run_panels(&out, group);
            }
        }
    }
    Ok(())
}

/// Whether the `vdpbf16ps` kernel runs: bf16 activations (never rounded to get here) on a CPU
/// with AVX512_BF16, the level not capped below it, where that kernel is the faster one
/// ([`crate::isa::bf16_dot_enabled`]).
fn dot_bf16(isa: Isa, a: &View) -> bool {
    isa.min(crate::isa::detected_isa()) >= Isa::Avx512Bf16 && a.dtype() == DType::BF16 && crate::isa::bf16_dot_enabled()
}
