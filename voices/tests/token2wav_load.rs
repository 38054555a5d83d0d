//! Loading flow.pt / hift.pt / flow.yaml: wrong files, missing and extra tensors, shape
//! mismatches are errors naming the tensor; both weight-norm layouts of hift.pt load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tch::Device;
use voxloop_voices::checkpoint::StateDict;
use voxloop_voices::config::FlowConfig;
use voxloop_voices::flow::Flow;
use voxloop_voices::hift::Hift;
use voxloop_voices::Error;

fn flow_config() -> FlowConfig {
    FlowConfig::from_file(&support::dir().join("flow.yaml")).unwrap()
}

fn flow_sd() -> StateDict {
    StateDict::load(&support::dir().join("flow.pt"), None, Device::Cpu).unwrap()
}

#[test]
fn fixture_files_load_strictly() {
    let dir = support::dir();
    Flow::load(&dir.join("flow.yaml"), &dir.join("flow.pt"), Device::Cpu).unwrap();
    Hift::load(&dir.join("hift.pt"), support::hift_config("hift"), Device::Cpu).unwrap();
    let c = flow_config();
    assert_eq!(
        (c.input_size, c.vocab_size, c.encoder.num_blocks, c.encoder.num_up_blocks),
        (32, 6561, 2, 1)
    );
    assert_eq!((c.decoder.estimator.depth, c.decoder.estimator.hidden_size), (2, 32));
}

#[test]
fn not_a_state_dict_is_named() {
    let dir = support::dir();
    let err = Flow::load(&dir.join("flow.yaml"), &dir.join("flow.yaml"), Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::StateDict { .. }), "{err}");
    assert!(err.to_string().contains("flow.yaml: not a PyTorch state dict"), "{err}");
    // safetensors is a different format: also refused with a clear message
    let err = StateDict::load(&dir.join("inputs.safetensors"), None, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("not a zip archive"), "{err}");
    let err = StateDict::load(&dir.join("no_such.pt"), None, Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err}");
}

#[test]
fn wrong_file_names_the_first_missing_tensor() {
    // hift.pt given as the flow weights
    let dir = support::dir();
    let err = Flow::load(&dir.join("flow.yaml"), &dir.join("hift.pt"), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("hift.pt lacks tensor input_embedding.weight"), "{err}");
    // flow.pt given as the vocoder
    let err =
        Hift::load(&dir.join("flow.pt"), support::hift_config("hift"), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("flow.pt lacks tensor f0_predictor.condnet.0"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let mut sd = flow_sd();
    assert!(sd.remove("decoder.estimator.blocks.1.attn.k_norm.bias").is_some());
    let err = Flow::from_state_dict(flow_config(), &mut sd, Device::Cpu).unwrap_err();
    match &err {
        Error::MissingTensor { name, .. } => {
            assert_eq!(name, "decoder.estimator.blocks.1.attn.k_norm.bias")
        }
        other => panic!("expected MissingTensor, got {other}"),
    }
}

#[test]
fn extra_tensor_is_named() {
    let mut sd = flow_sd();
    sd.insert(
        "decoder.estimator.blocks.2.attn.proj.weight",
        tch::Tensor::zeros([2], (tch::Kind::Float, Device::Cpu)),
    );
    Flow::from_state_dict(flow_config(), &mut sd, Device::Cpu).unwrap();
    let err = sd.finish().unwrap_err();
    assert!(
        err.to_string().contains("tensor decoder.estimator.blocks.2.attn.proj.weight"),
        "{err}"
    );
    assert!(matches!(err, Error::UnexpectedTensor { others: 0, .. }), "{err}");
}

#[test]
fn shape_mismatch_is_named() {
    let mut config = flow_config();
    config.encoder.linear_units = 48;
    let err = Flow::from_state_dict(config, &mut flow_sd(), Device::Cpu).unwrap_err();
    match &err {
        Error::TensorShape { name, expected, found, .. } => {
            assert_eq!(name, "encoder.encoders.0.feed_forward.w_1.weight");
            assert_eq!((expected.as_slice(), found.as_slice()), (&[48, 32][..], &[64, 32][..]));
        }
        other => panic!("expected TensorShape, got {other}"),
    }
    let mut config = flow_config();
    config.decoder.estimator.depth = 3;
    let err = Flow::from_state_dict(config, &mut flow_sd(), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("lacks tensor decoder.estimator.blocks.2."), "{err}");
}

#[test]
fn flow_yaml_problems_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(support::dir().join("flow.yaml")).unwrap();
    let path = dir.path().join("flow.yaml");
    std::fs::write(&path, text.replace("num_heads: 2", "num_heads: !ref <heads>")).unwrap();
    let err = FlowConfig::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("flow.yaml") && msg.contains("flow.decoder.estimator.num_heads"), "{msg}");
}

#[test]
fn both_weight_norm_layouts_load_to_the_same_vocoder() {
    let _guard = tch::no_grad_guard();
    let dir = support::dir();
    let config = support::hift_config("hift_micro");
    let current = Hift::load(&dir.join("hift_micro.pt"), config.clone(), Device::Cpu).unwrap();
    let legacy = Hift::load(&dir.join("hift_micro_legacy.pt"), config, Device::Cpu).unwrap();
    let inputs = support::tensors("inputs.safetensors");
    let mel = inputs["hift_mel"].narrow(2, 0, 10);
    let random = support::nsf_random(&inputs);
    let (a, _) = current.forward(&mel, None, &random).unwrap();
    let (b, _) = legacy.forward(&mel, None, &random).unwrap();
    assert_eq!(a.size(), [1, 4800]);
    assert_eq!(support::max_abs_diff(&a, &b), 0.0);
    assert!(f64::try_from(a.std(true)).unwrap() > 1e-3, "the micro vocoder must not be silent");
}
