//! Loads libtorch through tch and checks a few operations against values computed by hand,
//! so a broken libtorch bootstrap (missing library, wrong version, bad rpath) fails CI.

use tch::{Device, Kind, Tensor};

#[test]
fn matmul_and_softmax_match_hand_computed_values() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0]).reshape([2, 2]);
    let product: Vec<f32> = a.matmul(&b).flatten(0, -1).try_into().unwrap();
    assert_eq!(product, vec![19.0, 22.0, 43.0, 50.0]);

    let logits = Tensor::from_slice(&[0.0f32, (2.0f32).ln()]);
    let probs: Vec<f32> = logits.softmax(0, Kind::Float).try_into().unwrap();
    assert!((probs[0] - 1.0 / 3.0).abs() < 1e-6 && (probs[1] - 2.0 / 3.0).abs() < 1e-6);
}

#[test]
fn large_matmul_uses_libtorch_kernels_correctly() {
    // A 256x256 matrix of ones times itself is 256 everywhere: exercises the BLAS path.
    let ones = Tensor::ones([256, 256], (Kind::Float, Device::Cpu));
    let sum = ones.matmul(&ones).sum(Kind::Double).double_value(&[]);
    assert_eq!(sum, 256.0 * 256.0 * 256.0);
}
