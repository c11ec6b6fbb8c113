//! Every command, subcommand, option and argument of `mobix` says what it is for: walks
//! clap's command tree, so a new option without a doc comment fails here.

fn missing_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue; // clap's own
        }
        let described = arg.get_help().or(arg.get_long_help()).is_some_and(|h| !h.to_string().trim().is_empty());
        if !described {
            missing.push(format!("{path}: argument `{id}`"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        let described = sub.get_about().or(sub.get_long_about()).is_some_and(|h| !h.to_string().trim().is_empty());
        if !described {
            missing.push(format!("{sub_path}: no description"));
        }
        missing_help(sub, &sub_path, missing);
    }
}

#[test]
fn every_command_and_option_has_a_description() {
    let cmd = mobix::cli::command();
    cmd.clone().debug_assert();
    let mut missing = Vec::new();
    missing_help(&cmd, "mobix", &mut missing);
    assert!(missing.is_empty(), "without a description:\n{}", missing.join("\n"));
}

#[test]
fn the_walk_finds_an_undescribed_option() {
    let cmd = clap::Command::new("t")
        .subcommand(clap::Command::new("described").about("does a thing").arg(clap::Arg::new("bare").long("bare")))
        .subcommand(clap::Command::new("silent"));
    let mut missing = Vec::new();
    missing_help(&cmd, "t", &mut missing);
    assert_eq!(missing, ["t described: argument `bare`", "t silent: no description"]);
}

/// Every command's usage, as `--help` prints it, for the words tests below.
fn usages(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let mut c = cmd.clone();
    out.push((path.to_string(), c.render_long_help().to_string()));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        usages(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

/// Issue 30 item 11: a value is named for what it is (`--kernel-from <source|substitute>`),
/// never by the field behind it (`<KERNEL_FROM>`); the top help names every family's
/// subcommands.
#[test]
fn values_are_named_for_what_they_are_and_families_name_their_subcommands() {
    let cmd = mobix::cli::command().bin_name("mobix");
    let mut all = Vec::new();
    usages(&cmd, "mobix", &mut all);
    let mut field_names = Vec::new();
    for (path, help) in &all {
        for word in help.split(['<', '>']).skip(1).step_by(2) {
            if word.contains('_') && word.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                field_names.push(format!("{path}: <{word}>"));
            }
        }
    }
    assert!(field_names.is_empty(), "values named by their field:\n{}", field_names.join("\n"));
    let top = &all[0].1;
    let line = |name: &str| top.lines().skip_while(|l| !l.trim_start().starts_with(name)).take(2).collect::<String>();
    for (family, subs) in
        [("device", &["list", "show", "check", "import", "udev-rules"][..]), ("lock", &["update", "add"])]
    {
        let said = line(family);
        assert!(subs.iter().all(|s| said.contains(s)), "`mobix --help` on {family}: {said}");
    }
}
