//! `flashkern bench`: measures this machine's roofs, then runs every SHAPES.md case and
//! reports throughput as a fraction of the roof and as a ratio to a baseline run in the same
//! process (the `gemm` crate for matmul, a naive materialised path for attention, the
//! unfused two-step for norms).

pub mod cases;
#[allow(unsafe_code)]
pub mod peer;
#[allow(unsafe_code)]
pub mod roofs;
pub mod shapes;

use flashkern_kernels::{DType, Result};
use std::collections::BTreeMap;

/// An op family to benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Fused attention.
    Attention,
    /// Matmul and GEMV.
    Matmul,
    /// Matmul with bf16 activations and bf16 weights (the `vdpbf16ps` path where the CPU has
    /// AVX512_BF16); bf16 only.
    MatmulBf16,
    /// Residual + LayerNorm.
    Norm,
    /// A whole MiniLM encoder forward pass (needs the model folder).
    Model,
}

impl Op {
    /// Every op, in report order.
    pub const ALL: [Op; 5] = [Op::Matmul, Op::MatmulBf16, Op::Attention, Op::Norm, Op::Model];

    /// The op's name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Op::Attention => "attention",
            Op::Matmul => "matmul",
            Op::MatmulBf16 => "matmul_bf16",
            Op::Norm => "norm",
            Op::Model => "model",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Op families.
    pub ops: Vec<Op>,
    /// Only the shape with this SHAPES.md id, when set.
    pub shape: Option<String>,
    /// Input/weight dtypes.
    pub dtypes: Vec<DType>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Seconds of timed repetitions per measurement (ours and baseline each).
    pub budget: f64,
    /// The all-MiniLM-L6-v2 folder for `Op::Model` (skipped, saying so, when `None`).
    pub model_dir: Option<std::path::PathBuf>,
}

/// One measured case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    /// Op family.
    pub op: &'static str,
    /// SHAPES.md id.
    pub shape: &'static str,
    /// Input/weight dtype.
    pub dtype: &'static str,
    /// Threads in the pool.
    pub threads: usize,
    /// Median seconds of our kernel.
    pub median_s: f64,
    /// GFLOP/s (compute-bound cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    /// GB/s (memory-bound cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// Which roof the fraction is of.
    pub roof: String,
    /// Throughput / roof.
    pub roof_fraction: f64,
    /// What ran as the baseline.
    pub baseline: &'static str,
    /// Median seconds of the baseline.
    pub baseline_s: f64,
    /// baseline time / our time (> 1: we are faster).
    pub ratio_vs_baseline: f64,
}

/// The roofs measured before the cases.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Machine {
    /// The ISA level the kernels ran.
    pub isa: String,
    /// Logical CPUs the OS reports.
    pub cpus: usize,
    /// f32 FMA GFLOP/s by thread count.
    pub fma_gflops: BTreeMap<usize, f64>,
    /// `vdpbf16ps` GFLOP/s by thread count (empty without AVX512_BF16).
    pub bf16_dot_gflops: BTreeMap<usize, f64>,
    /// Read GB/s by "bytes/threads".
    pub read_gbps: BTreeMap<String, f64>,
    /// Copy (read + write) GB/s by "bytes/threads".
    pub copy_gbps: BTreeMap<String, f64>,
}

impl Machine {
    fn fma(&mut self, threads: usize) -> f64 {
        *self.fma_gflops.entry(threads).or_insert_with(|| roofs::fma_gflops(threads))
    }

    fn bf16_dot(&mut self, threads: usize) -> Option<f64> {
        if let Some(&g) = self.bf16_dot_gflops.get(&threads) {
            return Some(g);
        }
        let g = roofs::bf16_dot_gflops(threads)?;
        self.bf16_dot_gflops.insert(threads, g);
        Some(g)
    }

    fn read(&mut self, bytes: usize, threads: usize) -> (f64, String) {
        let key = format!("{bytes}/{threads}");
        let gbps = *self.read_gbps.entry(key.clone()).or_insert_with(|| roofs::read_gbps(bytes, threads));
        (gbps, format!("read BW {gbps:.1} GB/s @ {}", human_bytes(bytes)))
    }

    fn copy(&mut self, bytes: usize, threads: usize) -> (f64, String) {
        let key = format!("{bytes}/{threads}");
        let gbps = *self.copy_gbps.entry(key.clone()).or_insert_with(|| roofs::copy_gbps(bytes, threads));
        (gbps, format!("copy BW {gbps:.1} GB/s @ {}", human_bytes(bytes)))
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// The roofs.
    pub machine: Machine,
    /// The cases.
    pub results: Vec<Measurement>,
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| flashkern_kernels::Error::Unsupported { what: format!("a pool of {threads} threads: {e}") })
}

/// Runs the benchmark; `progress` receives one line per step (roof or case) as it starts.
pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<Report> {
    let mut report = Report::default();
    report.machine.isa = flashkern_kernels::effective_isa().to_string();
    report.machine.cpus = std::thread::available_parallelism().map_or(1, |p| p.get());
    for &threads in &options.threads {
        progress(&format!("roof: f32 FMA throughput, {threads} thread(s)"));
        let gflops = report.machine.fma(threads);
        progress(&format!("      {gflops:.1} GFLOP/s"));
    }
    let wanted = |id: &str| options.shape.as_deref().is_none_or(|s| s == id);
    let mut steps: Vec<(Op, &'static str, DType, usize)> = Vec::new();
    for &op in &options.ops {
        let ids: Vec<&'static str> = match op {
            Op::Matmul | Op::MatmulBf16 => shapes::MATMUL.iter().map(|s| s.id).collect(),
            Op::Attention => shapes::ATTENTION.iter().map(|s| s.id).collect(),
            Op::Norm => shapes::NORM.iter().map(|s| s.id).collect(),
            Op::Model if options.model_dir.is_none() => {
                progress("model: no MiniLM folder (--model or FLASHKERN_MINILM_DIR): skipped");
                Vec::new()
            }
            Op::Model => shapes::MODEL.iter().map(|s| s.id).collect(),
        };
        for id in ids.into_iter().filter(|id| wanted(id)) {
            // The bf16-activation op exists for one dtype only.
            let dtypes = options.dtypes.iter().filter(|&&d| op != Op::MatmulBf16 || d == DType::BF16);
            for &dtype in dtypes {
                for &threads in &options.threads {
                    steps.push((op, id, dtype, threads));
                }
            }
        }
    }
    for (index, &(op, id, dtype, threads)) in steps.iter().enumerate() {
        progress(&format!("[{}/{}] {} {id} {dtype} {threads}t", index + 1, steps.len(), op.name()));
        let measurement = pool(threads)?.install(|| measure(&mut report.machine, options, op, id, dtype, threads))?;
        progress(&format!("      {}", row(&measurement)));
        report.results.push(measurement);
    }
    Ok(report)
}

fn measure(
    machine: &mut Machine,
    options: &Options,
    op: Op,
    id: &'static str,
    dtype: DType,
    threads: usize,
) -> Result<Measurement> {
    let budget = options.budget;
    let (median_s, baseline_s, baseline, work, roof_kind) = match op {
        Op::Matmul => {
            let shape = shapes::MATMUL.iter().find(|s| s.id == id).expect("id from the table");
            let (ours, base) = cases::matmul(shape, dtype, budget)?;
            let baseline = match dtype {
                DType::F32 => "gemm crate f32",
                DType::F16 => "gemm crate f16",
                DType::BF16 => "gemm crate f32 (no bf16)",
            };
            let weight_bytes = shape.n * shape.k * dtype.size();
            let roof = if shape.m == 1 { Roof::Read(weight_bytes) } else { Roof::Fma };
            let work = if shape.m == 1 { Work::Bytes(weight_bytes as f64) } else { Work::Flops(shape.flops()) };
            (ours, base, baseline, work, roof)
        }
        Op::MatmulBf16 => {
            let shape = shapes::MATMUL.iter().find(|s| s.id == id).expect("id from the table");
            let (ours, base) = cases::matmul_bf16(shape, budget)?;
            let weight_bytes = shape.n * shape.k * dtype.size();
            let (work, roof) = if shape.m == 1 {
                (Work::Bytes(weight_bytes as f64), Roof::Read(weight_bytes))
            } else {
                // Where the CPU widens bf16 instead (isa::bf16_dot_enabled), the FMA is the roof.
                let dot = flashkern_kernels::isa::bf16_dot_enabled();
                (Work::Flops(shape.flops()), if dot { Roof::Bf16Dot } else { Roof::Fma })
            };
            (ours, base, "ours, f32 activations × f32 weights (prepacked)", work, roof)
        }
        Op::Attention => {
            let shape = shapes::ATTENTION.iter().find(|s| s.id == id).expect("id from the table");
            let (ours, base) = cases::attention(shape, dtype, budget)?;
            let kv_bytes = 2 * shape.b * shape.h_kv * shape.n_kv * shape.d * dtype.size();
            let (work, roof) = if shape.is_decode() {
                (Work::Bytes(kv_bytes as f64), Roof::Read(kv_bytes))
            } else {
                (Work::Flops(shape.flops()), Roof::Fma)
            };
            (ours, base, "naive softmax(QKᵀ)V on our matmul", work, roof)
        }
        Op::Norm => {
            let shape = shapes::NORM.iter().find(|s| s.id == id).expect("id from the table");
            let (ours, base) = cases::norm(shape, dtype, budget)?;
            // SHAPES.md: read x, r, γ, β once, write out once (γ, β are f32 here).
            let matrix = shape.rows * shape.hidden * dtype.size();
            let bytes = 3 * matrix + 2 * shape.hidden * 4;
            (ours, base, "unfused add, then norm", Work::Bytes(bytes as f64), Roof::Copy(bytes))
        }
        Op::Model => {
            let shape = shapes::MODEL.iter().find(|s| s.id == id).expect("id from the table");
            let dir = options.model_dir.as_deref().expect("model ops are only listed with a folder");
            let (ours, base) = cases::model(dir, shape, dtype, budget)?;
            let baseline = if dtype == DType::F32 { "same model at AVX2" } else { "same model, f32 weights" };
            (ours, base, baseline, Work::Flops(shape.flops()), Roof::Fma)
        }
    };
    let (gflops, gbps, rate) = match work {
        Work::Flops(f) => (Some(f / median_s / 1e9), None, f / median_s / 1e9),
        Work::Bytes(b) => (None, Some(b / median_s / 1e9), b / median_s / 1e9),
    };
    let (roof_value, roof) = match roof_kind {
        Roof::Fma => {
            let g = machine.fma(threads);
            (g, format!("FMA {g:.1} GFLOP/s"))
        }
        Roof::Bf16Dot => match machine.bf16_dot(threads) {
            Some(g) => (g, format!("bf16 dot {g:.1} GFLOP/s")),
            None => {
                let g = machine.fma(threads);
                (g, format!("FMA {g:.1} GFLOP/s (no AVX512_BF16)"))
            }
        },
        Roof::Read(bytes) => machine.read(bytes, threads),
        Roof::Copy(bytes) => machine.copy(bytes, threads),
    };
    Ok(Measurement {
        op: op.name(),
        shape: id,
        dtype: dtype.name(),
        threads,
        median_s,
        gflops,
        gbps,
        roof,
        roof_fraction: rate / roof_value,
        baseline,
        baseline_s,
        ratio_vs_baseline: baseline_s / median_s,
    })
}

enum Work {
    Flops(f64),
    Bytes(f64),
}

enum Roof {
    Fma,
    /// The `vdpbf16ps` rate (the FMA roof where the CPU lacks AVX512_BF16).
    Bf16Dot,
    Read(usize),
    Copy(usize),
}

fn row(m: &Measurement) -> String {
    let rate = match (m.gflops, m.gbps) {
        (Some(g), _) => format!("{g:7.1} GFLOP/s"),
        (_, Some(b)) => format!("{b:7.1} GB/s   "),
        _ => String::new(),
    };
    format!(
        "{:<11} {:<19} {:<5} {:>2}t {:>10.3} ms {rate} {:>5.1}% of {:<32} {:>5.2}x vs {}",
        m.op,
        m.shape,
        m.dtype,
        m.threads,
        m.median_s * 1e3,
        100.0 * m.roof_fraction,
        m.roof,
        m.ratio_vs_baseline,
        m.baseline
    )
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut text = format!("machine: ISA {}, {} CPUs\n", self.machine.isa, self.machine.cpus);
        for (threads, g) in &self.machine.fma_gflops {
            text += &format!("  f32 FMA roof, {threads} thread(s): {g:.1} GFLOP/s\n");
        }
        for (threads, g) in &self.machine.bf16_dot_gflops {
            text += &format!("  bf16 dot (vdpbf16ps) roof, {threads} thread(s): {g:.1} GFLOP/s\n");
        }
        text += &format!(
            "{:<11} {:<19} {:<5} {:>3} {:>13} {:>15} {:>6}    {:<32} {:>6}\n",
            "op", "shape", "dtype", "thr", "median", "throughput", "roof%", "roof", "vs baseline"
        );
        for m in &self.results {
            text += &row(m);
            text.push('\n');
        }
        text
    }

    /// The machine-readable report.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
