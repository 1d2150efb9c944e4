//! The `map` request: each chip's address map of each buffer type whose banks a
//! process reported ([`crate::address_map`]), and, asked with `fits=SIZE[,PAGE]`,
//! whether an interleaved buffer of that size would fit and which live buffers
//! border the largest gaps. One JSON object a line.

use crate::accounting::Accounting;
use crate::address_map::{AddressMap, Range};
use crate::shm_layout::{BankGeometry, BufferType};
use std::collections::BTreeMap;

/// Page size assumed by `fits=SIZE` with no page: a 32x32 tile of bfloat16.
pub const DEFAULT_PAGE_SIZE: u64 = 2048;
/// Gaps listed per map, largest first.
const GAPS_LISTED: usize = 8;
/// Gaps whose bordering buffers a `fits` answer names.
const GAPS_BORDERED: usize = 3;

/// What a `map` request asks.
#[derive(Debug, Default, Clone, Copy)]
pub struct MapQuery {
    pub device: Option<i32>,
    pub btype: Option<BufferType>,
    /// Size and page size of a buffer to try.
    pub fits: Option<(u64, u64)>,
    /// Cells of a drawing of each bank's address range (see `AddressMap::strip`).
    pub strip: Option<usize>,
}

/// The most cells a strip may ask for.
pub const MAX_STRIP_CELLS: usize = 1024;

impl MapQuery {
    /// Parses `device=D type=T fits=SIZE[,PAGE]` (each optional).
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self, String> {
        let mut q = MapQuery::default();
        for w in words {
            match w.split_once('=') {
                Some(("device", v)) => {
                    q.device = Some(v.parse().map_err(|_| format!("device={v}: not a number"))?)
                }
                Some(("type", v)) => {
                    q.btype = Some(parse_type(v).ok_or_else(|| {
                        format!("type={v}: not a buffer type (DRAM, L1, L1_SMALL, TRACE)")
                    })?)
                }
                Some(("fits", v)) => q.fits = Some(parse_fits(v)?),
                Some(("strip", v)) => {
                    q.strip = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|n| (1..=MAX_STRIP_CELLS).contains(n))
                            .ok_or_else(|| {
                                format!("strip={v}: cells from 1 to {MAX_STRIP_CELLS}")
                            })?,
                    )
                }
                _ => {
                    return Err(format!(
                        "{w:?}: expected device=D, type=T or fits=SIZE[,PAGE]"
                    ))
                }
            }
        }
        Ok(q)
    }

    /// The request line that asks it.
    pub fn request(&self) -> String {
        let mut q = "map".to_string();
        if let Some(d) = self.device {
            q += &format!(" device={d}");
        }
        if let Some(t) = self.btype {
            q += &format!(" type={}", t.name());
        }
        if let Some((s, p)) = self.fits {
            q += &format!(" fits={s},{p}");
        }
        if let Some(n) = self.strip {
            q += &format!(" strip={n}");
        }
        q
    }
}

/// A buffer type by its name, in any case.
pub fn parse_type(v: &str) -> Option<BufferType> {
    BufferType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(v))
}

/// `SIZE[,PAGE]`, each a byte count (a page size left out: [`DEFAULT_PAGE_SIZE`], or
/// the size if smaller).
pub fn parse_fits(v: &str) -> Result<(u64, u64), String> {
    let (s, p) = v.split_once(',').unwrap_or((v, ""));
    let size: u64 = s
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{v:?}: the size must be a byte count above 0 (SIZE[,PAGE])"))?;
    let page = if p.is_empty() {
        DEFAULT_PAGE_SIZE.min(size)
    } else {
        p.parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{v:?}: the page size must be a byte count above 0"))?
    };
    Ok((size, page))
}

/// A live buffer a map holds.
struct Owner<'a> {
    pid: u32,
    comm: &'a str,
    size: u64,
    size_per_bank: u64,
    address: u64,
    first_seen_unix_s: u32,
}

/// The banks of one chip and type, its ranges, their owners, and the buffers of that
/// type with no address.
#[derive(Default)]
struct Entry<'a> {
    geometry: Option<BankGeometry>,
    ranges: Vec<Range>,
    owners: Vec<Owner<'a>>,
    unplaced: u64,
}

/// The answer: one JSON line per chip and type with banks.
pub fn answer(acc: &Accounting, q: &MapQuery) -> String {
    let mut maps: BTreeMap<(i32, u8), Entry> = BTreeMap::new();
    // Per row, the top of the circular buffers (they grow from the bottom of L1).
    let mut cb_tops: BTreeMap<i32, u64> = BTreeMap::new();
    for p in acc.processes.values() {
        for (&d, pd) in &p.devices {
            let row = acc.device_row(p, d);
            if q.device.is_some_and(|x| x != row) {
                continue;
            }
            for c in pd.cb_places.values() {
                let top = c.address.saturating_add(c.size_per_core);
                let t = cb_tops.entry(row).or_default();
                *t = (*t).max(top);
            }
            for (&t, g) in &pd.banks {
                if q.btype.is_none_or(|x| x as u8 == t) {
                    maps.entry((row, t)).or_default().geometry = Some(*g);
                }
            }
            for (&key, b) in pd.buffers.iter() {
                let t = b.btype();
                if q.btype.is_some_and(|x| x as u8 != t) {
                    continue;
                }
                let e = maps.entry((row, t)).or_default();
                match pd.details.get(&key) {
                    Some(det) => {
                        e.ranges.push(Range {
                            address: u64::from(det.address),
                            len: det.size_per_bank,
                            owner: e.owners.len(),
                        });
                        e.owners.push(Owner {
                            pid: p.pid,
                            comm: &p.comm,
                            size: b.size,
                            size_per_bank: det.size_per_bank,
                            address: u64::from(det.address),
                            first_seen_unix_s: b.first_seen_unix_s,
                        });
                    }
                    None => e.unplaced += 1,
                }
            }
        }
    }
    let mut out = String::new();
    for ((row, t), e) in maps {
        let Some(g) = e.geometry else { continue };
        let mut doc = one_map(row, t, g, e.ranges, &e.owners, e.unplaced, q);
        if t == BufferType::L1 as u8 {
            // The headroom before a "clash": from the circular buffers' top to the
            // lowest L1 buffer.
            let cb_top = cb_tops.get(&row).copied();
            let lowest = e.owners.iter().map(|o| o.address).min();
            doc["circular_buffers_top_address"] = cb_top.into();
            doc["lowest_buffer_address"] = lowest.into();
            doc["clash_headroom_bytes"] = match (cb_top, lowest) {
                // In i128: a producer's CB address may be anything.
                (Some(c), Some(l)) => serde_json::Value::from(
                    (i128::from(l) - i128::from(c)).clamp(i64::MIN.into(), i64::MAX.into()) as i64,
                ),
                _ => serde_json::Value::Null,
            };
        }
        out.push_str(&doc.to_string());
        out.push('\n');
    }
    out
}

fn one_map(
    row: i32,
    t: u8,
    g: BankGeometry,
    ranges: Vec<Range>,
    owners: &[Owner],
    unplaced: u64,
    q: &MapQuery,
) -> serde_json::Value {
    let m = AddressMap::new(g, ranges);
    let largest = m.largest_free();
    let mut gaps = m.gaps.clone();
    gaps.sort_by(|a, b| b.size.cmp(&a.size).then(a.address.cmp(&b.address)));
    let mut doc = serde_json::json!({
        "device": row,
        "type": BufferType::from_u8(t).map_or("?", |t| t.name()),
        "num_banks": g.num_banks,
        "bank_size": g.bank_size,
        "base_address": g.base_address,
        "page_alignment": g.page_alignment,
        "block_alignment": g.block_alignment,
        "allocated_bytes_per_bank": m.allocated_per_bank,
        "free_bytes_per_bank": m.free_per_bank,
        "largest_free_block_bytes": largest.map_or(0, |g| g.size),
        "largest_free_block_address": largest.map(|g| g.address),
        "fragmentation": m.fragmentation(),
        "buffers": m.ranges.len(),
        "buffers_without_address": unplaced,
        "gaps": gaps.iter().take(GAPS_LISTED).collect::<Vec<_>>(),
    });
    if let Some(n) = q.strip {
        let cells: String = m.strip(n).iter().map(|&e| char::from(b'0' + e)).collect();
        doc["strip"] = cells.into();
        doc["largest_free_block_cells"] = largest.map_or(serde_json::Value::Null, |g| {
            let c = m.cells_of(&g, n);
            serde_json::json!([c.start, c.end])
        });
    }
    if let Some((size, page)) = q.fits {
        let need = m.need_per_bank(size, page);
        let ok = m.fits(&need);
        let mut borders = Vec::new();
        if !ok {
            for gap in gaps.iter().take(GAPS_BORDERED) {
                for r in m.borders(gap) {
                    let o = &owners[r.owner];
                    borders.push(serde_json::json!({
                        "gap_address": gap.address,
                        "gap_size": gap.size,
                        "pid": o.pid,
                        "comm": o.comm,
                        "address": o.address,
                        "size": o.size,
                        "size_per_bank": o.size_per_bank,
                        "first_seen_unix_s": o.first_seen_unix_s,
                        // The free block freeing it alone would make, and whether
                        // the buffer asked about would then fit.
                        "block_if_freed": m.freed_block(&r),
                        "fits_if_freed": m.freed_block(&r) >= need.block,
                    }));
                }
            }
        }
        doc["fits"] = serde_json::json!({
            "size": size,
            "page_size": page,
            "needed_per_bank": need.per_bank,
            "block_per_bank": need.block,
            "fits": ok,
            "complete": unplaced == 0,
            "borders": borders,
        });
    }
    doc
}
