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
    let keyring = std::path::Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    v.push(Check {
        tool: "Debian archive keyring".into(),
        package: "debian-archive-keyring".into(),
        used_by: "build (apt checks the Release files of Debian's arm64 archive against it)".into(),
        found: keyring.is_file().then(|| keyring.display().to_string()),
    });
    v
}
