//! The out-of-memory autopsy of a recording or a snapshot: the address maps where it
//! ends ([`crate::accounting::maps`] on the replayed accounting) and, for a snapshot taken
//! after TT-Metal's out-of-memory error, that failure explained in TT-Metal's terms:
//! what each bank needed, the largest free block, which live buffers split the free
//! space, and whether freeing each would have made the allocation fit.

use crate::accounting::maps::{answer, parse_type, MapQuery};
use crate::accounting::Accounting;
use serde::Serialize;
use serde_json::Value;

/// What TT-Metal's out-of-memory message says ("Not enough space to allocate N B
/// TYPE buffer across K banks, where each bank needs to store X B, but bank size is Y
/// B (allocated: A B, free: F B, largest free block: Z B)").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomMessage {
    pub size: u64,
    #[serde(rename = "type")]
    pub btype: String,
    pub banks: u64,
    pub needed_per_bank: u64,
    pub bank_size: u64,
    pub allocated: u64,
    pub free: u64,
    pub largest_free_block: u64,
}

/// The number right after `after` in `s` (digits, then anything).
fn number_after(s: &str, after: &str) -> Option<u64> {
    let rest = &s[s.find(after)? + after.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Reads TT-Metal's out-of-memory message out of an error's text.
pub fn parse_oom(text: &str) -> Option<OomMessage> {
    let s = &text[text.find("Not enough space to allocate")?..];
    let btype = s
        .split_whitespace()
        .skip_while(|w| *w != "B")
        .nth(1)?
        .to_string();
    Some(OomMessage {
        size: number_after(s, "allocate")?,
        btype,
        banks: number_after(s, "across")?,
        needed_per_bank: number_after(s, "needs to store")?,
        bank_size: number_after(s, "bank size is")?,
        allocated: number_after(s, "allocated:")?,
        free: number_after(s, "free:")?,
        largest_free_block: number_after(s, "largest free block:")?,
    })
}

/// A failure the recording was taken after.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The error's words.
    pub message: String,
    /// TT-Metal's out-of-memory figures, if the words are its message.
    pub out_of_memory: Option<OomMessage>,
    /// The address map of that type where the recording ends, with whether the
    /// allocation fits and the buffers that border the largest gaps.
    pub maps: Vec<Value>,
}

/// The maps where the replay ended, and the failure explained.
pub fn autopsy(acc: &Accounting, failure: Option<&str>) -> (Vec<Value>, Option<Failure>) {
    let parse = |text: String| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let maps = parse(answer(acc, &MapQuery::default()));
    let failure = failure.map(|message| {
        let oom = parse_oom(message);
        let maps = match &oom {
            Some(o) => {
                // The need per bank as TT-Metal said it: one page a bank of that size.
                let q = MapQuery {
                    device: None,
                    btype: parse_type(&o.btype),
                    fits: Some((
                        o.needed_per_bank.saturating_mul(o.banks.max(1)),
                        o.needed_per_bank.max(1),
                    )),
                    strip: None,
                };
                parse(answer(acc, &q))
            }
            None => Vec::new(),
        };
        Failure {
            message: message.to_string(),
            out_of_memory: oom,
            maps,
        }
    });
    (maps, failure)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The failure as the report tells it.
pub fn failure_text(f: &Failure) -> String {
    let mut s = String::from("What failed\n");
    let Some(o) = &f.out_of_memory else {
        s += &format!("  {}\n", f.message.trim());
        return s;
    };
    s += &format!(
        "  TT-Metal could not allocate {} B of {} across {} banks: each bank needed {} B; the largest free block was {} B of {} B free (bank size {} B)\n",
        o.size, o.btype, o.banks, o.needed_per_bank, o.largest_free_block, o.free, o.bank_size
    );
    if o.free >= o.needed_per_bank {
        s += "  There was enough memory free, but not in one block: the free space was split.\n";
    }
    if f.maps.is_empty() {
        s += "  (No address map of that type: no process reported its banks; run it under tt-track run for TT-Metal's graph hook.)\n";
        return s;
    }
    for m in &f.maps {
        s += &format!(
            "  device {} {} at the end: {} B free per bank, largest free block {} B, fragmentation {:.0}%\n",
            m["device"],
            m["type"].as_str().unwrap_or("?"),
            n(&m["free_bytes_per_bank"]),
            n(&m["largest_free_block_bytes"]),
            m["fragmentation"].as_f64().unwrap_or(0.0) * 100.0
        );
        let borders = m["fits"]["borders"].as_array().cloned().unwrap_or_default();
        if !borders.is_empty() {
            s += "  The live buffers that split the free space (bordering the largest free blocks):\n";
        }
        for b in borders {
            s += &format!(
                "    pid {} ({}) buffer at {:#x}, {} B ({} B per bank): freeing it makes a free block of {} B: {}\n",
                n(&b["pid"]),
                b["comm"].as_str().unwrap_or("?"),
                n(&b["address"]),
                n(&b["size"]),
                n(&b["size_per_bank"]),
                n(&b["block_if_freed"]),
                if b["fits_if_freed"] == true {
                    "the allocation would have fit"
                } else {
                    "not enough alone"
                }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tt_metals_message_is_read() {
        let m = "TT_FATAL @ allocator.cpp:140: Out of Memory: Not enough space to allocate 64000000 B L1 buffer across 64 banks, where each bank needs to store 1000000 B, but bank size is 1393312 B (allocated: 128 B, free: 1393184 B, largest free block: 600000 B)";
        assert_eq!(
            parse_oom(m),
            Some(OomMessage {
                size: 64_000_000,
                btype: "L1".into(),
                banks: 64,
                needed_per_bank: 1_000_000,
                bank_size: 1_393_312,
                allocated: 128,
                free: 1_393_184,
                largest_free_block: 600_000,
            })
        );
        assert_eq!(parse_oom("Out of Memory"), None);
    }
}
