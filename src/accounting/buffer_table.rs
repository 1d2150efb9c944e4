//! A process's live buffers on one device: an open-addressing table (linear probing,
//! backward-shift deletion, at most 3/4 full) of buffer id -> [`BufRec`], 24 bytes a
//! slot. Its own rather than a `HashMap`: one probe serves both the lookup and the
//! insert or removal that follows, there are no tombstones to clean up, and the slot
//! of a key is known before it is read, so the accounting prefetches it a few events
//! ahead ([`BufferTable::prefetch`]).
//!
//! A key's home slot: the key xored with a seed drawn at random for each table, times
//! the 64-bit golden ratio, its high half folded onto its low half, and the top bits of
//! that. The seed keeps a producer from choosing ids that pile up in one run of slots
//! and slow the aggregator; the fold breaks the lattice a product alone leaves in
//! sequential ids. An earlier home, the middle bits of a fixed product, put ids of one
//! parity (a process's buffers alternating two devices) on half the slots: its probes
//! ran several times longer. The top bits of a product with a random odd multiplier
//! were not enough either: with some multipliers sequential ids still ran in clusters.
//! MurmurHash3's finalizer spread them as well but cost the accounting benchmark a
//! third of its rate (two dependent multiplies in every probe and every shift).

use super::BufRec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    key: u64,
    /// `size == 0`: an empty slot (a live buffer always has a size).
    rec: BufRec,
}

const EMPTY: Slot = Slot {
    key: 0,
    rec: BufRec {
        size: 0,
        first_seen_unix_s: 0,
        rc_type: 0,
    },
};

#[derive(Debug, Clone)]
pub struct BufferTable {
    slots: Vec<Slot>,
    len: usize,
    /// The table's hash seed: random, kept when the table grows.
    seed: u64,
}

impl Default for BufferTable {
    fn default() -> Self {
        use std::hash::BuildHasher;
        Self {
            slots: Vec::new(),
            len: 0,
            seed: foldhash::fast::RandomState::default().hash_one(0x5eed_u64),
        }
    }
}

/// Tables are equal when they hold the same buffers (their layouts differ with their
/// seeds).
impl PartialEq for BufferTable {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(*k) == Some(v))
    }
}

impl Eq for BufferTable {}

/// Where a key is, or where it would go.
pub enum Probe {
    Found(usize),
    Vacant(usize),
}

impl BufferTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The key's home slot (the slots' count is a power of two).
    fn home(&self, key: u64) -> usize {
        // The top log2(slots) bits of the folded product (`& 63`: none of an empty table).
        let mut h = (key ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 32;
        (h >> (self.mask().leading_zeros() & 63)) as usize & self.mask()
    }

    /// Finds `key`'s slot, or the empty one it would take. Inserting there needs room
    /// first ([`Self::reserve_one`]); a table never grown finds nothing.
    #[inline]
    pub fn probe(&self, key: u64) -> Probe {
        if self.slots.is_empty() {
            return Probe::Vacant(0);
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = &self.slots[i];
            if s.rec.size == 0 {
                return Probe::Vacant(i);
            }
            if s.key == key {
                return Probe::Found(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes room for one more key (the table doubles at 3/4 full).
    #[inline]
    pub fn reserve_one(&mut self) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
    }

    /// Doubles the table (at least 8 slots), every key moved to its new place.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let grown = vec![EMPTY; (self.slots.len() * 2).max(8)];
        let old = std::mem::replace(&mut self.slots, grown);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.rec.size != 0) {
            if let Probe::Vacant(i) = self.probe(s.key) {
                self.slots[i] = s;
                self.len += 1;
            }
        }
    }

    /// Asks the CPU to fetch the cache line of `key`'s home slot, to be probed soon.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slots.get(self.home(key)) {
            // SAFETY: a prefetch is a hint: it reads no memory the program can see and
            // cannot fault; the pointer is to a slot of this table anyway.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>((slot as *const Slot).cast::<i8>())
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    pub fn get(&self, key: u64) -> Option<&BufRec> {
        match self.probe(key) {
            Probe::Found(i) => Some(&self.slots[i].rec),
            Probe::Vacant(_) => None,
        }
    }

    pub fn at_mut(&mut self, i: usize) -> &mut BufRec {
        &mut self.slots[i].rec
    }

    /// Puts a new key in the vacant slot `i` that [`Self::probe`] gave (after
    /// [`Self::reserve_one`]). `rec.size` must not be 0.
    pub fn insert_at(&mut self, i: usize, key: u64, rec: BufRec) {
        debug_assert!(rec.size != 0 && self.slots[i].rec.size == 0);
        self.slots[i] = Slot { key, rec };
        self.len += 1;
    }

    /// Inserts or replaces `key`.
    pub fn insert(&mut self, key: u64, rec: BufRec) {
        if rec.size == 0 {
            return;
        }
        self.reserve_one();
        match self.probe(key) {
            Probe::Found(i) => self.slots[i].rec = rec,
            Probe::Vacant(i) => self.insert_at(i, key, rec),
        }
    }

    /// Removes the key in slot `i`, moving back the keys after it that it displaced
    /// (no tombstones: lookups stay as short as the table's load makes them).
    pub fn remove_at(&mut self, mut i: usize) -> BufRec {
        let mask = self.mask();
        let gone = self.slots[i].rec;
        self.slots[i] = EMPTY;
        self.len -= 1;
        let mut j = (i + 1) & mask;
        while self.slots[j].rec.size != 0 {
            let home = self.home(self.slots[j].key);
            // The key at j may move back to i when i lies between its home and j.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.slots[i] = self.slots[j];
                self.slots[j] = EMPTY;
                i = j;
            }
            j = (j + 1) & mask;
        }
        gone
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &BufRec)> {
        self.slots
            .iter()
            .filter(|s| s.rec.size != 0)
            .map(|s| (&s.key, &s.rec))
    }
}

/// Serialized as a map, as the `HashMap` it replaces was: snapshots stay readable.
impl Serialize for BufferTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.len))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for BufferTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: std::collections::BTreeMap<u64, BufRec> = Deserialize::deserialize(d)?;
        let mut t = BufferTable::default();
        for (k, v) in m {
            t.insert(k, v);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rec(size: u64) -> BufRec {
        BufRec {
            size,
            first_seen_unix_s: 0,
            rc_type: 1,
        }
    }

    /// Against a HashMap, through inserts and removes of clustered and spread keys.
    #[test]
    fn behaves_as_a_map() {
        let mut t = BufferTable::default();
        let mut m: HashMap<u64, BufRec> = HashMap::new();
        let mut x = 0x1234_5678u64;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Addresses as TT-Metal hands them out: aligned, often close together.
            let key = if step % 3 == 0 {
                (x % 4096) << 12
            } else {
                x % 50_000
            };
            if x % 5 < 3 {
                let r = rec(1 + x % 1000);
                t.insert(key, r);
                m.insert(key, r);
            } else if let Probe::Found(i) = t.probe(key) {
                assert_eq!(Some(t.remove_at(i)), m.remove(&key));
            } else {
                assert_eq!(m.get(&key), None);
            }
            assert_eq!(t.len(), m.len());
        }
        for (k, v) in &m {
            assert_eq!(t.get(*k), Some(v));
        }
        assert_eq!(t.iter().count(), m.len());
        let bytes = bincode::serialize(&t).unwrap();
        let back: BufferTable = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back.len(), t.len());
        let as_map: HashMap<u64, BufRec> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(as_map, m, "serialized as the map it replaces");
    }

    /// Ids as producers hand them out (sequential, of one parity, aligned addresses,
    /// ids in the high bits) all spread, in every one of 20 tables (each with its own
    /// random seed): the mean distance of a key from its home slot stays
    /// near what random homes give (about 0.3 slots at this load). The fixed-product
    /// home this table had gave 1.29 for sequential ids; the top bits of a product with a
    /// random multiplier, up to 1.17 with some multipliers.
    #[test]
    fn patterned_ids_spread() {
        type IdOf = fn(u64) -> u64;
        let patterns: [(&str, IdOf); 5] = [
            ("sequential", |j| j),
            ("even", |j| 2 * j),
            ("odd", |j| 2 * j + 1),
            ("4 KiB aligned", |j| 0x1000_0000 + (j << 12)),
            ("high bits", |j| j << 32),
        ];
        for (name, id) in patterns {
            for _ in 0..20 {
                let mut t = BufferTable::default();
                for j in 0..50_000 {
                    t.insert(id(j), rec(64));
                }
                let mask = t.mask();
                let displaced: usize = t
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.rec.size != 0)
                    .map(|(i, s)| i.wrapping_sub(t.home(s.key)) & mask)
                    .sum();
                let mean = displaced as f64 / t.len() as f64;
                assert!(
                    mean < 0.6,
                    "{name}: mean distance from home {mean:.2} slots"
                );
            }
        }
        let a = BufferTable::default();
        let b = BufferTable::default();
        assert_ne!(a.seed, b.seed, "each table draws its own seed");
    }
}
