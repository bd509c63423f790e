//! `onionrtc`: the one binary of the OnionRTC workspace.
//!
//! Subcommands arrive with the crates that implement them: `serve` runs the
//! relay and the signaling server with the web app, `relay` runs the
//! TURN/STUN relay alone, `check-config` validates a configuration file,
//! `import-coturn` translates a coturn configuration,
//! `features` describes the protocol core.

#[cfg(feature = "call")]
mod audio_dev;
mod bench_cmd;
#[cfg(feature = "call")]
mod call_cmd;
mod connect_cmd;
mod echo;
mod lab_cmd;
mod onion;
mod relay_cmd;
mod serve_cmd;
mod users_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connect_cmd::ConnectFlags;
use crate::relay_cmd::OverrideFlags;
use crate::serve_cmd::ServeFlags;

/// Exit status for a configuration error (and for command line errors,
/// like clap's own).
const EXIT_CONFIG: u8 = 2;
/// Exit status when the relay fails while running.
const EXIT_RUNTIME: u8 = 1;

/// Privacy-first WebRTC relay stack.
///
/// OnionRTC is a TURN/STUN relay, a signaling server with a web app, an onion
/// connector (TURN and the web app through Tor or a port-443-only firewall)
/// and a call-quality lab, in one binary.
#[derive(Parser)]
#[command(name = "onionrtc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay and the signaling server with the web app until SIGINT
    /// or SIGTERM.
    ///
    /// Without --config: TURN on udp://127.0.0.1:3478 and
    /// tcp://127.0.0.1:3478, the web app on http://127.0.0.1:8080/. A TURN
    /// REST secret is generated on first run into DATA_DIR/turn-secret (mode
    /// 0600) and reused. Prints one line, `Open http://ADDR/`, once both
    /// listen; logs go to stderr (RUST_LOG sets the level).
    Serve {
        #[command(flatten)]
        flags: ServeFlags,
    },
    /// Run the TURN/STUN relay (UDP, TCP, TLS) until SIGINT or SIGTERM.
    ///
    /// Without --config the relay listens on udp://127.0.0.1:3478 and
    /// tcp://127.0.0.1:3478; flags override the file. Credentials come from
    /// the file, --user, or ONIONRTC_AUTH_SECRET (a TURN REST shared secret,
    /// used as the current one). Logs go to stderr; RUST_LOG sets the level
    /// (default: info).
    Relay {
        /// Configuration file (TOML, `[relay]` table).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: OverrideFlags,
    },
    /// Validate a configuration file and print it as resolved.
    ///
    /// Loads FILE, applies the flags and ONIONRTC_AUTH_SECRET, checks every
    /// value (including that the TLS certificate and key load) and prints
    /// the effective `[relay]` table with passwords and secrets redacted.
    /// A file with a `[serve]` table is checked as `onionrtc serve --config
    /// FILE` reads it (its own secret, no flags) and both tables are
    /// printed. Exits 0 if the configuration is valid, 2 if not.
    CheckConfig {
        /// Configuration file (TOML: `[relay]`, optionally `[serve]`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        flags: OverrideFlags,
    },
    /// Talk to a running relay through its control socket.
    ///
    /// COMMAND is one of: `status` (draining or not, allocations,
    /// connections, shards, alternates); `drain` (maintenance: every new
    /// allocation is sent to the relays of `alternate_servers` with 300
    /// ALTERNATE-SERVER, or refused with 508 where none serves its
    /// transport; live allocations keep working until they end); `resume`;
    /// `reload` (as SIGHUP, and prints the outcome); `log-level FILTER`
    /// (e.g. `debug` or `info,relay=debug`; until the next restart).
    ///
    /// The relay listens on the `control_socket` path of its `[relay]`
    /// table; the socket is its owner's only (mode 0600), so run this as the
    /// relay's user. Give the path with --socket, or the relay's
    /// configuration file with --config. Exits 1 if the relay refuses the
    /// command, 2 if it cannot be reached.
    Ctl {
        /// The relay's control socket.
        #[arg(long, short = 's', value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// The relay's configuration file (its `control_socket` is used).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// The command and its argument: status, drain, resume, reload,
        /// log-level FILTER.
        #[arg(value_name = "COMMAND", required = true, num_args = 1..=2)]
        command: Vec<String>,
    },
    /// Translate a coturn configuration (turnserver.conf) into this relay's
    /// TOML.
    ///
    /// Prints the `[relay]` table on stdout (redirect it to a file: it holds
    /// the coturn file's passwords and secrets) and a summary on stderr:
    /// how many options were translated, and every option that was not,
    /// with the reason (secrets never appear there). Check the result with
    /// `onionrtc check-config`. Exits 2 if FILE cannot be read.
    ///
    /// turnserver's command line options can follow `--` (e.g. from a
    /// Docker command or a systemd unit); as for turnserver, they come after
    /// the file's: `onionrtc import-coturn turnserver.conf -- --realm=x`.
    ImportCoturn {
        /// coturn's configuration file, e.g. /etc/turnserver.conf.
        #[arg(value_name = "FILE", required_unless_present = "args")]
        file: Option<PathBuf>,
        /// turnserver's command line options (after `--`).
        #[arg(last = true, value_name = "TURNSERVER-ARGS")]
        args: Vec<String>,
    },
    /// Call through Tor with one argument: `onionrtc connect
    /// https://call.example.org`, then open the printed local URL.
    ///
    /// The local connector, until SIGINT or SIGTERM: TURN over UDP and TCP
    /// on loopback carried to the relay over TLS (or TCP), and the
    /// signaling site proxied on loopback — through embedded Tor by default,
    /// a SOCKS5 proxy, a tor it launches, or directly (NOT anonymous). With
    /// a site URL, the relay and its TLS pins come from the site's
    /// /.well-known/onionrtc.json (fetched through the same route; https://
    /// with a valid certificate or a .onion address only); flags override
    /// it. --open starts a browser with a fresh temporary profile. See
    /// docs/connector.md.
    Connect {
        #[command(flatten)]
        flags: ConnectFlags,
    },
    /// Call-quality lab: run calls over direct and TURN paths, measure
    /// them (RTT, one-way delay, jitter, loss, MOS), store and report.
    /// See docs/lab.md.
    Lab {
        #[command(subcommand)]
        command: lab_cmd::LabCommand,
    },
    /// Benchmarks: our relay against coturn, side by side (see
    /// docs/performance.md).
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
    /// Call a room (docs/signaling.md) with our own WebRTC media endpoint:
    /// no browser needed. Audio from --tone or --send, to --record; a JSON
    /// summary with --json; exit status 0 only if the call connected. See
    /// docs/call.md. Needs a build with `--features call`.
    Call {
        #[cfg(feature = "call")]
        #[command(flatten)]
        flags: call_cmd::CallFlags,
        /// (built without the `call` feature)
        #[cfg(not(feature = "call"))]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// SIP accounts for `[sip]` (SIP over WebSocket at /sip): add,
    /// remove, list, passwd. Stored in DATA_DIR/users.sqlite as digest
    /// hashes only; the password is read from standard input. The data
    /// directory and realm come from --config/--data-dir as for `serve`.
    /// See docs/sip.md.
    Users {
        #[command(flatten)]
        flags: ServeFlags,
        #[command(subcommand)]
        command: users_cmd::UsersCommand,
    },
    /// Print what this build implements (RFCs, methods, attributes).
    Features,
}

/// The error and its causes, `: `-separated; a cause whose text an outer
/// message already quotes is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints `error: <message>` to stderr and returns `code`.
fn fail(code: u8, e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", message(e));
    ExitCode::from(code)
}

fn features() {
    let methods: Vec<&str> = stun::Method::ALL.iter().map(|m| m.name()).collect();
    let attributes: Vec<&str> = stun::attr::KNOWN.iter().map(|(_, n)| *n).collect();
    println!("onionrtc {}", env!("CARGO_PKG_VERSION"));
    println!("STUN methods: {}", methods.join(", "));
    println!("STUN attributes: {}", attributes.join(", "));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve { flags }) => {
            let loaded = match serve_cmd::load(&flags) {
                Ok(l) => l,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            match serve_cmd::run(loaded, &flags) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_RUNTIME, &e),
            }
        }
        Some(Command::Relay {
            config: file,
            flags,
        }) => {
            let config = match relay_cmd::load(file.as_deref(), &flags) {
                Ok(c) => c,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            // SIGHUP reads the same file, flags and environment again.
            match relay_cmd::run(config, || relay_cmd::load(file.as_deref(), &flags)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_RUNTIME, &e),
            }
        }
        Some(Command::Ctl {
            socket,
            config,
            command,
        }) => relay_cmd::ctl(socket, config, &command.join(" ")),
        Some(Command::CheckConfig { file, flags }) => {
            let checked = if serve_cmd::has_serve_table(&file) {
                serve_cmd::check_config(&file)
            } else {
                relay_cmd::check_config(&file, &flags)
            };
            match checked {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_CONFIG, &e),
            }
        }
        Some(Command::ImportCoturn { file, args }) => {
            match relay_cmd::import_coturn(file.as_deref(), &args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_CONFIG, &e),
            }
        }
        Some(Command::Connect { flags }) => {
            let loaded = match connect_cmd::load(&flags) {
                Ok(c) => c,
                Err(e) => return fail(EXIT_CONFIG, &e),
            };
            match connect_cmd::run(loaded) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_RUNTIME, &e),
            }
        }
        Some(Command::Lab { command }) => lab_cmd::run(command),
        Some(Command::Bench { command }) => bench_cmd::run(command),
        #[cfg(feature = "call")]
        Some(Command::Call { flags }) => match call_cmd::run(flags) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(EXIT_RUNTIME),
            Err(e) => fail(EXIT_RUNTIME, &e),
        },
        #[cfg(not(feature = "call"))]
        Some(Command::Call { .. }) => fail(
            EXIT_CONFIG,
            &anyhow::anyhow!(
                "this onionrtc was built without `call` (it needs libopus, built with cmake): \
                 cargo run --release --features call -- call URL"
            ),
        ),
        Some(Command::Users { flags, command }) => match users_cmd::run(&flags, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_CONFIG, &e),
        },
        Some(Command::Features) => {
            features();
            ExitCode::SUCCESS
        }
        None => {
            use clap::CommandFactory;
            if let Err(e) = Cli::command().print_help() {
                return fail(EXIT_RUNTIME, &e.into());
            }
            println!();
            ExitCode::SUCCESS
        }
    }
}
