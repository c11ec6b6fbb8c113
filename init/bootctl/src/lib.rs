//! Boot control, shared by the host tool and the on-phone init so that both apply the very
//! same rules: the boot-state record (`record`), boot counting and fallback (`counting`),
//! the lines the init writes on the serial console for the host (`console`),
//! what stage-1 shows on the screen and the generation menu's rules (`screen`), the unlock
//! screen's PIN pad and what an encrypted state area holds (`pin`),
//! the misc partition's A/B metadata and bootloader message (`misc`), their CRC-32, and the
//! JSON files the host writes for the phone (`contract`), what the host pipes into the
//! phone's init and the one rule for store names (`stream`), and the content hash of a store
//! path (`content`).
//!
//! Pure: bytes in, bytes out; nothing here prints, and only `content` (which must walk a
//! tree the same way on both sides) opens files. The host re-exports
//! these as `mobix::format::{bootstate, misc, crc32}` and `mobix::generation::boot`.

pub mod console;
pub mod content;
pub mod contract;
pub mod counting;
pub mod crc32;
pub mod misc;
pub mod pin;
pub mod record;
pub mod screen;
pub mod stream;
