//! A webhook receiver for trying the broker out: prints every delivery and,
//! when WEBHOOK_SECRET is set, checks its Standard Webhooks signature.
//!
//! Run: `cargo run --example receiver` (listens on 127.0.0.1:9000, or on
//! RECEIVER_BIND).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use webhook_broker::signature;

async fn receive(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts, sigs) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    println!("POST {}", req.path());
    println!("  webhook-id: {id}\n  webhook-timestamp: {ts}\n  webhook-signature: {sigs}");
    println!("  body: {}", String::from_utf8_lossy(&body));
    if let Ok(secret) = std::env::var("WEBHOOK_SECRET") {
        let expected = signature::sign(
            &signature::signing_key(&secret),
            &id,
            ts.parse().unwrap_or(0),
            &body,
        );
        // A rotation sends several signatures; one match is enough.
        let valid = sigs.split(' ').any(|s| s == expected);
        println!("  signature: {}", if valid { "valid" } else { "INVALID" });
        if !valid {
            return HttpResponse::Unauthorized().finish();
        }
    }
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("RECEIVER_BIND").unwrap_or_else(|_| "127.0.0.1:9000".into());
    println!("receiver listening on http://{bind}/");
    HttpServer::new(|| App::new().default_service(web::to(receive)))
        .workers(1)
        .bind(bind)?
        .run()
        .await
}
