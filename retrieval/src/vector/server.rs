//! The server backend: a collection on a Qdrant server or cluster, through `qdrant-client`
//! (gRPC). The scale-out path; behind the `qdrant-server` cargo feature.
//!
//! The client is async; this store owns a small tokio runtime and blocks on it, so the
//! [`VectorStore`] contract (blocking, callable from `spawn_blocking`) is the same as the
//! embedded backend's. Do not call it from an async task directly: `block_on` inside a runtime
//! worker panics.
//!
//! Writes wait for the server to apply them (`wait = true`), so a completed `upsert` is
//! searchable, like the embedded backend.

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector as OutVector;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, GetPointsBuilder, NamedVectors, PointId,
    PointStruct, PointsIdsList, Query, QueryPointsBuilder, Range, ScrollPointsBuilder,
    SearchParamsBuilder, UpsertPointsBuilder, Vector, VectorParamsBuilder, VectorsConfigBuilder,
    VectorsSelector,
};
use qdrant_client::{Payload, Qdrant, QdrantError};

use super::{
    sort_hits, SearchMode, VectorConfig, VectorHit, VectorPoint, VectorSpace, VectorStore,
};
use crate::filter::{fields, ItemFilter};
use crate::item::ItemId;
use crate::{Error, Result};

const BACKEND: &str = "qdrant-server";
const SCROLL_PAGE: u32 = 10_000;

fn server_err(operation: &str) -> impl Fn(QdrantError) -> Error + '_ {
    move |e| Error::Vector {
        backend: BACKEND,
        operation: operation.to_string(),
        message: e.to_string(),
    }
}

/// A [`VectorStore`] on a Qdrant server collection.
pub struct ServerStore {
    client: Qdrant,
    collection: String,
    config: VectorConfig,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for ServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStore")
            .field("collection", &self.collection)
            .field("config", &self.config)
            .finish()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Vector {
        backend: BACKEND,
        operation: "start the client runtime".into(),
        message: e.to_string(),
    })
}

fn client(url: &str) -> Result<Qdrant> {
    Qdrant::from_url(url).build().map_err(server_err("connect"))
}

fn item_id(id: Option<&PointId>) -> Result<ItemId> {
    match id.and_then(|p| p.point_id_options.as_ref()) {
        Some(PointIdOptions::Num(n)) => Ok(ItemId(*n)),
        other => Err(Error::Vector {
            backend: BACKEND,
            operation: "read point id".into(),
            message: format!("unexpected point id {other:?}; this store only writes numeric ids"),
        }),
    }
}

fn to_filter(filter: &ItemFilter) -> Option<Filter> {
    let mut must: Vec<Condition> =
        filter.keyword_conditions().into_iter().map(|(f, v)| Condition::matches(f, v)).collect();
    let (lo, hi) = filter.duration_ms_range();
    if lo.is_some() || hi.is_some() {
        must.push(Condition::range(
            fields::DURATION_MS,
            Range { lt: None, gt: None, gte: lo.map(|v| v as f64), lte: hi.map(|v| v as f64) },
        ));
    }
    (!must.is_empty()).then(|| Filter::must(must))
}

impl ServerStore {
    /// Connects to the server at `url` (gRPC, e.g. `http://localhost:6334`) and opens the
    /// collection `collection`, creating it (named cosine vectors `text` and `speaker`, payload
    /// indexes for every filter field) if it does not exist. An existing collection must have
    /// the same dimensions.
    pub fn connect(url: &str, collection: &str, config: VectorConfig) -> Result<Self> {
        let runtime = runtime()?;
        let client = {
            let _entered = runtime.enter();
            client(url)?
        };
        let store = Self { client, collection: collection.to_string(), config, runtime };
        store.ensure_collection()?;
        Ok(store)
    }

    /// Deletes a collection (test cleanup).
    pub fn drop_collection(url: &str, collection: &str) -> Result<()> {
        let runtime = runtime()?;
        runtime.block_on(async {
            let client = client(url)?;
            client
                .delete_collection(collection)
                .await
                .map_err(server_err("delete the collection"))?;
            Ok(())
        })
    }

    fn ensure_collection(&self) -> Result<()> {
        self.runtime.block_on(async {
            let name = self.collection.as_str();
            let exists = self
                .client
                .collection_exists(name)
                .await
                .map_err(server_err("check the collection"))?;
            if exists {
                let info = self
                    .client
                    .collection_info(name)
                    .await
                    .map_err(server_err("read the collection"))?;
                let map = info
                    .result
                    .and_then(|r| r.config)
                    .and_then(|c| c.params)
                    .and_then(|p| p.vectors_config)
                    .and_then(|v| v.config);
                for space in [VectorSpace::Text, VectorSpace::Speaker] {
                    let size = match &map {
                        Some(VectorsConfigKind::ParamsMap(m)) => {
                            m.map.get(space.name()).map(|p| p.size as usize)
                        }
                        _ => None,
                    };
                    if size != Some(self.config.dim(space)) {
                        return Err(Error::IndexMeta {
                            path: format!("qdrant collection {name}").into(),
                            message: format!(
                                "its `{space}` vector has dimension {size:?}, expected {}",
                                self.config.dim(space)
                            ),
                        });
                    }
                }
                return Ok(());
            }
            let mut vectors = VectorsConfigBuilder::default();
            for space in [VectorSpace::Text, VectorSpace::Speaker] {
                vectors.add_named_vector_params(
                    space.name(),
                    VectorParamsBuilder::new(self.config.dim(space) as u64, Distance::Cosine),
                );
            }
            self.client
                .create_collection(CreateCollectionBuilder::new(name).vectors_config(vectors))
                .await
                .map_err(server_err("create the collection"))?;
            let wanted = fields::KEYWORDS
                .iter()
                .map(|f| (*f, FieldType::Keyword))
                .chain([(fields::DURATION_MS, FieldType::Integer)]);
            for (field, kind) in wanted {
                self.client
                    .create_field_index(
                        CreateFieldIndexCollectionBuilder::new(name, field, kind).wait(true),
                    )
                    .await
                    .map_err(server_err("create a payload index"))?;
            }
            Ok(())
        })
    }
}

impl VectorStore for ServerStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn config(&self) -> VectorConfig {
        self.config
    }

    fn upsert(&self, points: &[VectorPoint]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut list = Vec::with_capacity(points.len());
        for p in points {
            self.config.check(VectorSpace::Text, &p.text)?;
            let mut named = NamedVectors::default()
                .add_vector(super::TEXT_VECTOR, Vector::new_dense(p.text.clone()));
            if let Some(s) = &p.speaker {
                self.config.check(VectorSpace::Speaker, s)?;
                named = named.add_vector(super::SPEAKER_VECTOR, Vector::new_dense(s.clone()));
            }
            list.push(PointStruct::new(p.id.0, named, Payload::from(p.payload.clone())));
        }
        self.runtime.block_on(async {
            self.client
                .upsert_points(UpsertPointsBuilder::new(&self.collection, list).wait(true))
                .await
                .map_err(server_err("upsert points"))?;
            Ok(())
        })
    }

    fn delete(&self, ids: &[ItemId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().map(|i| PointId::from(i.0)).collect();
        self.runtime.block_on(async {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&self.collection)
                        .points(PointsIdsList { ids })
                        .wait(true),
                )
                .await
                .map_err(server_err("delete points"))?;
            Ok(())
        })
    }

    fn search(
        &self,
        space: VectorSpace,
        query: &[f32],
        filter: &ItemFilter,
        limit: usize,
        mode: SearchMode,
    ) -> Result<Vec<VectorHit>> {
        self.config.check(space, query)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(query.to_vec()))
            .using(space.name())
            .limit(limit as u64)
            .params(SearchParamsBuilder::default().exact(mode == SearchMode::Exact));
        if let Some(f) = to_filter(filter) {
            request = request.filter(f);
        }
        let response =
            self.runtime.block_on(self.client.query(request)).map_err(server_err("search"))?;
        let mut hits = response
            .result
            .iter()
            .map(|p| Ok(VectorHit { id: item_id(p.id.as_ref())?, score: p.score }))
            .collect::<Result<Vec<_>>>()?;
        sort_hits(&mut hits);
        Ok(hits)
    }

    fn vector(&self, space: VectorSpace, id: ItemId) -> Result<Option<Vec<f32>>> {
        let request = GetPointsBuilder::new(&self.collection, vec![PointId::from(id.0)])
            .with_payload(false)
            .with_vectors(VectorsSelector { names: vec![space.name().to_string()] });
        let response = self
            .runtime
            .block_on(self.client.get_points(request))
            .map_err(server_err("retrieve a point"))?;
        Ok(response
            .result
            .into_iter()
            .next()
            .and_then(|p| p.vectors)
            .and_then(|v| v.get_vector_by_name(space.name()))
            .and_then(|v| match v {
                OutVector::Dense(d) => Some(d.data),
                _ => None,
            }))
    }

    fn ids(&self) -> Result<Vec<ItemId>> {
        let mut ids = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .limit(SCROLL_PAGE)
                .with_payload(false)
                .with_vectors(false);
            if let Some(o) = offset.take() {
                request = request.offset(o);
            }
            let page = self
                .runtime
                .block_on(self.client.scroll(request))
                .map_err(server_err("list point ids"))?;
            for p in &page.result {
                ids.push(item_id(p.id.as_ref())?);
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn count(&self) -> Result<usize> {
        let response = self
            .runtime
            .block_on(self.client.count(CountPointsBuilder::new(&self.collection).exact(true)))
            .map_err(server_err("count points"))?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }

    fn flush(&self) -> Result<()> {
        // Writes are sent with wait = true: the server has applied (and logged) them already.
        Ok(())
    }
}
