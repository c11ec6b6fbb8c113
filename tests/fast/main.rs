//! The tests that power on no emulated phone: codecs judged by the reference tools, profiles
//! and their errors, imports, the store and binary caches on real servers, the layering, the
//! help texts. Run one part with `cargo test --test fast MODULE::` (tests/README.md).

#[path = "../common/mod.rs"]
mod common;

mod caches;
mod deviceinfo;
mod golden_fixtures;
mod help;
mod inspect;
mod layers;
mod phones;
mod pipeline;
mod profiles;
mod readonly;
mod reference_tools;
mod store;
mod words;
