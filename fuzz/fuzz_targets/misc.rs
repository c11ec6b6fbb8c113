#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::format::misc;

fuzz_target!(|data: &[u8]| {
    let _ = misc::read(data);
    if data.len() >= 32 {
        let raw: [u8; 32] = data[..32].try_into().unwrap();
        if let Ok(sel) = misc::select_slot(&raw, true) {
            assert!(sel.control.crc_ok() || !sel.store);
        }
    }
});
