//! The `webhook-broker` daemon: configuration from the environment, then
//! the library's [`Application`] until SIGINT or SIGTERM.

use webhook_broker::{Application, Config};

fn main() -> anyhow::Result<()> {
    // A missing .env is normal; a malformed one is worth knowing about.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("webhook-broker: cannot read .env: {e}");
            std::process::exit(2);
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("webhook-broker: {e}");
            std::process::exit(2);
        }
    };
    if config.admin_token_generated {
        // Printed, not logged: it is shown once, on this process's stderr.
        eprintln!(
            "WARNING: BROKER_ADMIN_TOKEN is not set; generated an admin token for this run only:\n\
             BROKER_ADMIN_TOKEN={}\n\
             Set BROKER_ADMIN_TOKEN to keep a stable token across restarts.",
            config.admin_token
        );
    }
    log::info!(
        "starting webhook-broker {} with {}",
        env!("CARGO_PKG_VERSION"),
        config.database_url.redacted()
    );

    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        app.run_until_stopped().await?;
        log::info!("stopped");
        Ok(())
    })
}
