//! Pure codecs for the on-disk formats a phone needs: bytes in, bytes out.
//!
//! Nothing here opens files, touches the store or prints: callers hand in buffers or
//! `Read`/`Write` streams and get typed errors that carry the offending numbers.

pub mod arm64;
pub mod bootimg;
pub mod busybox;
pub mod compress;
pub mod cpio;
pub mod elf;
pub mod fdt;
pub mod gpt;
pub mod qcdt;
pub mod sparse;
pub mod stockimg;
pub mod ubootenv;
pub mod vbmeta;
pub mod vendor_boot;

// Shared with the on-phone init (init/bootctl), so both sides apply the same rules.
pub use mobix_bootctl::{crc32, misc, record as bootstate};
