#![no_main]
//! Any 4 KiB block: decode as a boot-state record; what decodes must encode back the same.
use libfuzzer_sys::fuzz_target;
use mobix::format::bootstate::{Record, BLOCK};

fuzz_target!(|data: &[u8]| {
    let mut block = [0u8; BLOCK];
    let n = data.len().min(BLOCK);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok(r) = Record::decode(&block) {
        let again = r.encode().expect("a decoded record encodes");
        assert_eq!(Record::decode(&again).expect("our own output decodes"), r);
    }
    let _ = mobix::format::bootstate::read_pair(data, &block);
});
