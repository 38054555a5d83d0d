//! `AudioIndex`: both stores kept consistent, hybrid search with filters on both sides, bad
//! requests, repair after simulated crashes, locking, and ingestion with bad files. Uses the
//! model-free hashing embedder so it runs anywhere; MiniLM is covered by `minilm_parity.rs`
//! and `quality.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use voxloop_retrieval::index::{Example, IndexOptions, NewItem};
use voxloop_retrieval::ingest::{ingest, IngestOptions, Source};
use voxloop_retrieval::search::{Retriever, SearchRequest};
use voxloop_retrieval::vector::{VectorPoint, VectorSpace};
use voxloop_retrieval::{
    Attributes, AudioIndex, AudioItem, Error, Gender, HashingEmbedder, ItemFilter, ItemId,
    ItemKind, TextEmbedder,
};

fn embedder() -> Arc<dyn TextEmbedder> {
    Arc::new(HashingEmbedder::new(64).unwrap())
}

fn open(dir: &Path) -> AudioIndex {
    AudioIndex::open(dir, embedder(), IndexOptions::default()).unwrap()
}

fn item(
    key: &str,
    kind: ItemKind,
    description: &str,
    gender: Option<Gender>,
    language: &str,
) -> AudioItem {
    AudioItem {
        id: ItemId::from_content(key.as_bytes()),
        kind,
        path: PathBuf::from(format!("/lib/{key}.wav")),
        duration_s: 2.0,
        sample_rate: 16_000,
        description: description.to_string(),
        tags: vec![],
        transcript: None,
        attributes: Attributes {
            gender,
            language: Some(language.to_string()),
            ..Default::default()
        },
        aliases: Vec::new(),
        caption: None,
    }
}

fn library() -> Vec<AudioItem> {
    vec![
        item("rain", ItemKind::Sound, "heavy rain on a tin roof", None, "en"),
        item("rain2", ItemKind::Sound, "light rain on a window", None, "en"),
        item("dog", ItemKind::Sound, "a dog barking twice", None, "en"),
        item("bell", ItemKind::Sound, "门铃响了两声", None, "zh"),
        item(
            "calm",
            ItemKind::Timbre,
            "calm deep male voice reading the news",
            Some(Gender::Male),
            "en",
        ),
        item("gentle", ItemKind::Timbre, "温柔的年轻女声", Some(Gender::Female), "zh"),
        item(
            "rainy_voice",
            ItemKind::Timbre,
            "a woman talking about the rain",
            Some(Gender::Female),
            "en",
        ),
    ]
}

fn new_items(items: &[AudioItem]) -> Vec<NewItem> {
    items.iter().map(|i| NewItem { item: i.clone(), speaker: None }).collect()
}

#[test]
fn the_index_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AudioIndex>();
    send_sync::<Arc<dyn TextEmbedder>>();
}

#[test]
fn add_is_idempotent_updates_replace_and_remove_clears_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let lib = library();
    let r = index.add(new_items(&lib)).unwrap();
    assert_eq!((r.added, r.updated, r.unchanged), (7, 0, 0));
    let r = index.add(new_items(&lib)).unwrap();
    assert_eq!((r.added, r.updated, r.unchanged), (0, 0, 7));

    let mut changed = lib[2].clone();
    changed.description = "a small dog yapping".into();
    let r = index.add(new_items(&[changed.clone(), lib[0].clone()])).unwrap();
    assert_eq!((r.added, r.updated, r.unchanged), (0, 1, 1));
    assert_eq!(index.get(changed.id).unwrap().unwrap().description, "a small dog yapping");

    let audit = index.audit().unwrap();
    assert!(audit.is_consistent(), "{audit:?}");
    assert_eq!((audit.text_docs, audit.vector_points), (7, 7));

    assert_eq!(index.remove(&[lib[0].id, ItemId(1)]).unwrap(), 1);
    let audit = index.audit().unwrap();
    assert!(audit.is_consistent(), "{audit:?}");
    assert_eq!(audit.text_docs, 6);
    assert!(index.get(lib[0].id).unwrap().is_none());
    let hits = index.search(&SearchRequest::new("heavy rain tin roof", 10)).unwrap();
    assert!(hits.iter().all(|h| h.item.id != lib[0].id));

    // Everything survives a reopen.
    drop(index);
    let index = open(dir.path());
    assert!(index.audit().unwrap().is_consistent());
    assert_eq!(index.stats().unwrap().items, 6);
}

#[test]
fn hybrid_search_fuses_both_sides_and_explains_each_hit() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let lib = library();
    index.add(new_items(&lib)).unwrap();

    let hits = index.search(&SearchRequest::new("rain on a tin roof", 3)).unwrap();
    assert_eq!(hits[0].item.id, lib[0].id);
    assert_eq!(hits.len(), 3);
    let top = hits[0].reason;
    assert_eq!(top.bm25.unwrap().rank, 1);
    assert_eq!(top.vector.unwrap().rank, 1);
    assert_eq!(top.space, VectorSpace::Text);
    assert!((hits[0].score - 2.0 / 61.0).abs() < 1e-9, "RRF k=60 of ranks 1 and 1");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(top.to_string().contains("bm25 #1") && top.to_string().contains("text vector #1"));

    for retriever in [Retriever::Bm25, Retriever::Vector] {
        let hits = index
            .search(&SearchRequest::new("rain on a tin roof", 2).with_retriever(retriever))
            .unwrap();
        assert_eq!(hits[0].item.id, lib[0].id, "{retriever}");
        let r = hits[0].reason;
        assert_eq!(r.bm25.is_some(), retriever == Retriever::Bm25);
        assert_eq!(r.vector.is_some(), retriever == Retriever::Vector);
    }

    // Chinese goes through jieba on the BM25 side.
    let hits =
        index.search(&SearchRequest::new("门铃", 1).with_retriever(Retriever::Bm25)).unwrap();
    assert_eq!(hits[0].item.id, lib[3].id);
}

#[test]
fn filters_apply_inside_both_retrievers() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let lib = library();
    index.add(new_items(&lib)).unwrap();
    let timbres = ItemFilter { kind: Some(ItemKind::Timbre), ..Default::default() };
    for retriever in Retriever::ALL {
        let request =
            SearchRequest::new("rain", 5).with_filter(timbres.clone()).with_retriever(retriever);
        let hits = index.search(&request).unwrap();
        assert!(!hits.is_empty(), "{retriever}");
        assert!(hits.iter().all(|h| h.item.kind == ItemKind::Timbre), "{retriever}");
        // The only timbre about rain comes first: the filter ran before the cut-off, not after.
        assert_eq!(hits[0].item.id, lib[6].id, "{retriever}");
    }
    let zh_female = ItemFilter {
        gender: Some(Gender::Female),
        language: Some("ZH".into()),
        ..Default::default()
    };
    let hits = index.search(&SearchRequest::new("voice 女声", 5).with_filter(zh_female)).unwrap();
    assert_eq!(hits.iter().map(|h| h.item.id).collect::<Vec<_>>(), vec![lib[5].id]);
    let short = ItemFilter { max_duration_s: Some(1.0), ..Default::default() };
    assert!(index.search(&SearchRequest::new("rain", 5).with_filter(short)).unwrap().is_empty());
}

#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    index.add(new_items(&library())).unwrap();
    assert!(matches!(index.search(&SearchRequest::new("   ", 5)), Err(Error::EmptyQuery)));
    for k in [0, 1001, usize::MAX] {
        let err = index.search(&SearchRequest::new("rain", k)).unwrap_err().to_string();
        assert!(err.contains(&format!("k = {k}")) && err.contains("between 1 and 1000"), "{err}");
    }
    let f = ItemFilter { language: Some("fr".into()), ..Default::default() };
    let err = index.search(&SearchRequest::new("rain", 5).with_filter(f)).unwrap_err().to_string();
    assert!(err.contains("unknown language \"fr\"") && err.contains("en, zh"), "{err}");
    let f = ItemFilter { style: Some("happy".into()), ..Default::default() };
    let err = index.search(&SearchRequest::new("rain", 5).with_filter(f)).unwrap_err().to_string();
    assert!(err.contains("unknown style") && err.contains("none has any"), "{err}");
    let err = "robot".parse::<Gender>().unwrap_err().to_string();
    assert!(err.contains("female, male, other"), "{err}");
    // A query of stop words only still searches the vector side in hybrid mode…
    assert!(index.search(&SearchRequest::new("the rain", 5)).is_ok());
    // …and is "no words" for the embedder when nothing is left at all.
    assert!(index.search(&SearchRequest::new("?!", 5)).is_err());
}

fn orphan_point(index: &AudioIndex, key: &str, text: &str) -> (ItemId, Vec<f32>) {
    let it = item(key, ItemKind::Sound, text, None, "en");
    let v = index.embedder().embed(&[text]).unwrap().remove(0);
    index.vectors().upsert(&[VectorPoint::for_item(&it, v.clone(), None)]).unwrap();
    (it.id, v)
}

#[test]
fn orphans_are_never_visible_and_an_interrupted_write_is_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let lib = library();
    let (orphan, orphan_vec) = {
        let index = open(dir.path());
        index.add(new_items(&lib)).unwrap();
        // What a crash between the vector write and the text commit leaves behind:
        std::fs::write(dir.path().join("write.pending"), b"").unwrap();
        let orphan = orphan_point(&index, "ghost", "thunder and lightning storm");
        // …and what a lost vector write after a text commit would (power loss):
        index.vectors().delete(&[lib[1].id]).unwrap();
        let audit = index.audit().unwrap();
        assert_eq!(audit.orphan_vectors, vec![orphan.0]);
        assert_eq!(audit.missing_vectors, vec![lib[1].id]);
        assert!(audit.write_pending && !audit.is_consistent());
        // The orphan is its own query's nearest vector, yet never a hit.
        let hits = index.search(&SearchRequest::new("thunder and lightning storm", 10)).unwrap();
        assert!(hits.iter().all(|h| h.item.id != orphan.0));
        orphan
    };
    // Without repair, the damage is still there (audit sees it).
    {
        let index =
            AudioIndex::open(dir.path(), embedder(), IndexOptions { repair: false }).unwrap();
        assert!(!index.audit().unwrap().is_consistent());
    }
    let index = open(dir.path());
    let audit = index.audit().unwrap();
    assert!(audit.is_consistent() && !audit.write_pending, "{audit:?}");
    assert_eq!(audit.text_docs, lib.len());
    let hits = index
        .vectors()
        .search(VectorSpace::Text, &orphan_vec, &ItemFilter::default(), 50, Default::default())
        .unwrap();
    assert!(hits.iter().all(|h| h.id != orphan));
    let hits = index
        .search(&SearchRequest::new("light rain on a window", 1).with_retriever(Retriever::Vector))
        .unwrap();
    assert_eq!(hits[0].item.id, lib[1].id, "the lost vector was re-embedded");
}

#[test]
fn a_second_opener_is_refused_and_the_embedder_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let err = AudioIndex::open(dir.path(), embedder(), IndexOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(index);
    let other: Arc<dyn TextEmbedder> = Arc::new(HashingEmbedder::new(32).unwrap());
    let err = AudioIndex::open(dir.path(), other, IndexOptions::default()).unwrap_err().to_string();
    assert!(err.contains("hashing-v1-64") && err.contains("hashing-v1-32"), "{err}");
    open(dir.path());
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn ingestion_reports_bad_files_and_keeps_going_and_reruns_are_idempotent() {
    let lib = tempfile::tempdir().unwrap();
    let root = lib.path();
    write(&root.join("voices/low_male_hum.wav"), &common::wav_bytes(110.0, 1.0, 16_000));
    write(&root.join("voices/bright_child.wav"), &common::wav_bytes(330.0, 1.0, 22_050));
    write(&root.join("sfx/dog_bark-02.wav"), &common::wav_bytes(800.0, 0.3, 8_000));
    write(&root.join("sfx/corrupt.wav"), b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk");
    write(&root.join("sfx/empty.flac"), b"");
    let mut cut = common::wav_bytes(440.0, 1.0, 16_000);
    cut.truncate(cut.len() / 2);
    write(&root.join("sfx/truncated.wav"), &cut);
    write(&root.join("sfx/notes.txt"), b"not audio, not listed");
    write(
        &root.join("voices/metadata.jsonl"),
        concat!(
            r#"{"path":"low_male_hum.wav","kind":"timbre","description":"Low humming male voice","gender":"male","language":"en"}"#, "\n",
            r#"{"path":"bright_child.wav","kind":"timbre","tags":["child","bright"],"gender":"female","age":"child"}"#, "\n",
            r#"{"path":"missing.wav","kind":"timbre","description":"not here"}"#, "\n",
            r#"{"path":"bad.wav","kind":"trumpet"}"#, "\n",
        )
        .as_bytes(),
    );

    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let mut seen = Vec::new();
    let options = IngestOptions { batch_size: 2, ..Default::default() };
    let report =
        ingest(&index, &Source::Dir(root.to_path_buf()), &options, &mut |p| seen.push(p)).unwrap();
    assert_eq!(report.items.added, 3, "{report:#?}");
    let failed: Vec<(&str, &str)> =
        report.failed.iter().map(|b| (b.path.as_str(), b.reason.as_str())).collect();
    let has = |name: &str, reason: &str| {
        failed.iter().any(|(p, r)| p.contains(name) && r.contains(reason))
    };
    assert!(has("corrupt.wav", "corrupt.wav"), "{failed:#?}");
    assert!(has("empty.flac", "empty"), "{failed:#?}");
    assert!(has("truncated.wav", "truncated"), "{failed:#?}");
    assert!(has("missing.wav", "not found"), "{failed:#?}");
    assert!(has("metadata.jsonl:4", "trumpet"), "{failed:#?}");
    assert_eq!(report.failed.len(), 5);
    assert_eq!(report.total, 8);
    assert_eq!(seen.last().unwrap().done, 8);
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));

    let stats = index.stats().unwrap();
    assert_eq!(stats.values["kind"]["timbre"], 2);
    assert_eq!(stats.values["kind"]["sound"], 1);
    let dog = index.search(&SearchRequest::new("dog bark", 1)).unwrap().remove(0).item;
    assert_eq!(dog.description, "dog bark");
    assert_eq!(dog.sample_rate, 8_000);
    assert!((dog.duration_s - 0.3).abs() < 1e-3);
    let child = index.search(&SearchRequest::new("child", 1)).unwrap().remove(0).item;
    assert_eq!(child.description, "bright child (child, bright)");
    assert!(child.path.is_absolute());

    // Timbres carry a speaker fingerprint: an example recording finds its own voice first.
    assert!(index.vectors().vector(VectorSpace::Speaker, child.id).unwrap().is_some());
    assert!(index.vectors().vector(VectorSpace::Speaker, dog.id).unwrap().is_none());
    let low = index.search(&SearchRequest::new("humming", 1)).unwrap().remove(0).item;
    let samples =
        voxloop_core::audio::decode_audio(low.path.as_path(), &Default::default()).unwrap();
    let example = Example::Audio { samples: samples.samples, sample_rate: samples.sample_rate };
    let near = index.similar(&example, 2, &ItemFilter::default()).unwrap();
    assert_eq!(near[0].item.id, low.id);
    assert_eq!(near[0].reason.space, VectorSpace::Speaker);
    let near = index.similar(&Example::Item(low.id), 5, &ItemFilter::default()).unwrap();
    assert_eq!(
        near.iter().map(|h| h.item.id).collect::<Vec<_>>(),
        vec![child.id],
        "itself excluded, sounds have no speaker vector"
    );
    assert!(matches!(
        index.similar(&Example::Item(ItemId(7)), 5, &ItemFilter::default()),
        Err(Error::NotFound(_))
    ));

    // A re-run finds everything in place.
    let again = ingest(&index, &Source::Dir(root.to_path_buf()), &options, &mut |_| {}).unwrap();
    assert_eq!((again.items.added, again.items.updated, again.items.unchanged), (0, 0, 3));
    assert!(index.audit().unwrap().is_consistent());
}

#[test]
fn manifests_resolve_paths_relative_to_themselves() {
    let lib = tempfile::tempdir().unwrap();
    write(&lib.path().join("clips/a.wav"), &common::wav_bytes(200.0, 0.5, 16_000));
    write(&lib.path().join("clips/b.wav"), &common::wav_bytes(300.0, 0.5, 16_000));
    write(
        &lib.path().join("set.jsonl"),
        concat!(
            r#"{"path":"clips/a.wav","description":"first clip","tags":["alpha"]}"#, "\n",
            "\n",
            r#"{"path":"clips/b.wav","kind":"timbre","description":"second clip","transcript":"hello there"}"#, "\n",
            "not json\n",
        )
        .as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let report = ingest(
        &index,
        &Source::Manifest(lib.path().join("set.jsonl")),
        &IngestOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.items.added, 2);
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].path.ends_with("set.jsonl:4"), "{:?}", report.failed);
    let hit =
        index.search(&SearchRequest::new("hello", 1).with_retriever(Retriever::Bm25)).unwrap();
    assert_eq!(hit[0].item.description, "second clip");
    assert_eq!(hit[0].item.kind, ItemKind::Timbre);
}

/// A sound theme's one file under two events (and a third copy elsewhere): one item, every
/// entry's description and tags searchable, the merge reported; ingesting again, in batches
/// that split the copies apart, changes nothing.
#[test]
fn identical_audio_under_several_entries_is_one_item_with_aliases() {
    let lib = tempfile::tempdir().unwrap();
    let clip = common::wav_bytes(440.0, 0.5, 16_000);
    write(&lib.path().join("theme/device-added.wav"), &clip);
    write(&lib.path().join("theme/network-connected.wav"), &clip);
    write(&lib.path().join("copy/plug.wav"), &clip);
    write(&lib.path().join("theme/other.wav"), &common::wav_bytes(220.0, 0.5, 16_000));
    write(
        &lib.path().join("set.jsonl"),
        concat!(
            r#"{"path":"theme/device-added.wav","description":"device plugged in","tags":["usb"]}"#, "\n",
            r#"{"path":"theme/network-connected.wav","description":"network connected","tags":["wifi"]}"#, "\n",
            r#"{"path":"theme/other.wav","description":"a low hum"}"#, "\n",
            r#"{"path":"copy/plug.wav","description":"接上设备的提示音"}"#, "\n",
        )
        .as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let manifest = Source::Manifest(lib.path().join("set.jsonl"));
    let report = ingest(&index, &manifest, &IngestOptions::default(), &mut |_| {}).unwrap();
    assert_eq!((report.total, report.items.added, report.items.merged), (4, 2, 2), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let into: Vec<_> = report.items.merges.iter().map(|m| m.into.clone()).collect();
    assert!(into.iter().all(|p| p.ends_with("theme/device-added.wav")), "{report:?}");
    assert_eq!(index.text().num_docs(), 2);
    assert_eq!(index.stats().unwrap().merged_entries, 2);

    for (query, retriever) in [
        ("network connected", Retriever::Bm25),
        ("wifi", Retriever::Bm25),
        ("设备", Retriever::Bm25),
        ("device plugged in", Retriever::Vector),
        ("network connected", Retriever::Vector),
    ] {
        let hits = index.search(&SearchRequest::new(query, 1).with_retriever(retriever)).unwrap();
        assert_eq!(hits[0].item.description, "device plugged in", "{query} ({retriever:?})");
        assert_eq!(hits[0].item.aliases.len(), 2, "{query}");
    }

    // Again, one entry per batch: the first entry keeps its aliases, the others are known.
    let one_by_one = IngestOptions { batch_size: 1, ..IngestOptions::default() };
    let again = ingest(&index, &manifest, &one_by_one, &mut |_| {}).unwrap();
    assert_eq!(
        (again.items.added, again.items.updated, again.items.merged),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(again.items.unchanged, 4);
}

/// A generated caption is searched beside the description, by BM25 and by its vector.
#[test]
fn captions_are_searched_beside_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let mut captioned = item("hum", ItemKind::Sound, "audio clip 0001", None, "en");
    captioned.caption = Some(voxloop_retrieval::Caption {
        en: "A kettle whistles in a kitchen.".into(),
        zh: "厨房里水壶在鸣叫。".into(),
        model: "tiny_a".into(),
    });
    let other = item("bird", ItemKind::Sound, "a bird sings", None, "en");
    let new = |item: AudioItem| NewItem { item, speaker: None };
    index.add(vec![new(captioned), new(other)]).unwrap();
    for (query, retriever) in [
        ("kettle", Retriever::Bm25),
        ("水壶", Retriever::Bm25),
        ("kettle whistles", Retriever::Vector),
    ] {
        let hits = index.search(&SearchRequest::new(query, 1).with_retriever(retriever)).unwrap();
        assert_eq!(hits[0].item.description, "audio clip 0001", "{query} ({retriever:?})");
        assert_eq!(hits[0].item.caption.as_ref().unwrap().model, "tiny_a");
    }
}
