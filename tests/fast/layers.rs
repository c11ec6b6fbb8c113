//! The layering rule of ARCHITECTURE.md, checked: a module of `src/` may use only modules of a
//! lower layer (and itself). Reads the sources as text; runs nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import the modules of the layers below its own.
const LAYERS: &[&[&str]] = &[
    &["format"],
    &["host"],
    &["util"],
    &["hash", "report"],
    &["lock", "store"],
    &["profile"],
    &["plan"],
    &["build"],
    &["generation", "publish"],
    &["pipeline"],
    &["flash", "deploy"],
    &["vm"],
    &["cli"],
];

/// The phone's program (`init/src`), bottom first; `main.rs` (the crate root) chooses what
/// runs and may use them all.
const INIT_LAYERS: &[&[&str]] = &[
    &["sys"],
    &["console"],
    &["state"],
    &["usbnet", "debugshell", "screen"],
    &["remote"],
    &["unlock"],
    &["generation"],
    &["stage1", "stage2", "systemd", "deploy", "bless"],
];

fn layer_in(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&module))
}

fn layer_of(module: &str) -> Option<usize> {
    layer_in(LAYERS, module)
}

/// The source without comments and string literals' contents (a `crate::x` in a message
/// or a doc comment is no import).
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            // A raw string's hashes are rare in this tree; plain strings end at an
            // unescaped quote.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item a `{…}` group at the start of `s` imports.
fn group_heads(s: &str) -> Vec<String> {
    let mut depth = 0;
    let mut heads = Vec::new();
    let mut at_item = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                at_item = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => at_item = true,
            c if at_item && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                heads.push(ident_at(&s[i..]).to_string());
                at_item = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules `src` (the file of module path `path`, e.g. `["plan", "kconfig"]`)
/// refers to through `crate::` or `super::`.
fn referenced(path: &[String], src: &str) -> BTreeSet<String> {
    let mut code = code_only(src);
    // An inline test module (at a file's end, by this tree's custom) is not the file's
    // code, and its `super::` is the file.
    if let Some(i) = code.find("#[cfg(test)]\nmod tests {") {
        code.truncate(i);
    }
    let mut found = BTreeSet::new();
    let add = |rest: &str, found: &mut BTreeSet<String>| {
        if rest.starts_with('{') {
            found.extend(group_heads(rest));
        } else {
            found.insert(ident_at(rest).to_string());
        }
    };
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        add(&code[i + "crate::".len()..], &mut found);
    }
    // `super::` from a module directly under the crate root names a top-level module;
    // deeper, it names the file's own top-level module. `super::super::` is not used.
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("::") {
            continue;
        }
        if path.len() == 1 {
            add(&code[i + "super::".len()..], &mut found);
        }
    }
    found.retain(|m| !m.is_empty() && m != "self" && m != "fail");
    found
}

/// Every `.rs` file under `dir`, with its module path.
fn sources(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut sub = prefix.to_vec();
            sub.push(p.file_name().unwrap().to_string_lossy().into_owned());
            sources(&p, &sub, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let mut path = prefix.to_vec();
            if name != "mod" && !(prefix.is_empty() && (name == "lib" || name == "main")) {
                path.push(name);
            }
            out.push((path, p));
        }
    }
}

/// The upward (or sideways) imports of the tree at `src`, as readable lines.
fn violations(src_dir: &Path) -> Vec<String> {
    violations_in(src_dir, LAYERS)
}

fn violations_in(src_dir: &Path, layers: &[&[&str]]) -> Vec<String> {
    let mut files = Vec::new();
    sources(src_dir, &[], &mut files);
    let mut bad = Vec::new();
    for (path, file) in files {
        let Some(top) = path.first() else { continue };
        let Some(own) = layer_in(layers, top) else {
            bad.push(format!("{}: module `{top}` has no layer in tests/fast/layers.rs", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for m in referenced(&path, &text) {
            if &m == top {
                continue;
            }
            match layer_in(layers, &m) {
                Some(l) if l < own => {}
                Some(_) => bad.push(format!("{}: `{top}` imports `{m}`, which is not below it", file.display())),
                None => bad.push(format!("{}: `{top}` refers to `crate::{m}`, which has no layer", file.display())),
            }
        }
    }
    bad
}

#[test]
fn modules_import_only_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "imports against the layering (ARCHITECTURE.md):\n{}", bad.join("\n"));
}

/// The phone's program has its own layers, and no circle: stage-2 and the systemd init
/// share the rules of `generation`, neither calls the other.
#[test]
fn the_phones_modules_import_only_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("init/src");
    let bad = violations_in(&src, INIT_LAYERS);
    assert!(bad.is_empty(), "imports against init's layering (ARCHITECTURE.md):\n{}", bad.join("\n"));
    // The circle this replaced is found when planted.
    let planted = tempfile::tempdir().unwrap();
    std::fs::write(planted.path().join("stage2.rs"), "fn f() { crate::systemd::start(); }\n").unwrap();
    std::fs::write(planted.path().join("systemd.rs"), "use crate::generation::booted;\n").unwrap();
    let found = violations_in(planted.path(), INIT_LAYERS);
    assert!(found.len() == 1 && found[0].ends_with("`stage2` imports `systemd`, which is not below it"), "{found:?}");
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap();
    for line in main.lines() {
        if let Some(m) = line.strip_prefix("mod ") {
            let m = m.trim_end_matches(';');
            assert!(layer_in(INIT_LAYERS, m).is_some(), "init/src/main.rs declares `{m}`, which has no layer here");
        }
    }
}

/// Files outside `cli` that print to the terminal themselves.
fn printers(src_dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src_dir, &[], &mut files);
    let mut bad = Vec::new();
    for (path, file) in files {
        if path.first().is_some_and(|m| m == "cli") || path.is_empty() {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for mac in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
            if code.match_indices(mac).any(|(i, _)| !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')) {
                bad.push(format!("{}: {mac}", file.display()));
            }
        }
    }
    bad
}

#[test]
fn only_the_cli_talks_to_the_terminal() {
    let bad = printers(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(bad.is_empty(), "printing outside cli (report progress as events instead):\n{}", bad.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("mod ")) {
            let m = m.trim_end_matches(';');
            assert!(layer_of(m).is_some(), "src/lib.rs declares `{m}`, which tests/fast/layers.rs gives no layer");
        }
    }
}

#[test]
fn the_checker_finds_planted_upward_imports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("format")).unwrap();
    std::fs::create_dir_all(src.join("plan")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod format;\n").unwrap();
    std::fs::write(src.join("util.rs"), "// crate::cli::x in a comment is fine\nfn f() { let s = \"crate::vm\"; }\n")
        .unwrap();
    std::fs::write(src.join("format/mod.rs"), "use crate::format::x;\nuse super::util;\n").unwrap();
    std::fs::write(src.join("plan/mod.rs"), "use crate::{\n    profile::Profile,\n    build::{self, Ctx},\n};\n")
        .unwrap();
    std::fs::write(src.join("plan/kconfig.rs"), "use super::Planned;\nfn f() { crate::vm::run(); eprintln!(); }\n")
        .unwrap();
    std::fs::create_dir_all(src.join("cli")).unwrap();
    std::fs::write(src.join("cli/mod.rs"), "fn f() { println!(\"fine here\"); }\n").unwrap();
    let p = printers(src);
    assert!(p.len() == 1 && p[0].ends_with("plan/kconfig.rs: eprintln!"), "{p:?}");
    let bad = violations(src);
    let mut names: Vec<&str> = bad.iter().map(|l| l.rsplit_once('/').map_or(l.as_str(), |(_, t)| t)).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kconfig.rs: `plan` imports `vm`, which is not below it",
            "mod.rs: `format` imports `util`, which is not below it",
            "mod.rs: `plan` imports `build`, which is not below it",
        ],
        "{bad:#?}"
    );
}

/// Rooms by job (issue 31): no source file outside `src/format` (whose codecs follow their
/// formats' own layout) over 900 lines, in `src/` or `init/`.
#[test]
fn no_source_file_outside_the_codecs_is_over_900_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "init/src", "init/bootctl/src"] {
        sources(&root.join(dir), &[], &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter(|(_, f)| !f.starts_with(root.join("src/format")))
        .filter_map(|(_, f)| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 900).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these along their seams: {long:#?}");
}
