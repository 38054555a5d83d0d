//! The decoder's per-layer key/value cache.
//!
//! Keys and values live in preallocated buffers `[1, kv_heads, capacity, head_dim]`. A forward
//! pass over `n` new positions writes them at `len..len + n` with `narrow` + `copy_` and attends
//! over the view `0..len + n`; nothing is concatenated. The capacity starts small and doubles
//! (up to the model's context) when a prefill needs more, copying the filled part once.
//!
//! The cache can be extended by any number of positions at a time (a new user turn or a tool
//! result on top of the conversation so far), truncated back to a shorter length (rolling back
//! a rejected continuation) and cleared; the buffers are kept for reuse.

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Capacity of the first allocation, in positions.
const INITIAL_CAPACITY: usize = 64;

#[derive(Debug)]
struct LayerKv {
    keys: Tensor,
    values: Tensor,
}

/// Keys and values of every decoder layer for the positions seen so far.
/// A copy of the first positions of a [`KvCache`] (every layer's keys and values), to put
/// back later with [`KvCache::restore`]: how a conversation that lost the cache to another
/// gets its prefix back without prefilling it again.
#[derive(Debug)]
pub struct KvSnapshot {
    len: usize,
    layers: Vec<(Tensor, Tensor)>,
}

impl KvSnapshot {
    /// The positions it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no position.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory its tensors take, in bytes.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| {
                let elements = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
                elements(k) + elements(v)
            })
            .sum()
    }
}

#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    n_layers: usize,
    kv_heads: i64,
    head_dim: i64,
    len: usize,
    capacity: usize,
    max_len: usize,
    kind: Kind,
    device: Device,
}

impl KvCache {
    /// An empty cache; nothing is allocated until the first [`KvCache::reserve`].
    pub fn new(
        n_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        max_len: usize,
        kind: Kind,
        device: Device,
    ) -> Self {
        Self {
            layers: Vec::new(),
            n_layers,
            kv_heads: kv_heads as i64,
            head_dim: head_dim as i64,
            len: 0,
            capacity: 0,
            max_len,
            kind,
            device,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers can hold before growing.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most positions the cache may ever hold (the model's context).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Makes room for `extra` more positions, growing the buffers if needed.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.len + extra;
        if needed > self.max_len {
            return Err(Error::ContextOverflow { needed, max: self.max_len });
        }
        if needed <= self.capacity {
            return Ok(());
        }
        let mut capacity = self.capacity.max(INITIAL_CAPACITY);
        while capacity < needed {
            capacity *= 2;
        }
        let capacity = capacity.min(self.max_len);
        let shape = [1, self.kv_heads, capacity as i64, self.head_dim];
        let mut grown = Vec::with_capacity(self.n_layers);
        for i in 0..self.n_layers {
            let keys = Tensor::f_zeros(shape, (self.kind, self.device))?;
            let values = Tensor::f_zeros(shape, (self.kind, self.device))?;
            if let Some(old) = self.layers.get(i).filter(|_| self.len > 0) {
                let n = self.len as i64;
                keys.f_narrow(2, 0, n)?.f_copy_(&old.keys.f_narrow(2, 0, n)?)?;
                values.f_narrow(2, 0, n)?.f_copy_(&old.values.f_narrow(2, 0, n)?)?;
            }
            grown.push(LayerKv { keys, values });
        }
        self.layers = grown;
        self.capacity = capacity;
        Ok(())
    }

    /// Writes `keys`/`values` `[1, kv_heads, n, head_dim]` of layer `layer` at positions
    /// `len..len + n` and returns views of positions `0..len + n`. Call [`KvCache::reserve`]
    /// first and [`KvCache::advance`] once every layer has been written.
    pub(crate) fn write(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = keys.size().get(2).copied().unwrap_or(0);
        let end = self.len as i64 + n;
        if end as usize > self.capacity {
            return Err(Error::ContextOverflow { needed: end as usize, max: self.capacity });
        }
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or(Error::ContextOverflow { needed: end as usize, max: 0 })?;
        slot.keys.f_narrow(2, self.len as i64, n)?.f_copy_(keys)?;
        slot.values.f_narrow(2, self.len as i64, n)?.f_copy_(values)?;
        Ok((slot.keys.f_narrow(2, 0, end)?, slot.values.f_narrow(2, 0, end)?))
    }

    /// Marks `n` more positions as held (after every layer wrote them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidTruncate { requested: len, len: self.len });
        }
        self.len = len;
        Ok(())
    }

    /// Forgets every position (the buffers stay allocated for the next conversation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Copies the first `len` positions (`len` ≤ [`Self::len`]).
    pub fn snapshot(&self, len: usize) -> Result<KvSnapshot> {
        if len > self.len {
            return Err(Error::InvalidTruncate { requested: len, len: self.len });
        }
        let n = len as i64;
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                Ok((layer.keys.f_narrow(2, 0, n)?.copy(), layer.values.f_narrow(2, 0, n)?.copy()))
            })
            .collect::<Result<_>>()?;
        Ok(KvSnapshot { len, layers })
    }

    /// Replaces what the cache holds with `snapshot` (taken from a cache of the same shape).
    pub fn restore(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        if snapshot.layers.len() != self.n_layers && snapshot.len > 0 {
            return Err(Error::InvalidPrompt(format!(
                "a KV snapshot of {} layers cannot fill a cache of {}",
                snapshot.layers.len(),
                self.n_layers
            )));
        }
        self.len = 0;
        self.reserve(snapshot.len)?;
        let n = snapshot.len as i64;
        for (layer, (keys, values)) in self.layers.iter_mut().zip(&snapshot.layers) {
            layer.keys.f_narrow(2, 0, n)?.f_copy_(keys)?;
            layer.values.f_narrow(2, 0, n)?.f_copy_(values)?;
        }
        self.len = snapshot.len;
        Ok(())
    }

    /// Forgets every position and frees the buffers.
    pub fn release(&mut self) {
        self.len = 0;
        self.capacity = 0;
        self.layers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: i64, start: f64) -> Tensor {
        Tensor::arange_start(start, start + (2 * n * 3) as f64, (Kind::Float, Device::Cpu))
            .reshape([1, 2, n, 3])
    }

    #[test]
    fn grows_by_doubling_and_keeps_what_it_held() {
        let mut cache = KvCache::new(2, 2, 3, 1000, Kind::Float, Device::Cpu);
        cache.reserve(10).unwrap();
        assert_eq!(cache.capacity(), INITIAL_CAPACITY);
        let first = filled(10, 0.0);
        for layer in 0..2 {
            let _ = cache.write(layer, &first, &(&first * 2.0)).unwrap();
        }
        cache.advance(10);
        cache.reserve(100).unwrap();
        assert_eq!(cache.capacity(), 128);
        let second = filled(100, 1000.0);
        let (k, v) = cache.write(1, &second, &second).unwrap();
        assert_eq!(k.size(), [1, 2, 110, 3]);
        assert!(k.narrow(2, 0, 10).equal(&first));
        assert!(v.narrow(2, 0, 10).equal(&(&first * 2.0)));
        assert!(k.narrow(2, 10, 100).equal(&second));
    }

    #[test]
    fn a_snapshot_is_a_copy_that_restores_the_prefix() {
        let mut cache = KvCache::new(2, 2, 3, 1000, Kind::Float, Device::Cpu);
        cache.reserve(10).unwrap();
        let first = filled(10, 0.0);
        for layer in 0..2 {
            let _ = cache.write(layer, &first, &(&first * 2.0)).unwrap();
        }
        cache.advance(10);
        let snapshot = cache.snapshot(6).unwrap();
        assert_eq!(snapshot.len(), 6);
        assert_eq!(snapshot.bytes(), 2 * 2 * (2 * 6 * 3) * 4);
        assert!(cache.snapshot(11).is_err());

        // Overwrite the cache; the snapshot keeps what it copied.
        cache.clear();
        cache.reserve(10).unwrap();
        for layer in 0..2 {
            let _ = cache.write(layer, &filled(10, 500.0), &filled(10, 500.0)).unwrap();
        }
        cache.advance(10);
        cache.restore(&snapshot).unwrap();
        assert_eq!(cache.len(), 6);
        cache.reserve(1).unwrap();
        let (k, v) = cache.write(1, &filled(1, -1.0), &filled(1, -1.0)).unwrap();
        assert!(k.narrow(2, 0, 6).equal(&first.narrow(2, 0, 6)));
        assert!(v.narrow(2, 0, 6).equal(&(&first * 2.0).narrow(2, 0, 6)));

        let other = KvCache::new(3, 2, 3, 1000, Kind::Float, Device::Cpu);
        let mut other = other;
        assert!(other.restore(&snapshot).is_err(), "another layer count");
    }

    #[test]
    fn truncate_clear_and_overflow() {
        let mut cache = KvCache::new(1, 2, 3, 100, Kind::Float, Device::Cpu);
        cache.reserve(5).unwrap();
        let _ = cache.write(0, &filled(5, 0.0), &filled(5, 0.0)).unwrap();
        cache.advance(5);
        assert!(matches!(cache.truncate(6), Err(Error::InvalidTruncate { requested: 6, len: 5 })));
        cache.truncate(2).unwrap();
        assert_eq!(cache.len(), 2);
        let (k, _) = cache.write(0, &filled(1, 500.0), &filled(1, 500.0)).unwrap();
        assert_eq!(k.size(), [1, 2, 3, 3]);
        assert!(k.narrow(2, 2, 1).equal(&filled(1, 500.0)));
        assert!(matches!(cache.reserve(99), Err(Error::ContextOverflow { needed: 101, max: 100 })));
        cache.reserve(98).unwrap();
        assert_eq!(cache.capacity(), 100, "capacity is capped at the context");
        cache.clear();
        assert!(cache.is_empty());
    }
}
