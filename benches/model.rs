//! Model-level benchmarks (issue 6): all-MiniLM-L6-v2 encode at batch 1 × {16, 128, 256}
//! tokens and batch 32 × 128, 1 and 2 threads, f32 and bf16 weights; and loading the model
//! (`minilm_<dtype>`: config, weights, tokenizer and pooling; `_weights_only`: the encoder).
//!
//! Needs `FLASHKERN_MINILM_DIR` (skips, saying so, when unset). Throughput is in FLOP
//! (criterion's elem/s = FLOP/s): per token and layer `2·(4H² + 2HF)` for the projections plus
//! `4·N·H` for attention, no FLOPs counted for embeddings, norms or pooling.
//! Run: `cargo bench --bench model` (or filter, e.g. `-- encode/f32/1t/b1x128`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashkern::DType;
use flashkern::models::bert::{BertModel, SentenceEncoder};
use std::path::PathBuf;
use std::time::Duration;

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FLASHKERN_MINILM_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("model bench skipped: FLASHKERN_MINILM_DIR is not set");
    }
    dir
}

/// `batch` sequences of `len` token ids: [CLS], ordinary word ids, [SEP].
fn batch(batch: usize, len: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            let mut ids: Vec<u32> = (0..len).map(|i| 2000 + ((i * 131 + b * 17) % 20000) as u32).collect();
            ids[0] = 101;
            ids[len - 1] = 102;
            ids
        })
        .collect()
}

fn flops(model: &BertModel, batch: usize, len: usize) -> u64 {
    let c = model.config();
    let (h, f, l) = (c.hidden_size as u64, c.intermediate_size as u64, c.num_hidden_layers as u64);
    let tokens = (batch * len) as u64;
    l * (2 * tokens * (4 * h * h + 2 * h * f) + 4 * batch as u64 * (len * len) as u64 * h)
}

fn encode(c: &mut Criterion) {
    let Some(dir) = model_dir() else { return };
    for dtype in [DType::F32, DType::BF16] {
        let model = BertModel::load(&dir, dtype).expect("load MiniLM");
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut group = c.benchmark_group(format!("encode/{dtype}/{threads}t"));
            group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
            for (b, n) in [(1, 16), (1, 128), (1, 256), (32, 128)] {
                let input = batch(b, n);
                group.throughput(Throughput::Elements(flops(&model, b, n)));
                group.bench_function(BenchmarkId::from_parameter(format!("b{b}x{n}")), |bench| {
                    pool.install(|| bench.iter(|| model.encode(&input).unwrap()))
                });
            }
            group.finish();
        }
    }
}

fn load(c: &mut Criterion) {
    let Some(dir) = model_dir() else { return };
    let mut group = c.benchmark_group("load");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    // Dropping a model (unmapping, freeing the packed weights) is not part of loading it.
    for dtype in [DType::F32, DType::BF16] {
        group.bench_function(format!("minilm_{dtype}"), |bench| {
            bench.iter_with_large_drop(|| SentenceEncoder::load(&dir, dtype).unwrap())
        });
        group.bench_function(format!("minilm_{dtype}_weights_only"), |bench| {
            bench.iter_with_large_drop(|| BertModel::load(&dir, dtype).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, load, encode);
criterion_main!(benches);
