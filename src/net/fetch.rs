//! A guarded HTTP GET for URLs that arrive from outside (a webhook's certificate link, a
//! feed address typed into the dashboard): the server must not become a way to reach
//! what only it can reach.
//!
//! - https only; plain http only where the caller asks for it ([`Options::allow_http`]).
//! - The host is resolved once; if any address it resolves to is not public unicast
//!   ([`super::ip::classify`]), the fetch is refused. The connection goes to an address
//!   that was checked, by number, so a second DNS answer (rebinding) is never used.
//! - TLS (rustls, ring) with SNI and the certificate verified for the URL's host against
//!   Mozilla's roots (webpki-roots).
//! - One deadline for the whole exchange (resolve, connect, TLS, headers, body) and a
//!   cap on the body, checked against `Content-Length` and again while reading.
//! - Redirects are not followed: a 3xx is [`FetchError::Redirect`] with its `Location`,
//!   so a caller that wants to follow calls [`Fetcher::get`] again, and the new URL goes
//!   through every check above.
//!
//! Tests build a fetcher with their own CA and loopback allowed
//! ([`FetcherBuilder::add_root_certificate`], [`FetcherBuilder::allow_loopback_for_tests`]);
//! nothing in the configuration reaches those.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use url::{Host, Position, Url};

use super::ip::{self, Class};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
const USER_AGENT: &str = concat!("Loopline/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("not a URL that can be fetched: {0}")]
    InvalidUrl(String),
    #[error("{0}: URLs are fetched over https only")]
    Scheme(String),
    #[error("refused: {host} is {addr}, a {} address (only public addresses are fetched)", .class.describe())]
    Refused {
        host: String,
        addr: IpAddr,
        class: Class,
    },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("the HTTP exchange failed: {0}")]
    Protocol(String),
    #[error("no complete answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the server redirected ({status}); redirects are not followed")]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("the server answered {0}")]
    Status(u16),
}

impl FetchError {
    /// Worth trying again later: the network or the server, not the URL or the answer.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Resolve { .. }
            | FetchError::Connect { .. }
            | FetchError::Protocol(_)
            | FetchError::Timeout(_) => true,
            FetchError::Status(s) => *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

/// Per-request choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Allow `http://` as well as `https://` (for content that is verified by other
    /// means, such as a certificate checked against its issuer).
    pub allow_http: bool,
    /// A smaller (or larger) body cap than the fetcher's.
    pub max_bytes: Option<usize>,
}

/// Cheap to clone; one TLS configuration shared by all clones.
#[derive(Clone)]
pub struct Fetcher(Arc<Inner>);

struct Inner {
    tls: tokio_rustls::TlsConnector,
    extra_roots: Vec<CertificateDer<'static>>,
    allow_loopback: bool,
    timeout: Duration,
    max_bytes: usize,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("extra_roots", &self.0.extra_roots.len())
            .field("allow_loopback", &self.0.allow_loopback)
            .field("timeout", &self.0.timeout)
            .field("max_bytes", &self.0.max_bytes)
            .finish()
    }
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`Fetcher`].
#[derive(Debug, Clone)]
pub struct FetcherBuilder {
    roots: Vec<Vec<u8>>,
    allow_loopback: bool,
    timeout: Duration,
    max_bytes: usize,
}

impl FetcherBuilder {
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Trusts one more CA certificate (DER) beside Mozilla's roots: for tests against a
    /// local server with its own CA. No configuration variable leads here.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.push(der.into());
        self
    }

    /// Lets fetches reach loopback addresses (127/8, ::1): for tests that serve from
    /// this machine. Every other inside range stays refused. No configuration variable
    /// leads here.
    pub fn allow_loopback_for_tests(mut self) -> Self {
        self.allow_loopback = true;
        self
    }

    pub fn build(self) -> Result<Fetcher, FetchError> {
        let bad_root = |reason: String| FetchError::Tls {
            host: "(configuration)".into(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut extra_roots = Vec::new();
        for der in self.roots {
            let cert = CertificateDer::from(der);
            roots
                .add(cert.clone())
                .map_err(|e| bad_root(format!("an added root certificate: {e}")))?;
            extra_roots.push(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_root(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher(Arc::new(Inner {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            extra_roots,
            allow_loopback: self.allow_loopback,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
        })))
    }
}

/// Aborts the connection task when the exchange ends or is dropped (timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Fetcher {
    /// Mozilla's roots, public addresses only, 10 s, 1 MiB.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the built-in roots and the ring provider are valid")
    }

    pub fn builder() -> FetcherBuilder {
        FetcherBuilder {
            roots: Vec::new(),
            allow_loopback: false,
            timeout: DEFAULT_TIMEOUT,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// CA certificates trusted beside Mozilla's roots (tests only; empty otherwise).
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.0.extra_roots
    }

    /// GETs an https URL; the body of a 2xx answer.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        self.get_with(url, Options::default()).await
    }

    pub async fn get_with(&self, url: &str, options: Options) -> Result<Vec<u8>, FetchError> {
        let url = Url::parse(url).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" if options.allow_http => false,
            other => return Err(FetchError::Scheme(other.to_string())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::InvalidUrl(
                "the URL carries credentials, which are never sent".into(),
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| FetchError::InvalidUrl("the URL has no host".into()))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::InvalidUrl("the URL has no port".into()))?;
        let max = options.max_bytes.unwrap_or(self.0.max_bytes);
        let timeout = self.0.timeout;
        tokio::time::timeout(timeout, self.fetch(&url, host, port, tls, max))
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }

    async fn fetch(
        &self,
        url: &Url,
        host: Host<String>,
        port: u16,
        tls: bool,
        max: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let addrs = self.resolve(&host, port).await?;
        let tcp = connect(&host, &addrs).await?;
        let _ = tcp.set_nodelay(true);
        let authority = &url[Position::BeforeHost..Position::AfterPort];
        let target = match &url[Position::BeforePath..Position::AfterQuery] {
            "" => "/",
            t => t,
        };
        if !tls {
            return exchange(tcp, authority, target, max).await;
        }
        let name = match &host {
            Host::Domain(d) => ServerName::try_from(d.clone()).map_err(|e| FetchError::Tls {
                host: d.clone(),
                reason: e.to_string(),
            })?,
            Host::Ipv4(a) => ServerName::IpAddress(IpAddr::V4(*a).into()),
            Host::Ipv6(a) => ServerName::IpAddress(IpAddr::V6(*a).into()),
        };
        let stream = self
            .0
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Tls {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        exchange(stream, authority, target, max).await
    }

    /// Every address the host resolves to, each one checked; refused if any is not
    /// public (a name that mixes public and inside answers is not trusted either).
    async fn resolve(&self, host: &Host<String>, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
        let mut ips: Vec<IpAddr> = match host {
            Host::Ipv4(a) => vec![IpAddr::V4(*a)],
            Host::Ipv6(a) => vec![IpAddr::V6(*a)],
            Host::Domain(d) => tokio::net::lookup_host((d.as_str(), port))
                .await
                .map_err(|e| FetchError::Resolve {
                    host: d.clone(),
                    reason: e.to_string(),
                })?
                .map(|sa| sa.ip())
                .collect(),
        };
        ips.dedup();
        if ips.is_empty() {
            return Err(FetchError::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        for ip in &ips {
            let class = ip::classify(*ip);
            let allowed = class.is_public() || (class == Class::Loopback && self.0.allow_loopback);
            if !allowed {
                return Err(FetchError::Refused {
                    host: host.to_string(),
                    addr: *ip,
                    class,
                });
            }
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// The first checked address that accepts.
async fn connect(host: &Host<String>, addrs: &[SocketAddr]) -> Result<TcpStream, FetchError> {
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(FetchError::Connect {
        host: host.to_string(),
        reason: last,
    })
}

async fn exchange<S>(
    stream: S,
    authority: &str,
    target: &str,
    max: usize,
) -> Result<Vec<u8>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| FetchError::Protocol(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = Request::get(target)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(protocol)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect {
            status: status.as_u16(),
            location: response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
    }
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(protocol)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_https_unless_asked_and_no_credentials() {
        let f = Fetcher::new();
        for (url, http) in [
            ("http://example.com/", false),
            ("ftp://example.com/x", true),
            ("file:///etc/passwd", true),
            ("gopher://example.com/", true),
        ] {
            let options = Options {
                allow_http: http,
                ..Options::default()
            };
            assert!(
                matches!(f.get_with(url, options).await, Err(FetchError::Scheme(_))),
                "{url}"
            );
        }
        assert!(matches!(
            f.get("https://user:pw@example.com/").await,
            Err(FetchError::InvalidUrl(_))
        ));
        assert!(matches!(
            f.get("not a url").await,
            Err(FetchError::InvalidUrl(_))
        ));
    }

    /// Addresses written into the URL are checked like resolved ones, in every spelling
    /// the URL parser accepts; nothing is connected to.
    #[tokio::test]
    async fn inside_addresses_are_refused_before_connecting() {
        let f = Fetcher::new();
        for url in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1:8443/",
            "https://[fd00::1]/",
            "https://0.0.0.0/",
            "https://100.64.1.1/",
        ] {
            match f.get(url).await {
                Err(FetchError::Refused { class, .. }) => assert!(!class.is_public(), "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        // Loopback allowed for tests still refuses the rest.
        let t = Fetcher::builder()
            .allow_loopback_for_tests()
            .build()
            .unwrap();
        assert!(matches!(
            t.get("https://169.254.169.254/").await,
            Err(FetchError::Refused {
                class: Class::LinkLocal,
                ..
            })
        ));
    }

    #[test]
    fn transient_errors_are_the_networks_and_the_servers() {
        assert!(FetchError::Timeout(DEFAULT_TIMEOUT).is_transient());
        assert!(FetchError::Status(503).is_transient());
        assert!(!FetchError::Status(404).is_transient());
        assert!(!FetchError::TooLarge(1).is_transient());
        assert!(
            !FetchError::Refused {
                host: "x".into(),
                addr: "10.0.0.1".parse().unwrap(),
                class: Class::Private
            }
            .is_transient()
        );
    }
}
