//! `onionrtc`: the one binary of the OnionRTC workspace.
//!
//! Subcommands arrive with the crates that implement them; today the binary
//! exposes the protocol core's self-description.

use clap::{Parser, Subcommand};

/// Privacy-first WebRTC relay stack.
///
/// OnionRTC is a TURN/STUN relay, a signaling server with a web app, an onion
/// connector (TURN and the web app through Tor or a port-443-only firewall)
/// and a call-quality lab, in one binary.
#[derive(Debug, Parser)]
#[command(name = "onionrtc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what this build implements (RFCs, methods, attributes).
    Features,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Features) => {
            println!("onionrtc {}", env!("CARGO_PKG_VERSION"));
            println!("STUN methods: {}", stun::Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "));
            println!("STUN attributes: {}", stun::attr::KNOWN.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", "));
            Ok(())
        }
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            println!();
            Ok(())
        }
    }
}
