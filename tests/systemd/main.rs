//! The systemd system of the README on the emulated phone: log in over ssh, keep the data,
//! deploy over the network, fall back, USB networking, the phone UI, the encrypted state. Its tests run one after the other
//! (`scripts/test` runs this binary with one test thread). Run one with
//! `cargo test --test systemd NAME` (tests/README.md).

#[path = "../common/mod.rs"]
mod common;

mod encryption;
mod systemd;
mod ui;
