//! Boot control, shared by the host tool and the on-phone init so that both apply the very
//! same rules: the boot-state record (`record`), boot counting and fallback (`counting`),
//! the misc partition's A/B metadata and bootloader message (`misc`), and their CRC-32.
//!
//! Pure: bytes in, bytes out; nothing here opens a file or prints. The host re-exports
//! these as `mobix::format::{bootstate, misc, crc32}` and `mobix::generation::boot`.

pub mod counting;
pub mod crc32;
pub mod misc;
pub mod record;
