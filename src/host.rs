//! The host tools mobix runs, and the Debian package that provides each: what `mobix doctor`
//! checks and what an error about a missing program names. No I/O but a PATH lookup.

pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
    pub used_by: &'static str,
}

pub const TOOLS: &[Tool] = &[
    Tool {
        name: "apt-get",
        package: "apt",
        used_by: "build (resolving and fetching arm64 packages in its private root)",
    },
    Tool { name: "dpkg-deb", package: "dpkg", used_by: "build (unpacking packages)" },
    Tool { name: "depmod", package: "kmod", used_by: "build (modules.dep)" },
    Tool { name: "cargo", package: "rustup", used_by: "build (stage-1/stage-2 init)" },
    Tool { name: "mke2fs", package: "e2fsprogs", used_by: "build (system partition)" },
    Tool { name: "debugfs", package: "e2fsprogs", used_by: "build (reproducible timestamps)" },
    Tool { name: "e2fsck", package: "e2fsprogs", used_by: "build (checking the system partition)" },
    Tool { name: "mkfs.erofs", package: "erofs-utils", used_by: "build (erofs system partitions)" },
    Tool { name: "fsck.erofs", package: "erofs-utils", used_by: "build (checking erofs system partitions)" },
    Tool {
        name: "glib-compile-schemas",
        package: "libglib2.0-bin",
        used_by: "build (the GLib settings schemas of systems with GLib)",
    },
    Tool { name: "qemu-system-aarch64", package: "qemu-system-arm", used_by: "build (QEMU device tree), run, test" },
    Tool {
        name: "aarch64-linux-gnu-gcc",
        package: "gcc-aarch64-linux-gnu",
        used_by: "build, kernel (kernels and `packages/` programs from source)",
    },
    Tool {
        name: "aarch64-linux-gnu-strip",
        package: "binutils-aarch64-linux-gnu",
        used_by: "build (`packages/` programs from source)",
    },
    Tool { name: "make", package: "make", used_by: "build, kernel (kernels from source)" },
    Tool { name: "bison", package: "bison", used_by: "build, kernel (kernels from source)" },
    Tool { name: "flex", package: "flex", used_by: "build, kernel (kernels from source)" },
    Tool { name: "bc", package: "bc", used_by: "build (kernels from source)" },
    Tool { name: "tar", package: "tar", used_by: "build (kernel source tarballs)" },
    Tool { name: "patch", package: "patch", used_by: "build (Debian's patches: U-Boot, `packages/` programs)" },
    Tool { name: "unpack_bootimg", package: "mkbootimg", used_by: "test suite (boot image check)" },
    Tool { name: "simg2img", package: "android-sdk-libsparse-utils", used_by: "test suite (sparse check)" },
    Tool { name: "img2simg", package: "android-sdk-libsparse-utils", used_by: "test suite (sparse check)" },
    Tool { name: "cpio", package: "cpio", used_by: "test suite (initramfs check)" },
    Tool { name: "modinfo", package: "kmod", used_by: "test suite (the USB test's VM modules)" },
    Tool { name: "sgdisk", package: "gdisk", used_by: "test suite (GPT check)" },
    Tool { name: "fastboot", package: "fastboot", used_by: "test suite (the stock client flashes the emulated phone)" },
    Tool { name: "ssh", package: "openssh-client", used_by: "run --ssh-port (logging in to the emulated phone)" },
];

/// The Debian package that provides `tool`, if mobix knows it.
pub fn package_for(tool: &str) -> Option<&'static str> {
    TOOLS.iter().find(|t| t.name == tool).map(|t| t.package)
}

pub fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}
