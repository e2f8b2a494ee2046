//! The `webhook-broker` binary: loads `.env`, parses the command line and
//! runs the command ([`webhook_broker::cli`]); `serve`, the daemon, by default.

fn main() -> std::process::ExitCode {
    webhook_broker::cli::main()
}
