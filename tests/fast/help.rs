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
