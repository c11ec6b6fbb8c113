//! What the host pipes into the phone's `mobix-init` over ssh, one definition for both ends:
//! the deploy stream (`mobix-init receive`) and the collection list (`mobix-init gc`), and
//! the one rule for what a store path's name may be ([`StoreName`]), which the host's store,
//! the stream's `path` lines and a generation's toplevel all follow.
//!
//! The deploy stream is [`DEPLOY_MAGIC`] on a line, then frames: a header line
//! ([`DeployFrame::line`]) and, for a path, a boot image or a generation, that many bytes
//! after it; it ends with `end`. The collection list is lines of [`GcLine`], ending with
//! `end`. Each header is one line of space-separated words so that a person can read a
//! captured stream.

use crate::contract::STORE_DIR;

/// The first line of a deploy stream; another version is refused by the phone.
pub const DEPLOY_MAGIC: &str = "mobix-deploy 1";

/// The characters of a store hash (Nix's base-32 alphabet).
pub const HASH_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
/// The length of a store hash.
pub const HASH_LEN: usize = 32;

/// A store path's base name, `<32-character hash>-<name>`, checked: the hash in
/// [`HASH_ALPHABET`], the name of letters, digits and `+ - . _ ? =`, not starting with a
/// dot, at most 200 long. Nothing that passes can climb out of the store directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreName(String);

impl StoreName {
    pub fn parse(base: &str) -> Result<StoreName, String> {
        let (hash, name) = (base.get(..HASH_LEN), base.get(HASH_LEN + 1..));
        match (hash, base.as_bytes().get(HASH_LEN), name) {
            (Some(h), Some(b'-'), Some(n)) if hash_ok(h) && name_ok(n) => Ok(StoreName(base.to_string())),
            _ => Err(format!("{base:?} is not a store path name (<32-character hash>-<name>)")),
        }
    }

    /// `/mobix/store/<hash>-<name>`, checked.
    pub fn of_path(path: &str) -> Result<StoreName, String> {
        let base = path.strip_prefix(STORE_DIR).and_then(|r| r.strip_prefix('/'));
        base.map_or_else(|| Err(format!("{path:?} is not in {STORE_DIR}")), StoreName::parse)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StoreName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `hash` is a store hash.
pub fn hash_ok(hash: &str) -> bool {
    hash.len() == HASH_LEN && hash.bytes().all(|c| HASH_ALPHABET.contains(&c))
}

/// Whether `name` may follow a store hash.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
}

/// A header line of the deploy stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployFrame {
    /// `path NAME HASH BYTES`: a store path's tar (its entries under `out`) follows, and its
    /// content hash (hex) is what the phone checks after unpacking.
    Path { name: StoreName, content_hash: String, bytes: u64 },
    /// `bootimg BYTES SHA256 [in-place]`: a boot image follows, for the inactive A/B slot,
    /// or with `in-place` over the boot partition of a phone without slots.
    BootImage { bytes: u64, sha256: String, in_place: bool },
    /// `generation BYTES TRIES`: the generation's [`crate::contract::Generation`] as JSON
    /// follows, to become the trial with that many tries.
    Generation { bytes: u64, tries: u8 },
    /// `end`: nothing of the generation is committed before it.
    End,
}

impl DeployFrame {
    /// The header line, without its newline.
    pub fn line(&self) -> String {
        match self {
            DeployFrame::Path { name, content_hash, bytes } => format!("path {name} {content_hash} {bytes}"),
            DeployFrame::BootImage { bytes, sha256, in_place } => {
                format!("bootimg {bytes} {sha256}{}", if *in_place { " in-place" } else { "" })
            }
            DeployFrame::Generation { bytes, tries } => format!("generation {bytes} {tries}"),
            DeployFrame::End => "end".into(),
        }
    }

    /// The bytes that follow the header.
    pub fn payload(&self) -> u64 {
        match self {
            DeployFrame::Path { bytes, .. }
            | DeployFrame::BootImage { bytes, .. }
            | DeployFrame::Generation { bytes, .. } => *bytes,
            DeployFrame::End => 0,
        }
    }

    pub fn parse(line: &str) -> Result<DeployFrame, String> {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize, what: &str| -> Result<u64, String> {
            f.get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("the deploy stream has no valid {what}: {line:?}"))
        };
        let sha = |i: usize, what: &str| -> Result<String, String> {
            match f.get(i) {
                Some(h) if h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) => {
                    Ok(h.to_string())
                }
                _ => Err(format!("the deploy stream has no valid {what}: {line:?}")),
            }
        };
        let frame = match f[0] {
            "path" if f.len() == 4 => DeployFrame::Path {
                name: StoreName::parse(f[1]).map_err(|e| format!("the deploy stream names a bad store path: {e}"))?,
                content_hash: sha(2, "content hash")?,
                bytes: num(3, "path length")?,
            },
            "bootimg" if f.len() == 3 || (f.len() == 4 && f[3] == "in-place") => DeployFrame::BootImage {
                bytes: num(1, "boot image length")?,
                sha256: sha(2, "boot image hash")?,
                in_place: f.len() == 4,
            },
            "generation" if f.len() == 3 => DeployFrame::Generation {
                bytes: num(1, "generation length")?,
                tries: u8::try_from(num(2, "number of tries")?)
                    .map_err(|_| format!("the deploy stream has no valid number of tries: {line:?}"))?,
            },
            "end" if f.len() == 1 => DeployFrame::End,
            _ => return Err(format!("unexpected line in the deploy stream: {line:?}")),
        };
        Ok(frame)
    }
}

/// A line of the collection list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcLine {
    /// `generation N`: drop the generation's entry (before any path).
    Generation(u32),
    /// `path NAME`: remove the store path.
    Path(StoreName),
    End,
}

impl GcLine {
    pub fn line(&self) -> String {
        match self {
            GcLine::Generation(n) => format!("generation {n}"),
            GcLine::Path(p) => format!("path {p}"),
            GcLine::End => "end".into(),
        }
    }

    pub fn parse(line: &str) -> Result<GcLine, String> {
        let bad = || format!("unexpected line in the collection list: {line:?}");
        match line.split_once(' ') {
            Some(("generation", n)) => n.parse().map(GcLine::Generation).map_err(|_| bad()),
            Some(("path", p)) => StoreName::parse(p).map(GcLine::Path).map_err(|_| bad()),
            None if line == "end" => Ok(GcLine::End),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "0123456789abcdfghijklmnpqrsvwxyz-tree-2.1.0";
    const SHA: &str = "76873c03cb23d2fbb5d3080c0fe6ae97e4e174090d6019cb91c8da71ee8e261d";

    #[test]
    fn store_names_follow_one_rule() {
        assert_eq!(StoreName::parse(NAME).unwrap().as_str(), NAME);
        assert_eq!(StoreName::of_path(&format!("{STORE_DIR}/{NAME}")).unwrap().as_str(), NAME);
        let hash = &NAME[..HASH_LEN];
        for bad in [
            "",
            "short-tree",
            &format!("{hash}tree"),
            &format!("{hash}-"),
            &format!("{hash}-.hidden"),
            &format!("{hash}-a/b"),
            &format!("{hash}-.."),
            &format!("{hash}-{}", "x".repeat(201)),
            &format!("{}e-tree", &hash[..31]),
            &format!("{}-tree", hash.to_uppercase()),
            &format!("{}u-tree", &hash[..31]),
        ] {
            assert!(StoreName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StoreName::of_path(&format!("/elsewhere/{NAME}")).is_err());
        assert!(StoreName::of_path(&format!("{STORE_DIR}/{NAME}/bin")).is_err());
    }

    #[test]
    fn deploy_frames_round_trip_and_read_what_hosts_wrote() {
        let frames = [
            DeployFrame::Path { name: StoreName::parse(NAME).unwrap(), content_hash: SHA.into(), bytes: 10240 },
            DeployFrame::BootImage { bytes: 4096, sha256: SHA.into(), in_place: false },
            DeployFrame::BootImage { bytes: 4096, sha256: SHA.into(), in_place: true },
            DeployFrame::Generation { bytes: 200, tries: 3 },
            DeployFrame::End,
        ];
        for f in &frames {
            assert_eq!(&DeployFrame::parse(&f.line()).unwrap(), f);
        }
        // The lines hosts have written since the stream's first version.
        for (old, payload) in [
            (format!("path {NAME} {SHA} 10240"), 10240),
            (format!("bootimg 4096 {SHA}"), 4096),
            (format!("bootimg 4096 {SHA} in-place"), 4096),
            ("generation 200 3".to_string(), 200),
            ("end".to_string(), 0),
        ] {
            let f = DeployFrame::parse(&old).unwrap();
            assert_eq!((f.line(), f.payload()), (old, payload));
        }
    }

    #[test]
    fn bad_deploy_frames_are_refused_in_words() {
        for (bad, said) in [
            (format!("path ../{NAME} {SHA} 1"), "bad store path"),
            (format!("path {NAME} nothex 1"), "no valid content hash"),
            (format!("path {NAME} {SHA} -1"), "no valid path length"),
            (format!("path {NAME} {SHA}"), "unexpected line"),
            (format!("bootimg 1 {SHA} sideways"), "unexpected line"),
            ("generation 1 300".to_string(), "no valid number of tries"),
            ("end now".to_string(), "unexpected line"),
            ("".to_string(), "unexpected line"),
        ] {
            let e = DeployFrame::parse(&bad).unwrap_err();
            assert!(e.contains(said), "{bad:?}: {e}");
        }
    }

    #[test]
    fn collection_lines_round_trip_and_refuse_what_could_escape() {
        for l in [GcLine::Generation(7), GcLine::Path(StoreName::parse(NAME).unwrap()), GcLine::End] {
            assert_eq!(GcLine::parse(&l.line()).unwrap(), l);
        }
        assert_eq!(GcLine::parse(&format!("path {NAME}")).unwrap().line(), format!("path {NAME}"));
        for bad in ["path ..", "path a/b", "path .mobix", "generation x", "generation", "end 1", "drop 3"] {
            assert!(GcLine::parse(bad).is_err(), "{bad:?}");
        }
    }
}
