//! The caches of the software tree that Debian's triggers and maintainer scripts would have
//! made on the phone, made at build time as store paths of their own (the software tree
//! takes each as a `cache-*` input): GLib's settings schemas, the MIME database,
//! GdkPixbuf's loader cache, and a phone UI's alternatives.

use super::{etc, Builder, Inputs, Plan, Recipe, PIXBUF_PACKAGE};
use crate::lock::Lock;
use crate::profile::Profile;
use crate::store::StorePath;
use anyhow::Result;
use std::collections::BTreeMap;

/// The cache recipes the system's packages call for, keyed by the software tree's input
/// names; `inputs` are the package and overlay inputs each is made from.
pub(super) fn sw_caches(
    profile: &Profile,
    lock: &Lock,
    inp: &Inputs,
    inputs: &BTreeMap<String, StorePath>,
    plan: &mut Plan,
) -> Result<BTreeMap<String, StorePath>> {
    let mut out = BTreeMap::new();
    let names = etc::package_names(profile, lock);
    // GLib reads its packages' settings schemas from one compiled file, which Debian's
    // trigger would have made: made here, from the same packages and overlays.
    if names.contains("libglib2.0-0") {
        let compiler = inp.glib_schemas_version.clone().ok_or_else(|| {
            crate::util::Fail::new("glib-compile-schemas is not installed: the system's GLib settings schemas are compiled with it at build time")
                .hint("install Debian's libglib2.0-bin (scripts/setup does)")
        })?;
        let schemas = plan.add(Recipe {
            name: "glib-schemas".into(),
            builder: Builder::GlibSchemas { compiler },
            inputs: inputs.clone(),
        });
        out.insert("cache-glib-schemas".into(), schemas);
    }
    // GdkPixbuf finds its image loaders (SVG icons among them) through a cache, which
    // Debian's trigger would have made by running the arm64 query tool: run here in QEMU.
    if names.contains(PIXBUF_PACKAGE) {
        let emulator = inp.aarch64_emulator_version.clone().ok_or_else(|| {
            crate::util::Fail::new(format!(
                "qemu-aarch64-static is not installed: the image loader cache of {PIXBUF_PACKAGE} is made with it at build time"
            ))
            .hint("install Debian's qemu-user-static (scripts/setup does)")
        })?;
        let loaders = plan.add(Recipe {
            name: "gdk-pixbuf-loaders".into(),
            builder: Builder::PixbufLoaders { emulator },
            inputs: inputs.clone(),
        });
        out.insert("cache-gdk-pixbuf".into(), loaders);
    }
    // Without the compiled MIME database GLib cannot tell a PNG from text (and GdkPixbuf
    // then loads no icon): made as Debian's trigger would, from the packages' definitions.
    if names.contains("shared-mime-info") {
        let tool = inp.mime_database_version.clone().ok_or_else(|| {
            crate::util::Fail::new(
                "update-mime-database is not installed: the system's MIME database is made with it at build time",
            )
            .hint("install Debian's shared-mime-info (scripts/setup does)")
        })?;
        let mime = plan.add(Recipe {
            name: "mime-database".into(),
            builder: Builder::MimeDatabase { tool },
            inputs: inputs.clone(),
        });
        out.insert("cache-mime".into(), mime);
    }
    // What the UI's packages' maintainer scripts would have linked (which mobix does not
    // run): gnome-session asks for the on-screen keyboard by its alternative's name.
    if profile.system.ui == crate::profile::Ui::Phosh {
        // Absolute, as the sw tree links to each file in its own store path.
        let links =
            [("share/applications/sm.puri.OSK0.desktop", "/usr/share/applications/sm.puri.Squeekboard.desktop")];
        let alternatives = plan.add(Recipe {
            name: "phosh-alternatives".into(),
            builder: Builder::Etc {
                files: BTreeMap::new(),
                links: links.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            },
            inputs: BTreeMap::new(),
        });
        out.insert("cache-alternatives".into(), alternatives);
    }
    Ok(out)
}
