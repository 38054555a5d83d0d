//! Loading a checkpoint directory's safetensors into the variables the modules created.
//!
//! The module tree names its variables exactly like the checkpoint's tensors, so there is no
//! renaming. The directory holds either `model.safetensors.index.json` (a `weight_map` from
//! tensor name to shard file) plus its shards, or a single `model.safetensors`.
//!
//! Every check runs before any data is copied, on the safetensors headers alone (parsed and
//! validated by the `safetensors` crate):
//! - a shard the index lists but the directory lacks → [`Error::MissingShard`];
//! - a model parameter no shard holds → [`Error::MissingTensor`];
//! - a shard tensor that is no model parameter → [`Error::UnexpectedTensor`]. This is an error,
//!   not a warning: an extra tensor means the config and the weights disagree (upstream's own
//!   loader fails on unknown names too), and silently ignoring it would hide that;
//! - a shape differing from the parameter's → [`Error::TensorShape`].
//!
//! Then each shard, memory-mapped, is copied tensor by tensor into the variables (one tensor
//! converted at a time, never a whole shard read into memory); the copy converts the dtype
//! (f32/f16/bf16) and moves the data to the variable's device.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Name of the shard index in a checkpoint directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of the weights file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

#[derive(Debug, Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// Where one tensor's bytes are and how to read them.
#[derive(Debug)]
struct Located {
    shard: usize,
    kind: Kind,
    shape: Vec<i64>,
    start: u64,
    len: u64,
}

/// The index file's path and contents.
type IndexFile = (PathBuf, Index);

/// The weight files of a checkpoint directory: the shards and, when sharded, the index.
fn shard_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<IndexFile>)> {
    let index_path = dir.join(INDEX_FILE);
    if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path)
            .map_err(|source| Error::ModelFileRead { path: index_path.clone(), source })?;
        let index: Index = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: index_path.clone(),
            message: format!("not a shard index: {e}"),
        })?;
        let mut names: Vec<&String> = index.weight_map.values().collect();
        names.sort();
        names.dedup();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            if name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(Error::Checkpoint {
                    path: index_path,
                    message: format!("shard name {name:?} is not a plain file name"),
                });
            }
            let shard = dir.join(name);
            if !shard.is_file() {
                return Err(Error::MissingShard { shard, index: index_path });
            }
            files.push(shard);
        }
        return Ok((files, Some((index_path, index))));
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok((vec![single], None));
    }
    Err(Error::Checkpoint {
        path: dir.to_path_buf(),
        message: format!("neither {INDEX_FILE} nor {SINGLE_FILE} is in the directory"),
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

/// A shard mapped into memory: its pages are read from disk only as each tensor is copied out.
struct Shard {
    map: Mmap,
}

impl Shard {
    #[allow(unsafe_code)]
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .map_err(|source| Error::ModelFileRead { path: path.to_path_buf(), source })?;
        // SAFETY: the map is read-only and lives only while the checkpoint loads. Another process
        // truncating the file during that time would fault the load (SIGBUS); that is the
        // contract of every memory-mapped safetensors loader (candle, the `safetensors` crate's
        // own examples) and the price of never holding a multi-GB shard in memory.
        let map = unsafe { MmapOptions::new().map(&file) }
            .map_err(|source| Error::ModelFileRead { path: path.to_path_buf(), source })?;
        Ok(Self { map })
    }
}

/// Reads a shard's header with the `safetensors` crate (which checks that the byte ranges
/// tile the data exactly and fit their shapes and dtypes): every tensor's dtype, shape and
/// absolute byte range.
fn read_header(path: &Path, shard: usize, bytes: &[u8]) -> Result<Vec<(String, Located)>> {
    let bad = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
    let (header_len, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e:?}")))?;
    let data_start = 8 + header_len as u64;
    let mut out = Vec::new();
    for (name, info) in metadata.tensors() {
        let kind = kind_of(info.dtype).ok_or_else(|| {
            bad(format!(
                "tensor {name} has dtype {:?} (supported: F32, F16, BF16, F64)",
                info.dtype
            ))
        })?;
        let (begin, end) = info.data_offsets;
        let located = Located {
            shard,
            kind,
            shape: info.shape.iter().map(|&d| d as i64).collect(),
            start: data_start + begin as u64,
            len: (end - begin) as u64,
        };
        out.push((name, located));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Copies the checkpoint in `dir` into `variables` (name → variable), converting dtype and
/// device; tensors named in `ignored` are skipped if present (a tied LM head's own copy).
/// Runs without gradient tracking.
pub(crate) fn load_checkpoint(
    dir: &Path,
    variables: &mut HashMap<String, Tensor>,
    ignored: &[&str],
) -> Result<()> {
    let (files, index) = shard_files(dir)?;
    let shards = files.iter().map(|f| Shard::open(f)).collect::<Result<Vec<_>>>()?;
    let mut located: HashMap<String, Located> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        for (name, loc) in read_header(file, i, &shards[i].map)? {
            if let Some(previous) = located.get(&name) {
                return Err(Error::Checkpoint {
                    path: file.clone(),
                    message: format!(
                        "tensor {name} is also in {}",
                        files[previous.shard].display()
                    ),
                });
            }
            if !ignored.contains(&name.as_str()) {
                located.insert(name, loc);
            }
        }
    }
    if let Some((index_path, index)) = &index {
        for (name, shard) in index.weight_map.iter().filter(|(n, _)| !ignored.contains(&n.as_str()))
        {
            let holder = located.get(name).map(|l| &files[l.shard]);
            if holder.and_then(|p| p.file_name()).is_none_or(|f| f != shard.as_str()) {
                let found = holder.map_or("no shard".to_owned(), |p| p.display().to_string());
                return Err(Error::Checkpoint {
                    path: index_path.clone(),
                    message: format!(
                        "the index puts tensor {name} in {shard}, but it is in {found}"
                    ),
                });
            }
        }
    }

    let mut missing: Vec<&String> =
        variables.keys().filter(|n| !located.contains_key(*n)).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(Error::MissingTensor {
            name: (*first).clone(),
            dir: dir.to_path_buf(),
            others: missing.len() - 1,
        });
    }
    let mut extra: Vec<&String> = located.keys().filter(|n| !variables.contains_key(*n)).collect();
    extra.sort();
    if let Some(first) = extra.first() {
        return Err(Error::UnexpectedTensor {
            name: (*first).clone(),
            file: files[located[*first].shard].clone(),
            others: extra.len() - 1,
        });
    }
    let mut names: Vec<&String> = located.keys().collect();
    names.sort();
    for name in &names {
        let (loc, var) = (&located[*name], &variables[*name]);
        if loc.shape != var.size() {
            return Err(Error::TensorShape {
                name: (*name).clone(),
                file: files[loc.shard].clone(),
                expected: var.size(),
                found: loc.shape.clone(),
            });
        }
    }

    let _guard = tch::no_grad_guard();
    for (i, shard) in shards.iter().enumerate() {
        let mut order: Vec<(&String, &Located)> =
            located.iter().filter(|(_, l)| l.shard == i).collect();
        order.sort_by_key(|(_, l)| l.start);
        for (name, loc) in order {
            let bytes = &shard.map[loc.start as usize..(loc.start + loc.len) as usize];
            let data = Tensor::f_from_data_size(bytes, &loc.shape, loc.kind)?;
            if let Some(var) = variables.get_mut(name.as_str()) {
                var.f_copy_(&data)?;
            }
        }
    }
    Ok(())
}
