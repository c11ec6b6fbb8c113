//! The tests that power on the emulated phone (QEMU), most with the minimal init: the
//! fallback scenarios under U-Boot, flashing, builds booted, kernels booted. One phone runs at
//! a time across the whole run (`common::phone`); builds go on beside it. Run one part with
//! `cargo test --test phone MODULE::` (tests/README.md).

#[path = "../common/mod.rs"]
mod common;

mod apt;
mod boot_matrix;
mod debug_shell;
mod e2e;
mod erofs;
mod fallback;
mod firmware;
mod flash;
mod generations;
mod kernel;
mod overlays;
mod packages;
mod plain_fallback;
mod run;
mod usb;
