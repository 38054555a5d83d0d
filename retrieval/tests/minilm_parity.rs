//! all-MiniLM-L6-v2 on tch against sentence-transformers: the reference embeddings and token ids
//! in `fixtures/minilm/reference.json` come from `scripts/fixtures/minilm.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use voxloop_retrieval::embed::cosine;
use voxloop_retrieval::TextEmbedder;

fn reference() -> common::Reference {
    common::reference(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minilm").as_ref())
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let Some(model) = common::minilm() else { return };
    let r = reference();
    assert_eq!(model.max_len(), r.max_seq_length);
    for case in &r.cases {
        assert_eq!(model.token_ids(&case.text).unwrap(), case.input_ids, "{:?}", case.text);
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(model) = common::minilm() else { return };
    let r = reference();
    assert_eq!(model.dim(), r.dim);
    // One batch with all cases (mixed lengths, so padding is exercised) and one text at a time.
    let texts: Vec<&str> = r.cases.iter().map(|c| c.text.as_str()).collect();
    let batched = model.embed(&texts).unwrap();
    let mut worst = (1.0f32, 0.0f32);
    for (case, got) in r.cases.iter().zip(&batched) {
        let single = model.embed(&[case.text.as_str()]).unwrap().remove(0);
        for v in [got, &single] {
            let cos = cosine(v, &case.embedding);
            let max_abs =
                v.iter().zip(&case.embedding).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            worst = (worst.0.min(cos), worst.1.max(max_abs));
            assert!(cos >= 0.9999, "{:?}: cosine {cos}", case.text);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }
    eprintln!("{} cases: min cosine {:.7}, max abs error {:.2e}", r.cases.len(), worst.0, worst.1);
}
