"""A minimal ctypes wrapper over flashkern's C ABI (include/flashkern.h).

Load the shared library built by `cargo build --release --lib` (target/release/libflashkern.so)
and call `attention(q, k, v, causal=...)` on float32 numpy arrays shaped [B, H, N, D] — or
[B, N, H, D] memory passed as a transposed view: strides are forwarded, nothing is copied.
"""
import ctypes
import os

FK_F32, FK_F16, FK_BF16 = 0, 1, 2
CAUSAL = {"none": 0, "top_left": 1, "bottom_right": 2}


class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("strides", ctypes.c_int64 * 4),
    ]


class AttentionParams(ctypes.Structure):
    _fields_ = [
        ("scale", ctypes.c_float),
        ("causal", ctypes.c_int),
        ("key_lengths", ctypes.POINTER(ctypes.c_int32)),
        ("additive_mask", ctypes.POINTER(Tensor)),
        ("window_left", ctypes.c_int32),
        ("softcap", ctypes.c_float),
        ("lse", ctypes.POINTER(Tensor)),
    ]


class FlashkernError(RuntimeError):
    pass


def load(path=None):
    """Opens the shared library (default: target/release/libflashkern.so of this checkout)."""
    if path is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.path.join(root, "target", "release", "libflashkern.so")
    lib = ctypes.CDLL(path)
    lib.fk_version.restype = ctypes.c_char_p
    lib.fk_isa.restype = ctypes.c_char_p
    lib.fk_last_error.restype = ctypes.c_char_p
    lib.fk_status_string.restype = ctypes.c_char_p
    lib.fk_attention.argtypes = [ctypes.POINTER(Tensor)] * 4 + [ctypes.POINTER(AttentionParams)]
    return lib


def tensor(array):
    """Describes a float32 numpy array (any strides) without copying it."""
    import numpy as np

    if array.dtype != np.float32:
        raise TypeError(f"expected float32, got {array.dtype}")
    if array.ndim > 4:
        raise ValueError("at most 4 dimensions")
    t = Tensor()
    t.data = array.ctypes.data
    t.dtype = FK_F32
    t.ndim = array.ndim
    for d in range(array.ndim):
        t.shape[d] = array.shape[d]
        t.strides[d] = array.strides[d] // array.itemsize
    return t


def attention(lib, q, k, v, causal="none", scale=0.0):
    """softmax(q·kᵀ·scale)·v over [B, H, N, D] float32 arrays; returns a new array."""
    import numpy as np

    out = np.empty(q.shape[:3] + v.shape[3:], dtype=np.float32)
    params = AttentionParams(scale=scale, causal=CAUSAL[causal], window_left=-1)
    tq, tk, tv, to = tensor(q), tensor(k), tensor(v), tensor(out)
    status = lib.fk_attention(ctypes.byref(tq), ctypes.byref(tk), ctypes.byref(tv), ctypes.byref(to), ctypes.byref(params))
    if status != 0:
        raise FlashkernError(f"{lib.fk_status_string(status).decode()}: {lib.fk_last_error().decode()}")
    return out
