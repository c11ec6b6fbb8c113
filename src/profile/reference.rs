//! The system config's reference, generated from its types (as NixOS generates its options
//! manual): every key with its type, default and description, read from the JSON schema
//! `schemars` derives from the types and their doc comments. `mobix config reference`
//! prints it; `docs/config-reference.md` is that output, checked by a test.

use serde_json::Value;

/// `init`'s choices, for the schema (the type itself lives in `mobix-bootctl`, which the
/// phone's program is built from and which has no schema).
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum InitChoice {
    /// mobix's own small stage-2: services and health checks, a shell on the console.
    Minimal,
    /// Debian's systemd, after mobix's activation.
    Systemd,
}

/// A service's `restart` choices, for the schema (the type lives in `mobix-bootctl`).
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
pub(super) enum RestartChoice {
    Always,
    OnFailure,
    No,
}

/// The initramfs's compression choices, for the schema (the type lives in `format`, whose
/// codecs know nothing of schemas).
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum CompressionChoice {
    /// gzip.
    Gzip,
    /// lz4 with the legacy frame, as the kernel reads it.
    Lz4,
    /// xz with CRC32, as the kernel reads it.
    Xz,
    /// zstd.
    Zstd,
    /// Not compressed.
    None,
}

/// The kernel Image's compression choices in boot.img, for the schema.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum KernelCompressionChoice {
    /// The raw Image.
    None,
    /// `Image.gz`, which appended device trees need.
    Gzip,
    /// `Image.lz4`.
    Lz4,
}

/// One key of the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The dotted path (`boot.tries`, `users.<name>.groups`, `services[].name`).
    pub path: String,
    /// In words: `string`, `integer`, `list of strings`, `one of \`a\`, \`b\``.
    pub kind: String,
    /// The default, or empty where the key is required.
    pub default: String,
    pub required: bool,
    /// What it does (the doc comment, without its `[default: …]` and `Example:` parts).
    pub description: String,
    pub example: Option<String>,
}

/// Every key of the system config, in the order the types declare them.
pub fn system_config_keys() -> Vec<Key> {
    let schema = schemars::schema_for!(super::SystemConfig);
    let root = schema.as_value();
    let mut keys = Vec::new();
    walk(root, root, "", &mut keys);
    // `device:` is merged into the profile before the rest is read: not a field of the type.
    keys.push(Key {
        path: "device".into(),
        kind: "mapping of profile keys".into(),
        default: "none".into(),
        required: false,
        description: "Device profile keys overriding the merged profile (family, device, variant), merged last: \
                      every key of the device profile (below)."
            .into(),
        example: Some("`{ stage1: { compression: xz } }`".into()),
    });
    keys.sort_by(|a, b| a.path.cmp(&b.path));
    keys
}

/// Every key of a device profile (`devices/<codename>/device.yaml`, its family and variants,
/// and a system config's `device:`), in the order the types declare them.
pub fn device_keys() -> Vec<Key> {
    let schema = schemars::schema_for!(super::Device);
    let root = schema.as_value();
    let mut keys = Vec::new();
    walk(root, root, "", &mut keys);
    keys.sort_by(|a, b| a.path.cmp(&b.path));
    keys
}

/// The schema `s` with `$ref`s followed (into `root`'s `$defs`) and `Option`'s null
/// alternative dropped.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        return resolve(root, &root["$defs"][name]);
    }
    if let Some([only]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        return resolve(root, only);
    }
    for alt in ["anyOf", "oneOf"] {
        if let Some(v) = s.get(alt).and_then(Value::as_array) {
            let not_null: Vec<&Value> = v.iter().filter(|x| x.get("type") != Some(&Value::from("null"))).collect();
            if not_null.len() == 1 {
                return resolve(root, not_null[0]);
            }
        }
    }
    s
}

/// The choices of an enum of strings, if `s` is one.
fn choices(root: &Value, s: &Value) -> Option<Vec<(String, String)>> {
    let s = resolve(root, s);
    if let Some(c) = s.get("const").and_then(Value::as_str) {
        return Some(vec![(c.to_string(), text(s))]);
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return Some(e.iter().filter_map(|v| v.as_str()).map(|v| (v.to_string(), String::new())).collect());
    }
    let alts = s.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for a in alts {
        match (a.get("const").and_then(Value::as_str), a.get("enum").and_then(Value::as_array)) {
            (Some(c), _) => out.push((c.to_string(), text(a))),
            (None, Some(e)) => out.extend(e.iter().filter_map(Value::as_str).map(|v| (v.to_string(), String::new()))),
            (None, None) => return None,
        }
    }
    Some(out)
}

/// `s` in words.
fn kind(root: &Value, s: &Value) -> String {
    if let Some(c) = choices(root, s) {
        return format!("one of {}", c.iter().map(|(v, _)| format!("`{v}`")).collect::<Vec<_>>().join(", "));
    }
    let r = resolve(root, s);
    if r.get("format").and_then(Value::as_str) == Some("size") {
        return "size (bytes, or `512KiB`, `64MiB`, `1GiB`)".into();
    }
    let ty = match r.get("type") {
        Some(Value::Array(v)) => v.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        Some(Value::String(t)) => t.as_str(),
        _ => "value",
    };
    match ty {
        "array" => format!("list of {}", plural(&kind(root, &r["items"]))),
        "object" if r.get("properties").is_some() => "mapping".into(),
        "object" => match r.get("additionalProperties") {
            Some(v) if v.is_object() => format!("mapping of names to {}", plural(&kind(root, v))),
            _ => "mapping".into(),
        },
        "integer" => match r.get("minimum").and_then(Value::as_u64) {
            Some(0) => "integer (0 or more)".into(),
            _ => "integer".into(),
        },
        t => t.into(),
    }
}

fn plural(k: &str) -> String {
    match k {
        "string" => "strings".into(),
        "integer" | "integer (0 or more)" => "integers".into(),
        "mapping" => "mappings".into(),
        k => k.into(),
    }
}

/// A schema's words: its title and description, as one text.
fn text(s: &Value) -> String {
    let part = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default().trim().to_string();
    let (title, description) = (part("title"), part("description"));
    let joined = match (title.is_empty(), description.is_empty()) {
        (false, false) => format!("{title} {description}"),
        (false, true) => title,
        _ => description,
    };
    joined.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `[default: …]` and `Example: …` out of a description.
fn split_description(d: &str) -> (String, Option<String>, Option<String>) {
    let mut rest = d.to_string();
    let mut default = None;
    if let Some(i) = rest.find("[default: ") {
        if let Some(j) = rest[i..].find(']') {
            default = Some(rest[i + 10..i + j].to_string());
            rest = format!("{}{}", &rest[..i], &rest[i + j + 1..]);
        }
    }
    let mut example = None;
    if let Some(i) = rest.find("Example: ") {
        example = Some(rest[i + 9..].trim().trim_end_matches('.').to_string());
        rest.truncate(i);
    }
    let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ").replace(" .", ".");
    (rest.trim().to_string(), default, example)
}

/// The schema's default value in words.
fn default_words(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Array(a) if a.is_empty() => "none".into(),
        Value::Object(o) if o.is_empty() => "none".into(),
        Value::String(s) => format!("`{s}`"),
        v => v.to_string(),
    }
}

fn walk(root: &Value, s: &Value, prefix: &str, keys: &mut Vec<Key>) {
    let s = resolve(root, s);
    let Some(props) = s.get("properties").and_then(Value::as_object) else { return };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
    for (name, field) in props {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let is_required = required.contains(&name.as_str());
        // The field's own words, else its type's.
        let own = text(field);
        let words = if own.is_empty() { text(resolve(root, field)) } else { own };
        let (mut description, said_default, example) = split_description(&words);
        if let Some(c) = choices(root, field) {
            // The choices' own words, unless the key's already name each of them.
            let named = c.iter().all(|(v, _)| description.contains(&format!("`{v}`")));
            if !named && c.iter().any(|(_, d)| !d.is_empty()) {
                let each: Vec<String> =
                    c.iter().map(|(v, d)| format!("`{v}`: {}", split_description(d).0.trim_end_matches('.'))).collect();
                description = format!("{description} {}.", each.join("; ")).trim().to_string();
            }
        }
        let inner = resolve(root, field);
        let default = match (said_default, field.get("default")) {
            (Some(d), _) => d,
            // A mapping of keys: their own rows say their defaults.
            (None, Some(_)) if inner.get("properties").is_some() => String::new(),
            (None, Some(v)) => default_words(v),
            (None, None) if is_required => String::new(),
            (None, None) => "none".into(),
        };
        keys.push(Key {
            path: path.clone(),
            kind: kind(root, field),
            default,
            required: is_required,
            description,
            example,
        });
        match inner.get("type").and_then(Value::as_str) {
            Some("array") => walk(root, &inner["items"], &format!("{path}[]"), keys),
            Some("object") if inner.get("properties").is_none() => {
                if let Some(v) = inner.get("additionalProperties").filter(|v| v.is_object()) {
                    walk(root, v, &format!("{path}.<name>"), keys)
                }
            }
            _ => walk(root, field, &path, keys),
        }
    }
}

/// The reference as Markdown: what `mobix config reference` prints, the system config's keys
/// and then the device profile's.
pub fn document() -> String {
    let mut out = markdown(&system_config_keys());
    out.push_str(
        "\n## Device profile keys\n\n\
         Every key of a device profile (`devices/<codename>/device.yaml`, its family and\n\
         variants; `devices/README.md` says how they merge) and so of a system config's\n\
         `device:`, generated from `src/profile/types.rs` the same way. A key is required where\n\
         its parent mapping is given.\n\n",
    );
    out.push_str(&table(&device_keys()));
    out
}

/// The system config's reference as Markdown.
fn markdown(keys: &[Key]) -> String {
    let mut out = String::from(
        "# System config reference\n\n\
         Every key of the system config (`--config FILE`), generated from mobix's types by\n\
         `mobix config reference`: do not edit this file, edit the doc comments of\n\
         `src/profile/system.rs` and run `mobix config reference > docs/config-reference.md`.\n\
         A key under a list is written `list[].key`, under a mapping of names `map.<name>.key`.\n\
         The device profile's keys (and so those of `device:`) follow the system config's.\n\n",
    );
    out.push_str(&table(keys));
    out
}

fn table(keys: &[Key]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| key | type | default | what it does | example |\n|---|---|---|---|---|\n");
    for k in keys {
        let default = if k.required { "required".to_string() } else { k.default.clone() };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            k.path,
            cell(&k.kind),
            cell(&default),
            cell(&k.description),
            k.example.as_deref().map(cell).unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_system_config_has_a_description() {
        let keys = system_config_keys();
        assert!(keys.len() > 30, "{keys:#?}");
        let bare: Vec<&str> = keys.iter().filter(|k| k.description.len() < 10).map(|k| k.path.as_str()).collect();
        assert!(bare.is_empty(), "keys without a description (give their field a doc comment): {bare:?}");
        let find = |p: &str| keys.iter().find(|k| k.path == p).unwrap_or_else(|| panic!("no key {p}"));
        assert_eq!(find("boot.tries").default, "3");
        assert_eq!(find("init").kind, "one of `minimal`, `systemd`");
        assert!(find("services[].restart").kind.starts_with("one of"), "{:?}", find("services[].restart"));
        assert!(find("users.<name>.authorized_keys").kind.contains("list of strings"));
        assert!(find("health_checks[].command").required);
        assert_eq!(find("ssh.port").default, "22");
        assert_eq!(find("boot").default, "", "a mapping's keys say their defaults");
    }

    #[test]
    fn every_key_of_a_device_profile_has_a_description() {
        let keys = device_keys();
        assert!(keys.len() > 60, "{keys:#?}");
        let bare: Vec<&str> = keys.iter().filter(|k| k.description.len() < 10).map(|k| k.path.as_str()).collect();
        assert!(bare.is_empty(), "keys without a description (give their field a doc comment): {bare:?}");
        let find = |p: &str| keys.iter().find(|k| k.path == p).unwrap_or_else(|| panic!("no key {p}"));
        assert!(find("storage.partitions[].size").kind.starts_with("size"));
        assert_eq!(find("system.filesystem").kind, "one of `ext4`, `erofs`");
        assert_eq!(find("stage1.compression").default, "`gzip`");
        assert_eq!(find("qemu.smp").default, "1");
        assert!(find("bootimg.header_version").required);
        assert_eq!(find("arch").kind, "one of `aarch64`");
        assert_eq!(find("bootimg.kernel_compression").kind, "one of `none`, `gzip`, `lz4`");
        assert_eq!(
            find("bootimg.dtb.mode").kind,
            "one of `header`, `append`, `second`, `append+header`, `append+second`"
        );
    }

    #[test]
    fn the_checked_in_reference_is_what_mobix_config_reference_prints() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config-reference.md");
        let want = document();
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(have == want, "{} is stale: run `mobix config reference > docs/config-reference.md`", file.display());
        // Each line of the header is whole (a broken continuation once printed a stray line).
        assert!(want.lines().take(8).all(|l| !l.starts_with(' ') && !l.contains("XX")), "{want}");
    }
}
