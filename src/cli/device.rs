//! `mobix device list|show|check|udev-rules|import` and `mobix doctor`.

use super::*;
use anyhow::Context;

#[derive(Subcommand, Debug)]
pub(super) enum DeviceCmd {
    /// The devices (and their variants) under devices/.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The fully merged profile of a device (family, device, variant, config).
    Show {
        /// The device.
        name: String,
        /// Its variant.
        #[arg(long)]
        variant: Option<String>,
        /// A system configuration to merge last.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON (with a `version` field).
        #[arg(long)]
        json: bool,
    },
    /// Validate every profile (or one device, all its variants) without building.
    Check {
        /// The device [default: all].
        name: Option<String>,
    },
    /// Print udev rules that let a logged-in user (and the plugdev group) flash the
    /// profiles' phones over USB without root: one rule per USB id the profiles name
    /// (`identity.usb`). udev/51-mobix-fastboot.rules is this output for the shipped profiles.
    UdevRules,
    /// Profile keys from what another tool or the phone itself knows.
    #[command(subcommand)]
    Import(ImportCmd),
}

#[derive(Subcommand, Debug)]
pub(super) enum ImportCmd {
    /// The boot image keys of a phone's stock boot.img (read natively): header version,
    /// page size, base and offsets, command line, where the device tree is. Printed as
    /// profile YAML, with what a profile cannot say listed after it.
    Bootimg {
        /// The stock boot.img (from the phone's boot partition or a firmware package).
        image: PathBuf,
        /// Its vendor_boot.img, which holds the addresses of header versions 3 and 4.
        #[arg(long, value_name = "FILE")]
        vendor_boot: Option<PathBuf>,
        /// Print JSON (`keys`, `unmapped`).
        #[arg(long)]
        json: bool,
    },
    /// Profile keys from a postmarketOS `deviceinfo` file (pmaports' device packages), as
    /// boot-deploy hands them to mkbootimg: identity, partitions, boot image header, device
    /// trees (suffixed `deviceinfo_dtb_<variant>` keys become variants), console and
    /// command line, stage-1 modules. Printed as profile YAML, with every key it read but
    /// could not map (and every value it assumed) listed after it.
    Deviceinfo {
        /// The deviceinfo file.
        file: PathBuf,
        /// The device package's kernel-cmdline.conf (deviceinfo's own cmdline keys are
        /// obsolete and read only without it).
        #[arg(long, value_name = "FILE")]
        kernel_cmdline: Option<PathBuf>,
        /// Print JSON (`codename`, `keys`, `unmapped`).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(super) struct DoctorArgs {
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(super) fn cmd_device(g: &Global, d: &DeviceCmd) -> Result<ExitCode> {
    if let DeviceCmd::Import(i) = d {
        return cmd_import(i);
    }
    let repo = find_repo(g)?;
    match d {
        DeviceCmd::List { json } => {
            let mut rows = Vec::new();
            for (c, v, r) in profile::load_all(&repo)? {
                let name = r.as_ref().map(|p| p.device.name.clone()).unwrap_or_else(|e| format!("(invalid: {e})"));
                rows.push(serde_json::json!({"device": c, "variant": v, "name": name}));
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": 1, "devices": rows}))?);
            } else {
                for r in rows {
                    let id = match r["variant"].as_str() {
                        Some(v) => format!("{} --variant {v}", r["device"].as_str().unwrap_or("")),
                        None => r["device"].as_str().unwrap_or("").to_string(),
                    };
                    println!("{id:<40} {}", r["name"].as_str().unwrap_or(""));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Show { name, variant, config, json } => {
            let p = profile::load_with(
                &repo,
                name,
                profile::Selection { variant: variant.as_deref(), config: config.as_deref() },
            )?;
            let mut v = serde_json::to_value(&p)?;
            v["version"] = serde_json::json!(1);
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                v.as_object_mut().map(|m| m.remove("version"));
                print!("{}", hex_addresses(&serde_norway::to_string(&v)?));
            }
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Check { name } => {
            let all = profile::load_all(&repo)?;
            let mut checked = 0;
            let mut first_err = None;
            for (c, v, r) in all {
                if name.as_deref().is_some_and(|n| n != c.as_str()) {
                    continue;
                }
                checked += 1;
                let id = v.as_ref().map_or(c.to_string(), |v| format!("{c} --variant {v}"));
                match r {
                    Ok(_) => progress(&format!("ok: {id}")),
                    Err(e) => {
                        progress(&format!("FAILED: {id}"));
                        first_err.get_or_insert(e);
                    }
                }
            }
            if checked == 0 {
                if let Some(n) = name {
                    profile::load(&repo, n)?; // says why (unknown device)
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => {
                    progress(&format!("{checked} profiles are valid"));
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        DeviceCmd::UdevRules => {
            print!("{}", udev_rules(&repo)?);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCmd::Import(i) => cmd_import(i),
    }
}

fn cmd_import(i: &ImportCmd) -> Result<ExitCode> {
    use crate::format::{bootimg::BootImage, stockimg, vendor_boot::VendorBootImage};
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (image, vendor_boot, json) = match i {
        ImportCmd::Bootimg { image, vendor_boot, json } => (image, vendor_boot, json),
        ImportCmd::Deviceinfo { file, kernel_cmdline, json } => {
            let text = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| util::user_error(e, format!("reading {}", p.display())))
            };
            let di = profile::deviceinfo::parse(&text(file)?, &file.display().to_string())?;
            let cmdline = kernel_cmdline.as_deref().map(text).transpose()?;
            let got = profile::deviceinfo::profile_keys(&di, cmdline.as_deref())?;
            if *json {
                let unmapped: Vec<_> =
                    got.notes.iter().map(|(k, why)| serde_json::json!({"key": k, "why": why})).collect();
                let out =
                    serde_json::json!({"version": 1, "codename": got.codename, "keys": got.keys, "unmapped": unmapped});
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("# from {}: keys for devices/{}/device.yaml", file.display(), got.codename);
            print!("{}", hex_addresses(&serde_norway::to_string(&got.keys)?));
            for (k, why) in &got.notes {
                println!("# not mapped: {k}: {why}");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let bytes = read(image)?;
    let boot = BootImage::parse(&bytes).map_err(|e| util::user_error(e, format!("reading {}", image.display())))?;
    let vendor = match vendor_boot {
        Some(v) => Some(
            VendorBootImage::parse(&read(v)?).map_err(|e| util::user_error(e, format!("reading {}", v.display())))?,
        ),
        None => None,
    };
    let analysis = stockimg::analyze(&boot, vendor.as_ref());
    let (keys, unmapped) = profile::import::bootimg_keys(&analysis, boot.os_version);
    if *json {
        let unmapped: Vec<_> = unmapped.iter().map(|(k, why)| serde_json::json!({"key": k, "why": why})).collect();
        let out = serde_json::json!({"version": 1, "keys": keys, "unmapped": unmapped});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "# from {} (boot image header version {}): keys for devices/<codename>/device.yaml",
        image.display(),
        boot.header_version
    );
    print!("{}", hex_addresses(&serde_norway::to_string(&keys)?));
    for (k, why) in &unmapped {
        println!("# not mapped: {k}: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The udev rules for every USB id the profiles under `repo` name, sorted and without
/// duplicates, each with the profiles that use it.
fn udev_rules(repo: &Path) -> Result<String> {
    let mut ids: std::collections::BTreeMap<(u16, u16), std::collections::BTreeSet<String>> = Default::default();
    for (c, _, r) in profile::load_all(repo)? {
        let p = r.with_context(|| format!("reading the profile of {c}"))?;
        if let Some(u) = &p.device.identity.usb {
            ids.entry((u.vendor_id, u.product_id)).or_default().insert(c.to_string());
        }
    }
    let mut out = String::from(
        "# udev rules for flashing phones with mobix over USB without root, made by\n\
         # `mobix device udev-rules` from the device profiles' identity.usb ids.\n\
         # Install: sudo install -m 644 THIS_FILE /etc/udev/rules.d/51-mobix-fastboot.rules\n\
         #          sudo udevadm control --reload-rules && sudo udevadm trigger\n\
         # then unplug and replug the phone. `uaccess` gives the user logged in at the seat\n\
         # access; members of the plugdev group have it on any login.\n",
    );
    for ((vendor, product), devices) in ids {
        let names: Vec<&str> = devices.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "# {}\nSUBSYSTEM==\"usb\", ATTR{{idVendor}}==\"{vendor:04x}\", ATTR{{idProduct}}==\"{product:04x}\", \
             MODE=\"0660\", GROUP=\"plugdev\", TAG+=\"uaccess\"\n",
            names.join(", ")
        ));
    }
    Ok(out)
}

pub(super) fn cmd_doctor(a: &DoctorArgs) -> Result<ExitCode> {
    let checks = doctor::checks();
    let missing: Vec<&doctor::Check> = checks.iter().filter(|c| c.found.is_none()).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": 1, "checks": checks}))?);
    } else {
        // Columns as wide as their longest entry, so long names never push the next one.
        let tool_w = checks.iter().map(|c| c.tool.len()).max().unwrap_or(0);
        let pkg_w = checks.iter().map(|c| c.package.len()).max().unwrap_or(0);
        for c in &checks {
            let state = if c.found.is_some() { "ok" } else { "missing" };
            println!("{:<tool_w$}  {state:<7}  {:<pkg_w$}  {}", c.tool, c.package, c.used_by);
        }
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        let pkgs: Vec<&str> = missing.iter().map(|c| c.package.as_str()).collect();
        Err(Fail::new(format!("{} of {} host requirements are missing", missing.len(), checks.len()))
            .hint(format!("install: {} (or run scripts/setup)", pkgs.join(", ")))
            .into())
    }
}

/// Addresses and USB ids as profiles and deviceinfo files write them: in hex
/// (`kernel_offset: 0x00008000`, `vendor_id: 0x18d1`). A YAML integer either way.
fn hex_addresses(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let hexed = line.split_once(": ").and_then(|(key, value)| {
            let name = key.trim_start().trim_start_matches("- ");
            let n: u64 = value.trim().parse().ok()?;
            if name == "base" || name.ends_with("_offset") {
                Some(format!("{key}: 0x{n:08x}"))
            } else if name == "vendor_id" || name == "product_id" {
                Some(format!("{key}: 0x{n:04x}"))
            } else {
                None
            }
        });
        out.push_str(hexed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_and_usb_ids_print_in_hex() {
        let yaml =
            "bootimg:\n  base: 0\n  kernel_offset: 32768\n  page_size: 4096\nidentity:\n  usb:\n    vendor_id: 6353\n";
        assert_eq!(
            super::hex_addresses(yaml),
            "bootimg:\n  base: 0x00000000\n  kernel_offset: 0x00008000\n  page_size: 4096\nidentity:\n  usb:\n    vendor_id: 0x18d1\n"
        );
    }
}
