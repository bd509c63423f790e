//! `onionrtc users add|remove|list|passwd`: the SIP accounts in
//! `DATA_DIR/users.sqlite` (see `signal::users`). The data directory and
//! the realm (`[sip] domain`) are resolved exactly as `serve` resolves
//! them, from the same `--config`/`--data-dir` flags. Passwords are read
//! from standard input: without echo from a terminal (asked twice), else
//! the first line (so scripts can pipe them in); never from the command
//! line, where other users could read them.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use signal::users::UserStore;

use crate::serve_cmd::{self, ServeFlags};

/// What `onionrtc users` does.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a SIP account (password from standard input).
    Add {
        /// User name: 1-64 of A-Z a-z 0-9 . _ -
        name: String,
    },
    /// Delete a SIP account.
    Remove { name: String },
    /// List the accounts: name, realm, creation time (UTC).
    List,
    /// Set a new password (from standard input); the realm stays.
    Passwd { name: String },
}

/// Runs one `users` command.
pub fn run(flags: &ServeFlags, command: UsersCommand) -> anyhow::Result<()> {
    let loaded = serve_cmd::load(flags)?;
    let data_dir = loaded.serve.data_dir;
    let realm = loaded.serve.sip.domain;
    let store = UserStore::open(&data_dir)
        .with_context(|| format!("cannot open the accounts in {}", data_dir.display()))?;
    match command {
        UsersCommand::Add { name } => {
            if realm.is_empty() {
                bail!("set [sip] domain first: it is the realm the account's hashes bind");
            }
            if !signal::users::valid_name(&name) {
                bail!("invalid user name {name:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -");
            }
            let password = read_password()?;
            store.add(&name, &realm, &password)?;
            eprintln!("added {name} (realm {realm})");
        }
        UsersCommand::Remove { name } => {
            store.remove(&name)?;
            eprintln!("removed {name}");
        }
        UsersCommand::List => {
            for a in store.list()? {
                println!(
                    "{}\t{}\t{}",
                    a.name,
                    a.realm,
                    signal::format_utc(a.created_ms)
                );
            }
        }
        UsersCommand::Passwd { name } => {
            let password = read_password()?;
            store.set_password(&name, &password)?;
            eprintln!("password of {name} changed");
        }
    }
    Ok(())
}

/// Echo off (or back on) on the terminal of standard input.
fn echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(4096)
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_password() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        let pw = read_line()?;
        if pw.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(pw);
    }
    let ask = |prompt: &str| -> anyhow::Result<String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        echo(false);
        let r = read_line();
        echo(true);
        eprintln!();
        r
    };
    let first = ask("Password: ")?;
    let second = ask("Again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}
