//! Reading PyTorch state dicts (`flow.pt`, `hift.pt`) and handing their tensors to the modules.
//!
//! The official files are `torch.save(model.state_dict())` archives: a zip holding a pickled
//! `OrderedDict` of tensor name → tensor plus the raw storages, read by [`torch_zip`] (no
//! Python conversion step).
//!
//! The modules then [`take`](StateDict::take) every parameter by its upstream name with the
//! shape the configuration implies; [`finish`](StateDict::finish) rejects tensors nobody took.
//! A wrong file, a missing tensor, an extra tensor or a shape mismatch is an error naming the
//! tensor and the file — the equivalent of upstream's `load_state_dict(strict=True)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

mod torch_zip;

/// Named tensors from one state-dict file, consumed by the modules that load them.
#[derive(Debug)]
pub struct StateDict {
    path: PathBuf,
    device: Device,
    tensors: BTreeMap<String, Tensor>,
}

impl StateDict {
    /// Reads `path` (a `torch.save` state dict) onto the CPU, then each taken tensor moves to
    /// `device`. `strip_prefix` is removed from every name that starts with it (`hift.pt`
    /// stores its keys under `generator.`).
    pub fn load(path: &Path, strip_prefix: Option<&str>, device: Device) -> Result<Self> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::File { path: path.to_path_buf(), source });
        }
        let named = torch_zip::read_state_dict(path)
            .map_err(|message| Error::StateDict { path: path.to_path_buf(), message })?;
        if named.is_empty() {
            return Err(Error::StateDict {
                path: path.to_path_buf(),
                message: "the archive holds no tensors".into(),
            });
        }
        let mut tensors = BTreeMap::new();
        for (name, tensor) in named {
            let name = match strip_prefix {
                Some(prefix) => name.strip_prefix(prefix).map(str::to_owned).unwrap_or(name),
                None => name,
            };
            if tensors.insert(name.clone(), tensor).is_some() {
                return Err(Error::StateDict {
                    path: path.to_path_buf(),
                    message: format!("tensor {name} appears twice"),
                });
            }
        }
        Ok(Self { path: path.to_path_buf(), device, tensors })
    }

    /// Builds a state dict from tensors already in memory (tests, converters); `path` only
    /// names the source in errors.
    pub fn from_tensors(
        path: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
        device: Device,
    ) -> Self {
        Self { path: path.into(), device, tensors: tensors.into_iter().collect() }
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor of that name is still there (not yet taken).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names of the tensors not taken yet, sorted.
    pub fn remaining(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// Removes a tensor without checks (tools, tests).
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Adds or replaces a tensor (tools, tests).
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// Removes the tensor `name`, checks its shape, and returns it as f32 on the target device.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let tensor = self.tensors.remove(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_owned(),
            file: self.path.clone(),
        })?;
        let found = tensor.size();
        if found != shape {
            return Err(Error::TensorShape {
                name: name.to_owned(),
                file: self.path.clone(),
                expected: shape.to_vec(),
                found,
            });
        }
        if !tensor.is_floating_point() {
            return Err(Error::StateDict {
                path: self.path.clone(),
                message: format!(
                    "tensor {name} has kind {:?}, expected a float tensor",
                    tensor.kind()
                ),
            });
        }
        Ok(tensor.f_to_kind(Kind::Float)?.f_to_device(self.device)?)
    }

    /// Checks that every tensor was taken: a leftover means the file and the configuration
    /// describe different models.
    pub fn finish(self) -> Result<()> {
        let mut rest = self.tensors.into_keys();
        match rest.next() {
            None => Ok(()),
            Some(name) => {
                Err(Error::UnexpectedTensor { name, file: self.path, others: rest.count() })
            }
        }
    }
}
