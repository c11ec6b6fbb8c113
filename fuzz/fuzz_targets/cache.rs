#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::store::cache::{check_signature, CacheInfo, Info, PublicKey, Substituter};

// What a binary cache's server sends (its info file, a path's metadata, a bucket's
// listing) and what a user types (a substituter, a public key): an error or a value,
// never a panic.
fuzz_target!(|data: &[u8]| {
    if let Ok(info) = Info::parse(data, "fuzz") {
        let key = PublicKey::parse(
            "mobix-public-key-1 walk-1 96717bc1c8c02b3fcb446d0403b95f1745291eba67b3458be180fe6586cee72c",
            "fuzz",
        )
        .expect("the fixture's key parses");
        let _ = check_signature(&info, std::slice::from_ref(&key), "fuzz");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = CacheInfo::parse(text);
        let _ = PublicKey::parse(text, "fuzz");
        let _ = Substituter::parse(text);
        let _ = mobix::store::cache::remote::parse_listing(text);
    }
});
