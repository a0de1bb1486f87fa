//! The bodies of the cargo-fuzz targets in `fuzz/`, kept here so that `cargo test` replays
//! every committed corpus and crash input on stable (`tests/fuzz_corpus.rs`) and a fixed crash
//! stays fixed. Each function takes the fuzzer's bytes and panics only on a real bug: a kernel
//! disagreeing with its reference beyond the documented tolerance, or an error from one but
//! not the other.

use crate::capi::{fk_attention, fk_attention_params, fk_causal, fk_dtype, fk_matmul, fk_status, fk_tensor};
use arbitrary::{Result, Unstructured};
use flashkern_kernels::isa::{Isa, with_max_isa};
use std::ffi::c_void;

/// Elements in the buffer every `capi_descriptors` descriptor points into.
const ARENA: usize = 4096;

/// Arbitrary `fk_tensor` descriptors over one bounded buffer, through `fk_matmul` and
/// `fk_attention`: each call returns an error status or a correct result, and (under
/// AddressSanitizer) never touches memory outside the buffer.
pub fn capi_descriptors(data: &[u8]) {
    let _ = capi_descriptors_inner(&mut Unstructured::new(data));
}

/// One arbitrary descriptor into `arena`. Descriptors that are well-formed (ndim 1..=4,
/// non-negative extents and strides) are kept inside the arena — the ABI's contract is that
/// the caller's memory holds what a descriptor addresses; malformed ones may say anything,
/// since the ABI must reject them before any access.
fn descriptor(u: &mut Unstructured, arena: &mut [f32]) -> Result<fk_tensor> {
    let ndim = *u.choose(&[1i32, 2, 3, 4, 4, 4, 0, 5, -1])?;
    let mut t = fk_tensor {
        data: arena.as_mut_ptr().cast::<c_void>(),
        dtype: fk_dtype::FK_F32,
        ndim,
        shape: [0; 4],
        strides: [0; 4],
    };
    for d in 0..4 {
        t.shape[d] = if u.ratio(1, 20)? { u.arbitrary()? } else { i64::from(u.int_in_range(0u8..=9)?) };
        t.strides[d] = if u.ratio(1, 20)? { u.arbitrary()? } else { i64::from(u.int_in_range(0u8..=40)?) };
    }
    t.dtype = *u.choose(&[fk_dtype::FK_F32, fk_dtype::FK_F32, fk_dtype::FK_F16, fk_dtype::FK_BF16])?;
    let size = if t.dtype == fk_dtype::FK_F32 { 4 } else { 2 };
    let well_formed = (1..=4).contains(&ndim) && (0..ndim as usize).all(|d| t.shape[d] >= 0 && t.strides[d] >= 0);
    let capacity_elems = (arena.len() * 4) / size;
    let offset = usize::from(u.int_in_range(0u16..=64)?);
    if well_formed {
        let dims = 0..ndim as usize;
        let extent = if dims.clone().any(|d| t.shape[d] == 0) {
            Some(0)
        } else {
            dims.map(|d| (t.shape[d] as u128 - 1) * t.strides[d] as u128).sum::<u128>().checked_add(1)
        };
        if extent.is_none_or(|e| e + offset as u128 > capacity_elems as u128) {
            return Err(arbitrary::Error::IncorrectFormat);
        }
    }
    // SAFETY: offset ≤ 64 elements of at most 4 bytes lies inside the 4096-element arena.
    t.data = unsafe { arena.as_mut_ptr().cast::<u8>().add(offset * size).cast::<c_void>() };
    if u.ratio(1, 30)? {
        t.data = std::ptr::null_mut();
    }
    Ok(t)
}

fn capi_descriptors_inner(u: &mut Unstructured) -> Result<()> {
    // Separate arenas per argument so outputs rarely alias inputs (aliasing is also fuzzed
    // when the fuzzer picks the same arena twice).
    let mut arenas: Vec<Vec<f32>> =
        (0..4).map(|i| (0..ARENA).map(|j| ((i * 31 + j * 7) % 13) as f32 * 0.1 - 0.6).collect()).collect();
    let picks: Vec<usize> = (0..4).map(|_| u.int_in_range(0..=3)).collect::<Result<_>>()?;
    let level = *u.choose(&Isa::ALL)?;
    let mut tensors = Vec::new();
    for &p in &picks {
        tensors.push(descriptor(u, &mut arenas[p])?);
    }
    let [a, b, c, d] = [tensors[0], tensors[1], tensors[2], tensors[3]];
    with_max_isa(level, || {
        if u.ratio(1, 2).unwrap_or(true) {
            let mut c = c;
            let bias = if u.ratio(1, 3).unwrap_or(false) { &d as *const fk_tensor } else { std::ptr::null() };
            // SAFETY: every well-formed descriptor addresses only arena memory (see `descriptor`).
            let status = unsafe { fk_matmul(&a, &b, bias, 1.0, 0.0, &mut c) };
            assert!(status != fk_status::FK_ERR_INTERNAL, "fk_matmul panicked: {:?}", last_error());
        } else {
            let mut out = d;
            let params = fk_attention_params {
                scale: 0.0,
                causal: fk_causal::FK_CAUSAL_BOTTOM_RIGHT,
                key_lengths: std::ptr::null(),
                additive_mask: std::ptr::null(),
                window_left: -1,
                softcap: 0.0,
                lse: std::ptr::null_mut(),
            };
            // SAFETY: as above.
            let status = unsafe { fk_attention(&a, &b, &c, &mut out, &params) };
            assert!(status != fk_status::FK_ERR_INTERNAL, "fk_attention panicked: {:?}", last_error());
        }
    });
    Ok(())
}

fn last_error() -> String {
    // SAFETY: fk_last_error returns a valid NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(crate::capi::fk_last_error()) }.to_string_lossy().into_owned()
}
