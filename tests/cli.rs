//! The `flashkern` binary end to end on the real model folders (skipped when unset).

mod common;

use common::{cosine, floats, ids, max_abs_diff, model_dir, reference};
use std::process::Command;

fn flashkern(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flashkern")).args(args).output().expect("run flashkern")
}

#[test]
fn generate_writes_ids_and_logits() {
    let Some(dir) = model_dir("FLASHKERN_GPT2_TINY_DIR") else { return };
    let r = reference(&dir);
    let logits = std::env::temp_dir().join(format!("flashkern-cli-{}.json", std::process::id()));
    let out = flashkern(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        "5,17,42",
        "--max-new-tokens",
        "16",
        "--logits",
        logits.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<u32> =
        String::from_utf8(out.stdout).unwrap().trim().split(',').map(|s| s.parse().unwrap()).collect();
    assert_eq!(printed, ids(&r["greedy"]["new_tokens"]));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&logits).unwrap()).unwrap();
    assert_eq!(json["prompt_logits"].as_array().unwrap().len(), 3);
    let diff = max_abs_diff(&floats(&json["step_logits"]), &floats(&r["greedy"]["step_logits"]));
    assert!(diff <= 1e-4, "step logits via the CLI: {diff}");
}

#[test]
fn embed_json_and_errors() {
    let Some(dir) = model_dir("FLASHKERN_MINILM_DIR") else { return };
    let r = reference(&dir);
    let text = r["sentences"][6].as_str().unwrap();
    let out = flashkern(&["embed", "--model", dir.to_str().unwrap(), "--json", text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["dim"], 384);
    let cos = cosine(&floats(&json["embeddings"][0]), &floats(&r["single"][6]["embedding"]));
    assert!(cos >= 0.99999, "{cos}");

    let out = flashkern(&["embed", "--model", "/nonexistent/model", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model/config.json"), "{err}");

    let png = std::env::temp_dir().join(format!("flashkern-cli-{}.png", std::process::id()));
    let args = ["attention-map", "--model", dir.to_str().unwrap(), "--text", text, "--layer", "7", "--head", "0"];
    let out = flashkern(&[&args[..], &["--out", png.to_str().unwrap()]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layer 7"));
    let args = ["attention-map", "--model", dir.to_str().unwrap(), "--text", text, "--layer", "1", "--head", "all"];
    let out = flashkern(&[&args[..], &["--out", png.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}
