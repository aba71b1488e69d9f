//! The SMTP client: a pool of lettre connections over sockets we open ourselves.
//!
//! lettre's own pooled transport leaves Nagle's algorithm on (no `TCP_NODELAY`; fixed
//! upstream in lettre PR #1159, not yet released in 0.11.x). Every message ends with two
//! writes — the body, then `\r\n.\r\n` — and the second waits for the server's delayed
//! ACK: 40 ms per message per connection, which capped a pool of 8 at ~150 messages/s.
//! So connections are built here with `TCP_NODELAY` and handed to lettre's
//! `AsyncSmtpConnection`, which still speaks the protocol (EHLO, STARTTLS, AUTH, MAIL,
//! RCPT, DATA, dot-stuffing). The pool also skips lettre's `NOOP` before every reuse: a
//! connection idle for a few seconds is checked, a busy one is not (if it broke, the send
//! fails without a reply and the message goes back to the queue unspent).
//!
//! The message transaction itself (MAIL, RCPT, DATA, the body) is written here on
//! lettre's connection, by a [`Session`]: a sending slot holds one connection for a run
//! of messages. When the server offers `PIPELINING` (RFC 2920) the three commands go out
//! in one write and their replies are read in order; and when the slot already has its
//! next message, that message's commands go out in the same write as the current body
//! (message content may be the first "command" of a group), so a message costs one
//! round trip instead of the four of a plain exchange. The body is dot-stuffed in one
//! pass and written with its terminating `.` in one write. A failure without a reply,
//! or a refused command, ends the session, as in lettre, and a server left waiting for a
//! body after a failed recipient is disconnected rather than sent a body.
//!
//! `SMTP_URL` is read like lettre's `from_url`: `smtp://` plain (port 25), with
//! `?tls=required` or `?tls=opportunistic` STARTTLS (port 587), `smtps://` implicit TLS
//! (port 465); `user:password@` authenticates; a path sets the EHLO name.

use std::{
    borrow::Cow,
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        self,
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
        commands::{Data, Ehlo, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
        response::{Code, Response},
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// Reused without a `NOOP` when idle for less than this.
const FRESH: Duration = Duration::from_secs(5);
/// Closed rather than reused when idle for longer (servers drop idle sessions).
const STALE: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Tls {
    None,
    /// STARTTLS when the server offers it.
    Opportunistic(TlsParameters),
    /// STARTTLS or no session.
    Required(TlsParameters),
    /// Implicit TLS from the first byte (`smtps://`).
    Wrapper(TlsParameters),
}

struct Server {
    host: String,
    port: u16,
    tls: Tls,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
}

/// A pool of SMTP connections to one server; cloning shares it.
#[derive(Clone)]
pub struct SmtpPool {
    server: Arc<Server>,
    idle: Arc<Mutex<Vec<(Conn, Instant)>>>,
    max_idle: usize,
    /// Whether a message's commands may go behind the previous body. Cleared, for good,
    /// by a server that offers PIPELINING but leaves such commands unanswered: after one
    /// timeout, each message waits for the last one's reply instead.
    chaining: Arc<AtomicBool>,
}

/// A session, and whether its server takes pipelined commands.
struct Conn {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

/// Why a send failed. Mirrors the parts of lettre's error the sender classifies on.
#[derive(Debug)]
pub enum SendError {
    Smtp(smtp::Error),
    /// No session: the greeting, TLS or login failed. Nothing was attempted for the
    /// message (a wrong password must not bounce the whole queue).
    Session(smtp::Error),
    /// The server could not be reached (connect refused, no route, name not found).
    Connect(io::Error),
    /// The server took the connection but no session opened in time (no greeting, or
    /// EHLO, TLS or login hung). Nothing was attempted for the message.
    SessionTimeout,
    /// The connection broke during a message's exchange on a session opened for it,
    /// with no reply: the server may have taken the message (see `SmtpPool::send`).
    Lost(smtp::Error),
    /// The message's exchange took longer than the timeout (the server may have taken
    /// the message if it went silent after the body).
    Timeout,
    /// The message needs an extension the server does not offer (SMTPUTF8 for a
    /// non-ASCII address, 8BITMIME for a UTF-8 body): no retry can help.
    Unsupported(&'static str),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Smtp(e) => write!(f, "{e}"),
            SendError::Session(e) => write!(f, "could not open an SMTP session: {e}"),
            SendError::Connect(e) => write!(f, "connection error: {e}"),
            SendError::SessionTimeout => f.write_str(
                "timed out opening an SMTP session (no greeting, EHLO, TLS or login reply)",
            ),
            SendError::Lost(e) => write!(f, "connection lost during the message: {e}"),
            SendError::Timeout => f.write_str("timed out talking to the SMTP server"),
            SendError::Unsupported(what) => write!(f, "the SMTP server does not support {what}"),
        }
    }
}

impl std::error::Error for SendError {}

impl SendError {
    /// The reply code, when the server answered with an error.
    pub fn status(&self) -> Option<Code> {
        match self {
            SendError::Smtp(e) => e.status(),
            _ => None,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }

    pub fn is_timeout(&self) -> bool {
        match self {
            SendError::Smtp(e) | SendError::Lost(e) => e.is_timeout(),
            SendError::Session(_) => false,
            SendError::Connect(e) => e.kind() == io::ErrorKind::TimedOut,
            SendError::SessionTimeout | SendError::Timeout => true,
            SendError::Unsupported(_) => false,
        }
    }

    /// The server cannot take this message as it is, however often it is tried.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, SendError::Unsupported(_))
    }

    /// No session was opened, so nothing was attempted for the message: the server is
    /// unreachable (refused, hung before or during EHLO/TLS/login, wrong password).
    pub fn no_session(&self) -> bool {
        matches!(
            self,
            SendError::Connect(_) | SendError::Session(_) | SendError::SessionTimeout
        )
    }

    /// The connection broke mid-message on a session opened for it.
    pub fn is_lost(&self) -> bool {
        matches!(self, SendError::Lost(_))
    }
}

impl SmtpPool {
    /// From an `SMTP_URL` (see the module notes). Keeps up to `pool_size` idle connections.
    /// `extra_ca`: PEM certificates trusted besides the public roots (a private relay's
    /// own CA, `SMTP_CA_FILE`).
    pub fn from_url(
        url: &str,
        pool_size: usize,
        timeout: Duration,
        extra_ca: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("SMTP_URL: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls_mode = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || {
            let mut b = TlsParameters::builder(host.clone());
            if let Some(pem) = extra_ca {
                let cert = smtp::client::Certificate::from_pem(pem)
                    .map_err(|e| anyhow::anyhow!("SMTP_CA_FILE: not a PEM certificate: {e}"))?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| anyhow::anyhow!("SMTP_URL: TLS: {e}"))
        };
        let (tls, default_port) = match (parsed.scheme(), tls_mode.as_deref()) {
            ("smtp", None) => (Tls::None, 25),
            ("smtp", Some("required")) => (Tls::Required(params()?), 587),
            ("smtp", Some("opportunistic")) => (Tls::Opportunistic(params()?), 587),
            ("smtps", _) => (Tls::Wrapper(params()?), 465),
            (scheme, tls) => anyhow::bail!(
                "SMTP_URL: unknown scheme {scheme:?} or tls={tls:?} (smtp://, smtp://…?tls=required|opportunistic, smtps://)"
            ),
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        let decode = |s: &str| -> anyhow::Result<String> {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| anyhow::anyhow!("SMTP_URL: the user or password is not UTF-8"))
        };
        let credentials = match parsed.password() {
            Some(p) => Some(Credentials::new(decode(parsed.username())?, decode(p)?)),
            None => None,
        };
        Ok(Self {
            server: Arc::new(Server {
                host,
                port: parsed.port().unwrap_or(default_port),
                tls,
                hello,
                credentials,
                timeout,
            }),
            idle: Arc::new(Mutex::new(Vec::new())),
            chaining: Arc::new(AtomicBool::new(true)),
            max_idle: pool_size.max(1),
        })
    }

    /// Sends one formatted message on a pooled connection (or a new one): a session for
    /// just this message.
    pub async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Result<Response, SendError> {
        let mut session = self.session();
        let opened = session.open(envelope, raw).await?;
        session.finish(opened, None).await.0
    }

    /// A sending slot's hold on one connection for a run of messages (see [`Session`]).
    pub fn session(&self) -> Session<'_> {
        Session {
            pool: self,
            conn: None,
            fresh: false,
            busy: false,
            used: Instant::now(),
        }
    }

    /// An idle connection that is still good, if any.
    async fn take(&self) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let idle = since.elapsed();
            if idle < FRESH {
                return Some(conn);
            }
            if idle < STALE
                && tokio::time::timeout(Duration::from_secs(5), conn.smtp.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Some(conn);
            }
            tokio::spawn(async move { conn.smtp.abort().await });
        }
    }

    /// Back into the pool, idle since `since`.
    fn put_since(&self, conn: Conn, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, since));
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let s = &*self.server;
        let tcp = TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(SendError::Connect)?;
        // The point of this module: no 40 ms wait for the delayed ACK.
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        let mut conn = match &s.tls {
            Tls::Wrapper(params) => {
                #[allow(deprecated)]
                let mut stream =
                    smtp::client::AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream
                    .upgrade_tls(params.clone())
                    .await
                    .map_err(SendError::Session)?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(Implicit(stream.compat())),
                    &s.hello,
                )
                .await
                .map_err(SendError::Session)?
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &s.hello)
                .await
                .map_err(SendError::Session)?,
        };
        match &s.tls {
            Tls::Required(params) => conn
                .starttls(params.clone(), &s.hello)
                .await
                .map_err(SendError::Session)?,
            Tls::Opportunistic(params) if conn.can_starttls() => conn
                .starttls(params.clone(), &s.hello)
                .await
                .map_err(SendError::Session)?,
            _ => {}
        }
        // lettre keeps only the extensions it uses from the greeting, so ask again
        // (before AUTH: a new EHLO resets the session).
        let hello = conn
            .command(Ehlo::new(s.hello.clone()))
            .await
            .map_err(SendError::Session)?;
        let pipelining = hello.message().skip(1).any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case("PIPELINING"))
        });
        if let Some(credentials) = &s.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(SendError::Session)?;
        }
        Ok(Conn {
            smtp: conn,
            pipelining,
        })
    }
}

/// One connection held by a sending slot across a run of messages.
///
/// A message is [`open`](Session::open)ed (MAIL, RCPT, DATA, pipelined when the server
/// offers `PIPELINING`) and then [`finish`](Session::finish)ed with its body. When the
/// slot already has its next message, `finish` writes that message's MAIL, RCPT and
/// DATA right behind the body's terminating dot — RFC 2920 allows message content as
/// the first "command" of a group — so with a pipelining server a message costs one
/// round trip instead of two. A server that offers PIPELINING but leaves such commands
/// unanswered costs one timeout (the message goes out on its own, unspent); the pool
/// then stops chaining.
///
/// A refused command before the body ends the session, as in lettre: the connection is
/// closed with `QUIT` when the exchange is in step, or simply dropped when the server is
/// waiting for a body. So does a refused body, a `421` (the server is closing), and any
/// failure without a reply (the connection is dropped). After an accepted body, or a
/// refused one with commands of the next message behind it, the server is in step and
/// the session goes on. A connection is only ever taken for one message's exchange at a
/// time; what a reply belongs to is fixed by the order of the commands. A session dropped
/// between messages puts its connection back in the pool; one dropped in the middle of
/// an exchange (replies still due, or a body awaited) closes it.
pub struct Session<'a> {
    pool: &'a SmtpPool,
    conn: Option<Conn>,
    /// The connection was opened for the message being opened (not pooled, not reused).
    fresh: bool,
    /// An exchange is under way: replies are still due, or the server waits for a body.
    busy: bool,
    /// When the connection last finished an exchange.
    used: Instant,
}

/// A message the server waits for the body of (DATA answered 354), or one already sent
/// whole (a body that is not UTF-8 goes through lettre's own transaction).
pub enum Opened {
    Waiting(String),
    Sent(Response),
}

/// What became of the next message whose commands went out behind a body.
pub enum Chained {
    /// Nothing went out for it: open it on its own (a new connection if this one ended).
    NotTried,
    /// The server waits for its body: finish it on this session.
    Opened(Opened),
    /// The server refused it (a reply with a code); the session is over.
    Refused(SendError),
}

/// What to send for one message, checked against the server's extensions.
struct Transaction {
    commands: Vec<String>,
    body: String,
}

impl Session<'_> {
    /// Starts a message: MAIL, RCPT, DATA. On success the server waits for its body.
    pub async fn open(&mut self, envelope: &Envelope, raw: &[u8]) -> Result<Opened, SendError> {
        debug_assert!(!self.busy, "a message is already open");
        let timeout = self.pool.server.timeout;
        // A connection held idle for a while is checked (or replaced) like a pooled one.
        if self.used.elapsed() >= FRESH
            && let Some(conn) = self.conn.take()
        {
            self.pool.put_since(conn, self.used);
        }
        if self.conn.is_none() {
            match self.pool.take().await {
                Some(c) => (self.conn, self.fresh) = (Some(c), false),
                None => {
                    let c = tokio::time::timeout(timeout, self.pool.connect())
                        .await
                        .map_err(|_| SendError::SessionTimeout)??;
                    (self.conn, self.fresh) = (Some(c), true);
                }
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        let t = transaction(conn, envelope, raw)?;
        self.busy = true;
        let Some(t) = t else {
            // Not UTF-8: lettre's own transaction takes bytes.
            let sent = tokio::time::timeout(timeout, conn.smtp.send(envelope, raw)).await;
            return match sent {
                Ok(Ok(reply)) => {
                    self.done();
                    Ok(Opened::Sent(reply))
                }
                Ok(Err(e)) => Err(self.ended(SendError::Smtp(e))),
                Err(_) => Err(self.ended(SendError::Timeout)),
            };
        };
        match tokio::time::timeout(timeout, commands(conn, &t.commands, false)).await {
            // Busy still: the server waits for the body.
            Ok(Ok(())) => Ok(Opened::Waiting(t.body)),
            Ok(Err(e)) => Err(self.ended(SendError::Smtp(e))),
            Err(_) => Err(self.ended(SendError::Timeout)),
        }
    }

    /// Sends an opened message's body and reads its reply. With `next` (a message of this
    /// slot's, not yet opened) and a pipelining server, the next message's MAIL, RCPT and
    /// DATA go out in the same write, and what became of them is returned too.
    pub async fn finish(
        &mut self,
        opened: Opened,
        next: Option<(&Envelope, &[u8])>,
    ) -> (Result<Response, SendError>, Chained) {
        let body = match opened {
            Opened::Sent(reply) => return (Ok(reply), Chained::NotTried),
            Opened::Waiting(body) => body,
        };
        let timeout = self.pool.server.timeout;
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("an opened message holds its connection")
        };
        // The next message rides along only if it can go as it is (its extensions
        // checked here; if not, `open` reports why).
        let chained = match next {
            Some((envelope, raw))
                if conn.pipelining && self.pool.chaining.load(Ordering::Relaxed) =>
            {
                transaction(conn, envelope, raw).ok().flatten()
            }
            _ => None,
        };
        let mut write = body;
        if let Some(t) = &chained {
            write.extend(t.commands.iter().map(String::as_str));
        }
        // The connection answered DATA, so it was not stale: if it breaks now, with no
        // final reply, the server may have taken the message — on a pooled connection as
        // on a fresh one — so the attempt counts.
        let reply = match tokio::time::timeout(timeout, conn.smtp.command(Raw(&write))).await {
            Ok(Ok(reply)) => Ok(reply),
            // No reply: the session is over, and nothing was read for the next message.
            Ok(Err(e)) if e.status().is_none() => {
                self.drop_connection();
                let e = if e.is_client() {
                    SendError::Smtp(e)
                } else {
                    SendError::Lost(e)
                };
                return (Err(e), Chained::NotTried);
            }
            Ok(Err(e)) => Err(SendError::Smtp(e)),
            Err(_) => {
                self.drop_connection();
                return (Err(SendError::Timeout), Chained::NotTried);
            }
        };
        // 421: the server is closing the connection.
        let closing =
            matches!(&reply, Err(e) if e.status().is_some_and(|c| c.to_string() == "421"));
        let chained = match chained {
            Some(t) if !closing => t,
            // A refused body with nothing behind it ends the session (dropped rather than
            // sent a `QUIT` that a server gone silent would never answer); so does a
            // `421`, whatever rode along (nothing was taken for it).
            _ if reply.is_err() => {
                self.drop_connection();
                return (reply, Chained::NotTried);
            }
            _ => {
                self.done();
                return (reply, Chained::NotTried);
            }
        };
        // The body's reply is in; the next message's replies follow it.
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("kept above")
        };
        let next =
            match tokio::time::timeout(timeout, commands(conn, &chained.commands, true)).await {
                Ok(Ok(())) => {
                    // The current exchange ended in step; the next one is under way (the
                    // server waits for its body).
                    self.done();
                    self.busy = true;
                    return (reply, Chained::Opened(Opened::Waiting(chained.body)));
                }
                // Refused with a reply: that is the next message's outcome.
                Ok(Err(e)) if e.status().is_some() => Chained::Refused(SendError::Smtp(e)),
                // Silent after the body's reply: a server that does not take commands
                // behind a body after all. Nothing was taken for the message; it opens on
                // its own, and later ones no longer ride along.
                Err(_) => {
                    if self.pool.chaining.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            "the SMTP server left commands sent behind a message body unanswered; \
                             from now on each message waits for the previous one's reply"
                        );
                    }
                    Chained::NotTried
                }
                // No reply (the connection broke after the body's reply): nothing was
                // taken for it; it opens on its own.
                Ok(Err(_)) => Chained::NotTried,
            };
        self.drop_connection();
        (reply, next)
    }

    /// An exchange ended in step: the connection stays for the next message.
    fn done(&mut self) {
        self.fresh = false;
        self.busy = false;
        self.used = Instant::now();
    }

    /// The session is over; the connection is closed without a word.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.busy = false;
    }

    /// The session is over (`commands` already closed or dropped what it could); a
    /// connection opened for this message that broke without a reply may have taken
    /// part of it, so the attempt counts.
    fn ended(&mut self, e: SendError) -> SendError {
        let fresh = std::mem::take(&mut self.fresh);
        self.drop_connection();
        match e {
            SendError::Smtp(e) if fresh && e.status().is_none() && !e.is_client() => {
                SendError::Lost(e)
            }
            e => e,
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.busy
        {
            self.pool.put_since(conn, self.used);
        }
    }
}

/// The commands and data block for a message, after checking that the server offers
/// what it needs. `None` when the bytes are not UTF-8 (lettre's commands are text).
fn transaction(
    conn: &Conn,
    envelope: &Envelope,
    raw: &[u8],
) -> Result<Option<Transaction>, SendError> {
    let info = conn.smtp.server_info();
    let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
    let utf8_envelope =
        envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii);
    if utf8_envelope && !info.supports_feature(Extension::SmtpUtfEight) {
        return Err(SendError::Unsupported(
            "SMTPUTF8, needed for a non-ASCII address",
        ));
    }
    if !raw.is_ascii() && !info.supports_feature(Extension::EightBitMime) {
        return Err(SendError::Unsupported(
            "8BITMIME, needed for a UTF-8 message",
        ));
    }
    let Some(body) = data_block(raw) else {
        return Ok(None);
    };
    let mut options = Vec::new();
    if utf8_envelope {
        options.push(MailParameter::SmtpUtfEight);
    }
    if !raw.is_ascii() {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mut commands = vec![Mail::new(envelope.from().cloned(), options).to_string()];
    commands.extend(
        envelope
            .to()
            .iter()
            .map(|to| Rcpt::new(to.clone(), vec![]).to_string()),
    );
    commands.push(Data.to_string());
    Ok(Some(Transaction { commands, body }))
}

/// MAIL, RCPT…, DATA and their replies, until the server waits for the body. With
/// `written`, the commands already went out (behind the previous body) and only their
/// replies are read. On a refusal the session is over: ended with `QUIT` when the
/// exchange is in step, or left to be dropped when the server waits for a body (a `354`
/// after a refused recipient), so nothing half-sent can be taken for a message.
async fn commands(conn: &mut Conn, commands: &[String], written: bool) -> Result<(), smtp::Error> {
    let mut refused = None;
    let mut waiting_for_body = false;
    if conn.pipelining {
        let last = commands.len() - 1;
        for i in 0..=last {
            let reply = if i == 0 && !written {
                conn.smtp.command(Raw(&commands.concat())).await
            } else {
                conn.smtp.read_response().await
            };
            match reply {
                Ok(_) => waiting_for_body = i == last,
                // No reply at all (connection lost, garbage): nothing more to read; a
                // refusal already read (say a 421 before the server hung up) says more.
                Err(e) if e.status().is_none() => return Err(refused.unwrap_or(e)),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
    } else {
        for command in commands {
            if let Err(e) = conn.smtp.command(Raw(command)).await {
                if e.status().is_none() {
                    return Err(e);
                }
                refused = Some(e);
                break;
            }
        }
    }
    match refused {
        None => Ok(()),
        Some(e) => {
            if !waiting_for_body {
                conn.smtp.abort().await;
            }
            Err(e)
        }
    }
}

/// A message as written after `DATA`: every line starting with `.` gets another (RFC
/// 5321 4.5.2, the same transparency as lettre's codec: a line starts after CRLF), then
/// CRLF `.` CRLF. `None` when the bytes are not UTF-8 (lettre's commands are text).
fn data_block(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(raw.len() + 64);
    if text.starts_with('.') {
        out.push('.');
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(raw, b"\r\n.") {
        out.push_str(&text[from..at + 2]);
        out.push('.');
        from = at + 2;
    }
    out.push_str(&text[from..]);
    out.push_str("\r\n.\r\n");
    Some(out)
}

/// Text written as is by lettre's `command`.
struct Raw<'a>(&'a str);

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An implicit-TLS stream (lettre's TLS over our no-delay socket) presented to lettre's
/// connection as a plain stream, so the session starts inside TLS.
#[allow(deprecated)]
#[derive(Debug)]
struct Implicit(Compat<smtp::client::AsyncNetworkStream>);

impl AsyncRead for Implicit {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Implicit {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Implicit {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> Arc<Server> {
        SmtpPool::from_url(url, 4, Duration::from_secs(30), None)
            .unwrap()
            .server
    }

    #[test]
    fn urls_read_like_lettres() {
        let s = server("smtp://127.0.0.1:2525");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2525));
        assert!(matches!(s.tls, Tls::None) && s.credentials.is_none());
        let s = server("smtp://u%40x:p%3Aw@mail.example?tls=required");
        assert_eq!((s.host.as_str(), s.port), ("mail.example", 587));
        assert!(matches!(s.tls, Tls::Required(_)));
        assert_eq!(
            s.credentials,
            Some(Credentials::new("u@x".into(), "p:w".into()))
        );
        let s = server("smtp://mail.example:2587?tls=opportunistic");
        assert!(matches!(s.tls, Tls::Opportunistic(_)) && s.port == 2587);
        let s = server("smtps://mail.example/sender.example");
        assert!(matches!(s.tls, Tls::Wrapper(_)) && s.port == 465);
        assert_eq!(s.hello, ClientId::Domain("sender.example".into()));
        assert_eq!(server("smtp://[::1]:25").host, "::1");
        for bad in ["http://x", "smtp://x?tls=maybe", "smtp://", "nonsense"] {
            assert!(
                SmtpPool::from_url(bad, 1, Duration::from_secs(1), None).is_err(),
                "{bad}"
            );
        }
    }

    /// lettre's transparency codec (`ClientCodec::encode` in lettre 0.11.23), kept here to
    /// check ours against: a `.` right after CRLF, or first, is doubled.
    fn lettres_stuffing(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut after_cr, mut line_start) = (false, true);
        for &b in raw {
            out.push(b);
            if b == b'.' && line_start {
                out.push(b'.');
            }
            line_start = after_cr && b == b'\n';
            after_cr = b == b'\r';
        }
        out.extend_from_slice(b"\r\n.\r\n");
        out
    }

    #[test]
    fn the_data_block_is_dot_stuffed_like_lettres() {
        for raw in [
            "",
            ".",
            ".hidden\r\n..two\r\n",
            "a\r\n.\r\nb",
            "a\r\n.\r\n.\r\n",
            "a\n.lone lf is not a line start\r.nor cr",
            "a\r\r\n.after a stray CR",
            "제목: 안녕하세요\r\n.점으로 시작\r\n끝",
            "ends with a line\r\n",
            "ends with a dot\r\n.",
        ] {
            let ours = data_block(raw.as_bytes()).unwrap();
            assert_eq!(ours.as_bytes(), lettres_stuffing(raw.as_bytes()), "{raw:?}");
        }
        assert!(data_block(b"\xff\xfe not utf-8").is_none());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connect_error_without_a_reply() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = SmtpPool::from_url(
            &format!("smtp://127.0.0.1:{port}"),
            1,
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        let message = lettre::Message::builder()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .body(String::from("hi"))
            .unwrap();
        let err = pool
            .send(message.envelope(), &message.formatted())
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
        assert!(err.status().is_none() && !err.is_permanent() && !err.is_timeout());
    }
}
