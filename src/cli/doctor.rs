//! `mobix doctor`: the host tools each command needs, which are missing, and the Debian
//! package that provides each.

use serde::Serialize;

use crate::host::{find_in_path, TOOLS};

#[derive(Serialize)]
pub struct Check {
    pub tool: String,
    pub package: String,
    pub used_by: String,
    pub found: Option<String>,
}

pub const MUSL_TARGET: &str = crate::plan::INIT_TARGET;

/// Whether the Rust target for the init is installed (via `rustup`).
pub fn musl_target_installed() -> Option<bool> {
    let out = std::process::Command::new("rustup").args(["target", "list", "--installed"]).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == MUSL_TARGET))
}

pub fn checks() -> Vec<Check> {
    let mut v: Vec<Check> = TOOLS
        .iter()
        .map(|t| Check {
            tool: t.name.into(),
            package: t.package.into(),
            used_by: t.used_by.into(),
            found: find_in_path(t.name).map(|p| p.display().to_string()),
        })
        .collect();
    v.push(Check {
        tool: format!("rust target {MUSL_TARGET}"),
        package: format!("rustup target add {MUSL_TARGET}"),
        used_by: "build (stage-1/stage-2 init)".into(),
        found: musl_target_installed().filter(|x| *x).map(|_| "installed".into()),
    });
    let arm64 = std::process::Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "arm64"))
        .unwrap_or(false);
    v.push(Check {
        tool: "dpkg architecture arm64".into(),
        package: "dpkg --add-architecture arm64 && apt-get update".into(),
        used_by: "build (apt-get download of arm64 packages)".into(),
        found: arm64.then(|| "enabled".into()),
    });
    v
}
