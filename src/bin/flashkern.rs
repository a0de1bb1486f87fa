//! `flashkern`: sentence embeddings, greedy generation and attention heatmaps on the
//! flashkern kernels. Run `flashkern <command> --help` for each command's options.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use clap::{Args, Parser, Subcommand};
use flashkern::DType;
use flashkern::models::bert::SentenceEncoder;
use flashkern::models::gpt2::Gpt2Model;
use flashkern::models::parse_dtype;
use image::{Rgb, RgbImage};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

type CliResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser)]
#[command(name = "flashkern", version, about = "Transformer inference on hand-tuned SIMD CPU kernels")]
struct Cli {
    /// Worker threads (default: one per core). `bench` takes a list, e.g. `--threads 1,2`.
    #[arg(long, global = true, value_delimiter = ',')]
    threads: Vec<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sentence embeddings with a sentence-transformers BERT folder (e.g. all-MiniLM-L6-v2).
    Embed(EmbedArgs),
    /// Greedy generation with a GPT-2 folder, from token ids.
    Generate(GenerateArgs),
    /// A PNG heatmap of one attention head (or every head of a layer) over a text's tokens.
    AttentionMap(AttentionMapArgs),
    /// Measure this machine's roofs, then every SHAPES.md case: median time, GFLOP/s or GB/s,
    /// fraction of the roof, and the ratio to a baseline run in the same process.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Which ops: attention, matmul, matmul_bf16, norm, model or all (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    op: Vec<String>,
    /// Only this SHAPES.md shape id (e.g. sq1024, long2k, ln_big, minilm_b1x128).
    #[arg(long)]
    shape: Option<String>,
    /// Input/weight dtypes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16,f16", value_parser = dtype_arg)]
    dtype: Vec<DType>,
    /// Also write the machine-readable report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder for `--op model` (default: $FLASHKERN_MINILM_DIR, else
    /// ../shared/models/all-MiniLM-L6-v2 when it exists).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seconds of timed repetitions per measurement.
    #[arg(long, default_value_t = 0.5)]
    budget: f64,
}

#[derive(Args)]
struct EmbedArgs {
    /// The model folder (config.json, model.safetensors, tokenizer.json, 1_Pooling/).
    #[arg(long)]
    model: PathBuf,
    /// The dtype weights are converted to at load: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = dtype_arg)]
    dtype: DType,
    /// Print `{"model": ..., "dim": ..., "embeddings": [[...], ...]}` instead of one line per text.
    #[arg(long)]
    json: bool,
    /// The texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
}

#[derive(Args)]
struct GenerateArgs {
    /// The model folder (config.json, model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// The prompt as comma-separated token ids, e.g. 5,17,42.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// How many tokens to generate.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// The dtype weights are converted to at load: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = dtype_arg)]
    dtype: DType,
    /// Also write `{"prompt_logits": [...], "step_logits": [...]}` to this JSON file.
    #[arg(long)]
    logits: Option<PathBuf>,
}

#[derive(Args)]
struct AttentionMapArgs {
    /// The BERT model folder (with tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The text whose self-attention to draw.
    #[arg(long)]
    text: String,
    /// The layer (0-based).
    #[arg(long)]
    layer: usize,
    /// The head (0-based), or `all` for a grid of every head of the layer.
    #[arg(long)]
    head: String,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// The dtype weights are converted to at load: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = dtype_arg)]
    dtype: DType,
}

fn dtype_arg(s: &str) -> Result<DType, String> {
    parse_dtype(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.threads;
    let command = match cli.command {
        // bench runs each case in pools of its own sizes.
        Command::Bench(args) => return report(bench(args, threads)),
        other => other,
    };
    let run = || match command {
        Command::Embed(args) => embed(args),
        Command::Generate(args) => generate(args),
        Command::AttentionMap(args) => attention_map(args),
        Command::Bench(args) => bench(args, Vec::new()),
    };
    let result = match threads.as_slice() {
        [] => run(),
        &[n] => match rayon::ThreadPoolBuilder::new().num_threads(n).build() {
            Ok(pool) => pool.install(run),
            Err(e) => Err(format!("cannot start {n} threads: {e}").into()),
        },
        many => Err(format!("--threads takes one value except for bench, got {many:?}").into()),
    };
    report(result)
}

/// Prints an error and its causes; the exit code.
fn report(result: CliResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string();
            eprintln!("error: {message}");
            let mut source = e.source();
            while let Some(s) = source {
                if !message.contains(&s.to_string()) {
                    eprintln!("  caused by: {s}");
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs, threads: Vec<usize>) -> CliResult<()> {
    use flashkern::bench::{self, Op};
    if let Err(e) = flashkern::isa::env_cap() {
        return Err(e.into());
    }
    let mut ops = Vec::new();
    for name in &args.op {
        match name.as_str() {
            "all" => ops.extend(Op::ALL),
            other => ops.push(Op::ALL.into_iter().find(|op| op.name() == other).ok_or_else(|| {
                format!("unknown --op {other:?}; expected attention, matmul, matmul_bf16, norm, model or all")
            })?),
        }
    }
    ops.dedup();
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let mut threads = if threads.is_empty() { vec![1, cores] } else { threads };
    threads.dedup();
    if threads.contains(&0) {
        return Err("--threads values must be at least 1".into());
    }
    let model_dir = args.model.or_else(|| std::env::var_os("FLASHKERN_MINILM_DIR").map(PathBuf::from)).or_else(|| {
        let default = PathBuf::from("../shared/models/all-MiniLM-L6-v2");
        default.is_dir().then_some(default)
    });
    let options =
        bench::Options { ops, shape: args.shape, dtypes: args.dtype, threads, budget: args.budget, model_dir };
    let report = bench::run(&options, |line| eprintln!("{line}"))?;
    println!("{}", report.table());
    if let Some(path) = args.json {
        std::fs::write(&path, report.json()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn load_encoder(dir: &Path, dtype: DType) -> CliResult<SentenceEncoder> {
    eprintln!("loading {} ({dtype} weights)...", dir.display());
    let start = Instant::now();
    let encoder = SentenceEncoder::load(dir, dtype)?;
    eprintln!("loaded in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    Ok(encoder)
}

fn embed(args: EmbedArgs) -> CliResult<()> {
    let encoder = load_encoder(&args.model, args.dtype)?;
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    eprintln!("embedding {} text(s)...", texts.len());
    let start = Instant::now();
    let embeddings = encoder.embed(&texts)?;
    eprintln!("embedded in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    let dim = embeddings.first().map_or(0, Vec::len);
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            model: String,
            dim: usize,
            embeddings: &'a [Vec<f32>],
        }
        let out = Out { model: args.model.display().to_string(), dim, embeddings: &embeddings };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for e in &embeddings {
            println!("{}", e.iter().map(f32::to_string).collect::<Vec<_>>().join(" "));
        }
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> CliResult<()> {
    eprintln!("loading {} ({} weights)...", args.model.display(), args.dtype);
    let start = Instant::now();
    let model = Gpt2Model::load(&args.model, args.dtype)?;
    eprintln!("loaded in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    let start = Instant::now();
    let n = args.max_new_tokens;
    let generated = model.generate(&args.ids, n, |step, id| eprintln!("token {}/{n}: {id}", step + 1))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("generated {n} token(s) in {:.1} ms ({:.1} tokens/s)", secs * 1e3, n as f64 / secs.max(1e-9));
    println!("{}", generated.new_tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    if let Some(path) = &args.logits {
        // Serialised from f32 directly, so each value is the shortest decimal that round-trips.
        #[derive(serde::Serialize)]
        struct Logits<'a> {
            prompt_logits: &'a [Vec<f32>],
            step_logits: &'a [Vec<f32>],
        }
        let json = serde_json::to_string(&Logits {
            prompt_logits: &generated.prompt_logits,
            step_logits: &generated.step_logits,
        })?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote logits to {}", path.display());
    }
    Ok(())
}

fn attention_map(args: AttentionMapArgs) -> CliResult<()> {
    let encoder = load_encoder(&args.model, args.dtype)?;
    let config = encoder.model().config();
    let (layers, heads) = (config.num_hidden_layers, config.num_attention_heads);
    if args.layer >= layers {
        return Err(
            format!("--layer {} is out of range: the model has {layers} layers (0..{layers})", args.layer).into()
        );
    }
    let chosen: Vec<usize> = if args.head == "all" {
        (0..heads).collect()
    } else {
        match args.head.parse::<usize>() {
            Ok(h) if h < heads => vec![h],
            _ => return Err(format!("--head {:?} must be `all` or a head below {heads}", args.head).into()),
        }
    };
    let encoded = encoder.tokenizer().encode(&args.text)?;
    eprintln!("{} tokens; running the encoder...", encoded.ids.len());
    let out = encoder.model().encode_with_attention(std::slice::from_ref(&encoded.ids))?;
    let n = encoded.ids.len();
    let probs = &out.attentions[args.layer];
    let font = FontRef::try_from_slice(dejavu::sans::regular()).map_err(|e| format!("font: {e}"))?;
    let panels: Vec<RgbImage> = chosen
        .iter()
        .map(|&h| {
            let matrix = &probs[h * n * n..(h + 1) * n * n];
            let (cell, size) = if chosen.len() == 1 { (28, 14.0) } else { (16, 10.0) };
            heatmap(&font, matrix, &encoded.tokens, &format!("layer {} head {h}", args.layer), cell, size)
        })
        .collect();
    let image = grid(&panels, 4);
    image.save(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!("wrote {} ({}×{} px)", args.out.display(), image.width(), image.height());
    Ok(())
}

/// A perceptually ordered colour scale (dark purple → teal → yellow) for p ∈ [0, 1].
fn colour(p: f32) -> Rgb<u8> {
    const STOPS: [[f32; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    let x = p.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x as usize).min(STOPS.len() - 2);
    let t = x - i as f32;
    let c = |k: usize| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * t).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

fn text_width(font: &FontRef, size: f32, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    text.chars().map(|c| scaled.h_advance(scaled.glyph_id(c))).sum()
}

/// Draws `text` with its baseline starting at (x, y); `vertical` turns it 90° to read upwards.
fn draw_text(img: &mut RgbImage, font: &FontRef, size: f32, text: &str, x: f32, y: f32, vertical: bool) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut caret = 0.0;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        let glyph = id.with_scale_and_position(size, point(caret, 0.0));
        caret += scaled.h_advance(id);
        let Some(outlined) = font.outline_glyph(glyph) else { continue };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            // (u, v): position along the text and below the baseline.
            let (u, v) = (bounds.min.x + gx as f32, bounds.min.y + gy as f32);
            let (px, py) = if vertical { (x + v, y - u) } else { (x + u, y + v) };
            if px >= 0.0 && py >= 0.0 && (px as u32) < img.width() && (py as u32) < img.height() {
                let pixel = img.get_pixel_mut(px as u32, py as u32);
                for ch in &mut pixel.0 {
                    *ch = (f32::from(*ch) * (1.0 - coverage)).round() as u8;
                }
            }
        });
    }
}

/// One head's `[n, n]` probabilities as a labelled heatmap (rows: queries, columns: keys).
fn heatmap(font: &FontRef, probs: &[f32], tokens: &[String], title: &str, cell: u32, size: f32) -> RgbImage {
    let n = tokens.len() as u32;
    let label = tokens.iter().map(|t| text_width(font, size, t)).fold(0.0, f32::max).ceil() as u32 + 8;
    let title_h = (size * 2.0) as u32;
    let (left, top) = (label, label + title_h);
    let mut img = RgbImage::from_pixel(left + n * cell + 8, top + n * cell + 8, Rgb([255, 255, 255]));
    draw_text(&mut img, font, size * 1.1, title, left as f32, size * 1.4, false);
    for (i, token) in tokens.iter().enumerate() {
        let i = i as u32;
        let w = text_width(font, size, token);
        // Row label, right-aligned before row i; column label, reading upwards above column i.
        draw_text(
            &mut img,
            font,
            size,
            token,
            left as f32 - 4.0 - w,
            (top + i * cell) as f32 + (cell as f32 + size) / 2.0 - 2.0,
            false,
        );
        draw_text(
            &mut img,
            font,
            size,
            token,
            (left + i * cell) as f32 + (cell as f32 - size) / 2.0 + 1.0,
            top as f32 - 4.0,
            true,
        );
    }
    for q in 0..n {
        for k in 0..n {
            let c = colour(probs[(q * n + k) as usize]);
            for y in 0..cell - 1 {
                for x in 0..cell - 1 {
                    img.put_pixel(left + k * cell + x, top + q * cell + y, c);
                }
            }
        }
    }
    img
}

/// Panels tiled `columns` to a row.
fn grid(panels: &[RgbImage], columns: usize) -> RgbImage {
    if panels.len() == 1 {
        return panels[0].clone();
    }
    let (w, h) = (panels[0].width(), panels[0].height());
    let cols = columns.min(panels.len()) as u32;
    let rows = panels.len().div_ceil(columns) as u32;
    let mut img = RgbImage::from_pixel(w * cols, h * rows, Rgb([255, 255, 255]));
    for (i, p) in panels.iter().enumerate() {
        let (cx, cy) = ((i as u32 % cols) * w, (i as u32 / cols) * h);
        image::imageops::replace(&mut img, p, i64::from(cx), i64::from(cy));
    }
    img
}
