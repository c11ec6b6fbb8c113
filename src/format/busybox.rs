//! The applet names a busybox binary carries: one block of NUL-terminated names in
//! alphabetical order, starting with `[` and `[[` (busybox's `applet_names`), which is what
//! `busybox --install` links. Read from the bytes, so that the host knows an aarch64
//! busybox's applets without running it.

/// The applet names in `binary`, in order; empty when the block is not found (not a
/// busybox, or one built without `[`).
pub fn applets(binary: &[u8]) -> Vec<String> {
    const START: &[u8] = b"\0[\0[[\0";
    let Some(at) = binary.windows(START.len()).position(|w| w == START) else { return Vec::new() };
    let mut names = vec!["[".to_string(), "[[".to_string()];
    let mut rest = &binary[at + START.len()..];
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        let name = &rest[..end];
        let ok = !name.is_empty()
            && name.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        // The block is sorted: a name out of order is past its end.
        if !ok || names.last().is_some_and(|l| l.as_bytes() >= name) {
            break;
        }
        names.push(String::from_utf8_lossy(name).into_owned());
        rest = &rest[end + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::applets;

    #[test]
    fn the_applet_block_is_read_up_to_its_end() {
        let bin = b"\x7fELF\x02junk\0[\0[[\0acpid\0ash\0true\0zcat\0\x01\x02garbage\0";
        assert_eq!(applets(bin), ["[", "[[", "acpid", "ash", "true", "zcat"]);
        // What follows the block, even a name, ends it once it is out of order.
        assert_eq!(applets(b"\0[\0[[\0sh\0true\0abc\0"), ["[", "[[", "sh", "true"]);
        assert!(applets(b"no applets here").is_empty());
    }
}
