//! `mobix inspect bootimg` and `vendor-boot`: boot images as JSON and parts, and back.

use super::*;

/// `bootimg.json`: header fields by bootimg.h's names, and the part files.
#[derive(Serialize, Deserialize)]
struct BootJson {
    header_version: u32,
    page_size: u32,
    kernel_addr: String,
    ramdisk_addr: String,
    second_addr: String,
    tags_addr: String,
    dtb_addr: String,
    os_version: String,
    os_patch_level: String,
    board: String,
    cmdline: String,
    extra_cmdline: String,
}

const BOOT_PARTS: [&str; 7] = ["kernel", "ramdisk", "second", "dt", "recovery_dtbo", "dtb", "boot_signature"];

fn boot_parts(img: &bootimg::BootImage) -> [(&'static str, &Vec<u8>); 7] {
    [
        ("kernel", &img.kernel),
        ("ramdisk", &img.ramdisk),
        ("second", &img.second),
        ("dt", &img.qcdt),
        ("recovery_dtbo", &img.recovery_dtbo),
        ("dtb", &img.dtb),
        ("boot_signature", &img.boot_signature),
    ]
}

fn os_strings(raw: u32) -> (String, String) {
    let ((a, b, c), (y, m)) = bootimg::unpack_os_version(raw);
    (format!("{a}.{b}.{c}"), format!("{y}-{m:02}"))
}

fn pack_os(version: &str, patch: &str) -> Result<u32> {
    let v: Vec<u32> = version
        .split('.')
        .map(|p| p.parse().map_err(|_| Fail::new(format!("os_version {version:?} is not A.B.C"))))
        .collect::<Result<_, _>>()?;
    let (y, m) = patch.split_once('-').ok_or_else(|| Fail::new(format!("os_patch_level {patch:?} is not YYYY-MM")))?;
    let (y, m): (u32, u32) = (y.parse()?, m.parse()?);
    anyhow::ensure!(
        v.len() == 3 && v.iter().all(|&x| x < 128) && (2000..2128).contains(&y) && m < 16,
        Fail::new(format!("os_version {version} / os_patch_level {patch} do not fit the packed field"))
    );
    Ok((((v[0] << 14) | (v[1] << 7) | v[2]) << 11) | ((y - 2000) << 4) | m)
}

fn boot_json(img: &bootimg::BootImage) -> BootJson {
    let (os_version, os_patch_level) = os_strings(img.os_version);
    let split = if img.header_version >= 3 {
        img.cmdline.len()
    } else {
        img.cmdline_split.unwrap_or(511).min(img.cmdline.len())
    };
    BootJson {
        header_version: img.header_version,
        page_size: img.page_size,
        kernel_addr: hex32(img.kernel_addr as u64),
        ramdisk_addr: hex32(img.ramdisk_addr as u64),
        second_addr: hex32(img.second_addr as u64),
        tags_addr: hex32(img.tags_addr as u64),
        dtb_addr: hex32(img.dtb_addr),
        os_version,
        os_patch_level,
        board: img.board.clone(),
        cmdline: img.cmdline[..split].to_string(),
        extra_cmdline: img.cmdline[split..].to_string(),
    }
}

pub(super) fn bootimg_cmd(a: &Action) -> Result<()> {
    match a {
        Action::Info(i) => {
            let bytes = read(&i.file)?;
            let img = bootimg::BootImage::parse(&bytes).map_err(bad(&i.file, "boot image"))?;
            let mut v = serde_json::to_value(boot_json(&img))?;
            for (name, data) in boot_parts(&img) {
                v[format!("{name}_size")] = json!(data.len());
            }
            if let Ok(k) = arm64::check_kernel(&img.kernel) {
                v["kernel_compression"] = json!(k.compression.name());
                v["kernel_text_offset"] = json!(hex32(k.header.text_offset));
                v["kernel_image_size"] = json!(k.header.image_size);
            }
            if let Ok((_, dtbs)) = arm64::split_appended_dtbs(&img.kernel) {
                v["appended_dtbs"] = json!(dtbs.len());
            }
            v["ramdisk_compression"] = json!(compress::Compression::detect(&img.ramdisk).name());
            print(&v, i.json)
        }
        Action::Unpack(u) => {
            let bytes = read(&u.file)?;
            let img = bootimg::BootImage::parse(&bytes).map_err(bad(&u.file, "boot image"))?;
            write_json(&u.out, "bootimg.json", &boot_json(&img))?;
            for (name, data) in boot_parts(&img) {
                if !data.is_empty() {
                    write_file(&u.out.join(name), data)?;
                }
            }
            eprintln!("mobix: unpacked {} into {}", u.file.display(), u.out.display());
            Ok(())
        }
        Action::Pack(p) => {
            let j: BootJson = read_json(&p.dir, "bootimg.json")?;
            let mut img = bootimg::BootImage {
                header_version: j.header_version,
                page_size: j.page_size,
                kernel_addr: parse_hex32(&j.kernel_addr)?,
                ramdisk_addr: parse_hex32(&j.ramdisk_addr)?,
                second_addr: parse_hex32(&j.second_addr)?,
                tags_addr: parse_hex32(&j.tags_addr)?,
                dtb_addr: parse_hex(&j.dtb_addr)?,
                os_version: pack_os(&j.os_version, &j.os_patch_level)?,
                board: j.board,
                cmdline: format!("{}{}", j.cmdline, j.extra_cmdline),
                cmdline_split: None,
                ..Default::default()
            };
            if img.header_version < 3 && !j.extra_cmdline.is_empty() && j.cmdline.len() != 511 {
                img.cmdline_split = Some(j.cmdline.len());
            }
            let [k, r, s, dt, rd, d, sig] = BOOT_PARTS.map(|name| read_optional(&p.dir, name));
            (img.kernel, img.ramdisk, img.second, img.qcdt, img.recovery_dtbo, img.dtb, img.boot_signature) =
                (k?, r?, s?, dt?, rd?, d?, sig?);
            let bytes = img.to_bytes().map_err(|e| util::user_error(e, format!("packing {}", p.dir.display())))?;
            write_file(&p.out, &bytes)
        }
    }
}

// ---- vendor_boot -------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct VendorRamdiskJson {
    ramdisk_type: u32,
    ramdisk_name: String,
    board_id: Vec<u32>,
    file: String,
    ramdisk_size: usize,
}

#[derive(Serialize, Deserialize)]
struct VendorJson {
    header_version: u32,
    page_size: u32,
    kernel_addr: String,
    ramdisk_addr: String,
    tags_addr: String,
    dtb_addr: String,
    board: String,
    vendor_cmdline: String,
    vendor_ramdisks: Vec<VendorRamdiskJson>,
    dtb_size: usize,
    bootconfig_size: usize,
}

fn vendor_json(img: &vendor_boot::VendorBootImage) -> VendorJson {
    VendorJson {
        header_version: img.header_version,
        page_size: img.page_size,
        kernel_addr: hex32(img.kernel_addr as u64),
        ramdisk_addr: hex32(img.ramdisk_addr as u64),
        tags_addr: hex32(img.tags_addr as u64),
        dtb_addr: hex32(img.dtb_addr),
        board: img.board.clone(),
        vendor_cmdline: img.cmdline.clone(),
        vendor_ramdisks: img
            .ramdisks
            .iter()
            .enumerate()
            .map(|(i, r)| VendorRamdiskJson {
                ramdisk_type: r.kind.to_u32(),
                ramdisk_name: r.name.clone(),
                board_id: r.board_id.to_vec(),
                file: format!("vendor_ramdisk{i:02}"),
                ramdisk_size: r.data.len(),
            })
            .collect(),
        dtb_size: img.dtb.len(),
        bootconfig_size: img.bootconfig.len(),
    }
}

pub(super) fn vendor_boot_cmd(a: &Action) -> Result<()> {
    match a {
        Action::Info(i) => {
            let img =
                vendor_boot::VendorBootImage::parse(&read(&i.file)?).map_err(bad(&i.file, "vendor_boot image"))?;
            let mut v = serde_json::to_value(vendor_json(&img))?;
            v["bootconfig"] = json!(String::from_utf8_lossy(&img.bootconfig));
            print(&v, i.json)
        }
        Action::Unpack(u) => {
            let img =
                vendor_boot::VendorBootImage::parse(&read(&u.file)?).map_err(bad(&u.file, "vendor_boot image"))?;
            let j = vendor_json(&img);
            for (r, rj) in img.ramdisks.iter().zip(&j.vendor_ramdisks) {
                write_file(&u.out.join(&rj.file), &r.data)?;
            }
            write_json(&u.out, "vendor_boot.json", &j)?;
            if !img.dtb.is_empty() {
                write_file(&u.out.join("dtb"), &img.dtb)?;
            }
            if !img.bootconfig.is_empty() {
                write_file(&u.out.join("bootconfig"), &img.bootconfig)?;
            }
            eprintln!("mobix: unpacked {} into {}", u.file.display(), u.out.display());
            Ok(())
        }
        Action::Pack(p) => {
            let j: VendorJson = read_json(&p.dir, "vendor_boot.json")?;
            let mut ramdisks = Vec::new();
            for r in &j.vendor_ramdisks {
                let mut board_id = [0u32; 16];
                anyhow::ensure!(
                    r.board_id.len() == 16,
                    Fail::new(format!("{}: board_id needs 16 numbers", r.ramdisk_name))
                );
                board_id.copy_from_slice(&r.board_id);
                ramdisks.push(vendor_boot::VendorRamdisk {
                    kind: vendor_boot::RamdiskType::from_u32(r.ramdisk_type),
                    name: r.ramdisk_name.clone(),
                    board_id,
                    data: read(&p.dir.join(&r.file))?,
                });
            }
            let img = vendor_boot::VendorBootImage {
                header_version: j.header_version,
                page_size: j.page_size,
                kernel_addr: parse_hex32(&j.kernel_addr)?,
                ramdisk_addr: parse_hex32(&j.ramdisk_addr)?,
                cmdline: j.vendor_cmdline,
                tags_addr: parse_hex32(&j.tags_addr)?,
                board: j.board,
                dtb: read_optional(&p.dir, "dtb")?,
                dtb_addr: parse_hex(&j.dtb_addr)?,
                ramdisks,
                bootconfig: read_optional(&p.dir, "bootconfig")?,
            };
            let bytes = img.to_bytes().map_err(|e| util::user_error(e, format!("packing {}", p.dir.display())))?;
            write_file(&p.out, &bytes)
        }
    }
}

// ---- sparse ------------------------------------------------------------------------------
