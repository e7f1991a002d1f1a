//! `rocsync user`: the review console's accounts. With `auth = "local"` each person signs in
//! with their password; with `auth = "proxy"` the account only gives the proxy's user a role.
//! Passwords are asked twice on the terminal without echo (or read from standard input), need
//! 12 characters, and are kept as Argon2id hashes; a new password or a removal ends the
//! account's sessions at once, even while `rocsync run` serves the console.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};

use crate::console::auth::{self, Role};
use crate::clock::now;

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add an account with its role; its password is asked twice on the terminal.
    #[command(after_help = "Examples:\n  rocsync user add marie --role rssi\n  \
        printf '%s\\n' \"$PASSWORD\" | rocsync user add accueil --role helpdesk --password-stdin\n\n\
        Roles: rssi and engineer approve, reject and propose rollbacks; helpdesk reads everything and approves nothing.")]
    Add {
        /// Lower-case letters, digits, `.`, `_`, `@`, `-` (the login name, or the name the SSO proxy passes).
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from the first line of standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// The accounts, their roles and open sessions (never a password hash).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change an account's password; its console sessions end.
    Passwd {
        name: String,
        /// Read the password from the first line of standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account; its console sessions end.
    Remove { name: String },
}

/// The roles as the command line takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// The security officer: reads, approves, rejects.
    Rssi,
    /// A network engineer: reads, approves, rejects.
    Engineer,
    /// The helpdesk: reads everything, approves nothing.
    Helpdesk,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Rssi => Role::Rssi,
            RoleArg::Engineer => Role::Engineer,
            RoleArg::Helpdesk => Role::Helpdesk,
        }
    }
}

pub fn run(config: &Path, action: UserAction, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let by = super::login_name();
    match action {
        UserAction::Add { name, role, password_stdin } => {
            let name = auth::account_name(&name).map_err(anyhow::Error::msg)?;
            let (mut engine, _) = super::open_store(config)?;
            anyhow::ensure!(
                engine.store.user_role(&name)?.is_none(),
                "there is already an account {name}: `rocsync user passwd {name}` changes its password"
            );
            let hash = auth::hash_password(&read_password(password_stdin, &name)?)?;
            let role = Role::from(role);
            anyhow::ensure!(engine.store.add_user(&name, role.as_str(), &hash, &by, &now())?, "there is already an account {name}");
            writeln!(out, "Account {name} added, role {}.", role.as_str())?;
            if engine.config.console.is_none() {
                writeln!(out, "The console is off: set `[console] enabled = true` and restart `rocsync run` to serve it.")?;
            }
        }
        UserAction::List { json } => {
            let engine = super::open_store_read_only(config)?;
            let users = engine.store.users()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&users)?)?;
            } else if users.is_empty() {
                writeln!(out, "No account yet: rocsync user add NAME --role rssi|engineer|helpdesk")?;
            } else {
                for u in &users {
                    writeln!(out, "{:<32} {:<9} created {}, password changed {}, {} session(s)", u.name, u.role, u.created, u.changed, u.sessions)?;
                }
            }
        }
        UserAction::Passwd { name, password_stdin } => {
            let name = auth::account_name(&name).map_err(anyhow::Error::msg)?;
            let (mut engine, _) = super::open_store(config)?;
            anyhow::ensure!(engine.store.user_role(&name)?.is_some(), "there is no account {name} (rocsync user list)");
            let hash = auth::hash_password(&read_password(password_stdin, &name)?)?;
            anyhow::ensure!(engine.store.set_password(&name, &hash, &by, &now())?, "there is no account {name} (rocsync user list)");
            writeln!(out, "Password of {name} changed; its console sessions are ended.")?;
        }
        UserAction::Remove { name } => {
            let name = auth::account_name(&name).map_err(anyhow::Error::msg)?;
            let (mut engine, _) = super::open_store(config)?;
            anyhow::ensure!(engine.store.remove_user(&name, &by, &now())?, "there is no account {name} (rocsync user list)");
            writeln!(out, "Account {name} removed; its console sessions are ended.")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The new password of `name`: the first line of standard input, or asked twice on the
/// terminal without echo. Checked against the rule (12 characters at least) before anything is
/// stored; never printed.
fn read_password(from_stdin: bool, name: &str) -> anyhow::Result<String> {
    let password = if from_stdin {
        // At most one line of a password's greatest length (and a little): a huge input is not
        // read whole before being refused.
        let mut line = String::new();
        std::io::Read::take(std::io::stdin().lock(), auth::MAX_PASSWORD_BYTES as u64 + 2)
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password(format!("Password for {name} (at least {} characters): ", auth::MIN_PASSWORD_CHARS))
            .context("cannot read the password from the terminal (without one, give it on standard input with --password-stdin)")?;
        auth::check_password(&first).map_err(anyhow::Error::msg)?;
        let again = rpassword::prompt_password("The same password again: ").context("cannot read the password from the terminal")?;
        anyhow::ensure!(first == again, "the two passwords differ; nothing was changed");
        first
    };
    auth::check_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}
