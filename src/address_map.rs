//! The address map of one buffer type on one chip, rebuilt from the live buffers the
//! way TT-Metal's allocator lays them out: one allocator per chip and type, its banks
//! in lockstep (a buffer takes the same range in every bank it uses), each buffer's
//! range its footprint per bank rounded up to the allocator's block alignment. From
//! that: the free gaps, the largest free block, the free bytes per bank, and whether a
//! buffer of a given size would fit. No I/O: the aggregator's answer and the tests use
//! it alike.

use crate::shm_layout::BankGeometry;

/// A live buffer's range in each bank, and what it is (an index the caller gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub address: u64,
    pub len: u64,
    pub owner: usize,
}

/// A free gap of a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    pub address: u64,
    pub size: u64,
}

/// One chip's banks of one type, occupied and free.
#[derive(Debug, Clone)]
pub struct AddressMap {
    pub geometry: BankGeometry,
    /// Occupied ranges, by address (overlaps, which a real allocator never makes, are
    /// kept as reported and counted once).
    pub ranges: Vec<Range>,
    /// Free gaps, by address.
    pub gaps: Vec<Gap>,
    pub allocated_per_bank: u64,
    pub free_per_bank: u64,
}

/// `v` rounded up to a multiple of `to` (0 or 1: unchanged).
pub fn round_up(v: u64, to: u64) -> u64 {
    if to <= 1 {
        v
    } else {
        v.div_ceil(to).saturating_mul(to)
    }
}

impl AddressMap {
    /// The map of banks `geometry` with `ranges` occupied (in any order; each range
    /// rounded up to the block alignment here, as the allocator does). Ranges outside
    /// the banks are kept but take no free space.
    pub fn new(geometry: BankGeometry, mut ranges: Vec<Range>) -> Self {
        let block = u64::from(geometry.block_alignment);
        for r in &mut ranges {
            r.len = round_up(r.len, block);
        }
        ranges.sort_by_key(|r| (r.address, r.len));
        let lo = geometry.base_address;
        let hi = lo.saturating_add(geometry.bank_size);
        let mut gaps = Vec::new();
        let mut at = lo;
        let mut allocated = 0u64;
        for r in &ranges {
            let start = r.address.clamp(lo, hi);
            let end = r.address.saturating_add(r.len).clamp(lo, hi);
            if start > at {
                gaps.push(Gap {
                    address: at,
                    size: start - at,
                });
            }
            if end > at {
                allocated += end - start.max(at);
                at = end;
            }
        }
        if hi > at {
            gaps.push(Gap {
                address: at,
                size: hi - at,
            });
        }
        AddressMap {
            geometry,
            ranges,
            gaps,
            allocated_per_bank: allocated,
            free_per_bank: geometry.bank_size.saturating_sub(allocated),
        }
    }

    /// The largest free gap (the lowest of equals), if any.
    pub fn largest_free(&self) -> Option<Gap> {
        self.gaps
            .iter()
            .copied()
            .max_by(|a, b| a.size.cmp(&b.size).then(b.address.cmp(&a.address)))
    }

    /// 1 − largest free block / free bytes: 0 when the free space is one block.
    pub fn fragmentation(&self) -> f64 {
        let largest = self.largest_free().map_or(0, |g| g.size);
        if self.free_per_bank == 0 {
            0.0
        } else {
            1.0 - largest as f64 / self.free_per_bank as f64
        }
    }

    /// What an interleaved buffer of `size` bytes in pages of `page_size` needs of each
    /// bank: its pages spread over every bank, each page rounded up to the page
    /// alignment (TT-Metal's `aligned_size_per_bank`), then the range rounded up to the
    /// block alignment.
    pub fn need_per_bank(&self, size: u64, page_size: u64) -> Need {
        let g = &self.geometry;
        let page = page_size.max(1);
        let pages = size.div_ceil(page);
        let per_bank_pages = pages.div_ceil(u64::from(g.num_banks.max(1)));
        let per_bank = per_bank_pages.saturating_mul(round_up(page, u64::from(g.page_alignment)));
        Need {
            per_bank,
            block: round_up(per_bank, u64::from(g.block_alignment)),
        }
    }

    /// Whether such a buffer fits: some gap holds its block.
    pub fn fits(&self, need: &Need) -> bool {
        self.largest_free().is_some_and(|g| g.size >= need.block)
    }

    /// The free block there would be around range `r` if it alone were freed: its
    /// own bytes and the gaps just below and just above it.
    pub fn freed_block(&self, r: &Range) -> u64 {
        let end = r.address.saturating_add(r.len);
        let below = self
            .gaps
            .iter()
            .find(|g| g.address.saturating_add(g.size) == r.address)
            .map_or(0, |g| g.size);
        let above = self
            .gaps
            .iter()
            .find(|g| g.address == end)
            .map_or(0, |g| g.size);
        // Another range overlapping this one (never from a real allocator) keeps the
        // space taken.
        let shared = self.ranges.iter().any(|o| {
            o.owner != r.owner && o.address < end && r.address < o.address.saturating_add(o.len)
        });
        if shared {
            0
        } else {
            below + r.len + above
        }
    }

    /// The bank's address range drawn in `cells` cells, lowest address first: each cell
    /// the eighths of its bytes occupied (0 free .. 8 full).
    pub fn strip(&self, cells: usize) -> Vec<u8> {
        let lo = self.geometry.base_address;
        let size = self.geometry.bank_size;
        if cells == 0 || size == 0 {
            return Vec::new();
        }
        let cell_of = |a: u64| (((a - lo) as u128 * cells as u128) / size as u128) as usize;
        let start_of = |c: usize| lo + ((c as u128 * size as u128) / cells as u128) as u64;
        // From the free gaps (disjoint, within the bank): each cell's free bytes, in
        // O(cells + gaps) whatever the buffers (overlapping reports cost nothing more).
        let mut free = vec![0u64; cells];
        for g in &self.gaps {
            let (a, b) = (g.address, g.address + g.size);
            for (c, f) in free
                .iter_mut()
                .enumerate()
                .take(cell_of(b - 1).min(cells - 1) + 1)
                .skip(cell_of(a))
            {
                *f += b.min(start_of(c + 1)).saturating_sub(a.max(start_of(c)));
            }
        }
        let used: Vec<u64> = free
            .iter()
            .enumerate()
            .map(|(c, &f)| (start_of(c + 1) - start_of(c)).saturating_sub(f))
            .collect();
        used.iter()
            .enumerate()
            .map(|(c, &u)| {
                let w = (start_of(c + 1) - start_of(c)).max(1);
                // Any byte used shows (at least one eighth); a cell is full only when all are.
                let eighths = (u.min(w) * 8).div_ceil(w) as u8;
                if u < w {
                    eighths.min(7)
                } else {
                    8
                }
            })
            .collect()
    }

    /// The cells of [`Self::strip`] that lie wholly in gap `g`.
    pub fn cells_of(&self, g: &Gap, cells: usize) -> std::ops::Range<usize> {
        let lo = self.geometry.base_address;
        let size = self.geometry.bank_size.max(1) as u128;
        let first = ((g.address - lo) as u128 * cells as u128).div_ceil(size) as usize;
        let end = (((g.address + g.size - lo) as u128 * cells as u128) / size) as usize;
        first..end.max(first)
    }

    /// The occupied ranges that border gap `g` (the one just below and the one just
    /// above): the buffers whose freeing would widen it.
    pub fn borders(&self, g: &Gap) -> Vec<Range> {
        let end = g.address.saturating_add(g.size);
        let below = self
            .ranges
            .iter()
            .filter(|r| r.address.saturating_add(r.len) == g.address)
            .max_by_key(|r| r.len);
        let above = self
            .ranges
            .iter()
            .filter(|r| r.address == end)
            .max_by_key(|r| r.len);
        below.into_iter().chain(above).copied().collect()
    }
}

/// What a buffer needs of each bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Need {
    /// Its footprint in a bank.
    pub per_bank: u64,
    /// The range the allocator takes for it.
    pub block: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wormhole_l1() -> BankGeometry {
        BankGeometry {
            struct_size: 32,
            num_banks: 64,
            bank_size: 1_393_312,
            base_address: 105_824,
            page_alignment: 16,
            block_alignment: 32,
        }
    }

    #[test]
    fn gaps_largest_block_and_fragmentation() {
        let g = wormhole_l1();
        let top = g.base_address + g.bank_size;
        // Two blocks at the top, one (1,008 bytes, a 1,024-byte block) in the middle.
        let m = AddressMap::new(
            g,
            vec![
                Range {
                    address: top - 2048,
                    len: 2048,
                    owner: 0,
                },
                Range {
                    address: top - 3072,
                    len: 1008,
                    owner: 1,
                },
                Range {
                    address: g.base_address + 1000 * 32,
                    len: 1008,
                    owner: 2,
                },
            ],
        );
        assert_eq!(m.allocated_per_bank, 2048 + 1024 + 1024);
        assert_eq!(m.free_per_bank, g.bank_size - 4096);
        let big = m.largest_free().unwrap();
        assert_eq!(big.address, g.base_address + 1000 * 32 + 1024);
        assert_eq!(big.size, top - 3072 - big.address);
        assert!(m.fragmentation() > 0.0 && m.fragmentation() < 0.1);
        let b = m.borders(&big);
        assert_eq!(b.iter().map(|r| r.owner).collect::<Vec<_>>(), vec![2, 1]);
        // Freeing the range above the largest gap joins it to the gap above that.
        let above = m
            .gaps
            .iter()
            .find(|x| x.address == top - 3072 + 1024)
            .map_or(0, |x| x.size);
        assert_eq!(m.freed_block(&b[1]), big.size + 1024 + above);
    }

    #[test]
    fn the_strip_shows_occupied_eighths() {
        let g = BankGeometry {
            bank_size: 800,
            base_address: 0,
            block_alignment: 1,
            ..wormhole_l1()
        };
        let m = AddressMap::new(
            g,
            vec![
                Range {
                    address: 0,
                    len: 100,
                    owner: 0,
                },
                Range {
                    address: 150,
                    len: 10,
                    owner: 1,
                },
                Range {
                    address: 700,
                    len: 100,
                    owner: 2,
                },
            ],
        );
        // 8 cells of 100 bytes: full, a little, free..., full.
        assert_eq!(m.strip(8), vec![8, 1, 0, 0, 0, 0, 0, 8]);
        let big = m.largest_free().unwrap();
        assert_eq!((big.address, big.size), (160, 540));
        assert_eq!(m.cells_of(&big, 8), 2..7);
    }

    #[test]
    fn need_per_bank_is_tt_metals() {
        let dram = BankGeometry {
            struct_size: 32,
            num_banks: 12,
            bank_size: 1_072_693_184,
            base_address: 0x100040,
            page_alignment: 32,
            block_alignment: 32,
        };
        let m = AddressMap::new(dram, vec![]);
        // 1 MiB in 2 KiB pages over 12 banks: 43 pages a bank.
        assert_eq!(m.need_per_bank(1 << 20, 2048).per_bank, 88_064);
        // 800 bytes in 16-byte pages: 5 pages a bank, each page rounded to 32.
        assert_eq!(m.need_per_bank(800, 16).per_bank, 160);
        let l1 = AddressMap::new(wormhole_l1(), vec![]);
        let n = l1.need_per_bank(64_512, 1008);
        assert_eq!((n.per_bank, n.block), (1008, 1024));
        assert!(l1.fits(&n));
        assert!(!l1.fits(&l1.need_per_bank(64 * 1_400_000, 1_400_000)));
    }

    #[test]
    fn an_empty_or_full_map() {
        let g = wormhole_l1();
        let m = AddressMap::new(g, vec![]);
        assert_eq!(m.largest_free().unwrap().size, g.bank_size);
        assert_eq!(m.fragmentation(), 0.0);
        let full = AddressMap::new(
            g,
            vec![Range {
                address: g.base_address,
                len: g.bank_size,
                owner: 0,
            }],
        );
        assert_eq!(full.free_per_bank, 0);
        assert!(full.largest_free().is_none());
        // Overlapping reports are counted once.
        let o = AddressMap::new(
            g,
            vec![
                Range {
                    address: g.base_address,
                    len: 64,
                    owner: 0,
                },
                Range {
                    address: g.base_address + 32,
                    len: 64,
                    owner: 1,
                },
            ],
        );
        assert_eq!(o.allocated_per_bank, 96);
    }
}
