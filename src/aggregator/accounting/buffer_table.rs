//! A process's live buffers on one device: an open-addressing table (linear probing,
//! backward-shift deletion, at most 3/4 full) of buffer id -> [`BufRec`], 24 bytes a
//! slot. Its own rather than a `HashMap`: one probe serves both the lookup and the
//! insert or removal that follows, there are no tombstones to clean up, and the slot
//! of a key is known before it is read. `cargo bench --bench aggregator` went from
//! 15.0 M events per second with the `HashMap` to 18.7-20.7 with this table, and from
//! 9.2 to 17.2-17.7 one event at a time. Those runs were not side by side, and the bare
//! map baseline moved between them (52-66 M/s). Prefetching the slots of the events a
//! few places ahead did not help in that benchmark, so it is not done.

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferTable {
    slots: Vec<Slot>,
    len: usize,
}

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
        let h = (key ^ (key >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 32) as usize & self.mask()
    }

    /// Finds `key`'s slot, or the empty one it would take. Inserting there needs room
    /// first ([`Self::reserve_one`]); a table never grown finds nothing.
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
    pub fn reserve_one(&mut self) {
        if (self.len + 1) * 4 <= self.slots.len() * 3 {
            return;
        }
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
}
