//! `tt-smi --map` and `tt-smi --fits`: the address map of each chip and buffer type
//! (asked of the aggregator: [`crate::accounting::maps`]), and whether a buffer would
//! fit, said in TT-Metal's own terms.

use crate::accounting::maps::MapQuery;
use crate::control::{request, RequestError};
use crate::sys::human_bytes;
use serde_json::Value;
use std::path::Path;

/// Exit code: no chip has an address map of that type (no producer reported its banks).
pub const EXIT_NO_MAP: i32 = 5;

/// Asks the aggregator and prints; returns the exit code (for `--fits`: 0 fits on every
/// chip shown, 1 does not fit on one).
pub fn run(dir: &Path, q: &MapQuery, json: bool) -> i32 {
    let text = match request(dir, &q.request()) {
        Ok(t) => t,
        Err(RequestError::NotRunning(e)) => {
            eprintln!(
                "tt-smi: cannot ask tt-aggregator for the address map ({e}): is it running on {}? start it with: tt-aggregator",
                dir.display()
            );
            return 3;
        }
        Err(e) => {
            eprintln!("tt-smi: address map of {}: {e}", dir.display());
            return 1;
        }
    };
    let maps: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if let Some(e) = maps.iter().find_map(|m| m["error"].as_str()) {
        eprintln!("tt-smi: {e}");
        return 2;
    }
    let code = if maps.is_empty() {
        EXIT_NO_MAP
    } else if maps
        .iter()
        .all(|m| m["fits"].is_null() || m["fits"]["fits"] == true)
    {
        0
    } else {
        1
    };
    if json {
        let doc = serde_json::json!({ "schema": 1, "maps": maps });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return code;
    }
    if maps.is_empty() {
        println!(
            "no address map{}: no process reported its allocator's banks (TT-Metal's graph hook does, under tt-track run or LD_PRELOAD=libtttrack.so)",
            q.btype.map(|t| format!(" of {}", t.name())).unwrap_or_default()
        );
    }
    for m in &maps {
        print!("{}", describe(m));
    }
    code
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// One map (and its `fits` answer) as text.
pub fn describe(m: &Value) -> String {
    let mut s = format!(
        "device {} {}: {} banks of {} from {:#x}\n  allocated {} per bank, free {} per bank, largest free block {}{}, fragmentation {:.0}%\n",
        m["device"],
        m["type"].as_str().unwrap_or("?"),
        n(&m["num_banks"]),
        human_bytes(n(&m["bank_size"])),
        n(&m["base_address"]),
        human_bytes(n(&m["allocated_bytes_per_bank"])),
        human_bytes(n(&m["free_bytes_per_bank"])),
        human_bytes(n(&m["largest_free_block_bytes"])),
        m["largest_free_block_address"]
            .as_u64()
            .map(|a| format!(" at {a:#x}"))
            .unwrap_or_default(),
        m["fragmentation"].as_f64().unwrap_or(0.0) * 100.0,
    );
    if let (Some(top), Some(h)) = (
        m["circular_buffers_top_address"].as_u64(),
        m["clash_headroom_bytes"].as_i64(),
    ) {
        s += &format!(
            "  circular buffers up to {top:#x}; {} before the lowest L1 buffer{}\n",
            if h >= 0 {
                format!("{h} B")
            } else {
                format!("{} B OVERLAP", -h)
            },
            if h < 0 { " (a clash)" } else { "" }
        );
    }
    if n(&m["buffers_without_address"]) > 0 {
        s += &format!(
            "  ! {} live buffers of this type have no address (reported without detail): the map misses them\n",
            n(&m["buffers_without_address"])
        );
    }
    let f = &m["fits"];
    if f.is_null() {
        return s;
    }
    s += &format!(
        "  a {} B buffer in {} B pages across {} banks needs {} B in each bank (a {} B block): {}\n",
        n(&f["size"]),
        n(&f["page_size"]),
        n(&m["num_banks"]),
        n(&f["needed_per_bank"]),
        n(&f["block_per_bank"]),
        if f["fits"] == true {
            "it fits"
        } else {
            "it does not fit"
        }
    );
    if f["fits"] != true {
        s += &format!(
            "  Not enough space: each bank needs {} B, but the largest free block is {} B of {} B free\n",
            n(&f["block_per_bank"]),
            n(&m["largest_free_block_bytes"]),
            n(&m["free_bytes_per_bank"]),
        );
        let now = crate::sys::unix_ns() / 1_000_000_000;
        let borders = f["borders"].as_array().cloned().unwrap_or_default();
        if !borders.is_empty() {
            s += "  the buffers that border the largest free blocks (free or move them to join the blocks):\n";
        }
        for b in borders {
            s += &format!(
                "    gap {:#x} ({} B): pid {} ({}) buffer at {:#x}, {} ({} B per bank), {} s old\n",
                n(&b["gap_address"]),
                n(&b["gap_size"]),
                n(&b["pid"]),
                b["comm"].as_str().unwrap_or("?"),
                n(&b["address"]),
                human_bytes(n(&b["size"])),
                n(&b["size_per_bank"]),
                now.saturating_sub(n(&b["first_seen_unix_s"])),
            );
        }
    }
    s
}
