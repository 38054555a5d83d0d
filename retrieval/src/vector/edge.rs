//! The embedded backend: an in-process Qdrant shard (`qdrant-edge` 0.7.2) in a directory.
//!
//! **Durability.** qdrant-edge 0.7.2 logs every update to a write-ahead log but does not replay
//! that log when a shard is loaded: an update becomes durable only when `EdgeShard::flush`
//! writes the segments (it also runs on drop). A process killed before that loses the update
//! (the crash test found exactly this). So every [`VectorStore::upsert`] and
//! [`VectorStore::delete`] here flushes before returning: when it returns, the write survives a
//! crash. Because the log is never acknowledged either, it only grows (in 32 MiB files) — a
//! known limitation of this qdrant-edge version.
//!
//! `EdgeShard`'s methods take `&self` and block. Only one process may open a directory at a
//! time: the caller ([`crate::AudioIndex`]) holds a lock for it.
//!
//! `EdgeShard::flush` panics if another thread is writing at that moment, so every write, flush
//! and optimisation here is serialised by one mutex; searches and reads run concurrently.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, Match, NamedQuery, OperationError,
    PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations, PointOperations,
    PointStruct, QueryEnum, Range, ScrollRequest, SearchParams, SearchRequest, UpdateOperation,
    ValueVariants, Vector, VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface,
    WithVector,
};
use serde_json::Value;

use super::{
    sort_hits, SearchMode, VectorConfig, VectorHit, VectorPoint, VectorSpace, VectorStore,
    SPEAKER_VECTOR, TEXT_VECTOR,
};
use crate::filter::{fields, ItemFilter};
use crate::item::ItemId;
use crate::{Error, Result};

const BACKEND: &str = "qdrant-edge";
/// Page size when listing every id.
const SCROLL_PAGE: usize = 10_000;

/// A [`VectorStore`] backed by an embedded qdrant-edge shard on disk.
#[derive(Debug)]
pub struct EdgeStore {
    shard: EdgeShard,
    config: VectorConfig,
    path: PathBuf,
    writes: Mutex<()>,
}

fn edge_err(operation: &str) -> impl Fn(OperationError) -> Error + '_ {
    move |e| Error::Vector {
        backend: BACKEND,
        operation: operation.to_string(),
        message: e.to_string(),
    }
}

fn point_id(id: ItemId) -> PointId {
    PointId::NumId(id.0)
}

fn item_id(id: &PointId) -> Result<ItemId> {
    match id {
        PointId::NumId(n) => Ok(ItemId(*n)),
        PointId::Uuid(u) => Err(Error::Vector {
            backend: BACKEND,
            operation: "read point id".into(),
            message: format!("point {u} has a UUID id; this store only writes numeric ids"),
        }),
    }
}

impl EdgeStore {
    /// Opens the shard in `dir`, creating it (and `dir`) with `config` if there is none.
    ///
    /// An existing shard must have been created with the same dimensions. Payload indexes for
    /// every filter field are created if missing (also repairing a creation cut short).
    pub fn open(dir: &Path, config: VectorConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let existing = dir.join("edge_config.json").is_file()
            || std::fs::read_dir(dir.join("segments")).is_ok_and(|mut d| d.next().is_some());
        let shard = if existing {
            EdgeShard::load(dir, None).map_err(edge_err("open the shard"))?
        } else {
            let params = |dim: usize| EdgeVectorParams::builder(dim, Distance::Cosine).build();
            let edge_config = EdgeConfig::builder()
                .on_disk_payload(false)
                .vector(TEXT_VECTOR, params(config.text_dim))
                .vector(SPEAKER_VECTOR, params(config.speaker_dim))
                .build();
            EdgeShard::new(dir, edge_config).map_err(edge_err("create the shard"))?
        };
        let store = Self { shard, config, path: dir.to_path_buf(), writes: Mutex::new(()) };
        store.check_dimensions()?;
        store.ensure_payload_indexes()?;
        Ok(store)
    }

    /// The shard's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_dimensions(&self) -> Result<()> {
        let cfg = self.shard.config();
        for space in [VectorSpace::Text, VectorSpace::Speaker] {
            let found = cfg.vectors.get(space.name()).map(|v| v.size);
            if found != Some(self.config.dim(space)) {
                return Err(Error::IndexMeta {
                    path: self.path.clone(),
                    message: format!(
                        "the vector store's `{space}` vector has dimension {}, expected {}",
                        found.map_or("none".to_string(), |d| d.to_string()),
                        self.config.dim(space)
                    ),
                });
            }
        }
        Ok(())
    }

    fn ensure_payload_indexes(&self) -> Result<()> {
        let present = self.shard.info().payload_schema;
        let wanted = fields::KEYWORDS
            .iter()
            .map(|f| (*f, PayloadSchemaType::Keyword))
            .chain([(fields::DURATION_MS, PayloadSchemaType::Integer)]);
        let _writing = self.lock_writes();
        for (field, schema) in wanted {
            let key = json_path(field)?;
            if present.contains_key(&key) {
                continue;
            }
            let op = UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                CreateIndex {
                    field_name: key,
                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                },
            ));
            self.shard.update(op).map_err(edge_err("create a payload index"))?;
        }
        Ok(())
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn json_path(field: &str) -> Result<qdrant_edge::JsonPath> {
    field.try_into().map_err(|()| Error::Vector {
        backend: BACKEND,
        operation: "build a filter".into(),
        message: format!("{field:?} is not a valid payload key"),
    })
}

/// The Qdrant filter equivalent to `filter` (`None` when it constrains nothing).
fn to_edge_filter(filter: &ItemFilter) -> Result<Option<Filter>> {
    let mut must = Vec::new();
    for (field, value) in filter.keyword_conditions() {
        must.push(Condition::Field(FieldCondition::new_match(
            json_path(field)?,
            Match::new_value(ValueVariants::String(value)),
        )));
    }
    let (lo, hi) = filter.duration_ms_range();
    if lo.is_some() || hi.is_some() {
        let bound = |v: Option<u64>| {
            v.map(|v| qdrant_edge::external::ordered_float::OrderedFloat(v as f64))
        };
        must.push(Condition::Field(FieldCondition::new_range(
            json_path(fields::DURATION_MS)?,
            Range { lt: None, gt: None, gte: bound(lo), lte: bound(hi) },
        )));
    }
    Ok((!must.is_empty()).then(|| Filter {
        should: None,
        min_should: None,
        must: Some(must),
        must_not: None,
    }))
}

impl VectorStore for EdgeStore {
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
            let mut named = vec![(TEXT_VECTOR, Vector::new_dense(p.text.clone()))];
            if let Some(s) = &p.speaker {
                self.config.check(VectorSpace::Speaker, s)?;
                named.push((SPEAKER_VECTOR, Vector::new_dense(s.clone())));
            }
            let payload = Value::Object(p.payload.clone());
            list.push(PointStruct::new(point_id(p.id), Vectors::new_named(named), payload).into());
        }
        let op = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            PointInsertOperations::PointsList(list),
        ));
        let _writing = self.lock_writes();
        self.shard.update(op).map_err(edge_err("upsert points"))?;
        self.shard.flush();
        Ok(())
    }

    fn delete(&self, ids: &[ItemId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let op = UpdateOperation::PointOperation(PointOperations::DeletePoints {
            ids: ids.iter().copied().map(point_id).collect(),
        });
        let _writing = self.lock_writes();
        self.shard.update(op).map_err(edge_err("delete points"))?;
        self.shard.flush();
        Ok(())
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
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery {
                query: VectorInternal::Dense(query.to_vec()),
                using: Some(space.name().to_string()),
            }),
            filter: to_edge_filter(filter)?,
            params: Some(SearchParams { exact: mode == SearchMode::Exact, ..Default::default() }),
            limit,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(false)),
            with_vector: Some(WithVector::Bool(false)),
            score_threshold: None,
        };
        let points = self.shard.search(request).map_err(edge_err("search"))?;
        let mut hits = points
            .iter()
            .map(|p| Ok(VectorHit { id: item_id(&p.id)?, score: p.score }))
            .collect::<Result<Vec<_>>>()?;
        sort_hits(&mut hits);
        Ok(hits)
    }

    fn vector(&self, space: VectorSpace, id: ItemId) -> Result<Option<Vec<f32>>> {
        let records = self
            .shard
            .retrieve(
                &[point_id(id)],
                Some(WithPayloadInterface::Bool(false)),
                Some(WithVector::Selector(vec![space.name().to_string()])),
            )
            .map_err(edge_err("retrieve a point"))?;
        let Some(record) = records.into_iter().next() else {
            return Ok(None);
        };
        Ok(match record.vector {
            Some(VectorStructInternal::Named(mut named)) => match named.remove(space.name()) {
                Some(VectorInternal::Dense(v)) => Some(v),
                _ => None,
            },
            Some(VectorStructInternal::Single(v)) if space == VectorSpace::Text => Some(v),
            _ => None,
        })
    }

    fn ids(&self) -> Result<Vec<ItemId>> {
        let mut ids = Vec::new();
        let mut offset = None;
        loop {
            let (records, next) = self
                .shard
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(SCROLL_PAGE),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(edge_err("list point ids"))?;
            for r in &records {
                ids.push(item_id(&r.id)?);
            }
            match next {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn count(&self) -> Result<usize> {
        self.shard
            .count(CountRequest { filter: None, exact: true })
            .map_err(edge_err("count points"))
    }

    fn flush(&self) -> Result<()> {
        let _writing = self.lock_writes();
        self.shard.flush();
        Ok(())
    }

    fn optimize(&self) -> Result<()> {
        let _writing = self.lock_writes();
        self.shard.optimize().map_err(edge_err("optimize"))?;
        Ok(())
    }
}
