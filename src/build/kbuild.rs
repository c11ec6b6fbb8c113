//! How many objects a kernel configuration compiles, estimated before `make` starts from
//! the tree's Kbuild makefiles, so a source build can say how long it will take and how far
//! it has come.
//!
//! A small reading of Kbuild's own rules: from the directories the top-level and arch
//! makefiles descend into, `obj-y`/`obj-m`/`lib-y` and `obj-$(CONFIG_X)` entries whose
//! option is on, `dir/` entries followed, composite objects (`foo-y`, `foo-objs`,
//! `foo-$(CONFIG_X)`) counted part by part, and one `.mod.o` per module. Conditionals
//! (`ifeq`) are not evaluated and their entries are all counted, so it errs high.

use crate::plan::kconfig::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The estimated number of `CC`/`AS` lines a build of `tree` for `arch` with `config` prints.
pub fn estimate_objects(tree: &Path, arch: &str, config: &Config) -> usize {
    let mut roots = BTreeSet::new();
    for file in ["Makefile", "Kbuild", &format!("arch/{arch}/Makefile")] {
        let Ok(text) = std::fs::read_to_string(tree.join(file)) else { continue };
        for (name, tokens) in assignments(&text, arch, config) {
            let group = ["obj-", "core-", "drivers-", "libs-", "net-", "virt-", "init-"];
            if group.iter().any(|g| name.starts_with(g)) && enabled_suffix(&name) {
                roots.extend(tokens.into_iter().filter(|t| t.ends_with('/') && !t.starts_with('/')));
            }
        }
    }
    let mut seen = BTreeSet::new();
    roots.iter().map(|r| count_dir(tree, r.trim_end_matches('/'), arch, config, &mut seen)).sum()
}

/// Whether a resolved variable name is one Kbuild builds: `…-y` or `…-m`.
fn enabled_suffix(name: &str) -> bool {
    name.ends_with("-y") || name.ends_with("-m")
}

/// The objects of directory `rel` (relative to `tree`) and the directories it descends into.
fn count_dir(tree: &Path, rel: &str, arch: &str, config: &Config, seen: &mut BTreeSet<String>) -> usize {
    if !seen.insert(rel.to_string()) {
        return 0;
    }
    let dir = tree.join(rel);
    let text = std::fs::read_to_string(dir.join("Kbuild")).or_else(|_| std::fs::read_to_string(dir.join("Makefile")));
    let Ok(text) = text else { return 0 };
    let mut objs: Vec<(String, bool)> = Vec::new();
    let mut parts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, tokens) in assignments(&text, arch, config) {
        match name.as_str() {
            "obj-y" | "lib-y" => objs.extend(tokens.into_iter().map(|t| (t, false))),
            "obj-m" => objs.extend(tokens.into_iter().map(|t| (t, true))),
            _ => {
                let base = name.strip_suffix("-y").or_else(|| name.strip_suffix("-objs"));
                if let Some(base) = base.filter(|b| !b.is_empty()) {
                    parts.entry(base.to_string()).or_default().extend(tokens);
                }
            }
        }
    }
    let mut n = 0;
    for (t, module) in objs {
        if let Some(sub) = t.strip_suffix('/') {
            n += count_dir(tree, &format!("{rel}/{sub}"), arch, config, seen);
        } else if let Some(base) = t.strip_suffix(".o") {
            n += match parts.get(base) {
                Some(p) => p.iter().filter(|p| p.ends_with(".o")).count().max(1),
                None => 1,
            };
            if module {
                n += 1; // its .mod.o
            }
        }
    }
    n
}

/// The assignments of a makefile with their option references resolved: (`obj-y`, tokens)
/// for `obj-$(CONFIG_X) += …` when X is y, `obj-m` when m, `obj-` when off. Continuation
/// lines are joined and comments dropped; tokens that still hold a `$(` are left out.
fn assignments(text: &str, arch: &str, config: &Config) -> Vec<(String, Vec<String>)> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some((name, value)) = split_assignment(line) else { continue };
        let Some(name) = resolve(name.trim(), arch, config) else { continue };
        let tokens =
            value.split_whitespace().map(|t| t.replace("$(SRCARCH)", arch)).filter(|t| !t.contains('$')).collect();
        out.push((name, tokens));
    }
    out
}

/// `NAME += VALUE` (or `:=`, `?=`, `=`): the name and the value, for names without spaces.
fn split_assignment(line: &str) -> Option<(&str, &str)> {
    let eq = line.find('=')?;
    let (mut name, value) = (&line[..eq], &line[eq + 1..]);
    if let Some(n) = name.strip_suffix(['+', ':', '?']) {
        name = n;
    }
    let name = name.trim();
    // Spaces only inside a reference (`$(subst m,y,$(CONFIG_X))`): else a rule or a test.
    let mut depth = 0i32;
    for c in name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if c.is_whitespace() && depth == 0 => return None,
            _ => {}
        }
    }
    if name.is_empty() {
        return None;
    }
    Some((name, value))
}

/// A variable name with `$(CONFIG_X)` (or `$(subst m,y,$(CONFIG_X))`) replaced by the
/// option's value (empty when off) and `$(SRCARCH)` by the arch; None when it holds any
/// other reference.
fn resolve(name: &str, arch: &str, config: &Config) -> Option<String> {
    let name = name.replace("$(SRCARCH)", arch);
    let Some(start) = name.find("$(") else { return Some(name) };
    let inner = &name[start..];
    let (option, subst) = if let Some(rest) = inner.strip_prefix("$(subst m,y,$(CONFIG_") {
        (rest.strip_suffix("))")?, true)
    } else {
        (inner.strip_prefix("$(CONFIG_")?.strip_suffix(')')?, false)
    };
    if option.contains(['$', '(', ')']) {
        return None;
    }
    let value = match config.get(option).map(String::as_str) {
        Some("y") => "y",
        Some("m") if subst => "y",
        Some("m") => "m",
        _ => "",
    };
    Some(format!("{}{value}", &name[..start]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (p, text) in files {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
    }

    #[test]
    fn enabled_entries_composites_modules_and_subdirectories_are_counted() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            &[
                ("Makefile", "core-y := kernel/ arch/$(SRCARCH)/\ndrivers-$(CONFIG_NET) += net/\nlibs-y := lib/\n"),
                ("arch/arm64/Makefile", "core-y += arch/arm64/mm/\nlibs-y += $(LIBGCC)\n"),
                ("arch/arm64/Kbuild", "obj-y += setup.o \\\n\tirq.o # the core\n"),
                ("arch/arm64/mm/Makefile", "obj-y := init.o\nobj-$(CONFIG_OFF) += gone.o\n"),
                (
                    "kernel/Makefile",
                    "obj-y = fork.o exit.o\nobj-$(CONFIG_MOD) += drv.o\ndrv-y := a.o b.o\ndrv-$(CONFIG_ON) += c.o\n\
                     drv-$(CONFIG_OFF) += d.o\nobj-$(subst m,y,$(CONFIG_MOD)) += sub/\nccflags-y += -DX\n\
                     ifeq ($(CONFIG_ON),y)\nobj-y += cond.o\nendif\n",
                ),
                ("kernel/sub/Makefile", "obj-y += one.o\n"),
                ("net/Makefile", "obj-y += sock.o\n"),
                ("lib/Makefile", "lib-y += sort.o\nobj-y += kernel/\n"),
            ],
        );
        let config: Config =
            [("ON", "y"), ("MOD", "m")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // arch: setup, irq; mm: init; kernel: fork, exit, drv (a, b, c) + drv.mod.o, cond;
        // sub: one; lib: sort (lib/kernel/ has no makefile). net/ is off.
        assert_eq!(estimate_objects(t.path(), "arm64", &config), 2 + 1 + 2 + 3 + 1 + 1 + 1 + 1);
        let with_net: Config = config.into_iter().chain([("NET".to_string(), "y".to_string())]).collect();
        assert_eq!(estimate_objects(t.path(), "arm64", &with_net), 13);
    }

    #[test]
    fn names_with_other_references_are_skipped() {
        let c = Config::new();
        assert_eq!(resolve("obj-$(CONFIG_X)", "arm64", &c).as_deref(), Some("obj-"));
        assert_eq!(resolve("obj-$(foo)", "arm64", &c), None);
        assert_eq!(split_assignment("ifeq ($(A),y)"), None);
        assert_eq!(split_assignment("x-y := a.o"), Some(("x-y", " a.o")));
    }
}
