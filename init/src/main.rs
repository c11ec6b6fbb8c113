//! mobix-init: the program that runs as PID 1 on the phone.
//!
//! As `/init` in the initramfs it is stage-1: mount what it needs, load the profile's
//! modules, find the system partition by its GPT name, pick a generation and switch_root
//! into that generation's init. Run as `<toplevel>/init stage2 ...` it is stage-2: set up
//! the running system, report boot-complete, and keep a shell on the console (or power off
//! when the kernel command line says `mobix.poweroff`); with `init: systemd` it activates
//! the generation and executes systemd, whose units call `check NAME`, `success` and
//! `deadline`. `mobix deploy` runs `phone-status`, `receive` and `gc` over ssh.
//!
//! PID 1 must never exit: on a fatal error it says why and drops to a rescue shell.

mod bless;
mod console;
mod debugshell;
mod deploy;
mod generation;
mod remote;
mod screen;
mod stage1;
mod stage2;
mod state;
mod sys;
mod systemd;
mod unlock;
mod usbnet;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pid = std::process::id();
    let name = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    // Every remote unlock login in stage-1 (dropbear runs root's shell, `-mobix-unlock`
    // for a login shell).
    if name.trim_start_matches('-') == "mobix-unlock" {
        std::process::exit(remote::client());
    }
    if name == "mobix-bless" {
        std::process::exit(bless::main(&args[1..]));
    }
    // The same, where no `mobix-bless` link is on the PATH (a systemd system).
    if args.get(1).map(String::as_str) == Some("bless") {
        std::process::exit(bless::main(&args[2..]));
    }
    // The units of a systemd system call these; a failure is the unit's failure.
    let unit = match args.get(1).map(String::as_str) {
        Some("check") => Some(systemd::check(&args[2..])),
        Some("success") => Some(systemd::success()),
        Some("deadline") => Some(systemd::deadline()),
        // A phone UI's session, once up: the fallback notice as a notification.
        Some("notify-fallback") => Some(systemd::notify_fallback()),
        // A phone UI's unit, before it starts: stage-1's screen gives way to the UI's.
        Some("give-back-console") => {
            screen::give_back_console();
            Some(Ok(()))
        }
        // `mobix deploy` runs these over ssh.
        Some("phone-status") => Some(deploy::status()),
        Some("receive") => Some(deploy::receive()),
        Some("store-hash") => Some(deploy::store_hash(&args[2..])),
        Some("gc") => Some(deploy::gc()),
        _ => None,
    };
    if let Some(r) = unit {
        if let Err(e) = r {
            eprintln!("mobix-init: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    let result = match args.get(1).map(String::as_str) {
        Some("stage2") => generation::enter(&args[2..]).and_then(|(generation, top, conf)| match conf.init {
            mobix_bootctl::contract::Init::Systemd => systemd::start(generation, &top, &conf),
            mobix_bootctl::contract::Init::Minimal => stage2::run(generation, &top, &conf),
        }),
        _ if pid == 1 => stage1::run(),
        _ => {
            eprintln!(
                "usage: mobix-init runs as PID 1 (stage-1), or as `mobix-init stage2 --generation N --toplevel PATH`; \
                 systemd's units run `mobix-init check NAME`, `success`, `deadline`, `give-back-console` and `notify-fallback`; \
                 `mobix deploy` runs `phone-status`, `receive`, `gc` and `store-hash`; `bless` is `mobix-bless`"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        console::say(&format!("FATAL: {e}"));
        console::rescue(&e);
    }
}
