//! `tt-track report`, `export` and `diff`: what a recording says, from the file alone.

use std::path::Path;
use tttrack::recording::{analysis, Recording};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Chrome trace-event JSON, for Perfetto and chrome://tracing.
    Perfetto,
    /// One row per change of a device's figure of one type.
    Csv,
}

fn read(path: &Path) -> Result<Recording, i32> {
    match Recording::read(path) {
        Ok(r) => {
            if let Some(t) = &r.truncated {
                eprintln!(
                    "tt-track: {} is truncated ({t}); what it holds up to there is used",
                    path.display()
                );
            }
            Ok(r)
        }
        Err(e) => {
            eprintln!("tt-track: {e}");
            Err(2)
        }
    }
}

fn write_out(out: Option<&Path>, text: &str) -> i32 {
    match out {
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tt-track: cannot write {}: {e}", p.display());
                1
            }
        },
        None => {
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            0
        }
    }
}

pub fn report(path: &Path, json: bool, html: Option<&Path>) -> i32 {
    let rec = match read(path) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let r = analysis::analyze(&rec);
    if let Some(out) = html {
        let code = write_out(Some(out), &tttrack::recording::html::page(&r));
        if code != 0 {
            return code;
        }
        eprintln!("tt-track: wrote {}", out.display());
    }
    if json {
        write_out(
            None,
            &(serde_json::to_string_pretty(&r).unwrap_or_default() + "\n"),
        )
    } else {
        write_out(None, &tttrack::recording::text::report_text(&r))
    }
}

pub fn export(path: &Path, format: Format, out: Option<&Path>) -> i32 {
    let rec = match read(path) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let r = analysis::analyze(&rec);
    let text = match format {
        Format::Perfetto => tttrack::recording::export::perfetto(&rec, &r),
        Format::Csv => tttrack::recording::export::csv(&r),
    };
    write_out(out, &text)
}

pub fn diff(base: &Path, new: &Path, fail_above: Option<f64>) -> i32 {
    let (b, n) = match (read(base), read(new)) {
        (Ok(b), Ok(n)) => (analysis::analyze(&b), analysis::analyze(&n)),
        _ => return 2,
    };
    let d = tttrack::recording::diff::compare(&b, &n);
    print!("{}", d.text(fail_above));
    match fail_above {
        Some(pct) if d.regressed(pct) => 1,
        _ => 0,
    }
}
