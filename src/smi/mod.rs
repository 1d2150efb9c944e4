//! tt-smi's views over the counters page: the data they share ([`model`]), the
//! snapshot ([`text`]), JSON ([`json`]) and the live terminal UI ([`tui`]).

pub mod json;
pub mod model;
pub mod text;
pub mod tui;
