//! The C ABI: `extern "C"` entry points over the kernels, for engines in C, C++ or Python.
//! `include/flashkern.h` is generated from this module by cbindgen (see `cbindgen.toml`).
//!
//! Every entry point validates its descriptors before touching memory (no access outside what
//! a descriptor describes), rejects outputs that overlap any other argument, catches panics
//! (never unwinding into C) and returns an `fk_status`, with the details of a failure in the
//! thread-local `fk_last_error()`.

#![allow(non_camel_case_types)]

mod descriptor;

use descriptor::{Arguments, Failure, read_params};
use flashkern_kernels::attention::{self, AttentionParams, Causal};
use flashkern_kernels::isa::{self, Isa};
use flashkern_kernels::matmul::{self, MatmulParams, PackedMatrix};
use flashkern_kernels::norm::{self, NormInputs, NormKind, NormParams};
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

/// Element type of a tensor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fk_dtype {
    /// IEEE binary32.
    FK_F32 = 0,
    /// IEEE binary16.
    FK_F16 = 1,
    /// bfloat16.
    FK_BF16 = 2,
}

/// Result of every fallible call; details in `fk_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fk_status {
    /// Success.
    FK_OK = 0,
    /// A NULL pointer, negative stride, misaligned data, overlapping output, bad scalar.
    FK_ERR_INVALID_ARGUMENT = 1,
    /// Ranks or extents disagree (including ndim outside 1..=4 and negative extents).
    FK_ERR_SHAPE = 2,
    /// An unknown dtype, or a dtype the argument does not accept.
    FK_ERR_DTYPE = 3,
    /// A valid request this build cannot serve.
    FK_ERR_UNSUPPORTED = 4,
    /// Memory could not be allocated.
    FK_ERR_ALLOC = 5,
    /// A bug in flashkern (a caught panic); please report it with `fk_last_error()`.
    FK_ERR_INTERNAL = 6,
}

/// A strided tensor descriptor. `data` points at element [0,0,..]; `shape` and `strides`
/// (in elements, non-negative) use their first `ndim` entries (1 ≤ ndim ≤ 4). Inputs may use
/// stride 0 to broadcast; outputs must address distinct elements. The caller owns the memory;
/// flashkern only accesses the elements the descriptor addresses, during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fk_tensor {
    /// Element [0, 0, ...]; may be NULL only when the tensor has no elements.
    pub data: *mut c_void,
    /// Element type.
    pub dtype: fk_dtype,
    /// Number of dimensions used, 1 to 4.
    pub ndim: i32,
    /// Extent of each dimension.
    pub shape: [i64; 4],
    /// Stride of each dimension, in elements.
    pub strides: [i64; 4],
}

/// Causal masking and its alignment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fk_causal {
    /// No causal mask.
    FK_CAUSAL_NONE = 0,
    /// Query i sees keys j <= i.
    FK_CAUSAL_TOP_LEFT = 1,
    /// Query i sees keys j <= i + Nkv - Nq (KV-cache decode).
    FK_CAUSAL_BOTTOM_RIGHT = 2,
}

/// Optional settings of `fk_attention`; NULL params mean: default scale, no masks, no LSE.
/// When zero-initialising, set `window_left = -1` (0 is a window of width 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fk_attention_params {
    /// Multiplies q·k; 0 means 1/sqrt(D).
    pub scale: f32,
    /// Causal masking.
    pub causal: fk_causal,
    /// NULL, or `[B]`: batch b attends to keys `j < key_lengths[b]`.
    pub key_lengths: *const i32,
    /// NULL, or f32 [B|1, H|1, Nq, Nkv] added to the scores (stride 0 broadcasts).
    pub additive_mask: *const fk_tensor,
    /// Keys more than this many positions left of the diagonal are masked; < 0: unlimited.
    pub window_left: i32,
    /// Logit soft-cap c (s = c·tanh(s/c)); 0: off.
    pub softcap: f32,
    /// NULL, or f32 [B, Hq, Nq] receiving log-sum-exp of each row's scores.
    pub lse: *mut fk_tensor,
}

/// Weights packed by `fk_pack_weights`; free with `fk_packed_free`. Immutable once packed:
/// one may be used by any number of threads at once.
pub struct fk_packed {
    matrix: PackedMatrix,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// The pool set by `fk_set_num_threads`; `None` means rayon's global pool.
static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

fn set_last_error(message: &str) {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs a kernel call in flashkern's pool when one was set, else in rayon's global pool.
fn in_pool<R: Send>(kernel: impl FnOnce() -> R + Send) -> R {
    let pool = POOL.read().map(|p| p.clone()).unwrap_or(None);
    match pool {
        Some(pool) => pool.install(kernel),
        None => kernel(),
    }
}

/// Runs an entry point's body with panics caught and failures recorded.
fn entry(body: impl FnOnce() -> Result<(), Failure>) -> fk_status {
    let outcome = catch_unwind(AssertUnwindSafe(body));
    match outcome {
        Ok(Ok(())) => fk_status::FK_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (please report): {what}"));
            fk_status::FK_ERR_INTERNAL
        }
    }
}

/// The library version, e.g. "0.1.0". Static storage; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn fk_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A short static description of a status value (s must be one of fk_status).
#[unsafe(no_mangle)]
pub extern "C" fn fk_status_string(s: fk_status) -> *const c_char {
    let text: &'static CStr = match s {
        fk_status::FK_OK => c"ok",
        fk_status::FK_ERR_INVALID_ARGUMENT => c"invalid argument",
        fk_status::FK_ERR_SHAPE => c"shape mismatch",
        fk_status::FK_ERR_DTYPE => c"unsupported or mismatched dtype",
        fk_status::FK_ERR_UNSUPPORTED => c"unsupported",
        fk_status::FK_ERR_ALLOC => c"allocation failed",
        fk_status::FK_ERR_INTERNAL => c"internal error",
    };
    text.as_ptr()
}

/// Details of the last failure on the calling thread ("" if none yet). The string stays
/// valid until the next failing flashkern call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn fk_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The ISA level kernels called now from this thread run: "scalar", "avx2", "avx512" or
/// "avx512bf16". Static storage.
#[unsafe(no_mangle)]
pub extern "C" fn fk_isa() -> *const c_char {
    let name: &'static CStr = match isa::effective_isa() {
        Isa::Scalar => c"scalar",
        Isa::Avx2 => c"avx2",
        Isa::Avx512 => c"avx512",
        Isa::Avx512Bf16 => c"avx512bf16",
    };
    name.as_ptr()
}

/// Caps the ISA level for the whole process ("scalar", "avx2", "avx512", "avx512bf16"); NULL
/// removes the cap. A cap above what the CPU has is allowed and has no effect.
///
/// # Safety
/// `level` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_set_max_isa(level: *const c_char) -> fk_status {
    entry(|| {
        if level.is_null() {
            isa::set_max_isa(None);
            return Ok(());
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(level) };
        let text = text.to_str().map_err(|_| Failure::invalid("level is not valid UTF-8"))?;
        isa::set_max_isa(Some(Isa::parse(text)?));
        Ok(())
    })
}

/// Runs later calls (from any thread) on a pool of `n` threads owned by flashkern; 0 means one
/// per core. Calls already running finish on their old pool.
#[unsafe(no_mangle)]
pub extern "C" fn fk_set_num_threads(n: i32) -> fk_status {
    entry(|| {
        let n = usize::try_from(n).map_err(|_| Failure::invalid(format!("n must be >= 0, got {n}")))?;
        let n = if n == 0 { std::thread::available_parallelism().map_or(1, |p| p.get()) } else { n };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Failure::new(fk_status::FK_ERR_ALLOC, format!("could not start {n} threads: {e}")))?;
        *POOL.write().map_err(|_| Failure::internal("thread-pool lock poisoned"))? = Some(Arc::new(pool));
        Ok(())
    })
}

/// out = softmax(q·kᵀ·scale + masks)·v. q `[B,Hq,Nq,D]`, k `[B,Hkv,Nkv,D]`, v `[B,Hkv,Nkv,Dv]`,
/// out `[B,Hq,Nq,Dv]`; Hq a multiple of Hkv; the last dimension contiguous. q/k/v/out may each be
/// f32, f16 or bf16. `params` may be NULL (defaults). Fully masked rows give 0.
///
/// # Safety
/// Every non-NULL pointer points to a valid descriptor whose data holds every element it
/// addresses, for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_attention(
    q: *const fk_tensor,
    k: *const fk_tensor,
    v: *const fk_tensor,
    out: *mut fk_tensor,
    params: *const fk_attention_params,
) -> fk_status {
    entry(|| {
        // SAFETY: the caller guarantees the params pointer is NULL or valid.
        let raw = unsafe { read_params(params) }?;
        let mut args = Arguments::default();
        // SAFETY (all `add_*` calls): the caller guarantees each descriptor is valid.
        let (q, k, v) = unsafe { (args.input("q", q)?, args.input("k", k)?, args.input("v", v)?) };
        let mask = unsafe { args.optional_input("additive_mask", raw.additive_mask)? };
        unsafe { args.output("out", out)? };
        let lse = unsafe { args.optional_output("lse", raw.lse)? };
        args.check_f32("additive_mask", mask)?;
        args.check_f32("lse", lse)?;
        let lengths = match raw.key_lengths.is_null() {
            true => None,
            false => {
                // B is only known from a well-formed q; nothing is read before it is.
                let batch = match args.shape(q) {
                    [batch, _, _, _] => *batch,
                    shape => {
                        return Err(Failure::invalid(format!(
                            "q must be [B, Hq, Nq, D] (4 dimensions), got {} dimensions",
                            shape.len()
                        )));
                    }
                };
                if !raw.key_lengths.is_aligned() {
                    return Err(Failure::invalid("key_lengths is not aligned for int32_t"));
                }
                // SAFETY: the caller guarantees key_lengths holds B values; the pointer is
                // non-null and aligned (checked above).
                let lengths = unsafe { std::slice::from_raw_parts(raw.key_lengths, batch) };
                let lengths: Result<Vec<usize>, _> = lengths.iter().map(|&l| usize::try_from(l)).collect();
                Some(lengths.map_err(|_| Failure::invalid("key_lengths must be >= 0"))?)
            }
        };
        let causal = match raw.causal {
            0 => Causal::None,
            1 => Causal::TopLeft,
            2 => Causal::BottomRight,
            other => return Err(Failure::invalid(format!("causal must be 0, 1 or 2, got {other}"))),
        };
        let views = args.bind()?;
        let mut outputs = views.outputs;
        let mut lse_view = lse.map(|_| outputs.pop().expect("lse bound"));
        let mut out_view = outputs.pop().expect("out bound");
        let params = AttentionParams {
            scale: (raw.scale != 0.0).then_some(raw.scale),
            causal,
            key_lengths: lengths.as_deref(),
            additive_mask: mask.map(|i| views.inputs[i]),
            window_left: usize::try_from(raw.window_left).ok(),
            softcap: (raw.softcap != 0.0).then_some(raw.softcap),
        };
        let (q, k, v) = (&views.inputs[q], &views.inputs[k], &views.inputs[v]);
        in_pool(|| attention::attention(q, k, v, &mut out_view, &params, lse_view.as_mut()))?;
        Ok(())
    })
}

/// `c[M,N] = alpha·a[M,K]·b[N,K]ᵀ + beta·c (+ bias[N])`. bias may be NULL; beta = 0 never reads c.
/// A `[K,N]` row-major weight is b with shape {N,K} and strides {1,N}.
///
/// # Safety
/// As for `fk_attention`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_matmul(
    a: *const fk_tensor,
    b: *const fk_tensor,
    bias: *const fk_tensor,
    alpha: f32,
    beta: f32,
    c: *mut fk_tensor,
) -> fk_status {
    entry(|| {
        let mut args = Arguments::default();
        // SAFETY (all): the caller guarantees each descriptor is valid.
        let (a, b) = unsafe { (args.input("a", a)?, args.input("b", b)?) };
        let bias = unsafe { args.optional_input("bias", bias)? };
        unsafe { args.output("c", c)? };
        let mut views = args.bind()?;
        let params = MatmulParams { alpha, beta, ..MatmulParams::default() };
        let bias = bias.map(|i| views.inputs[i]);
        let (a, b, c) = (&views.inputs[a], &views.inputs[b], &mut views.outputs[0]);
        in_pool(|| matmul::matmul(a, b, bias.as_ref(), c, &params))?;
        Ok(())
    })
}

/// Packs weights `b[N,K]` (any dtype, any strides) once for repeated `fk_matmul_packed` calls.
/// On success `*out` owns the packed copy (b may be freed); free it with `fk_packed_free`.
///
/// # Safety
/// `b` is a valid descriptor; `out` is a valid pointer to write to.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_pack_weights(b: *const fk_tensor, out: *mut *mut fk_packed) -> fk_status {
    entry(|| {
        if out.is_null() {
            return Err(Failure::invalid("`out` is NULL"));
        }
        let mut args = Arguments::default();
        // SAFETY: the caller guarantees the descriptor is valid.
        let b = unsafe { args.input("b", b)? };
        let views = args.bind()?;
        let matrix = in_pool(|| PackedMatrix::pack(&views.inputs[b]))?;
        let packed = Box::into_raw(Box::new(fk_packed { matrix }));
        // SAFETY: `out` is non-NULL and valid for writes (caller's contract).
        unsafe { out.write(packed) };
        Ok(())
    })
}

/// `fk_matmul` with packed weights.
///
/// # Safety
/// As for `fk_matmul`; `b` came from `fk_pack_weights` and was not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_matmul_packed(
    a: *const fk_tensor,
    b: *const fk_packed,
    bias: *const fk_tensor,
    alpha: f32,
    beta: f32,
    c: *mut fk_tensor,
) -> fk_status {
    entry(|| {
        if b.is_null() {
            return Err(Failure::invalid("`b` is NULL"));
        }
        // SAFETY: a non-NULL `b` came from fk_pack_weights and is alive (caller's contract).
        let packed = unsafe { &(*b).matrix };
        let mut args = Arguments::default();
        // SAFETY (all): the caller guarantees each descriptor is valid.
        let a = unsafe { args.input("a", a)? };
        let bias = unsafe { args.optional_input("bias", bias)? };
        unsafe { args.output("c", c)? };
        let mut views = args.bind()?;
        let params = MatmulParams { alpha, beta, ..MatmulParams::default() };
        let bias = bias.map(|i| views.inputs[i]);
        let (a, c) = (&views.inputs[a], &mut views.outputs[0]);
        in_pool(|| matmul::matmul_packed(a, packed, bias.as_ref(), c, &params))?;
        Ok(())
    })
}

/// Frees packed weights; NULL is ignored.
///
/// # Safety
/// `p` is NULL or came from `fk_pack_weights` and is freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_packed_free(p: *mut fk_packed) {
    if !p.is_null() {
        // SAFETY: `p` came from Box::into_raw in fk_pack_weights and is freed once.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// out = LayerNorm(x + residual + bias)·gamma + beta over the last dimension of [rows, hidden];
/// `sum_out` (may be NULL) receives x + residual + bias. residual, bias, beta may be NULL.
///
/// # Safety
/// As for `fk_attention`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_add_layer_norm(
    x: *const fk_tensor,
    residual: *const fk_tensor,
    bias: *const fk_tensor,
    gamma: *const fk_tensor,
    beta: *const fk_tensor,
    eps: f32,
    out: *mut fk_tensor,
    sum_out: *mut fk_tensor,
) -> fk_status {
    // SAFETY: forwarded caller's contract.
    unsafe { add_norm(NormKind::LayerNorm, [x, residual, bias, gamma, beta], eps, out, sum_out) }
}

/// out = RMSNorm(x + residual)·gamma; `sum_out` (may be NULL) receives x + residual.
///
/// # Safety
/// As for `fk_attention`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fk_add_rms_norm(
    x: *const fk_tensor,
    residual: *const fk_tensor,
    gamma: *const fk_tensor,
    eps: f32,
    out: *mut fk_tensor,
    sum_out: *mut fk_tensor,
) -> fk_status {
    let none = std::ptr::null();
    // SAFETY: forwarded caller's contract.
    unsafe { add_norm(NormKind::RmsNorm, [x, residual, none, gamma, none], eps, out, sum_out) }
}

/// The shared body of the two norm entry points; `tensors` is [x, residual, bias, gamma, beta].
///
/// # Safety
/// As for `fk_attention`.
unsafe fn add_norm(
    kind: NormKind,
    [x, residual, bias, gamma, beta]: [*const fk_tensor; 5],
    eps: f32,
    out: *mut fk_tensor,
    sum_out: *mut fk_tensor,
) -> fk_status {
    entry(|| {
        let mut args = Arguments::default();
        // SAFETY (all): the caller guarantees each descriptor is valid.
        let x = unsafe { args.input("x", x)? };
        let residual = unsafe { args.optional_input("residual", residual)? };
        let bias = unsafe { args.optional_input("bias", bias)? };
        let gamma = unsafe { args.input("gamma", gamma)? };
        let beta = unsafe { args.optional_input("beta", beta)? };
        unsafe { args.output("out", out)? };
        let sum = unsafe { args.optional_output("sum_out", sum_out)? };
        let views = args.bind()?;
        let mut outputs = views.outputs;
        let mut sum_view = sum.map(|_| outputs.pop().expect("sum_out bound"));
        let mut out_view = outputs.pop().expect("out bound");
        let inputs = NormInputs {
            x: views.inputs[x],
            residual: residual.map(|i| views.inputs[i]),
            bias: bias.map(|i| views.inputs[i]),
            gamma: views.inputs[gamma],
            beta: beta.map(|i| views.inputs[i]),
        };
        in_pool(|| norm::add_norm(&inputs, &NormParams { kind, eps }, &mut out_view, sum_view.as_mut()))?;
        Ok(())
    })
}
