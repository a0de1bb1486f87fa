//! The corrupt-file suite: synthetic safetensors images, each broken in one way, must each be
//! rejected with their own specific error naming the tensor (or the file); misaligned data
//! must still load (by copying); sharded checkpoints and shape checks against config.json.

use flashkern::DType;
use flashkern::ModelError;
use flashkern::config::ModelConfig;
use flashkern::models::bert::BertModel;
use flashkern::weights::{SafeTensors, StDtype, Weights, f32_bytes, serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A file image from a raw header string (padded with spaces to `pad_to` bytes, when given)
/// and data bytes, with the true header length.
fn image(header: &str, data: &[u8]) -> Vec<u8> {
    image_with_len(header.as_bytes(), header.len() as u64, data)
}

fn image_with_len(header: &[u8], declared: u64, data: &[u8]) -> Vec<u8> {
    let mut out = declared.to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn load(bytes: Vec<u8>) -> Result<SafeTensors, ModelError> {
    SafeTensors::from_bytes(bytes, "test.safetensors")
}

/// Asserts the error's message names `what` (the tensor or the problem) and the source.
fn assert_names(err: &ModelError, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(what), "message {msg:?} does not name {what:?}");
}

fn two_tensors() -> Vec<u8> {
    let a = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let b = f32_bytes(&[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    serialize(&[("a", StDtype::F32, &[2, 2], &a), ("b", StDtype::F32, &[6], &b)], &BTreeMap::new()).unwrap()
}

#[test]
fn a_valid_file_loads_zero_copy() {
    let st = load(two_tensors()).unwrap();
    let b = st.tensor("b").unwrap();
    assert_eq!(b.shape(), &[6]);
    assert!(b.is_zero_copy());
    assert_eq!(b.data().f32_run(0, 6).unwrap(), &[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    let dir = temp_dir("valid");
    std::fs::write(dir.join("model.safetensors"), two_tensors()).unwrap();
    let mapped = Weights::open(&dir).unwrap();
    assert!(mapped.get("a").unwrap().is_zero_copy());
    assert_eq!(mapped.get("a").unwrap().view().unwrap().get_f32(&[1, 1]), 4.0);
}

#[test]
fn truncated_file() {
    let mut bytes = two_tensors();
    bytes.truncate(bytes.len() - 4);
    let err = load(bytes).unwrap_err();
    assert!(matches!(&err, ModelError::Truncated { tensor, .. } if tensor == "b"), "{err}");
    assert_names(&err, "truncated");
    let err = load(vec![1, 2, 3]).unwrap_err();
    assert!(matches!(err, ModelError::FileTooShort { len: 3, .. }), "{err}");
}

#[test]
fn header_length_beyond_the_file() {
    let err = load(image_with_len(b"{}", 4096, &[])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderBeyondFile { header_len: 4096, .. }), "{err}");
    assert_names(&err, "test.safetensors");
}

#[test]
fn header_length_over_the_sane_bound() {
    let err = load(image_with_len(b"{}", 200_000_000, &[])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderTooLarge { header_len: 200_000_000, .. }), "{err}");
    let err = load(image_with_len(b"{}", u64::MAX, &[])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderTooLarge { .. }), "{err}");
}

#[test]
fn invalid_json() {
    let err = load(image(r#"{"a": {"dtype": "F32", "shape": [1], "#, &[0; 4])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderJson { .. }), "{err}");
    let err = load(image(r#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, &[0; 4])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderJson { .. }), "{err}");
    assert_names(&err, "`a`");
    let err = load(image(r#"[1, 2]"#, &[])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderJson { .. }), "{err}");
}

#[test]
fn invalid_utf8() {
    let mut header = br#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#.to_vec();
    header[2] = 0xff;
    let err = load(image_with_len(&header, header.len() as u64, &[0; 4])).unwrap_err();
    assert!(matches!(err, ModelError::HeaderUtf8 { offset: 2, .. }), "{err}");
}

#[test]
fn unknown_dtype() {
    let err = load(image(r#"{"w": {"dtype": "F7", "shape": [1], "data_offsets": [0, 4]}}"#, &[0; 4])).unwrap_err();
    assert!(matches!(&err, ModelError::UnknownDtype { tensor, dtype, .. } if tensor == "w" && dtype == "F7"), "{err}");
    assert_names(&err, "`w`");
}

#[test]
fn shape_product_overflow() {
    let header = r#"{"big": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 4]}}"#;
    let err = load(image(header, &[0; 4])).unwrap_err();
    assert!(matches!(&err, ModelError::ShapeOverflow { tensor, .. } if tensor == "big"), "{err}");
    // The element count fits but the byte count does not.
    let header = r#"{"big": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 8]}}"#;
    let err = load(image(header, &[0; 8])).unwrap_err();
    assert!(matches!(&err, ModelError::ShapeOverflow { tensor, .. } if tensor == "big"), "{err}");
}

#[test]
fn offsets_outside_the_data() {
    let header = r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "far": {"dtype": "F32", "shape": [2], "data_offsets": [1000000, 1000008]}}"#;
    let err = load(image(header, &[0; 16])).unwrap_err();
    assert!(matches!(&err, ModelError::OffsetsOutsideData { tensor, start: 1000000, .. } if tensor == "far"), "{err}");
    let header =
        r#"{"huge": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}}"#;
    let err = load(image(header, &[0; 16])).unwrap_err();
    assert!(matches!(&err, ModelError::OffsetsOutsideData { tensor, .. } if tensor == "huge"), "{err}");
}

#[test]
fn end_before_start() {
    let header = r#"{"rev": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}"#;
    let err = load(image(header, &[0; 8])).unwrap_err();
    assert!(matches!(&err, ModelError::OffsetsReversed { tensor, start: 8, end: 4, .. } if tensor == "rev"), "{err}");
}

#[test]
fn byte_length_differs_from_shape() {
    let header = r#"{"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}"#;
    let err = load(image(header, &[0; 8])).unwrap_err();
    assert!(
        matches!(&err, ModelError::ByteLengthMismatch { tensor, expected: 6, got: 8, .. } if tensor == "w"),
        "{err}"
    );
}

#[test]
fn overlapping_tensors() {
    let header = r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                     "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}"#;
    let err = load(image(header, &[0; 24])).unwrap_err();
    assert!(
        matches!(&err, ModelError::OverlappingTensors { tensor, other, .. } if tensor == "b" && other == "a"),
        "{err}"
    );
}

#[test]
fn gaps_between_and_after_tensors() {
    let header = r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                     "b": {"dtype": "F32", "shape": [4], "data_offsets": [24, 40]}}"#;
    let err = load(image(header, &[0; 40])).unwrap_err();
    assert!(matches!(&err, ModelError::Gap { tensor, start: 16, end: 24, .. } if tensor == "b"), "{err}");
    let header = r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#;
    let err = load(image(header, &[0; 20])).unwrap_err();
    assert!(matches!(&err, ModelError::Gap { tensor, start: 16, end: 20, .. } if tensor == "a"), "{err}");
}

#[test]
fn misaligned_data_still_loads_by_copying() {
    let values = [1.5f32, -2.0, 3.25];
    // An 8 + 34-byte prefix puts the data 2 bytes off 4-byte alignment.
    let mut header = r#"{"m": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}"#.to_string();
    while (8 + header.len()) % 4 != 2 {
        header.push(' ');
    }
    let bytes = image(&header, &f32_bytes(&values));
    let st = load(bytes.clone()).unwrap();
    let t = st.tensor("m").unwrap();
    assert!(!t.is_zero_copy(), "misaligned data must be copied");
    assert_eq!(t.data().f32_run(0, 3).unwrap(), &values);
    // Through a memory map too.
    let dir = temp_dir("misaligned");
    let path = dir.join("x.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let mapped = SafeTensors::open(&path).unwrap();
    assert_eq!(mapped.tensor("m").unwrap().data().f32_run(0, 3).unwrap(), &values);
    assert!(!mapped.tensor("m").unwrap().is_zero_copy());
}

#[test]
fn duplicate_names() {
    let header = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                     "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
    let err = load(image(header, &[0; 8])).unwrap_err();
    assert!(matches!(&err, ModelError::DuplicateTensor { tensor, .. } if tensor == "a"), "{err}");
}

#[test]
fn missing_and_non_float_tensors() {
    let ids: Vec<u8> = (0i64..4).flat_map(|i| i.to_le_bytes()).collect();
    let bytes = serialize(&[("ids", StDtype::I64, &[4], &ids)], &BTreeMap::new()).unwrap();
    let w = Weights::from_bytes(bytes, "ids.safetensors").unwrap();
    let err = w.get("ids").unwrap_err();
    assert!(matches!(&err, ModelError::UnsupportedDtype { tensor, .. } if tensor == "ids"), "{err}");
    let err = w.get("nope").unwrap_err();
    assert!(matches!(&err, ModelError::MissingTensor { tensor, .. } if tensor == "nope"), "{err}");
    assert_names(&err, "ids.safetensors");
}

// ---- tiny synthetic BERT: shape checks against config.json, sharding ----

const TINY: &str = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
 "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8, "type_vocab_size": 2,
 "layer_norm_eps": 1e-12, "hidden_act": "gelu", "position_embedding_type": "absolute",
 "hidden_dropout_prob": 0.1}"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flashkern-weights-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tensors of a tiny BERT (hidden 8, FFN 16, 1 layer), deterministic values; `query_shape`
/// overrides the query weight's shape.
fn tiny_bert_tensors(query_shape: [usize; 2]) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let (h, f) = (8, 16);
    let mut seed = 1u32;
    let mut values = |n: usize| -> Vec<u8> {
        f32_bytes(
            &(0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.5
                })
                .collect::<Vec<_>>(),
        )
    };
    let mut t = vec![
        ("embeddings.word_embeddings.weight".to_string(), vec![10, h]),
        ("embeddings.position_embeddings.weight".into(), vec![8, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    let p = "encoder.layer.0";
    for (name, shape) in [
        ("attention.self.query.weight", query_shape.to_vec()),
        ("attention.self.query.bias", vec![h]),
        ("attention.self.key.weight", vec![h, h]),
        ("attention.self.key.bias", vec![h]),
        ("attention.self.value.weight", vec![h, h]),
        ("attention.self.value.bias", vec![h]),
        ("attention.output.dense.weight", vec![h, h]),
        ("attention.output.dense.bias", vec![h]),
        ("attention.output.LayerNorm.weight", vec![h]),
        ("attention.output.LayerNorm.bias", vec![h]),
        ("intermediate.dense.weight", vec![f, h]),
        ("intermediate.dense.bias", vec![f]),
        ("output.dense.weight", vec![h, f]),
        ("output.dense.bias", vec![h]),
        ("output.LayerNorm.weight", vec![h]),
        ("output.LayerNorm.bias", vec![h]),
    ] {
        t.push((format!("{p}.{name}"), shape));
    }
    t.into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, shape, values(n))
        })
        .collect()
}

fn write_tiny_bert(dir: &std::path::Path, query_shape: [usize; 2]) {
    let tensors = tiny_bert_tensors(query_shape);
    let refs: Vec<_> = tensors.iter().map(|(n, s, b)| (n.as_str(), StDtype::F32, s.as_slice(), b.as_slice())).collect();
    std::fs::write(dir.join("model.safetensors"), serialize(&refs, &BTreeMap::new()).unwrap()).unwrap();
    std::fs::write(dir.join("config.json"), TINY).unwrap();
}

#[test]
fn tensor_shape_disagreeing_with_config() {
    let dir = temp_dir("badshape");
    write_tiny_bert(&dir, [8, 6]);
    let err = BertModel::load(&dir, DType::F32).unwrap_err();
    assert!(
        matches!(&err, ModelError::TensorShape { tensor, expected, got }
            if tensor == "encoder.layer.0.attention.self.query.weight" && expected == &[8, 8] && got == &[8, 6]),
        "{err}"
    );
    assert_names(&err, "encoder.layer.0.attention.self.query.weight");
    // A config whose head count does not divide the width.
    let bad = TINY.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3");
    let err = ModelConfig::parse(bad.as_bytes(), &dir.join("config.json")).unwrap_err();
    assert!(matches!(err, ModelError::Config { .. }), "{err}");
    assert_names(&err, "num_attention_heads");
}

#[test]
fn config_rejects_unknown_and_unsupported_fields() {
    let path = PathBuf::from("config.json");
    let unknown = TINY.replace("\"hidden_act\"", "\"rope_theta\": 10000, \"hidden_act\"");
    let err = ModelConfig::parse(unknown.as_bytes(), &path).unwrap_err();
    assert_names(&err, "rope_theta");
    let relu = TINY.replace("\"gelu\"", "\"relu\"");
    assert_names(&ModelConfig::parse(relu.as_bytes(), &path).unwrap_err(), "hidden_act");
    let missing = TINY.replace("\"layer_norm_eps\": 1e-12,", "");
    assert_names(&ModelConfig::parse(missing.as_bytes(), &path).unwrap_err(), "layer_norm_eps");
    let relative = TINY.replace("\"absolute\"", "\"relative_key\"");
    assert_names(&ModelConfig::parse(relative.as_bytes(), &path).unwrap_err(), "position_embedding_type");
    assert!(ModelConfig::parse(TINY.as_bytes(), &path).is_ok());
}

#[test]
fn sharded_checkpoint_equals_single_file() {
    let single = temp_dir("single");
    write_tiny_bert(&single, [8, 8]);
    let sharded = temp_dir("sharded");
    let tensors = tiny_bert_tensors([8, 8]);
    let (first, second) = tensors.split_at(9);
    let mut map = BTreeMap::new();
    for (i, part) in [first, second].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let refs: Vec<_> =
            part.iter().map(|(n, s, b)| (n.as_str(), StDtype::F32, s.as_slice(), b.as_slice())).collect();
        std::fs::write(sharded.join(&file), serialize(&refs, &BTreeMap::new()).unwrap()).unwrap();
        for (name, _, _) in part.iter() {
            map.insert(name.clone(), file.clone());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(sharded.join("config.json"), TINY).unwrap();

    let a = BertModel::load(&single, DType::F32).unwrap().encode(&[vec![1, 4, 2], vec![3]]).unwrap();
    let w = Weights::open(&sharded).unwrap();
    assert_eq!(w.files().len(), 2);
    let b = BertModel::load(&sharded, DType::F32).unwrap().encode(&[vec![1, 4, 2], vec![3]]).unwrap();
    assert!(a.hidden.iter().all(|x| x.is_finite()));
    assert_eq!(a.sequence(0).unwrap(), b.sequence(0).unwrap());
    assert_eq!(a.sequence(1).unwrap(), b.sequence(1).unwrap());

    // An index pointing a tensor at a shard that lacks it.
    map.insert("embeddings.LayerNorm.bias".into(), "model-00002-of-00002.safetensors".into());
    let index = serde_json::json!({"weight_map": map});
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let err = Weights::open(&sharded).unwrap_err();
    assert!(matches!(err, ModelError::InvalidIndex { .. }), "{err}");
    assert_names(&err, "embeddings.LayerNorm.bias");
}

#[test]
fn token_ids_outside_the_vocabulary_are_errors() {
    let dir = temp_dir("vocab");
    write_tiny_bert(&dir, [8, 8]);
    let model = BertModel::load(&dir, DType::BF16).unwrap();
    let err = model.encode(&[vec![1, 99]]).unwrap_err();
    assert_names(&err, "99");
    let err = model.encode(&[vec![1; 9]]).unwrap_err();
    assert!(matches!(err, ModelError::InvalidInput { .. }), "{err}");
}

#[test]
fn huge_sizes_do_not_overflow() {
    // One U8 tensor claiming almost 2⁶⁴ bytes, tiling from 0: a truncation, not a panic.
    let header =
        r#"{"t": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 18446744073709551615]}}"#;
    let err = load(image(header, &[0; 8])).unwrap_err();
    assert!(matches!(&err, ModelError::Truncated { tensor, .. } if tensor == "t"), "{err}");
    let config = r#"{"model_type": "gpt2", "n_embd": 18446744073709551615, "n_positions": 8, "vocab_size": 4,
        "n_layer": 1, "n_head": 1, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}"#;
    let err = ModelConfig::parse(config.as_bytes(), &PathBuf::from("config.json")).unwrap_err();
    assert_names(&err, "n_embd");
}

#[test]
fn a_model_builds_from_an_owned_buffer() {
    let tensors = tiny_bert_tensors([8, 8]);
    let refs: Vec<_> = tensors.iter().map(|(n, s, b)| (n.as_str(), StDtype::F32, s.as_slice(), b.as_slice())).collect();
    let bytes = serialize(&refs, &BTreeMap::new()).unwrap();
    let ModelConfig::Bert(config) = ModelConfig::parse(TINY.as_bytes(), &PathBuf::from("config.json")).unwrap() else {
        panic!("a bert config")
    };
    let weights = Weights::from_bytes(bytes, "buffer").unwrap();
    let out = BertModel::from_weights(config.clone(), weights, DType::F32).unwrap().encode(&[vec![1, 2, 3]]).unwrap();
    let dir = temp_dir("owned");
    write_tiny_bert(&dir, [8, 8]);
    let from_file = BertModel::load(&dir, DType::F32).unwrap().encode(&[vec![1, 2, 3]]).unwrap();
    assert_eq!(out.hidden, from_file.hidden);
    // A missing tensor names itself and the buffer.
    let without: Vec<_> = refs.iter().filter(|t| !t.0.ends_with("value.bias")).cloned().collect();
    let weights = Weights::from_bytes(serialize(&without, &BTreeMap::new()).unwrap(), "buffer").unwrap();
    let err = BertModel::from_weights(config, weights, DType::F32).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { tensor, .. } if tensor == "encoder.layer.0.attention.self.value.bias"),
        "{err}"
    );
}

#[test]
fn configs_made_in_code_are_checked_before_use() {
    use flashkern::config::{BertConfig, Gpt2Config};
    use flashkern::models::gpt2::Gpt2Model;
    let weights = || Weights::from_bytes(two_tensors(), "test.safetensors").unwrap();
    let gpt2 = Gpt2Config {
        vocab_size: 4,
        n_positions: 8,
        n_embd: 6,
        n_layer: 1,
        n_head: 0,
        n_inner: 24,
        layer_norm_epsilon: 1e-5,
        tie_word_embeddings: true,
    };
    let Err(err) = Gpt2Model::from_weights(gpt2.clone(), weights(), DType::F32) else { panic!("n_head 0 accepted") };
    assert_names(&err, "`n_head` must be positive");
    let Err(err) = Gpt2Model::from_weights(Gpt2Config { n_head: 4, ..gpt2.clone() }, weights(), DType::F32) else {
        panic!("n_embd 6 with 4 heads accepted")
    };
    assert_names(&err, "not a multiple of n_head");
    let huge = Gpt2Config { n_head: 2, n_positions: usize::MAX, ..gpt2 };
    let Err(err) = Gpt2Model::from_weights(huge, weights(), DType::F32) else {
        panic!("an unaddressable wpe accepted")
    };
    assert_names(&err, "too large");
    let bert = BertConfig {
        vocab_size: 4,
        hidden_size: 6,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 24,
        max_position_embeddings: 8,
        type_vocab_size: 2,
        layer_norm_eps: f32::NAN,
    };
    let Err(err) = BertModel::from_weights(bert, weights(), DType::F32) else { panic!("a NaN eps accepted") };
    assert_names(&err, "epsilon");
}
