//! Server-side request forgery guard at delivery time.
//!
//! A webhook URI is checked when it is registered ([`crate::domain::WebhookUri`]),
//! but the name in it can resolve to anything later: a customer can point
//! `hooks.example.com` at 127.0.0.1 or at the cloud metadata service after
//! registering it, or answer each lookup differently (DNS rebinding). So the
//! delivery client checks again at every connection:
//!
//! 1. the host is classified: an IP literal needs no lookup; `localhost` and
//!    `*.localhost` are refused without one;
//! 2. a name is resolved once (every A and AAAA record, through the system
//!    resolver on a blocking thread);
//! 3. if any address is not public ([`crate::domain::is_public_ip`]) the
//!    connection is refused with a [`Refusal`] naming the host and address;
//! 4. otherwise the TCP connection is made to exactly the addresses that
//!    were checked, by a connector that has no resolver of its own, so no
//!    second lookup can switch them. TLS then runs over that stream with
//!    the original host name for SNI and certificate checks.
//!
//! Redirects are never followed. With `allow_private_targets` (development
//! and tests) the address check is skipped; everything else stays.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use actix_tls::connect::tcp::TcpConnectorService;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::dev::Service;
use actix_web::rt::net::TcpStream;
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;

use crate::domain::is_public_ip;

/// Why a connection was refused; its text ends up in the delivery's
/// `lastError` and in the attempt log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `localhost` or a name under `.localhost`, which always means this
    /// machine, whatever DNS says.
    #[error("refused to connect to {host}: the name always means this machine, a private target (set BROKER_ALLOW_PRIVATE_TARGETS=true to allow it)")]
    LocalName {
        /// The host as written in the URI.
        host: String,
    },
    /// The host is, or resolves to, an address that is not public.
    #[error("refused to connect to {host} at {addr}: a private, loopback, link-local or otherwise non-public address (set BROKER_ALLOW_PRIVATE_TARGETS=true to allow it)")]
    PrivateAddress {
        /// The host as written in the URI.
        host: String,
        /// The first address that failed the check.
        addr: IpAddr,
    },
}

/// What a URI's host is, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// An IPv4 or IPv6 literal (brackets removed): nothing to resolve.
    Ip(IpAddr),
    /// `localhost` or `*.localhost`, with or without a trailing dot.
    LocalName,
    /// A name to resolve.
    Name,
}

/// Classifies a host as it appears in a URI (`example.com`, `10.0.0.1`,
/// `[::1]`).
pub fn classify_host(host: &str) -> HostKind {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return HostKind::Ip(ip);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        HostKind::LocalName
    } else {
        HostKind::Name
    }
}

/// The address policy: every address `host` resolved to must be public;
/// the first that is not is named in the refusal.
pub fn check_addrs(host: &str, addrs: &[SocketAddr]) -> Result<(), Refusal> {
    match addrs.iter().find(|a| !is_public_ip(a.ip())) {
        Some(bad) => Err(Refusal::PrivateAddress {
            host: host.to_owned(),
            addr: bad.ip(),
        }),
        None => Ok(()),
    }
}

/// Resolves `host` once and applies the policy (unless `allow_private`):
/// the addresses to connect to, all of them checked.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let addrs = match classify_host(host) {
        HostKind::Ip(ip) => vec![SocketAddr::new(ip, port)],
        HostKind::LocalName if !allow_private => {
            return Err(refused(Refusal::LocalName {
                host: host.to_owned(),
            }))
        }
        HostKind::LocalName | HostKind::Name => {
            let name = host.to_owned();
            // getaddrinfo blocks; A and AAAA records come back together.
            actix_web::rt::task::spawn_blocking(move || {
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>)
            })
            .await
            .map_err(|e| ConnectError::Io(io::Error::other(e)))?
            .map_err(|e| ConnectError::Resolver(Box::new(e)))?
        }
    };
    if addrs.is_empty() {
        return Err(ConnectError::NoRecords);
    }
    if !allow_private {
        check_addrs(host, &addrs).map_err(refused)?;
    }
    Ok(addrs)
}

fn refused(why: Refusal) -> ConnectError {
    // awc shows an I/O error's own text ("Failed to connect to host: ...").
    ConnectError::Io(io::Error::new(io::ErrorKind::PermissionDenied, why))
}

/// awc's TCP connector: resolve once, check, connect to what was checked.
#[derive(Debug, Clone, Copy)]
pub struct GuardedConnector {
    allow_private: bool,
}

impl GuardedConnector {
    /// A connector that refuses non-public addresses unless `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        GuardedConnector { allow_private }
    }
}

impl Service<ConnectInfo<Uri>> for GuardedConnector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = req.hostname().to_owned();
            // An address awc was given explicitly is checked like a lookup's.
            let preset: Vec<SocketAddr> = req.addrs().collect();
            let addrs = if preset.is_empty() {
                resolve_checked(&host, req.port(), allow_private).await?
            } else {
                if !allow_private {
                    check_addrs(&host, &preset).map_err(refused)?;
                }
                preset
            };
            // This connector has no resolver: it tries exactly these
            // addresses, in order, and nothing else.
            TcpConnectorService::default()
                .call(req.set_addrs(addrs))
                .await
        })
    }
}

/// A new delivery client: the guarded connector, TLS as awc sets it up,
/// no redirects, no default headers.
pub fn build_client(allow_private_targets: bool) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().connector(GuardedConnector::new(allow_private_targets)))
        .disable_redirects()
        .no_default_headers()
        .finish()
}

thread_local! {
    // awc's client is not `Send`: one per arbiter thread (and setting),
    // shared by every delivery actor on it so connections are pooled.
    static CLIENTS: RefCell<[Option<awc::Client>; 2]> = const { RefCell::new([None, None]) };
}

/// This thread's delivery client for the given setting, made on first use.
pub fn delivery_client(allow_private_targets: bool) -> awc::Client {
    CLIENTS.with(|clients| {
        clients.borrow_mut()[usize::from(allow_private_targets)]
            .get_or_insert_with(|| build_client(allow_private_targets))
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::Duration;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 443))
            .collect()
    }

    #[test]
    fn hosts_are_classified_without_a_lookup() {
        assert_eq!(
            classify_host("10.0.0.1"),
            HostKind::Ip(Ipv4Addr::new(10, 0, 0, 1).into())
        );
        assert_eq!(classify_host("[::1]"), HostKind::Ip("::1".parse().unwrap()));
        assert_eq!(
            classify_host("::ffff:7f00:1"),
            HostKind::Ip("::ffff:7f00:1".parse().unwrap())
        );
        for local in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "api.localhost",
            "a.b.Localhost.",
        ] {
            assert_eq!(classify_host(local), HostKind::LocalName, "{local}");
        }
        for name in ["example.com", "localhost.example.com", "mylocalhost", "vm"] {
            assert_eq!(classify_host(name), HostKind::Name, "{name}");
        }
    }

    #[test]
    fn one_private_address_among_public_ones_refuses_the_host() {
        assert_eq!(
            check_addrs("a.example", &addrs(&["8.8.8.8", "2606:4700::1111"])),
            Ok(())
        );
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            let list = addrs(&["8.8.8.8", bad, "1.1.1.1"]);
            assert_eq!(
                check_addrs("rebind.example", &list),
                Err(Refusal::PrivateAddress {
                    host: "rebind.example".into(),
                    addr: bad.parse().unwrap()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_refusal_says_what_was_refused_and_why() {
        let text = refused(Refusal::PrivateAddress {
            host: "evil.example".into(),
            addr: "169.254.169.254".parse().unwrap(),
        })
        .to_string();
        // actix-tls's own Display hides the I/O error; awc shows it.
        assert_eq!(text, "I/O error");
        let err = awc::error::ConnectError::from(refused(Refusal::LocalName {
            host: "localhost.".into(),
        }));
        let text = awc::error::SendRequestError::from(err).to_string();
        assert!(text.contains("refused to connect to localhost."), "{text}");
        assert!(text.contains("private"), "{text}");
    }

    #[actix_web::test]
    async fn names_resolve_once_and_are_checked() {
        // `localhost` is refused by name, without a lookup.
        let err = resolve_checked("localhost.", 80, false).await.unwrap_err();
        assert!(format!("{:?}", err).contains("LocalName"), "{err:?}");
        // When allowed it resolves like any name (from /etc/hosts).
        let got = resolve_checked("localhost", 80, true).await.unwrap();
        assert!(got.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        // An IP literal needs no lookup and is checked as it is.
        let err = resolve_checked("[::1]", 80, false).await.unwrap_err();
        assert!(format!("{err:?}").contains("PrivateAddress"), "{err:?}");
        assert_eq!(
            resolve_checked("8.8.8.8", 80, false).await.unwrap(),
            addrs(&["8.8.8.8"])
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), 80))
                .collect::<Vec<_>>()
        );
    }

    /// A local socket that records the first bytes of one connection.
    fn first_bytes_listener() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((mut sock, _)) = listener.accept() {
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).unwrap_or(0);
                buf.truncate(n);
                let _ = tx.send(buf);
            }
        });
        (port, rx)
    }

    #[actix_web::test]
    async fn a_refused_target_is_never_connected_to() {
        let (port, rx) = first_bytes_listener();
        let client = build_client(false);
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://[::1]:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://localhost:{port}/"),
            format!("https://LocalHost.:{port}/"),
        ] {
            let err = client
                .post(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("refused to connect"), "{url}: {err}");
        }
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[actix_web::test]
    async fn tls_runs_over_the_checked_address_with_the_original_name() {
        // A plain socket stands in for the server: it only has to see the
        // ClientHello, which must name the host for SNI.
        let (port, rx) = first_bytes_listener();
        let client = delivery_client(true);
        let sent = client
            .post(format!("https://localhost:{port}/hook"))
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        assert!(sent.is_err(), "no TLS server answered");
        let hello = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(
            hello.windows(b"localhost".len()).any(|w| w == b"localhost"),
            "SNI carries the host name"
        );
    }

    #[test]
    fn clients_are_cached_per_thread_and_setting() {
        actix_web::rt::System::new().block_on(async {
            let _a = delivery_client(false);
            let _b = delivery_client(true);
            CLIENTS.with(|c| assert!(c.borrow().iter().all(Option::is_some)));
        });
    }
}
