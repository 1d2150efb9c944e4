//! `tt-track report --html`: one self-contained page.

use super::analysis::Report;

pub fn page(r: &Report) -> String {
    format!("<!doctype html><title>{}</title>", r.command.join(" "))
}
