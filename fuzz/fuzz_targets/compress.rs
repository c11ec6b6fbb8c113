#![no_main]
//! Decompression of hostile streams stays within its limit.
use libfuzzer_sys::fuzz_target;
use mobix::format::compress;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = compress::decompress(data, 1 << 20) {
        assert!(out.len() <= 1 << 20);
    }
    let _ = compress::decompress_prefix(data, 64);
});
