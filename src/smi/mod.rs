//! tt-smi's views over the counters page: the data they share ([`model`]), the
//! snapshot ([`text`]), JSON ([`json`]), CSV queries for scripts ([`query`]) and the
//! live terminal UI ([`tui`]); the address maps and `--fits` ([`map`]).

pub mod format;
pub mod json;
pub mod map;
pub mod model;
pub mod query;
pub mod text;
pub mod tui;
