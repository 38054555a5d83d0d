//! The shared conformance suite of `VectorStore` backends: one generic function, run against
//! the embedded qdrant-edge backend in a temporary directory and, with the `qdrant-server`
//! feature and `QDRANT_URL` set, against a Qdrant server.
//!
//! Expected scores are cosine similarities computed here from the inserted vectors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use voxloop_retrieval::embed::cosine;
use voxloop_retrieval::vector::{
    filter_payload, SearchMode, VectorConfig, VectorPoint, VectorSpace, VectorStore,
};
use voxloop_retrieval::{Attributes, AudioItem, EdgeStore, Gender, ItemFilter, ItemId, ItemKind};

const CONFIG: VectorConfig = VectorConfig { text_dim: 16, speaker_dim: 8 };

/// A deterministic pseudo-random vector (xorshift64*).
fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn item(n: u64) -> AudioItem {
    AudioItem {
        id: ItemId(1000 + n),
        kind: if n % 2 == 0 { ItemKind::Timbre } else { ItemKind::Sound },
        path: PathBuf::from(format!("/lib/{n}.wav")),
        duration_s: n as f64 * 0.5,
        sample_rate: 16_000,
        description: format!("item {n}"),
        tags: vec![],
        transcript: None,
        attributes: Attributes {
            gender: (n % 2 == 0).then_some(if n % 4 == 0 { Gender::Female } else { Gender::Male }),
            language: Some(if n % 3 == 0 { "zh" } else { "en" }.to_string()),
            ..Default::default()
        },
        aliases: Vec::new(),
        caption: None,
    }
}

/// Twenty points: even ones are timbres with a speaker vector.
fn points() -> Vec<(AudioItem, VectorPoint)> {
    (0..20)
        .map(|n| {
            let it = item(n);
            let speaker = (n % 2 == 0).then(|| vector(500 + n, CONFIG.speaker_dim));
            let p = VectorPoint::for_item(&it, vector(n, CONFIG.text_dim), speaker);
            (it, p)
        })
        .collect()
}

/// Exact top-k by cosine among `candidates`, computed here.
fn expected(query: &[f32], candidates: &[(ItemId, Vec<f32>)], k: usize) -> Vec<(ItemId, f32)> {
    let mut scored: Vec<(ItemId, f32)> =
        candidates.iter().map(|(id, v)| (*id, cosine(query, v))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

fn assert_hits(
    store: &dyn VectorStore,
    space: VectorSpace,
    query: &[f32],
    filter: &ItemFilter,
    want: &[(ItemId, f32)],
) {
    for mode in [SearchMode::Exact, SearchMode::Indexed] {
        let hits = store.search(space, query, filter, want.len().max(1), mode).unwrap();
        let got: Vec<ItemId> = hits.iter().map(|h| h.id).collect();
        let ids: Vec<ItemId> = want.iter().map(|w| w.0).collect();
        assert_eq!(got, ids, "{} {space} {mode:?} {filter:?}", store.backend());
        for (h, w) in hits.iter().zip(want) {
            assert!((h.score - w.1).abs() < 1e-4, "score {} vs cosine {}", h.score, w.1);
        }
    }
}

/// The suite. `make` returns a fresh, empty store each time it is called.
fn conformance(make: &mut dyn FnMut() -> Box<dyn VectorStore>) {
    let data = points();

    // Empty store.
    let store = make();
    assert_eq!(store.config(), CONFIG);
    assert_eq!(store.count().unwrap(), 0);
    assert!(store.ids().unwrap().is_empty());
    assert!(store
        .search(VectorSpace::Text, &vector(1, 16), &ItemFilter::default(), 5, SearchMode::Indexed)
        .unwrap()
        .is_empty());
    assert_eq!(store.vector(VectorSpace::Text, ItemId(1)).unwrap(), None);

    // Upsert, count, ids.
    store.upsert(&data.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>()).unwrap();
    store.flush().unwrap();
    assert_eq!(store.count().unwrap(), 20);
    let mut ids: Vec<ItemId> = data.iter().map(|(i, _)| i.id).collect();
    ids.sort();
    assert_eq!(store.ids().unwrap(), ids);

    // Nearest neighbours in the text space, no filter.
    let text: Vec<(ItemId, Vec<f32>)> = data.iter().map(|(i, p)| (i.id, p.text.clone())).collect();
    let q = vector(77, 16);
    assert_hits(
        store.as_ref(),
        VectorSpace::Text,
        &q,
        &ItemFilter::default(),
        &expected(&q, &text, 5),
    );

    // Filters: kind, gender, language, duration, and combinations; applied inside the search.
    let filters = [
        ItemFilter { kind: Some(ItemKind::Timbre), ..Default::default() },
        ItemFilter { gender: Some(Gender::Female), ..Default::default() },
        ItemFilter { language: Some("ZH".into()), ..Default::default() },
        ItemFilter { min_duration_s: Some(2.0), max_duration_s: Some(6.0), ..Default::default() },
        ItemFilter {
            kind: Some(ItemKind::Sound),
            language: Some("en".into()),
            max_duration_s: Some(5.0),
            ..Default::default()
        },
    ];
    for f in &filters {
        let allowed: Vec<(ItemId, Vec<f32>)> = data
            .iter()
            .filter(|(i, _)| f.matches(i))
            .map(|(i, p)| (i.id, p.text.clone()))
            .collect();
        assert!(!allowed.is_empty(), "{f:?}");
        let want = expected(&q, &allowed, 3.min(allowed.len()));
        assert_hits(store.as_ref(), VectorSpace::Text, &q, f, &want);
    }
    let nobody = ItemFilter {
        kind: Some(ItemKind::Sound),
        gender: Some(Gender::Female),
        ..Default::default()
    };
    assert!(store.search(VectorSpace::Text, &q, &nobody, 5, SearchMode::Exact).unwrap().is_empty());

    // The speaker space only holds the points that have a speaker vector.
    let speakers: Vec<(ItemId, Vec<f32>)> =
        data.iter().filter_map(|(i, p)| p.speaker.clone().map(|s| (i.id, s))).collect();
    let sq = vector(99, 8);
    let all = store
        .search(VectorSpace::Speaker, &sq, &ItemFilter::default(), 20, SearchMode::Exact)
        .unwrap();
    assert_eq!(all.len(), speakers.len());
    assert_hits(
        store.as_ref(),
        VectorSpace::Speaker,
        &sq,
        &ItemFilter::default(),
        &expected(&sq, &speakers, 4),
    );

    // Stored vectors come back (normalised, as cosine stores them).
    let (it, p) = &data[4];
    let back = store.vector(VectorSpace::Text, it.id).unwrap().unwrap();
    assert!(cosine(&back, &p.text) > 0.9999);
    assert!(store.vector(VectorSpace::Speaker, data[3].0.id).unwrap().is_none());
    assert!(store.vector(VectorSpace::Speaker, data[4].0.id).unwrap().is_some());

    // Upsert replaces the whole point: vectors and payload; no duplicate.
    let mut changed = data[3].0.clone();
    changed.kind = ItemKind::Timbre;
    let new_text = vector(12345, 16);
    store
        .upsert(&[VectorPoint::for_item(&changed, new_text.clone(), Some(vector(4242, 8)))])
        .unwrap();
    assert_eq!(store.count().unwrap(), 20);
    let top = store
        .search(
            VectorSpace::Text,
            &new_text,
            &ItemFilter { kind: Some(ItemKind::Timbre), ..Default::default() },
            1,
            SearchMode::Exact,
        )
        .unwrap();
    assert_eq!(top[0].id, changed.id);
    assert!((top[0].score - 1.0).abs() < 1e-4);
    assert!(store.vector(VectorSpace::Speaker, changed.id).unwrap().is_some());
    assert_eq!(filter_payload(&changed)["kind"], "timbre");

    // Delete (absent ids are ignored).
    store.delete(&[data[0].0.id, data[1].0.id, ItemId(424242)]).unwrap();
    assert_eq!(store.count().unwrap(), 18);
    assert!(!store.ids().unwrap().contains(&data[0].0.id));
    let hits = store
        .search(VectorSpace::Text, &data[0].1.text, &ItemFilter::default(), 20, SearchMode::Exact)
        .unwrap();
    assert!(hits.iter().all(|h| h.id != data[0].0.id && h.id != data[1].0.id));
    store.delete(&[]).unwrap();
    store.upsert(&[]).unwrap();

    // Invalid vectors are rejected before anything is written, naming the space.
    let bad =
        |text: Vec<f32>, speaker: Option<Vec<f32>>| VectorPoint::for_item(&item(50), text, speaker);
    for (p, needle) in [
        (bad(vector(1, 15), None), "text"),
        (bad(vec![f32::NAN; 16], None), "text"),
        (bad(vec![0.0; 16], None), "zeros"),
        (bad(vector(1, 16), Some(vector(2, 9))), "speaker"),
    ] {
        let err = store.upsert(&[p]).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    assert_eq!(store.count().unwrap(), 18);
    assert!(store
        .search(VectorSpace::Text, &vector(1, 8), &ItemFilter::default(), 3, SearchMode::Exact)
        .is_err());

    // A fresh store is independent.
    let other = make();
    assert_eq!(other.count().unwrap(), 0);
}

#[test]
fn edge_backend_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance(&mut || {
        n += 1;
        Box::new(EdgeStore::open(&dir.path().join(format!("shard{n}")), CONFIG).unwrap())
    });
}

#[test]
fn edge_backend_persists_across_reopen_and_checks_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard");
    let data = points();
    {
        let store = EdgeStore::open(&path, CONFIG).unwrap();
        store.upsert(&data.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>()).unwrap();
        store.delete(&[data[5].0.id]).unwrap();
        // Every write was flushed when it returned; dropping closes the shard.
    }
    let store = EdgeStore::open(&path, CONFIG).unwrap();
    assert_eq!(store.count().unwrap(), 19);
    let filter = ItemFilter { language: Some("zh".into()), ..Default::default() };
    let hits =
        store.search(VectorSpace::Text, &vector(3, 16), &filter, 20, SearchMode::Exact).unwrap();
    let want = data.iter().filter(|(i, _)| filter.matches(i) && i.id != data[5].0.id).count();
    assert_eq!(hits.len(), want);
    drop(store);
    let err = EdgeStore::open(&path, VectorConfig { text_dim: 32, speaker_dim: 8 })
        .unwrap_err()
        .to_string();
    assert!(err.contains("dimension 16, expected 32"), "{err}");
}

#[cfg(feature = "qdrant-server")]
#[test]
fn server_backend_passes_the_suite_when_qdrant_url_is_set() {
    use voxloop_retrieval::vector::ServerStore;
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL is not set: the server backend suite does not run");
        return;
    };
    let run = std::process::id();
    let mut n = 0;
    let mut made = Vec::new();
    conformance(&mut || {
        n += 1;
        let name = format!("voxloop_suite_{run}_{n}");
        made.push(name.clone());
        Box::new(ServerStore::connect(&url, &name, CONFIG).unwrap())
    });
    for name in made {
        ServerStore::drop_collection(&url, &name).unwrap();
    }
}
