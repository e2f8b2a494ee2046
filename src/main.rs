//! The `webhook-broker` binary: parses the command line and runs the
//! command ([`webhook_broker::cli`]); `serve`, the daemon, by default.

use clap::Parser;
use webhook_broker::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    cli::run(Cli::parse())
}
