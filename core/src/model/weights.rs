//! Loading a checkpoint directory's safetensors into the variables the modules created.
//!
//! The module tree names its variables exactly like the checkpoint's tensors, so there is no
//! renaming. The directory holds either `model.safetensors.index.json` (a `weight_map` from
//! tensor name to shard file) plus its shards, or a single `model.safetensors`.
//!
//! Every check runs before any data is read, on the safetensors headers alone:
//! - a shard the index lists but the directory lacks → [`Error::MissingShard`];
//! - a model parameter no shard holds → [`Error::MissingTensor`];
//! - a shard tensor that is no model parameter → [`Error::UnexpectedTensor`]. This is an error,
//!   not a warning: an extra tensor means the config and the weights disagree (upstream's own
//!   loader fails on unknown names too), and silently ignoring it would hide that;
//! - a shape differing from the parameter's → [`Error::TensorShape`].
//!
//! Then each shard is read tensor by tensor (one tensor in memory at a time, never a whole
//! shard) and copied into its variable, which converts the dtype (f32/f16/bf16) and moves it
//! to the variable's device.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Name of the shard index in a checkpoint directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of the weights file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// Largest safetensors header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Debug, Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
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

fn kind_of(dtype: &str) -> Option<Kind> {
    match dtype {
        "F32" => Some(Kind::Float),
        "F16" => Some(Kind::Half),
        "BF16" => Some(Kind::BFloat16),
        "F64" => Some(Kind::Double),
        _ => None,
    }
}

/// Reads a shard's header: every tensor's dtype, shape and absolute byte range.
fn read_header(path: &Path, shard: usize) -> Result<Vec<(String, Located)>> {
    let bad = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
    let io = |source| Error::ModelFileRead { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| bad("shorter than a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(bad(format!("safetensors header length {header_len} is invalid")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("safetensors header is not valid JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut out = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| bad(format!("header entry of tensor {name}: {e}")))?;
        let kind = kind_of(&entry.dtype).ok_or_else(|| {
            bad(format!("tensor {name} has dtype {} (supported: F32, F16, BF16, F64)", entry.dtype))
        })?;
        let [begin, end] = entry.data_offsets;
        let numel: i64 = entry.shape.iter().product();
        let expected = numel.max(0) as u64 * kind.elt_size_in_bytes() as u64;
        if entry.shape.iter().any(|&d| d < 0) || end < begin || end - begin != expected {
            return Err(bad(format!(
                "tensor {name}: byte range {begin}..{end} does not fit shape {:?} of {}",
                entry.shape, entry.dtype
            )));
        }
        if data_start + end > file_len {
            return Err(bad(format!(
                "tensor {name}: byte range {begin}..{end} runs past the end of the file"
            )));
        }
        let located = Located {
            shard,
            kind,
            shape: entry.shape,
            start: data_start + begin,
            len: end - begin,
        };
        out.push((name, located));
    }
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
    let mut located: HashMap<String, Located> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        for (name, loc) in read_header(file, i)? {
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
    let mut buffer: Vec<u8> = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let io = |source| Error::ModelFileRead { path: path.clone(), source };
        let mut file = File::open(path).map_err(io)?;
        let mut order: Vec<(&String, &Located)> =
            located.iter().filter(|(_, l)| l.shard == i).collect();
        order.sort_by_key(|(_, l)| l.start);
        for (name, loc) in order {
            buffer.resize(loc.len as usize, 0);
            file.seek(SeekFrom::Start(loc.start)).map_err(io)?;
            file.read_exact(&mut buffer).map_err(io)?;
            let data = Tensor::f_from_data_size(&buffer, &loc.shape, loc.kind)?;
            if let Some(var) = variables.get_mut(name.as_str()) {
                var.f_copy_(&data)?;
            }
        }
    }
    Ok(())
}
