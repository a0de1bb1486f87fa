//! The benchmark shapes of `../shared/SHAPES.md`, as a table (keep the two in step).

/// `C[M,N] = A[M,K]·B[N,K]ᵀ`.
#[derive(Clone, Copy, Debug)]
pub struct MatmulShape {
    /// SHAPES.md id.
    pub id: &'static str,
    /// Rows of A and C.
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Rows of B.
    pub n: usize,
}

/// `O = softmax(Q·Kᵀ·scale)·V` over `[B, H, N, D]`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// SHAPES.md id.
    pub id: &'static str,
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub h_q: usize,
    /// Key/value heads.
    pub h_kv: usize,
    /// Queries.
    pub n_q: usize,
    /// Keys.
    pub n_kv: usize,
    /// Head dimension.
    pub d: usize,
    /// Causal (top-left; SHAPES.md's causal shapes are square).
    pub causal: bool,
}

/// `out = LayerNorm(x + r)·γ + β` over `[rows, hidden]`.
#[derive(Clone, Copy, Debug)]
pub struct NormShape {
    /// SHAPES.md id.
    pub id: &'static str,
    /// Rows.
    pub rows: usize,
    /// Elements per row.
    pub hidden: usize,
}

/// SHAPES.md's matmul table.
pub const MATMUL: &[MatmulShape] = &[
    MatmulShape { id: "sq512", m: 512, k: 512, n: 512 },
    MatmulShape { id: "sq1024", m: 1024, k: 1024, n: 1024 },
    MatmulShape { id: "sq2048", m: 2048, k: 2048, n: 2048 },
    MatmulShape { id: "minilm_up", m: 128, k: 384, n: 1536 },
    MatmulShape { id: "minilm_down", m: 128, k: 1536, n: 384 },
    MatmulShape { id: "gpt2_up", m: 512, k: 768, n: 3072 },
    MatmulShape { id: "gpt2_down", m: 512, k: 3072, n: 768 },
    MatmulShape { id: "gemv4096", m: 1, k: 4096, n: 4096 },
];

/// SHAPES.md's attention table.
pub const ATTENTION: &[AttentionShape] = &[
    AttentionShape { id: "minilm128", b: 1, h_q: 12, h_kv: 12, n_q: 128, n_kv: 128, d: 32, causal: false },
    AttentionShape { id: "bert512", b: 1, h_q: 12, h_kv: 12, n_q: 512, n_kv: 512, d: 64, causal: false },
    AttentionShape { id: "long2k", b: 1, h_q: 12, h_kv: 12, n_q: 2048, n_kv: 2048, d: 64, causal: false },
    AttentionShape { id: "long2k_causal", b: 1, h_q: 12, h_kv: 12, n_q: 2048, n_kv: 2048, d: 64, causal: true },
    AttentionShape { id: "long4k_d128_causal", b: 1, h_q: 8, h_kv: 8, n_q: 4096, n_kv: 4096, d: 128, causal: true },
    AttentionShape { id: "decode_gqa", b: 1, h_q: 32, h_kv: 8, n_q: 1, n_kv: 4096, d: 128, causal: false },
];

/// SHAPES.md's LayerNorm table.
pub const NORM: &[NormShape] = &[
    NormShape { id: "ln_minilm", rows: 128, hidden: 384 },
    NormShape { id: "ln_gpt2", rows: 512, hidden: 768 },
    NormShape { id: "ln_big", rows: 16384, hidden: 768 },
    NormShape { id: "ln_wide", rows: 2048, hidden: 4096 },
];

impl MatmulShape {
    /// 2·M·N·K.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }
}

impl AttentionShape {
    /// 4·B·Hq·Nq·Nkv·D, halved for causal (SHAPES.md's count).
    pub fn flops(&self) -> f64 {
        let full = 4.0 * (self.b * self.h_q * self.n_q * self.n_kv * self.d) as f64;
        if self.causal { full / 2.0 } else { full }
    }

    /// Queries per head of at most 8 over a long cache: the memory-bound decode case.
    pub fn is_decode(&self) -> bool {
        self.n_q <= 8
    }
}

/// A MiniLM (all-MiniLM-L6-v2) encoder forward pass over `batch` sequences of `tokens` tokens.
#[derive(Clone, Copy, Debug)]
pub struct ModelShape {
    /// Case id.
    pub id: &'static str,
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence (`[CLS]` and `[SEP]` included).
    pub tokens: usize,
}

/// The model cases of issue 6's bench.
pub const MODEL: &[ModelShape] = &[
    ModelShape { id: "minilm_b1x16", batch: 1, tokens: 16 },
    ModelShape { id: "minilm_b1x128", batch: 1, tokens: 128 },
    ModelShape { id: "minilm_b1x256", batch: 1, tokens: 256 },
    ModelShape { id: "minilm_b32x128", batch: 32, tokens: 128 },
];

impl ModelShape {
    /// Matmul FLOPs (QKV, output, FFN up and down) plus attention's 4·N²·hidden, per layer,
    /// for MiniLM's 6 layers, hidden 384, FFN 1536 (≈ 2.9 GFLOP at 128 tokens).
    pub fn flops(&self) -> f64 {
        let (layers, hidden, ffn) = (6.0, 384.0, 1536.0);
        let n = self.tokens as f64;
        let per_layer = 2.0 * n * (4.0 * hidden * hidden + 2.0 * hidden * ffn) + 4.0 * n * n * hidden;
        self.batch as f64 * layers * per_layer
    }
}
