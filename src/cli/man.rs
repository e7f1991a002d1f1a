//! The man page, rocsync(1), generated from the command-line definitions. clap_mangen writes
//! the title, name, synopsis, description and global options; every command, with its own
//! options, is on this one page (clap_mangen alone pointed to rocsync-run(1) and siblings, which
//! are not installed), followed by what an operator looks a command up for: exit status,
//! signals, files, environment, examples.

use std::io::{self, Write};

use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use super::{Cli, EXAMPLES};

/// Writes the page (roff).
pub fn render(w: &mut dyn Write) -> io::Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    commands(&mut roff, &cmd, "rocsync");
    sections(&mut roff);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

/// Each command under `cmd`, named `prefix NAME`: how it is written, what it does, its options.
/// A command that only groups others (`inspect`) is given through them.
fn commands(roff: &mut Roff, cmd: &clap::Command, prefix: &str) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("{prefix} {}", sub.get_name());
        let args: Vec<&clap::Arg> = sub.get_arguments().filter(|a| shown(a)).collect();
        if !sub.has_subcommands() || !args.is_empty() {
            roff.control("TP", []);
            let mut line = vec![bold(name.as_str())];
            for arg in &args {
                line.push(roman(" "));
                line.extend(usage(arg));
            }
            roff.text(line);
            if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
                for text in about.to_string().lines().filter(|l| !l.trim().is_empty()) {
                    roff.text([roman(text)]);
                }
            }
            let options: Vec<&&clap::Arg> = args.iter().filter(|a| !a.is_positional()).collect();
            if !options.is_empty() {
                roff.control("RS", []);
                for arg in options {
                    option(roff, arg);
                }
                roff.control("RE", []);
            }
        }
        if sub.has_subcommands() {
            commands(roff, sub, &name);
        }
    }
}

/// Whether `arg` is the command's own: not a global option (given once, under OPTIONS), not
/// `--help` or `--version`.
fn shown(arg: &clap::Arg) -> bool {
    !arg.is_hide_set()
        && !arg.is_global_set()
        && !matches!(
            arg.get_action(),
            clap::ArgAction::Help | clap::ArgAction::HelpShort | clap::ArgAction::HelpLong | clap::ArgAction::Version
        )
}

/// One option of a command: how it is written, its help, its values and default.
fn option(roff: &mut Roff, arg: &clap::Arg) {
    roff.control("TP", []);
    let value = value_name(arg);
    let mut line = vec![bold(flag(arg))];
    if let Some(value) = &value {
        line.push(roman(" "));
        line.push(italic(value.as_str()));
    }
    roff.text(line);
    let mut help = arg.get_long_help().or_else(|| arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| match v.get_help() {
            Some(h) => format!("{} ({})", v.get_name(), h.to_string().trim_end_matches('.')),
            None => v.get_name().to_owned(),
        })
        .collect();
    if !values.is_empty() {
        help.push_str(&format!(" One of: {}.", values.join("; ")));
    }
    let defaults: Vec<String> = arg.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
    // A flag's default (`false`) says nothing.
    if value.is_some() && !defaults.is_empty() && !arg.is_hide_default_value_set() {
        help.push_str(&format!(" Default: {}.", defaults.join(", ")));
    }
    let help = help.trim();
    if !help.is_empty() {
        roff.text([roman(help)]);
    }
}

/// How `arg` is written on a command line: `ID`, `--by NAME`, `[--json]`.
fn usage(arg: &clap::Arg) -> Vec<Inline> {
    let mut parts = Vec::new();
    match (arg.is_positional(), value_name(arg)) {
        (true, value) => parts.push(italic(value.unwrap_or_else(|| arg.get_id().as_str().to_uppercase()))),
        (false, value) => {
            parts.push(bold(flag(arg)));
            if let Some(value) = value {
                parts.push(roman(" "));
                parts.push(italic(value));
            }
        }
    }
    if !arg.is_required_set() {
        parts.insert(0, roman("["));
        parts.push(roman("]"));
    }
    parts
}

/// `--long`, or `-s` for an option without a long name.
fn flag(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => arg.get_id().as_str().to_owned(),
    }
}

/// The name of the value `arg` takes (`FILE`), `None` for a flag.
fn value_name(arg: &clap::Arg) -> Option<String> {
    if !arg.get_num_args().is_some_and(|n| n.takes_values()) {
        return None;
    }
    let named = arg.get_value_names().and_then(|names| names.first()).map(|n| n.as_str().to_owned());
    Some(named.unwrap_or_else(|| arg.get_id().as_str().to_uppercase()))
}

/// `.TP` paragraphs: each term in its font, then its text.
fn definitions(roff: &mut Roff, term: impl Fn(&str) -> Inline, items: &[(&str, &str)]) {
    for (name, text) in items {
        roff.control("TP", []);
        roff.text([term(*name)]);
        roff.text([roman(*text)]);
    }
}

/// EXIT STATUS, SIGNALS, FILES, ENVIRONMENT, EXAMPLES, SEE ALSO.
fn sections(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    definitions(
        roff,
        |t| bold(t),
        &[
            ("0", "Success."),
            (
                "1",
                "An error: the configuration (check-config lists every problem, and every path or right the user running it lacks), \
                 the store, a sink, a source that could not be read. What is in force stays in force.",
            ),
            (
                "2",
                "An input that is not what it should be: an answer that is not a list of the annuaire (an outage page) or that is \
                 larger than the limit, for once, poll, plan and inspect annuaire; a file that is not an e-mail, for inspect mail. \
                 Nothing was changed.",
            ),
        ],
    );

    roff.control("SH", ["SIGNALS"]);
    roff.text([bold("rocsync run"), roman(" handles these:")]);
    definitions(
        roff,
        |t| bold(t),
        &[
            (
                "SIGHUP",
                "Read the configuration again. A file with problems is refused and logged, and the configuration loaded stays in \
                 force (systemctl reload rocsync checks the file first, and fails with its problems).",
            ),
            (
                "SIGTERM, SIGINT",
                "Stop: the job in progress (an apply) finishes, then rocsync exits 0. What is in force stays in force: rocsync \
                 never removes its outputs or its nftables table when it stops.",
            ),
        ],
    );
    roff.text([roman(
        "The other commands take the default action of each signal. An apply that is killed leaves each output file at its old \
         or its new version, never half-written, and the store at the old state until the next pass.",
    )]);

    roff.control("SH", ["FILES"]);
    definitions(
        roff,
        |t| italic(t),
        &[
            (
                "/etc/rocsync/config.toml",
                "The configuration (--config, ROCSYNC_CONFIG), readable by root and the group rocsync. rocsync check-config \
                 checks it and, as the user running it, every path it must write or read.",
            ),
            (
                "/var/lib/rocsync/state/",
                "The state: state.db (SQLite: what is in force, every plan, decision and source read, the audit log), \
                 apply.lock, daemon.lock. The user rocsync's only.",
            ),
            (
                "/var/lib/rocsync/exports/",
                "The exports of the installed configuration (squid-roc.acl, roc-hosts.txt, rocsync.nft): mode 0644, replaced \
                 atomically and only when their content changes.",
            ),
            (
                "/var/lib/rocsync/Maildir/",
                "The Maildir of the Inter-AMC notifications (the user rocsync's ~/Maildir/): each message moves from new/ to cur/ \
                 once recorded.",
            ),
            ("/usr/lib/systemd/system/rocsync.service", "rocsync run as a service, as the user rocsync."),
            (
                "/usr/lib/systemd/system/rocsync-once.service, rocsync-once.timer",
                "One pass every 10 minutes, instead of the service.",
            ),
            ("/usr/lib/systemd/system/rocsync-mail.path", "A pass as soon as a notification lands in the Maildir's new/."),
            (
                "/usr/lib/systemd/system/rocsync-squid-reload.path, rocsync-haproxy-reload.path",
                "As root, have Squid or HAProxy read their ACL again when rocsync changes it.",
            ),
            (
                "/usr/share/rocsync/annuaire-urls.sample.json",
                "The sample answer that the installed configuration reads until [annuaire] url points at the web service.",
            ),
            (
                "/usr/share/doc/rocsync/README.md",
                "How rocsync works, how to install, run and troubleshoot it; examples/config.example.toml beside it explains every \
                 key.",
            ),
        ],
    );

    roff.control("SH", ["ENVIRONMENT"]);
    definitions(
        roff,
        |t| bold(t),
        &[
            ("ROCSYNC_CONFIG", "The configuration file when --config is not given."),
            ("RUST_LOG", "What is logged on standard error (error, warn, info, debug, trace); it overrides -v."),
            ("NOTIFY_SOCKET, WATCHDOG_USEC", "Set by systemd: rocsync run reports its readiness and pings the watchdog."),
        ],
    );

    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", []);
    for line in EXAMPLES.lines().skip(1) {
        roff.text([roman(line.trim_start())]);
    }
    roff.control("fi", []);

    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("nft"),
        roman("(8), "),
        bold("systemd.exec"),
        roman("(5), "),
        bold("systemd.path"),
        roman("(5), "),
        italic("/usr/share/doc/rocsync/README.md"),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        let mut page: Vec<u8> = Vec::new();
        render(&mut page).unwrap();
        String::from_utf8(page).unwrap()
    }

    /// The page pointed to rocsync-run(1) and siblings, which are not installed, and had no
    /// FILES, SIGNALS or EXIT STATUS section.
    #[test]
    fn every_command_is_on_the_page_which_points_to_no_page_of_its_own() {
        let page = page();
        for section in [".SH COMMANDS", ".SH \"EXIT STATUS\"", ".SH SIGNALS", ".SH FILES", ".SH ENVIRONMENT", ".SH EXAMPLES"] {
            assert!(page.contains(section), "{section} in:\n{page}");
        }
        let cmd = <Cli as clap::CommandFactory>::command();
        let mut named = 0;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name().replace('-', "\\-");
            assert!(page.contains(&format!("rocsync {name}")), "rocsync {name} in:\n{page}");
            assert!(!page.contains(&format!("rocsync\\-{name}(")), "a page of its own for {name}:\n{page}");
            named += 1;
        }
        assert!(named >= 15, "{named}");
        // Nested commands and their options, with values and defaults.
        assert!(page.contains("rocsync plan show\\fR \\fIID\\fR"), "{page}");
        assert!(page.contains("rocsync inspect mail"), "{page}");
        assert!(page.contains("\\fB\\-\\-by\\fR \\fIBY\\fR") || page.contains("\\fB\\-\\-by\\fR \\fINAME\\fR"), "{page}");
        assert!(page.contains("Default: 50."), "{page}");
        assert!(page.contains("One of: text"), "{page}");
        // The hidden commands stay out.
        assert!(!page.contains("rocsync man") && !page.contains("rocsync completions"), "{page}");
    }
}
