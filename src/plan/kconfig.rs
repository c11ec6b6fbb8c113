//! Kernel configuration: `.config` and fragment lines, the check that every option asked
//! for survived `olddefconfig`, and the Kconfig dependencies that explain a dropped one.
//!
//! `.config` lines are `CONFIG_X=y|m|"str"|123|0x1f` or `# CONFIG_X is not set`. The
//! Kconfig reader follows `source` lines from the top-level `Kconfig`, keeping the
//! conditions of enclosing `if` blocks and `menu ... depends on` blocks, so it can say that
//! `EROFS_FS` is off because it sits inside `if MISC_FILESYSTEMS`.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Option name (without `CONFIG_`) to value (`y`, `m`, `n`, or the literal text).
pub type Config = BTreeMap<String, String>;

/// Parses `.config` or fragment text. `# CONFIG_X is not set` is `n`.
pub fn parse(text: &str) -> Config {
    let mut out = Config::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("# CONFIG_") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                out.insert(name.to_string(), "n".into());
            }
        } else if let Some(rest) = l.strip_prefix("CONFIG_") {
            if let Some((k, v)) = rest.split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// Renders options as fragment lines.
pub fn render(c: &Config) -> String {
    c.iter()
        .map(|(k, v)| if v == "n" { format!("# CONFIG_{k} is not set\n") } else { format!("CONFIG_{k}={v}\n") })
        .collect()
}

/// An option asked for that the final configuration does not have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    pub option: String,
    pub wanted: String,
    pub got: String,
    /// Where it was asked for (a fragment's name, or "mobix").
    pub from: String,
    /// The dependency expression(s) that are not met, with the value of their symbols.
    pub because: Vec<String>,
}

/// Compares what was asked for with the final configuration (`y` asked and `m` got counts
/// as dropped: the option is not built in). Unset `n` requests are satisfied by absence.
pub fn dropped(asked: &[(String, Config)], final_: &Config) -> Vec<Dropped> {
    let mut out = Vec::new();
    for (from, frag) in asked {
        for (k, want) in frag {
            let got = final_.get(k).cloned().unwrap_or_else(|| "n".into());
            let ok = match want.as_str() {
                "n" => got == "n",
                "m" => got == "m" || got == "y",
                _ => &got == want,
            };
            if !ok {
                out.push(Dropped {
                    option: k.clone(),
                    wanted: want.clone(),
                    got,
                    from: from.clone(),
                    because: Vec::new(),
                });
            }
        }
    }
    out
}

/// Where a symbol is defined and what it depends on.
#[derive(Debug, Clone, Default)]
pub struct SymbolDeps {
    /// Whether some Kconfig file defines the symbol.
    pub defined: bool,
    /// Each `depends on` of the symbol, and each enclosing `if`/menu condition.
    pub conditions: Vec<String>,
}

/// Reads the Kconfig tree under `srctree` for `arch` (the value of SRCARCH) and returns the
/// dependencies of the wanted symbols.
pub fn dependencies(srctree: &Path, arch: &str, wanted: &[String]) -> Result<BTreeMap<String, SymbolDeps>> {
    let mut out: BTreeMap<String, SymbolDeps> = wanted.iter().map(|w| (w.clone(), SymbolDeps::default())).collect();
    let mut stack: Vec<Block> = Vec::new();
    read(srctree, "Kconfig", arch, &mut stack, &mut out, 0)?;
    Ok(out)
}

#[derive(Debug, Clone)]
enum Block {
    If(String),
    Menu(Vec<String>),
    Other,
}

fn read(
    srctree: &Path,
    rel: &str,
    arch: &str,
    stack: &mut Vec<Block>,
    out: &mut BTreeMap<String, SymbolDeps>,
    depth: usize,
) -> Result<()> {
    anyhow::ensure!(depth < 64, "Kconfig `source` nesting too deep at {rel}");
    let path = srctree.join(rel);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // Joined continuation lines.
    let text = text.replace("\\\n", " ");
    let mut current: Option<String> = None; // the config symbol whose block we are in
    let mut menu_pending = false; // after `menu`, its `depends on` lines belong to the menu
    let indent =
        |l: &str| l.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 8 } else { 1 }).sum::<usize>();
    // Help text ends at the first line indented less than the help text's first line.
    let mut in_help = false;
    let mut help_indent: Option<usize> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if in_help {
            if line.is_empty() {
                continue;
            }
            let i = indent(raw);
            match help_indent {
                None => {
                    help_indent = Some(i);
                    continue;
                }
                Some(h) if i >= h => continue,
                Some(_) => {
                    in_help = false;
                    help_indent = None;
                }
            }
        }
        let word = line.split_whitespace().next().unwrap_or("");
        let arg = line[word.len()..].trim();
        match word {
            "config" | "menuconfig" => {
                current = Some(arg.to_string());
                menu_pending = false;
                if let Some(d) = out.get_mut(arg) {
                    d.defined = true;
                    for b in stack.iter() {
                        match b {
                            Block::If(c) => d.conditions.push(c.clone()),
                            Block::Menu(cs) => d.conditions.extend(cs.iter().cloned()),
                            Block::Other => {}
                        }
                    }
                }
            }
            "depends" => {
                let expr = arg.strip_prefix("on").unwrap_or(arg).trim().to_string();
                if menu_pending {
                    if let Some(Block::Menu(cs)) = stack.last_mut() {
                        cs.push(expr);
                    }
                } else if let Some(sym) = &current {
                    if let Some(d) = out.get_mut(sym) {
                        d.conditions.push(expr);
                    }
                }
            }
            "if" => {
                current = None;
                stack.push(Block::If(arg.to_string()));
            }
            "endif" | "endmenu" | "endchoice" => {
                current = None;
                stack.pop();
            }
            "menu" => {
                current = None;
                menu_pending = true;
                stack.push(Block::Menu(Vec::new()));
            }
            "choice" => {
                current = None;
                stack.push(Block::Other);
            }
            "source" | "rsource" | "osource" | "orsource" => {
                current = None;
                menu_pending = false;
                let target = arg.trim_matches('"').replace("$(SRCARCH)", arch).replace("$SRCARCH", arch);
                let target = if word.starts_with('r') || word == "orsource" {
                    Path::new(rel).parent().unwrap_or(Path::new("")).join(&target).to_string_lossy().into_owned()
                } else {
                    target
                };
                if target.contains('*') || target.contains("$(") {
                    continue; // globs and other variables: not followed
                }
                if srctree.join(&target).is_file() {
                    read(srctree, &target, arch, stack, out, depth + 1)?;
                } else if !word.starts_with('o') {
                    anyhow::bail!("{}: sources missing {target}", path.display());
                }
            }
            "help" | "---help---" => {
                menu_pending = false;
                in_help = true;
            }
            "comment" | "mainmenu" | "prompt" => {}
            _ => {
                if !word.is_empty() && !word.starts_with('#') {
                    menu_pending = false;
                }
            }
        }
    }
    Ok(())
}

/// Tristate value of a Kconfig expression under `c` (0 n, 1 m, 2 y). Unknown syntax counts
/// as satisfied, so only what can be shown unmet is reported.
pub fn eval(expr: &str, c: &Config) -> u8 {
    let toks = tokenize(expr);
    let mut p = Parser { toks: &toks, pos: 0, c };
    let v = p.or();
    if p.pos == toks.len() {
        v
    } else {
        2
    }
}

/// The symbols of `expr` that are off in `c`, as `NAME (n)`.
pub fn unmet_symbols(expr: &str, c: &Config) -> Vec<String> {
    tokenize(expr)
        .into_iter()
        .filter(|t| {
            t.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
                && t.chars().next().is_some_and(|ch| ch.is_ascii_uppercase())
        })
        .filter(|t| sym(t, c) == 0)
        .map(|t| format!("{t} is not set"))
        .collect()
}

fn tokenize(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_whitespace() {
            i += 1;
        } else if "()".contains(ch) {
            out.push(ch.to_string());
            i += 1;
        } else if i + 1 < b.len() && ["&&", "||", "!=", "<=", ">="].contains(&format!("{ch}{}", b[i + 1]).as_str()) {
            out.push(format!("{ch}{}", b[i + 1]));
            i += 2;
        } else if "!=<>".contains(ch) {
            out.push(ch.to_string());
            i += 1;
        } else if ch == '"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += 1;
            }
            i += 1;
            out.push(b[start..i.min(b.len())].iter().collect());
        } else {
            let start = i;
            while i < b.len() && !b[i].is_whitespace() && !"()!&|=<>".contains(b[i]) {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        }
    }
    out
}

fn sym(t: &str, c: &Config) -> u8 {
    match t {
        "y" => 2,
        "m" => 1,
        "n" => 0,
        _ => match c.get(t).map(String::as_str) {
            Some("y") => 2,
            Some("m") => 1,
            Some("n") | None => 0,
            Some(_) => 2,
        },
    }
}

struct Parser<'a> {
    toks: &'a [String],
    pos: usize,
    c: &'a Config,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }
    fn or(&mut self) -> u8 {
        let mut v = self.and();
        while self.peek() == Some("||") {
            self.pos += 1;
            v = v.max(self.and());
        }
        v
    }
    fn and(&mut self) -> u8 {
        let mut v = self.unary();
        while self.peek() == Some("&&") {
            self.pos += 1;
            v = v.min(self.unary());
        }
        v
    }
    fn unary(&mut self) -> u8 {
        match self.peek() {
            Some("!") => {
                self.pos += 1;
                2 - self.unary()
            }
            Some("(") => {
                self.pos += 1;
                let v = self.or();
                if self.peek() == Some(")") {
                    self.pos += 1;
                }
                v
            }
            Some(_) => {
                let a = self.toks[self.pos].clone();
                self.pos += 1;
                match self.peek() {
                    Some(op @ ("=" | "!=")) => {
                        let op = op.to_string();
                        self.pos += 1;
                        let b = self.toks.get(self.pos).cloned().unwrap_or_default();
                        self.pos += 1;
                        let val = |t: &str| -> String {
                            if t.starts_with('"') {
                                t.trim_matches('"').to_string()
                            } else {
                                let v = self.c.get(t).cloned();
                                v.map(|v| v.trim_matches('"').to_string()).unwrap_or_else(|| {
                                    if ["y", "m", "n"].contains(&t) {
                                        t.to_string()
                                    } else {
                                        "n".into()
                                    }
                                })
                            }
                        };
                        let eq = val(&a) == val(&b);
                        if (op == "=") == eq {
                            2
                        } else {
                            0
                        }
                    }
                    _ => sym(&a, self.c),
                }
            }
            None => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_compare() {
        let final_ = parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S=\"x\"\n");
        let asked = vec![(
            "frag".to_string(),
            parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n# CONFIG_D is not set\nCONFIG_S=\"x\"\n"),
        )];
        let d = dropped(&asked, &final_);
        let names: Vec<&str> = d.iter().map(|x| x.option.as_str()).collect();
        assert_eq!(names, ["B", "C"]);
        assert_eq!(render(&parse("CONFIG_A=y\n# CONFIG_B is not set\n")), "CONFIG_A=y\n# CONFIG_B is not set\n");
    }

    #[test]
    fn expressions() {
        let c = parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_ARCH=\"arm64\"\n");
        assert_eq!(eval("A && B", &c), 1);
        assert_eq!(eval("A && C", &c), 0);
        assert_eq!(eval("A || C", &c), 2);
        assert_eq!(eval("!C && (B || C)", &c), 1);
        assert_eq!(eval("ARCH = \"arm64\"", &c), 2);
        assert_eq!(eval("ARCH != \"arm64\"", &c), 0);
        assert_eq!(
            unmet_symbols("BLOCK && MISC_FILESYSTEMS", &parse("CONFIG_BLOCK=y\n")),
            ["MISC_FILESYSTEMS is not set"]
        );
    }

    #[test]
    fn reads_if_blocks_and_menu_dependencies() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("fs/erofs")).unwrap();
        std::fs::create_dir_all(d.path().join("arch/arm64")).unwrap();
        std::fs::write(
            d.path().join("Kconfig"),
            "mainmenu \"x\"\nsource \"arch/$(SRCARCH)/Kconfig\"\nsource \"fs/Kconfig\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("arch/arm64/Kconfig"), "config ARM64\n\tdef_bool y\n").unwrap();
        std::fs::write(
            d.path().join("fs/Kconfig"),
            "menu \"Files\"\n\tdepends on BLOCK\n\nmenuconfig MISC_FILESYSTEMS\n\tbool \"misc\"\n\nif MISC_FILESYSTEMS\nsource \"fs/erofs/Kconfig\"\nendif\nendmenu\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("fs/erofs/Kconfig"),
            "config EROFS_FS\n\ttristate \"EROFS\"\n\tdepends on BLOCK && \\\n\t\tARM64\n\thelp\n\t  The source of truth;\n\n\t  source tree.\n\t  if unsure, say N\n",
        )
        .unwrap();
        let deps = dependencies(d.path(), "arm64", &["EROFS_FS".into()]).unwrap();
        let flat: Vec<String> =
            deps["EROFS_FS"].conditions.iter().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(flat, ["BLOCK", "MISC_FILESYSTEMS", "BLOCK && ARM64"]);
    }
}
