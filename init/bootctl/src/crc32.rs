//! CRC-32 (IEEE 802.3, as zlib computes it): sparse CRC32 chunks, A/B metadata.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// An incremental CRC-32.
#[derive(Debug, Clone, Copy, Default)]
pub struct Crc32(u32);

impl Crc32 {
    pub fn new() -> Self {
        Crc32(0)
    }
    pub fn update(&mut self, data: &[u8]) {
        let mut c = !self.0;
        for &b in data {
            c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = !c;
    }
    pub fn value(&self) -> u32 {
        self.0
    }

    /// Updates with `len` bytes of `pattern` repeated (a sparse FILL or DONT_CARE region),
    /// in time logarithmic in `len`: CRC-32 is affine in its register, so whole 4 KiB
    /// blocks of the pattern are one affine map, raised to the number of blocks by squaring.
    pub fn update_repeated(&mut self, pattern: [u8; 4], len: u64) {
        const BLOCK: usize = 4096;
        let block: Vec<u8> = pattern.iter().copied().cycle().take(BLOCK).collect();
        let mut blocks = len / BLOCK as u64;
        if blocks < 64 {
            // Short runs: byte by byte is cheaper than building the map.
            for _ in 0..blocks {
                self.update(&block);
            }
        } else {
            // The register after one block from register r: Z·r ^ b.
            let run = |mut c: u32, data: &[u8]| {
                for &x in data {
                    c = TABLE[((c ^ x as u32) & 0xff) as usize] ^ (c >> 8);
                }
                c
            };
            let zeros = [0u8; BLOCK];
            let mut step = Affine { m: core::array::from_fn(|i| run(1 << i, &zeros)), b: run(0, &block) };
            let mut acc = Affine::identity();
            while blocks > 0 {
                if blocks & 1 == 1 {
                    acc = step.then(&acc);
                }
                step = step.then(&step);
                blocks >>= 1;
            }
            self.0 = !acc.apply(!self.0);
        }
        self.update(&block[..(len % BLOCK as u64) as usize]);
    }
}

/// r -> m·r ^ b over GF(2), `m` by columns.
#[derive(Clone, Copy)]
struct Affine {
    m: [u32; 32],
    b: u32,
}

impl Affine {
    fn identity() -> Self {
        Affine { m: core::array::from_fn(|i| 1 << i), b: 0 }
    }

    fn linear(&self, r: u32) -> u32 {
        (0..32).filter(|i| r >> i & 1 == 1).fold(0, |acc, i| acc ^ self.m[i])
    }

    fn apply(&self, r: u32) -> u32 {
        self.linear(r) ^ self.b
    }

    /// `first`, then `self`.
    fn then(&self, first: &Affine) -> Affine {
        Affine { m: core::array::from_fn(|i| self.linear(first.m[i])), b: self.apply(first.b) }
    }
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.value()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        assert_eq!(super::crc32(b""), 0);
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn repeated_patterns_match_the_byte_by_byte_sum() {
        for pattern in [[0u8; 4], [0x1f, 0x20, 0x03, 0xd5], [0xff; 4]] {
            for len in [0u64, 3, 4096, 4096 * 5 + 7, 1 << 20, 3 * 4096 + 4095] {
                let mut fast = super::Crc32::new();
                fast.update(b"head");
                fast.update_repeated(pattern, len);
                let mut slow = super::Crc32::new();
                slow.update(b"head");
                let bytes: Vec<u8> = pattern.iter().copied().cycle().take(len as usize).collect();
                slow.update(&bytes);
                assert_eq!(fast.value(), slow.value(), "{pattern:?} x {len}");
            }
        }
    }
}
