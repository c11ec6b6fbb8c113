//! mobix: declarative, reproducible system images for aarch64 Android phones.
//!
//! The pipeline, one module per stage (ARCHITECTURE.md is the map, with the layering
//! `tests/fast/layers.rs` enforces): [`profile`] → [`plan`] → [`store`] (running [`build`]ers)
//! → [`generation`] → [`publish`] → [`flash`] / [`deploy`] / [`vm`], wired once in [`pipeline`].
//! [`format`] holds the pure codecs every stage uses and [`cli`] is the only part that
//! knows about the terminal.

pub mod build;
pub mod cli;
pub mod deploy;
pub mod flash;
pub mod format;
pub mod generation;
pub mod hash;
pub mod host;
pub mod lock;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod publish;
pub mod report;
pub mod store;
pub mod util;
pub mod vm;
