//! Retrieval benchmark: ingest throughput and hybrid query latency on the embedded default
//! (Tantivy + qdrant-edge), against brute-force (exact) vector search as the baseline.
//!
//!     cargo run --release -p voxloop-retrieval --example bench -- 10000
//!     cargo run --release -p voxloop-retrieval --example bench -- 100000
//!
//! Items are synthetic sound descriptions from a small grammar (source × action × quality ×
//! place; all distinct), embedded with all-MiniLM-L6-v2 ($VOXLOOP_MINILM_DIR or
//! .cache/models/all-minilm-l6-v2). Queries (200) come from a different template over the same
//! vocabulary. Reported:
//!
//! - embedding items/s (MiniLM alone), ingest items/s excluding embedding (text commit + vector
//!   upsert with precomputed vectors), and including it;
//! - the HNSW build time (`AudioIndex::optimize`);
//! - hybrid query latency p50/p99 *excluding query embedding* (the query vector is looked up),
//!   with the vector side on HNSW and, as the baseline, exact (brute force);
//! - recall@10 of the HNSW vector side against exact search.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use voxloop_retrieval::embed::Device;
use voxloop_retrieval::index::{IndexOptions, NewItem};
use voxloop_retrieval::search::SearchRequest;
use voxloop_retrieval::vector::{SearchMode, VectorSpace};
use voxloop_retrieval::{
    AudioIndex, AudioItem, ItemFilter, ItemId, ItemKind, MiniLm, TextEmbedder,
};

const SOURCES: [&str; 40] = [
    "dog",
    "cat",
    "rain",
    "thunder",
    "car engine",
    "train",
    "church bell",
    "piano",
    "guitar",
    "crowd",
    "wind",
    "ocean waves",
    "songbirds",
    "wooden door",
    "telephone",
    "alarm clock",
    "keyboard",
    "footsteps",
    "glass bottle",
    "campfire",
    "river",
    "helicopter",
    "motorcycle",
    "wall clock",
    "kettle",
    "baby",
    "old man",
    "young woman",
    "child",
    "choir",
    "violin",
    "drum kit",
    "subway train",
    "police siren",
    "fountain",
    "horse",
    "rooster",
    "frogs",
    "vacuum cleaner",
    "typewriter",
];
const ACTIONS: [&str; 20] = [
    "barking",
    "ringing",
    "rumbling",
    "crashing",
    "whistling",
    "humming",
    "creaking",
    "clicking",
    "dripping",
    "buzzing",
    "laughing",
    "talking",
    "singing",
    "shouting",
    "whispering",
    "rattling",
    "roaring",
    "tapping",
    "splashing",
    "squeaking",
];
const QUALITIES: [&str; 20] = [
    "distant",
    "loud",
    "soft",
    "muffled",
    "echoing",
    "close-up",
    "fast",
    "slow",
    "rhythmic",
    "intermittent",
    "steady",
    "faint",
    "harsh",
    "gentle",
    "deep",
    "high-pitched",
    "lo-fi",
    "crisp",
    "warm",
    "eerie",
];
const PLACES: [&str; 20] = [
    "in a park",
    "in a small kitchen",
    "on a busy street",
    "in a cathedral",
    "at night",
    "underwater",
    "in a forest",
    "in an office",
    "in a tunnel",
    "at the beach",
    "in a cave",
    "on a farm",
    "in a stadium",
    "in a bathroom",
    "in a car",
    "on a rooftop",
    "in the rain",
    "in a library",
    "at a train station",
    "in the snow",
];

/// The `i`-th of `n` distinct descriptions (a coprime stride through the combination space).
fn description(i: usize) -> String {
    let space = SOURCES.len() * ACTIONS.len() * QUALITIES.len() * PLACES.len();
    let mut k = (i * 7919 + 13) % space;
    let s = SOURCES[k % SOURCES.len()];
    k /= SOURCES.len();
    let a = ACTIONS[k % ACTIONS.len()];
    k /= ACTIONS.len();
    let q = QUALITIES[k % QUALITIES.len()];
    k /= QUALITIES.len();
    let p = PLACES[k % PLACES.len()];
    format!("{q} {s} {a} {p}")
}

fn query(i: usize) -> String {
    let s = SOURCES[(i * 7) % SOURCES.len()];
    let a = ACTIONS[(i * 3 + 1) % ACTIONS.len()];
    let p = PLACES[(i * 11 + 5) % PLACES.len()];
    match i % 3 {
        0 => format!("the sound of a {s} {a}"),
        1 => format!("{s} {p}"),
        _ => format!("something {a} {p}"),
    }
}

/// Returns precomputed vectors: times ingestion and queries without the model.
#[derive(Debug)]
struct Precomputed {
    vectors: Mutex<HashMap<String, Vec<f32>>>,
    dim: usize,
}

impl TextEmbedder for Precomputed {
    fn id(&self) -> &str {
        "precomputed all-MiniLM-L6-v2"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> voxloop_retrieval::Result<Vec<Vec<f32>>> {
        let map = self.vectors.lock().unwrap_or_else(|p| p.into_inner());
        texts
            .iter()
            .map(|t| {
                map.get(*t).cloned().ok_or_else(|| {
                    voxloop_retrieval::Error::Tokenize(format!("no precomputed vector for {t:?}"))
                })
            })
            .collect()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let n_queries = 200;
    let k = 10;
    let model_dir =
        std::env::var_os("VOXLOOP_MINILM_DIR").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-minilm-l6-v2")
        });
    let model = MiniLm::load(&model_dir, Device::Cpu)
        .with_context(|| format!("loading MiniLM from {}", model_dir.display()))?;
    println!("items {n}, queries {n_queries}, k {k}, threads {}", tch::get_num_threads());

    let items: Vec<AudioItem> = (0..n)
        .map(|i| AudioItem {
            id: ItemId::from_content(format!("bench item {i}").as_bytes()),
            kind: if i % 5 == 0 { ItemKind::Timbre } else { ItemKind::Sound },
            path: PathBuf::from(format!("/bench/{i}.wav")),
            duration_s: 0.5 + (i % 100) as f64 / 10.0,
            sample_rate: 16_000,
            description: description(i),
            tags: vec![],
            transcript: None,
            attributes: Default::default(),
            aliases: Vec::new(),
            caption: None,
        })
        .collect();
    let queries: Vec<String> = (0..n_queries).map(query).collect();

    // Embedding alone. The item vectors are cached (target/bench-cache) so that a re-run, e.g.
    // after a change to the index, does not pay for embedding again; the first run measures it.
    let texts: Vec<String> = items.iter().map(AudioItem::embedding_text).collect();
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/bench-cache/minilm-{n}.f32"));
    let dim = model.dim();
    let mut vectors = HashMap::with_capacity(n + n_queries);
    let mut embed_s = None;
    if let Ok(bytes) = std::fs::read(&cache) {
        if bytes.len() == n * dim * 4 {
            let floats: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            for (text, v) in texts.iter().zip(floats.chunks(dim)) {
                vectors.insert(text.clone(), v.to_vec());
            }
            println!("embedding: loaded from {} (not measured in this run)", cache.display());
        }
    }
    if vectors.is_empty() {
        let t = Instant::now();
        let mut flat: Vec<u8> = Vec::with_capacity(n * dim * 4);
        for chunk in texts.chunks(256) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (text, v) in chunk.iter().zip(model.embed(&refs)?) {
                flat.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                vectors.insert(text.clone(), v);
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!("embedding: {:.1} s, {:.0} items/s", s, n as f64 / s);
        embed_s = Some(s);
        if let Some(parent) = cache.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&cache, flat)?;
    }
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    for (q, v) in queries.iter().zip(model.embed(&refs)?) {
        vectors.insert(q.clone(), v);
    }

    // Ingest with precomputed vectors.
    let dir = tempfile::tempdir()?;
    let embedder = Arc::new(Precomputed { vectors: Mutex::new(vectors), dim });
    let index = AudioIndex::open(dir.path(), embedder, IndexOptions::default())?;
    let t = Instant::now();
    for chunk in items.chunks(1000) {
        index.add(chunk.iter().map(|i| NewItem { item: i.clone(), speaker: None }).collect())?;
    }
    let ingest_s = t.elapsed().as_secs_f64();
    println!("ingest excluding embedding: {:.1} s, {:.0} items/s", ingest_s, n as f64 / ingest_s);
    if let Some(embed_s) = embed_s {
        println!("ingest including embedding: {:.0} items/s", n as f64 / (ingest_s + embed_s));
    }
    let t = Instant::now();
    index.optimize()?;
    println!("optimize (HNSW build): {:.1} s", t.elapsed().as_secs_f64());
    assert!(index.audit()?.is_consistent());

    // Queries.
    let mut report = Vec::new();
    for (label, mode) in
        [("hybrid, HNSW", SearchMode::Indexed), ("hybrid, brute force", SearchMode::Exact)]
    {
        let mut times = Vec::with_capacity(n_queries);
        for q in &queries {
            let mut request = SearchRequest::new(q.clone(), k);
            request.vector_mode = mode;
            let t = Instant::now();
            let hits = index.search(&request)?;
            times.push(t.elapsed());
            assert_eq!(hits.len(), k);
        }
        times.sort();
        report.push((label, percentile(&times, 0.5), percentile(&times, 0.99)));
    }
    let mut vector_times = Vec::new();
    let mut overlap = 0usize;
    let embedder = index.embedder().clone();
    for q in &queries {
        let v = embedder.embed(&[q.as_str()])?.remove(0);
        let t = Instant::now();
        let approx = index.vectors().search(
            VectorSpace::Text,
            &v,
            &ItemFilter::default(),
            k,
            SearchMode::Indexed,
        )?;
        vector_times.push(t.elapsed());
        let exact = index.vectors().search(
            VectorSpace::Text,
            &v,
            &ItemFilter::default(),
            k,
            SearchMode::Exact,
        )?;
        overlap += approx.iter().filter(|a| exact.iter().any(|e| e.id == a.id)).count();
    }
    vector_times.sort();
    let recall = overlap as f64 / (n_queries * k) as f64;

    println!("\n| {n} items | p50 ms | p99 ms |\n|---|---|---|");
    for (label, p50, p99) in &report {
        println!("| {label} | {p50:.2} | {p99:.2} |");
    }
    println!(
        "| vector side alone, HNSW | {:.2} | {:.2} |",
        percentile(&vector_times, 0.5),
        percentile(&vector_times, 0.99)
    );
    println!("\nrecall@{k} of the HNSW vector side vs exact: {recall:.3}");
    Ok(())
}
