//! A reader for `torch.save` archives holding a state dict (name → tensor).
//!
//! The format (PyTorch ≥ 1.6, "new zipfile serialization"): a zip of *stored* entries under
//! one top-level folder `<name>/`: `data.pkl` (the pickled object), `data/<key>` (one raw
//! little-endian storage per key), `byteorder`, `version`. In `data.pkl` every tensor is
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`
//! whose storage is a persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
//!
//! The pickle is *interpreted as data*: only the opcodes and the few globals a state dict
//! needs are accepted (`collections.OrderedDict`, the tensor rebuild functions, storage
//! types); anything else is an error, so a file cannot make this reader run code. (libtorch's
//! own `_load_parameters`, reached through tch's `loadz_multi`, rejects the `OrderedDict` that
//! `state_dict()` returns.)

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

/// What went wrong, as a message (the caller adds the file name).
pub(crate) type ReadResult<T> = std::result::Result<T, String>;

/// Reads every tensor of the state dict in `path`, in file order.
pub(crate) fn read_state_dict(path: &Path) -> ReadResult<Vec<(String, Tensor)>> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a zip archive ({e})"))?;
    let pickle_name = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_owned()))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .ok_or("the archive has no data.pkl")?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    if let Ok(mut order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        order.read_to_string(&mut text).map_err(|e| e.to_string())?;
        if text.trim() != "little" {
            return Err(format!("byte order {:?} is not supported", text.trim()));
        }
    }
    let pickle = read_entry(&mut zip, &pickle_name, 1 << 30)?;
    let root = Unpickler::new(&pickle).run()?;
    let Value::Dict(items) = root else {
        return Err(format!("data.pkl holds {}, not a dict of tensors", root.describe()));
    };

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (key, value) in items {
        let Value::Str(name) = key else {
            return Err(format!("a state-dict key is {}, not a string", key.describe()));
        };
        let Value::Tensor(t) = value else {
            return Err(format!("{name} holds {}, not a tensor", value.describe()));
        };
        if !storages.contains_key(&t.storage.key) {
            let entry = format!("{prefix}data/{}", t.storage.key);
            let bytes = t.storage.numel * t.storage.kind.elt_size_in_bytes() as i64;
            let data = read_entry(&mut zip, &entry, bytes as u64)?;
            if data.len() as i64 != bytes {
                return Err(format!(
                    "storage {entry} of {name} holds {} bytes, the pickle says {bytes}",
                    data.len()
                ));
            }
            let storage = Tensor::f_from_data_size(&data, &[t.storage.numel], t.storage.kind)
                .map_err(|e| e.to_string())?;
            storages.insert(t.storage.key.clone(), storage);
        }
        let storage = &storages[&t.storage.key];
        let needed = t
            .size
            .iter()
            .zip(&t.stride)
            .map(|(&n, &s)| if n == 0 { 0 } else { (n - 1) * s })
            .sum::<i64>()
            + t.offset
            + i64::from(t.size.iter().all(|&n| n > 0));
        if t.size.len() != t.stride.len() || t.offset < 0 || needed > t.storage.numel {
            return Err(format!(
                "{name}: size {:?} / stride {:?} / offset {} do not fit its storage",
                t.size, t.stride, t.offset
            ));
        }
        let tensor = storage
            .f_as_strided(&t.size, &t.stride, t.offset)
            .and_then(|v| v.f_contiguous())
            .map_err(|e| format!("{name}: {e}"))?;
        out.push((name, tensor));
    }
    Ok(out)
}

fn read_entry(zip: &mut zip::ZipArchive<File>, name: &str, max: u64) -> ReadResult<Vec<u8>> {
    let mut entry = zip.by_name(name).map_err(|_| format!("the archive lacks {name}"))?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(format!("{name} is compressed; torch.save stores entries uncompressed"));
    }
    if entry.size() > max {
        return Err(format!("{name} is {} bytes, more than expected ({max})", entry.size()));
    }
    let mut data = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut data).map_err(|e| format!("{name}: {e}"))?;
    Ok(data)
}

/// A storage referenced by a persistent id.
#[derive(Debug, Clone)]
struct StorageRef {
    kind: Kind,
    key: String,
    numel: i64,
}

/// A tensor view of a storage.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: StorageRef,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The pickle values a state dict is made of.
#[derive(Debug, Clone)]
enum Value {
    None,
    /// A bool, float or bytes value: never part of a tensor's description.
    Other(&'static str),
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Self::None => "None".into(),
            Self::Other(what) => (*what).into(),
            Self::Int(_) => "an int".into(),
            Self::Str(_) => "a string".into(),
            Self::Tuple(_) => "a tuple".into(),
            Self::List(_) => "a list".into(),
            Self::Dict(_) => "a dict".into(),
            Self::Global(m, n) => format!("{m}.{n}"),
            Self::Storage(_) => "a storage".into(),
            Self::Tensor(_) => "a tensor".into(),
        }
    }

    fn int(&self, what: &str) -> ReadResult<i64> {
        match self {
            Self::Int(i) => Ok(*i),
            other => Err(format!("{what}: expected an int, got {}", other.describe())),
        }
    }

    fn ints(&self, what: &str) -> ReadResult<Vec<i64>> {
        match self {
            Self::Tuple(items) | Self::List(items) => items.iter().map(|v| v.int(what)).collect(),
            other => Err(format!("{what}: expected a tuple of ints, got {}", other.describe())),
        }
    }
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// A pickle interpreter restricted to data.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }
    }

    fn bytes(&mut self, n: usize) -> ReadResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("data.pkl ends early")?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> ReadResult<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> ReadResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> ReadResult<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("data.pkl: unterminated line")?;
        let text =
            String::from_utf8(rest[..end].to_vec()).map_err(|_| "data.pkl: a name is not UTF-8")?;
        self.pos += end + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> ReadResult<Value> {
        let b = self.bytes(n)?;
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "data.pkl: a string is not UTF-8")?,
        ))
    }

    fn pop(&mut self) -> ReadResult<Value> {
        self.stack.pop().ok_or_else(|| "data.pkl: stack underflow".to_owned())
    }

    fn pop_mark(&mut self) -> ReadResult<Vec<Value>> {
        let mark = self.marks.pop().ok_or("data.pkl: no mark")?;
        if mark > self.stack.len() {
            return Err("data.pkl: bad mark".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> ReadResult<&mut Value> {
        self.stack.last_mut().ok_or_else(|| "data.pkl: stack underflow".to_owned())
    }

    fn memo_get(&mut self, key: u32) -> ReadResult<()> {
        let v =
            self.memo.get(&key).cloned().ok_or_else(|| format!("data.pkl: memo {key} unset"))?;
        self.stack.push(v);
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> ReadResult<()> {
        let v = self.stack.last().cloned().ok_or("data.pkl: stack underflow")?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> ReadResult<()> {
        if items.len() % 2 != 0 {
            return Err("data.pkl: odd number of dict items".into());
        }
        let Value::Dict(dict) = self.top()? else {
            return Err("data.pkl: SETITEMS on a non-dict".into());
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn run(mut self) -> ReadResult<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.bytes(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("data.pkl: STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b')' => self.stack.push(Value::Tuple(vec![])),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err("data.pkl: stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List(vec![])),
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("data.pkl: APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("data.pkl: APPENDS to a non-list".into()),
                    }
                }
                b'}' => self.stack.push(Value::Dict(vec![])),
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'B' | b'C' => {
                    let n = if op == b'B' { self.u32()? as usize } else { usize::from(self.u8()?) };
                    self.bytes(n)?;
                    self.stack.push(Value::Other("bytes"));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let b = self.bytes(2)?;
                    self.stack.push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                b'J' => {
                    let b = self.bytes(4)?;
                    self.stack
                        .push(Value::Int(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err("data.pkl: integer wider than 64 bits".into());
                    }
                    let b = self.bytes(n)?;
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= i64::from(byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.bytes(8)?;
                    self.stack.push(Value::Other("a float"));
                }
                b'N' => self.stack.push(Value::None),
                0x88 | 0x89 => self.stack.push(Value::Other("a bool")),
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_storage(pid)?;
                    self.stack.push(Value::Storage(storage));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: sets object state (an OrderedDict's `_metadata`): not needed.
                    self.pop()?;
                }
                other => {
                    return Err(format!(
                    "data.pkl: pickle opcode 0x{other:02x} at byte {} is not part of a state dict",
                    self.pos - 1
                ))
                }
            }
        }
    }
}

/// `('storage', torch.<Type>Storage, key, location, numel)`.
fn persistent_storage(pid: Value) -> ReadResult<StorageRef> {
    let Value::Tuple(items) = pid else {
        return Err(format!("data.pkl: persistent id is {}", pid.describe()));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(module, ty), Value::Str(key), _location, numel]
            if tag == "storage" =>
        {
            let kind = (module == "torch")
                .then(|| storage_kind(ty))
                .flatten()
                .ok_or_else(|| format!("data.pkl: unsupported storage type {module}.{ty}"))?;
            let numel = numel.int("storage size")?;
            if numel < 0 || key.contains('/') || key.contains("..") {
                return Err(format!("data.pkl: bad storage reference {key:?}"));
            }
            Ok(StorageRef { kind, key: key.clone(), numel })
        }
        _ => Err("data.pkl: persistent id is not a storage reference".into()),
    }
}

/// The callables a state dict uses; anything else is refused.
fn reduce(callable: Value, args: Value) -> ReadResult<Value> {
    let Value::Global(module, name) = &callable else {
        return Err(format!("data.pkl: calling {}", callable.describe()));
    };
    let Value::Tuple(args) = args else {
        return Err(format!("data.pkl: {module}.{name} called without an argument tuple"));
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(vec![])),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let [Value::Storage(storage), offset, size, stride, ..] = args.as_slice() else {
                return Err(format!("data.pkl: {name} with unexpected arguments"));
            };
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: offset.int("storage offset")?,
                size: size.ints("tensor size")?,
                stride: stride.ints("tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("data.pkl: _rebuild_parameter without a tensor".into()),
        },
        _ => Err(format!("data.pkl: refusing to call {module}.{name} (not part of a state dict)")),
    }
}
