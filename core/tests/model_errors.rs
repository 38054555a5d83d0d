//! Loading damaged checkpoints: each is a copy of the tiny checkpoint A of
//! `core/tests/fixtures/llm` in a temporary directory with one thing broken, and the error must
//! name what is broken (tensor, shard, field).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod llm_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use llm_support::{checkpoint, max_abs_diff, Reference};
use tch::{Device, Kind, Tensor};
use voxloop_core::model::StepAudio2;
use voxloop_core::Error;

/// A fresh copy of checkpoint A.
fn copy_of_a() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(checkpoint("a")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn index_path(dir: &Path) -> PathBuf {
    dir.join("model.safetensors.index.json")
}

fn read_index(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(index_path(dir)).unwrap()).unwrap()
}

fn write_index(dir: &Path, index: &serde_json::Value) {
    std::fs::write(index_path(dir), serde_json::to_string_pretty(index).unwrap()).unwrap();
}

/// The shard file holding `name`, per the index.
fn shard_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(read_index(dir)["weight_map"][name].as_str().unwrap())
}

/// Rewrites the shard holding `name` after `edit` changed its tensors.
fn edit_shard(dir: &Path, name: &str, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let shard = shard_of(dir, name);
    let mut tensors: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(&shard).unwrap().into_iter().collect();
    edit(&mut tensors);
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    Tensor::write_safetensors(&list, &shard).unwrap();
}

fn load_err(dir: &Path) -> Error {
    StepAudio2::load(dir, Device::Cpu, Kind::Float).expect_err("a damaged checkpoint must not load")
}

const VICTIM: &str = "model.layers.1.mlp.up_proj.weight";

#[test]
fn a_missing_tensor_is_named() {
    let dir = copy_of_a();
    edit_shard(dir.path(), VICTIM, |t| {
        t.remove(VICTIM);
    });
    let mut index = read_index(dir.path());
    index["weight_map"].as_object_mut().unwrap().remove(VICTIM);
    write_index(dir.path(), &index);
    let err = load_err(dir.path());
    assert!(
        matches!(&err, Error::MissingTensor { name, others: 0, .. } if name == VICTIM),
        "{err}"
    );
    assert!(err.to_string().contains(VICTIM), "{err}");
}

#[test]
fn a_tensor_listed_in_the_index_but_absent_from_its_shard_is_named() {
    let dir = copy_of_a();
    edit_shard(dir.path(), VICTIM, |t| {
        t.remove(VICTIM);
    });
    let err = load_err(dir.path());
    let text = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{text}");
    assert!(text.contains(VICTIM) && text.contains("model.safetensors.index.json"), "{text}");
}

#[test]
fn a_misshaped_tensor_is_named_with_both_shapes() {
    let dir = copy_of_a();
    let name = "encoder.blocks.0.attn.key.weight";
    edit_shard(dir.path(), name, |t| {
        t.insert(name.into(), Tensor::zeros([32, 31], (Kind::Float, Device::Cpu)));
    });
    let err = load_err(dir.path());
    let text = err.to_string();
    assert!(
        matches!(&err, Error::TensorShape { name: n, expected, found, .. }
            if n == name && expected == &[32, 32] && found == &[32, 31]),
        "{text}"
    );
    assert!(
        text.contains(name) && text.contains("[32, 31]") && text.contains("[32, 32]"),
        "{text}"
    );
}

#[test]
fn an_unexpected_tensor_is_named() {
    let dir = copy_of_a();
    let extra = "model.layers.0.self_attn.rotary_emb.inv_freq";
    edit_shard(dir.path(), VICTIM, |t| {
        t.insert(extra.into(), Tensor::ones([4], (Kind::Float, Device::Cpu)));
    });
    let shard = shard_of(dir.path(), VICTIM);
    let mut index = read_index(dir.path());
    let file = shard.file_name().unwrap().to_str().unwrap().to_owned();
    index["weight_map"][extra] = serde_json::Value::String(file);
    write_index(dir.path(), &index);
    let err = load_err(dir.path());
    assert!(matches!(&err, Error::UnexpectedTensor { name, .. } if name == extra), "{err}");
    assert!(err.to_string().contains(extra), "{err}");
}

#[test]
fn a_config_missing_a_field_is_named_with_the_file() {
    let dir = copy_of_a();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["text_config"].as_object_mut().unwrap().remove("rope_theta");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = load_err(dir.path());
    let text = err.to_string();
    assert!(matches!(err, Error::ModelConfig { .. }), "{text}");
    assert!(text.contains("rope_theta") && text.contains("text_config"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_missing_shard_is_named() {
    let dir = copy_of_a();
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(&err, Error::MissingShard { shard: s, .. } if s == &shard), "{err}");
    assert!(err.to_string().contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn a_truncated_shard_is_named() {
    let dir = copy_of_a();
    let shard = dir.path().join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    let text = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{text}");
    assert!(text.contains("model-00001-of-00002.safetensors"), "{text}");
}

#[test]
fn a_directory_without_weights_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(checkpoint("a").join("config.json"), dir.path().join("config.json")).unwrap();
    let err = load_err(dir.path());
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

/// The positive counterpart: the same weights as one `model.safetensors` (no index) load and
/// give the sharded checkpoint's logits.
#[test]
fn a_single_file_checkpoint_loads_like_the_sharded_one() {
    let dir = copy_of_a();
    let mut all: Vec<(String, Tensor)> = Vec::new();
    let index = read_index(dir.path());
    let mut shards: Vec<&str> =
        index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    shards.sort();
    shards.dedup();
    for shard in shards {
        all.extend(Tensor::read_safetensors(dir.path().join(shard)).unwrap());
        std::fs::remove_file(dir.path().join(shard)).unwrap();
    }
    std::fs::remove_file(index_path(dir.path())).unwrap();
    Tensor::write_safetensors(&all, dir.path().join("model.safetensors")).unwrap();

    let reference = Reference::load("a");
    let prompt = reference.ids("prompt_ids");
    let text: Vec<u32> =
        prompt.iter().copied().filter(|&t| t != reference.audio_patch_id()).collect();
    let single = StepAudio2::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let sharded = llm_support::load("a");
    let a = single.forward_full(&text, &[], reference.audio_patch_id()).unwrap();
    let b = sharded.forward_full(&text, &[], reference.audio_patch_id()).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

/// Audio chunks: a wrong mel shape and an over-long chunk are errors naming the chunk; a chunk
/// too short for any row gives none and leaves the other chunks' rows as they are alone.
#[test]
fn malformed_and_tiny_audio_chunks() {
    let model = llm_support::load("a");
    let inputs = llm_support::Inputs::load();
    let cpu = (Kind::Float, Device::Cpu);
    let bad = Tensor::zeros([80, 300], cpu);
    let err = model.encode_audio(&[inputs.mel_odd.shallow_clone(), bad]).unwrap_err();
    assert!(matches!(err, Error::InvalidAudioChunk { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("audio chunk 1"), "{err}");
    let long = Tensor::zeros([128, 3002], cpu);
    let err = model.encode_audio(&[long]).unwrap_err();
    assert!(err.to_string().contains("n_audio_ctx"), "{err}");

    let tiny = inputs.mel_odd.narrow(1, 0, 4);
    assert_eq!(model.patch_count(4), 0);
    let rows = model.encode_audio(&[inputs.mel_odd.shallow_clone(), tiny.shallow_clone()]).unwrap();
    let alone = model.encode_audio(std::slice::from_ref(&inputs.mel_odd)).unwrap();
    assert_eq!(rows[1].size(), [0, 32]);
    assert_eq!(max_abs_diff(&rows[0], &alone[0]), 0.0);
    assert_eq!(model.encode_audio(&[tiny]).unwrap()[0].size(), [0, 32]);
}

/// `tie_word_embeddings: true` uses the embedding table as the LM head and ignores a
/// checkpoint's own `lm_head.weight`: with that weight set equal to the table, the tied and
/// untied loads agree.
#[test]
fn tied_word_embeddings_use_the_embedding_table() {
    let dir = copy_of_a();
    let embed = "model.embed_tokens.weight";
    let table = Tensor::read_safetensors(shard_of(dir.path(), embed))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == embed)
        .unwrap()
        .1;
    edit_shard(dir.path(), "lm_head.weight", |t| {
        t.insert("lm_head.weight".into(), table.copy());
    });
    let untied = StepAudio2::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["text_config"]["tie_word_embeddings"] = serde_json::Value::Bool(true);
    std::fs::write(&path, config.to_string()).unwrap();
    let tied = StepAudio2::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let ids = [5u32, 77, 300, 12];
    let a = untied.forward_full(&ids, &[], u32::MAX).unwrap();
    let b = tied.forward_full(&ids, &[], u32::MAX).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let original = llm_support::load("a").forward_full(&ids, &[], u32::MAX).unwrap();
    assert!(max_abs_diff(&original, &b) > 1e-3, "the head really changed");
}
