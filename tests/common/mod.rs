//! Shared helpers for the model tests: model folders from the environment, reference.json.

#![allow(dead_code)]

use std::path::PathBuf;

/// The model folder named by `var`, or `None` (after printing why) when unset or missing.
pub fn model_dir(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        None => {
            eprintln!("skipped: {var} is not set (point it at the model folder, see .ci/run)");
            None
        }
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.join("reference.json").is_file() {
                Some(dir)
            } else {
                eprintln!("skipped: {var}={} has no reference.json", dir.display());
                None
            }
        }
    }
}

/// The folder's reference.json.
pub fn reference(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read(dir.join("reference.json")).expect("read reference.json");
    serde_json::from_slice(&text).expect("parse reference.json")
}

/// A JSON array of numbers (any nesting) flattened to f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().expect("number") as f32),
        }
    }
    walk(v, &mut out);
    out
}

/// A JSON array of integers.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("integer") as u32).collect()
}

/// The largest |a − b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
