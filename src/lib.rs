//! tttrack: live memory tracking for Tenstorrent accelerators.
//!
//! A tracked process writes fixed-size events into per-thread single-producer rings
//! ("lanes") in a shared-memory segment of its own, with no system call, no lock and no
//! allocation per event ([`producer`]). `tt-aggregator` drains every lane into exact
//! accounting and publishes it in one counters page; `tt-smi` shows it.
//!
//! Shared layouts live in [`shm_layout`]; the C ABI in [`ffi`] and `cabi/tttrack.h`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod accounting;
pub mod address_map;
pub mod aggregator;
pub mod arch;
pub mod compat;
pub mod control;
pub mod counters_page;
pub mod devices;
pub mod doctor;
pub mod merge;
pub mod metal_shm;
pub mod peer;
pub mod producer;
pub mod recording;
pub mod segment;
pub mod shm_layout;
pub mod smi;
pub mod sys;
pub mod workload;
