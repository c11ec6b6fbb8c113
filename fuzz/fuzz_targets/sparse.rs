#![no_main]
//! Any bytes: decode as a sparse image, index it, and split the index.
use libfuzzer_sys::fuzz_target;
use mobix::format::sparse;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    // Expanded size is bounded by the header; count instead of allocating it.
    let mut expanded = 0u64;
    let _ = sparse::decode(Cursor::new(data), |op| {
        expanded += match op {
            sparse::Op::Data { data, .. } => data.len() as u64,
            sparse::Op::Fill { len, .. } | sparse::Op::DontCare { len, .. } => len,
        };
        Ok(())
    });
    if let Ok(layout) = sparse::Layout::from_sparse(Cursor::new(data)) {
        if let Ok(pieces) = layout.split(65536) {
            assert!(!pieces.is_empty());
        }
    }
});
