//! Just enough of ELF64 (little-endian) to tell how a shared library calls the
//! `AllocationClient` functions: which symbols it defines and which it reaches through
//! a relocation (the PLT or the GOT), the only calls `LD_PRELOAD` can take over.

use std::collections::BTreeSet;

/// What a library's dynamic symbol table and relocations say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Linkage {
    /// Dynamic symbols it defines.
    pub defined: BTreeSet<String>,
    /// Symbols its relocations name (calls and references bound at load time).
    pub relocated: BTreeSet<String>,
}

const SHT_SYMTAB: u32 = 2;
const SHT_RELA: u32 = 4;
const SHT_DYNSYM: u32 = 11;

// Every offset comes from the file: added with a check, read with a bound.
fn bytes_at<const N: usize>(b: &[u8], base: usize, off: usize) -> Option<[u8; N]> {
    let o = base.checked_add(off)?;
    b.get(o..o.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], base: usize, off: usize) -> Option<u16> {
    bytes_at(b, base, off).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], base: usize, off: usize) -> Option<u32> {
    bytes_at(b, base, off).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], base: usize, off: usize) -> Option<u64> {
    bytes_at(b, base, off).map(u64::from_le_bytes)
}

/// A section header's type, link, offset, size and entry size.
struct Section {
    kind: u32,
    link: u32,
    addr: u64,
    offset: usize,
    size: usize,
    entsize: usize,
}

fn sections(b: &[u8]) -> Option<Vec<Section>> {
    let shoff = u64_at(b, 0, 0x28)? as usize;
    let shentsize = u16_at(b, 0, 0x3A)? as usize;
    let shnum = u16_at(b, 0, 0x3C)? as usize;
    if shentsize < 64 {
        return None;
    }
    (0..shnum)
        .map(|i| {
            let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
            Some(Section {
                kind: u32_at(b, h, 4)?,
                link: u32_at(b, h, 40)?,
                addr: u64_at(b, h, 16)?,
                offset: u64_at(b, h, 24)? as usize,
                size: u64_at(b, h, 32)? as usize,
                entsize: u64_at(b, h, 56)? as usize,
            })
        })
        .collect()
}

/// The NUL-terminated name at `at` in string table `s`.
fn name(b: &[u8], s: &Section, at: usize) -> Option<String> {
    let start = s.offset.checked_add(at)?;
    let end = s.offset.checked_add(s.size)?;
    let bytes = b.get(start..end.min(b.len()))?;
    let n = bytes.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&bytes[..n]).into_owned())
}

/// Reads the linkage of the ELF file `b`, or says why it cannot.
pub fn linkage(b: &[u8]) -> Result<Linkage, String> {
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let secs = sections(b).ok_or("its section headers are cut short or malformed")?;
    let (di, dynsym) = secs
        .iter()
        .enumerate()
        .find(|(_, s)| s.kind == SHT_DYNSYM)
        .ok_or("it has no dynamic symbol table (a static binary?)")?;
    let dynstr = secs
        .get(dynsym.link as usize)
        .ok_or("its dynamic string table is missing")?;
    let symbol = |i: usize| -> Option<(String, bool)> {
        let o = dynsym.offset.checked_add(i.checked_mul(24)?)?;
        if i.checked_mul(24)? >= dynsym.size {
            return None;
        }
        let shndx = u16_at(b, o, 6)?;
        Some((name(b, dynstr, u32_at(b, o, 0)? as usize)?, shndx != 0))
    };
    let mut l = Linkage::default();
    // Sizes come from the file: never more entries than the file could hold.
    for i in 1..dynsym.size.min(b.len()) / 24 {
        if let Some((n, true)) = symbol(i) {
            l.defined.insert(n);
        }
    }
    for s in secs
        .iter()
        .filter(|s| s.kind == SHT_RELA && s.link as usize == di)
    {
        let ent = if s.entsize == 0 { 24 } else { s.entsize };
        for k in 0..s.size.min(b.len()) / ent {
            let Some(info) = k
                .checked_mul(ent)
                .and_then(|at| u64_at(b, s.offset.checked_add(at)?, 8))
            else {
                break;
            };
            let sym = (info >> 32) as usize;
            if sym != 0 {
                if let Some((n, _)) = symbol(sym) {
                    l.relocated.insert(n);
                }
            }
        }
    }
    Ok(l)
}

/// The values (addresses relative to the load base) of `wanted` symbols in the full
/// symbol table `.symtab` (local ones included) and the dynamic one; a name not found is
/// missing from the map. `Err` if the file is no ELF or has neither table.
pub fn symbol_values(
    b: &[u8],
    wanted: &[&str],
) -> Result<std::collections::HashMap<String, u64>, String> {
    Ok(symbols(b, wanted)?
        .into_iter()
        .map(|(n, (value, _))| (n, value))
        .collect())
}

/// As [`symbol_values`], each with its size in bytes (`st_size`).
pub fn symbols(
    b: &[u8],
    wanted: &[&str],
) -> Result<std::collections::HashMap<String, (u64, u64)>, String> {
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let secs = sections(b).ok_or("its section headers are cut short or malformed")?;
    let mut out = std::collections::HashMap::new();
    let mut tables = 0;
    for t in secs
        .iter()
        .filter(|s| s.kind == SHT_SYMTAB || s.kind == SHT_DYNSYM)
    {
        let Some(strtab) = secs.get(t.link as usize) else {
            continue;
        };
        tables += 1;
        for i in 1..t.size.min(b.len()) / 24 {
            let Some(o) = t.offset.checked_add(i * 24) else {
                break;
            };
            let (Some(at), Some(value), Some(size)) =
                (u32_at(b, o, 0), u64_at(b, o, 8), u64_at(b, o, 16))
            else {
                break;
            };
            if value == 0 {
                continue;
            }
            if let Some(n) = name(b, strtab, at as usize) {
                if wanted.contains(&n.as_str()) {
                    out.insert(n, (value, size));
                }
            }
        }
    }
    if tables == 0 {
        return Err("it has no symbol table".into());
    }
    Ok(out)
}

/// `n` 64-bit words of the file's initialised data at address `at` (relative to the
/// load base, as symbol values are): a table as the file holds it, before relocation
/// (a word the loader fills from a symbol reads 0).
pub fn words_at(b: &[u8], at: u64, n: usize) -> Option<Vec<u64>> {
    let secs = sections(b)?;
    // SHT_NOBITS (8) has no bytes in the file.
    let s = secs.iter().find(|s| {
        s.kind != 8 && s.addr != 0 && s.addr <= at && at < s.addr.saturating_add(s.size as u64)
    })?;
    let off = s.offset.checked_add((at - s.addr) as usize)?;
    (0..n).map(|i| u64_at(b, off, i * 8)).collect()
}

/// What the loader writes at a place: a symbol's address, or the load base plus an
/// addend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    Symbol(String),
    Base(u64),
}

/// The relocations of the file that write into `[start, start + len)` (relative
/// addresses), by the address they write.
pub fn fills_in(b: &[u8], start: u64, len: u64) -> std::collections::HashMap<u64, Fill> {
    let mut out = std::collections::HashMap::new();
    let Some(secs) = sections(b) else { return out };
    let Some((di, dynsym)) = secs.iter().enumerate().find(|(_, s)| s.kind == SHT_DYNSYM) else {
        return out;
    };
    let Some(dynstr) = secs.get(dynsym.link as usize) else {
        return out;
    };
    for s in secs
        .iter()
        .filter(|s| s.kind == SHT_RELA && s.link as usize == di)
    {
        let ent = if s.entsize == 0 { 24 } else { s.entsize };
        for k in 0..s.size.min(b.len()) / ent {
            let Some(o) = k.checked_mul(ent).and_then(|at| s.offset.checked_add(at)) else {
                break;
            };
            let (Some(at), Some(info), Some(addend)) =
                (u64_at(b, o, 0), u64_at(b, o, 8), u64_at(b, o, 16))
            else {
                break;
            };
            if at < start || at >= start.saturating_add(len) {
                continue;
            }
            let sym = (info >> 32) as usize;
            let fill = if sym == 0 {
                Fill::Base(addend)
            } else {
                let Some(so) = dynsym.offset.checked_add(sym.saturating_mul(24)) else {
                    continue;
                };
                let Some(n) = u32_at(b, so, 0).and_then(|i| name(b, dynstr, i as usize)) else {
                    continue;
                };
                Fill::Symbol(n)
            };
            out.insert(at, fill);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_a_panic() {
        assert!(linkage(b"").is_err());
        assert!(linkage(b"\x7fELF\x02\x01").is_err());
        let mut b = vec![0u8; 128];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        b[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        b[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        assert!(linkage(&b).is_err());
    }

    #[test]
    fn this_test_binary_reaches_libc_through_relocations() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let l = linkage(&me).unwrap();
        assert!(
            l.relocated.iter().any(|s| s == "write" || s == "malloc"),
            "{l:?}"
        );
    }
}
