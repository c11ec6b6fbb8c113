//! Finds the line of a dotted key path (`storage.partitions[1].size`) in YAML text, for
//! errors found after deserialisation, when serde's own location is gone. Best effort:
//! block mappings, block sequences and one-line flow mappings, as profiles are written.

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn has_key(line: &str, key: &str) -> bool {
    let t = line.trim_start().trim_start_matches("- ").trim_start();
    t.starts_with(&format!("{key}:"))
        || line.contains(&format!("{{{key}:"))
        || line.contains(&format!("{{ {key}:"))
        || line.contains(&format!(", {key}:"))
}

/// The 1-based line of `path` in `text`, or the closest enclosing key found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let mut found: Option<usize> = None; // index of the line where the last segment matched
    let mut parent_indent: Option<usize> = None; // None = document level
    let mut start = 0;
    for seg in segments(path) {
        let mut hit = None;
        let mut count = 0;
        for (i, l) in lines.iter().enumerate().skip(start) {
            if !content(l) {
                continue;
            }
            let ind = indent(l);
            // Leaving the parent's block ends the search.
            if i > start || found.is_none() {
                if let Some(p) = parent_indent {
                    if ind <= p && found != Some(i) && !l.trim_start().starts_with("- ") {
                        break;
                    }
                    if ind < p {
                        break;
                    }
                }
            }
            match seg {
                Seg::Key(k) => {
                    if has_key(l, k) && (found != Some(i) || l.contains('{')) {
                        hit = Some(i);
                        break;
                    }
                }
                Seg::Index(n) => {
                    if l.trim_start().starts_with("- ") || l.trim_start() == "-" {
                        if count == n {
                            hit = Some(i);
                            break;
                        }
                        count += 1;
                    }
                }
            }
        }
        match hit {
            Some(i) => {
                parent_indent = Some(indent(lines[i]));
                found = Some(i);
                start = i;
                if let Seg::Key(_) = seg {
                    start = i + usize::from(!lines[i].contains('{'));
                }
            }
            None => break,
        }
    }
    found.map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const Y: &str = "\
name: x
storage:
  sector_size: 512
  partitions:
    - name: misc
      size: 1MiB
    - { name: boot, size: 64MiB }
    - name: system
      size: 1GiB
bootimg:
  page_size: 4096
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(Y, "name"), Some(1));
        assert_eq!(line_of(Y, "storage.sector_size"), Some(3));
        assert_eq!(line_of(Y, "storage.partitions"), Some(4));
        assert_eq!(line_of(Y, "storage.partitions[0].size"), Some(6));
        assert_eq!(line_of(Y, "storage.partitions[1].size"), Some(7));
        assert_eq!(line_of(Y, "storage.partitions[2].size"), Some(9));
        assert_eq!(line_of(Y, "bootimg.page_size"), Some(11));
        assert_eq!(line_of(Y, "bootimg.nothing"), Some(10), "falls back to the parent");
    }
}
