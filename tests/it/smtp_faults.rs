//! SMTP servers that fail silently: one that takes the connection and never greets, one
//! that takes a whole message and then says nothing (or hangs up) instead of the final
//! reply. Nothing may be marked sent that was not confirmed, nothing may be lost, the
//! first must cost no attempt, the second must count its attempts (the server may have
//! kept the message, so retries stay bounded), and once a real server (aiosmtpd) is
//! back on the same port the message goes out exactly once.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use loopline::{
    clock::Clock,
    config::SmtpConfig,
    delivery::render::{BodyFormat, Draft},
    secrets::Secret,
    startup,
};
use mailparse::MailHeaderMap;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::harness::{SmtpServer, TestApp};

/// The SMTP timeout the tests run with (`SMTP_TIMEOUT_SECS`, shortened).
const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// None: every message is answered.
    None,
    /// Accept the TCP connection, then say nothing at all.
    NoGreeting,
    /// Answer everything up to and including the message's end, then say nothing.
    SilentAfterBody,
    /// Answer everything up to the message's end, then close the connection.
    HangUpAfterBody,
    /// Refuse the message after its body (554), then say nothing more, without closing.
    RefuseBodyThenSilent,
    /// Offer PIPELINING but throw away whatever came in behind a body (as a server that
    /// flushes its input after the data would).
    DropBehindBody,
    /// Take the first message of each connection normally; close the connection after
    /// the body of the second, with no reply (so it is a pooled connection that breaks).
    HangUpAfterSecondBody,
}

/// A network fault injector, not a stand-in for an SMTP library: a bare TCP listener
/// that speaks just enough SMTP by hand to reach the point where a real server could
/// fail, and fails there. Loopline's real client talks to it unchanged; real delivery
/// is always checked against aiosmtpd.
struct FaultyServer {
    port: u16,
    fault: Arc<Mutex<Fault>>,
    /// What arrived after DATA, up to the terminating dot, per message.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
    /// Bodies whose terminating dot arrived with the next message's commands behind it
    /// (already read from the socket when the body ended).
    chained: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl FaultyServer {
    async fn start(fault: Fault) -> Self {
        Self::start_with(fault, false).await
    }

    /// One that offers `PIPELINING` (its line reader takes commands as they come).
    async fn start_pipelining(fault: Fault) -> Self {
        Self::start_with(fault, true).await
    }

    async fn start_with(fault: Fault, pipelining: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(fault));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let chained = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (fault, bodies, connections, chained) = (
                fault.clone(),
                bodies.clone(),
                connections.clone(),
                chained.clone(),
            );
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let fault = *fault.lock().unwrap();
                    let seen = Seen {
                        bodies: bodies.clone(),
                        chained: chained.clone(),
                    };
                    tokio::spawn(session(socket, fault, pipelining, seen));
                }
            })
        };
        Self {
            port,
            fault,
            bodies,
            connections,
            chained,
            accept,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }

    /// Stops listening (the port is free for the real server once this returns).
    async fn stop(self) -> u16 {
        self.accept.abort();
        let _ = self.accept.await;
        self.port
    }
}

/// What a session reports back to its server.
struct Seen {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    chained: Arc<AtomicUsize>,
}

async fn session(socket: TcpStream, fault: Fault, pipelining: bool, seen: Seen) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    if fault == Fault::NoGreeting {
        // Hold the connection open, silent, until the client gives up.
        let _ = lines.read_to_end(&mut Vec::new()).await;
        return;
    }
    let _ = write.write_all(b"220 faults.test ESMTP\r\n").await;
    let mut line = Vec::new();
    let mut messages = 0;
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") && pipelining {
            b"250-faults.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("EHLO") {
            b"250-faults.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("HELO")
            || command.starts_with("MAIL")
            || command.starts_with("RCPT")
            || command.starts_with("RSET")
            || command.starts_with("NOOP")
        {
            b"250 OK\r\n"
        } else if command.starts_with("QUIT") {
            let _ = write.write_all(b"221 Bye\r\n").await;
            return;
        } else if command.starts_with("DATA") {
            let _ = write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await;
            let mut body = Vec::new();
            loop {
                line.clear();
                if lines.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == b".\r\n" {
                    break;
                }
                body.extend_from_slice(&line);
            }
            seen.bodies.lock().unwrap().push(body);
            let behind = lines.buffer().len();
            if behind > 0 {
                seen.chained.fetch_add(1, Ordering::SeqCst);
            }
            if fault == Fault::DropBehindBody {
                std::pin::Pin::new(&mut lines).consume(behind);
                if write.write_all(b"250 OK queued\r\n").await.is_err() {
                    return;
                }
                continue;
            }
            messages += 1;
            if fault == Fault::None || (fault == Fault::HangUpAfterSecondBody && messages == 1) {
                if write.write_all(b"250 OK queued\r\n").await.is_err() {
                    return;
                }
                continue;
            }
            if fault == Fault::RefuseBodyThenSilent {
                let _ = write.write_all(b"554 5.7.1 Message rejected\r\n").await;
                let _ = lines.read_to_end(&mut Vec::new()).await;
                return;
            }
            if fault == Fault::SilentAfterBody {
                let _ = lines.read_to_end(&mut Vec::new()).await;
            }
            // HangUpAfterBody: dropping the socket closes the connection, no reply.
            return;
        } else {
            b"500 Unknown command\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

async fn app_sending_to(port: u16) -> TestApp {
    app_sending_with(port, None).await
}

/// With `slots`, that many messages in flight (and connections) instead of the default.
async fn app_sending_with(port: u16, slots: Option<usize>) -> TestApp {
    TestApp::spawn_with(
        move |c| {
            if let Some(n) = slots {
                c.mail.concurrency = n;
            }
            c.smtp = Some(SmtpConfig {
                url: Secret::new(format!("smtp://127.0.0.1:{port}")),
            });
            c.mail.from_email = "news@example.com".into();
            c.mail.smtp_timeout = TIMEOUT;
        },
        startup::job_registry(),
    )
    .await
}

async fn queued_message(app: &TestApp, email: &str) -> (i64, i64) {
    let sid: i64 = sqlx::query_scalar(
        "INSERT INTO subscribers (email, status, created_at) VALUES ($1, 'active', now()) RETURNING id",
    )
    .bind(email)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let draft = Draft {
        subject: "This week".into(),
        preheader: String::new(),
        body: "Hello {{ subscriber.name or \"reader\" }}.".into(),
        format: BodyFormat::Markdown,
    };
    let id = crate::harness::queue_message(app, sid, &format!("faults:{email}"), draft).await;
    (sid, id)
}

/// status, attempts, SMTP reply, seconds until due (0 once out of the queue), Message-ID.
async fn row(app: &TestApp, id: i64) -> (String, i32, String, i64, Option<String>) {
    let (status, attempts, reply, run_at, message_id): (
        String,
        i32,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT m.status::text, m.attempts, m.smtp_reply, q.run_at, m.message_id
         FROM messages m LEFT JOIN message_queue q ON q.message_id = m.id WHERE m.id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // Not waiting (sent, failed): due now as far as anyone can tell.
    let due_in = run_at.map_or(0, |t| (t - app.clock.now()).num_seconds());
    (
        status,
        attempts,
        reply.unwrap_or_default(),
        due_in,
        message_id,
    )
}

async fn events(app: &TestApp, id: i64, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE message_id = $1 AND kind = $2 ORDER BY id")
        .bind(id)
        .bind(kind)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

fn message_id_of(raw: &[u8]) -> String {
    mailparse::parse_mail(raw)
        .unwrap()
        .headers
        .get_first_value("Message-ID")
        .unwrap_or_default()
}

/// The message waits for its next try with `attempt` attempts spent: queued, the reply
/// saying why, due after a backoff, one `deferred` event per attempt.
async fn deferred_with_attempt_spent(app: &TestApp, id: i64, attempt: i32, why: &str) {
    let (status, attempts, reply, due_in, _) = row(app, id).await;
    assert_eq!((status.as_str(), attempts), ("queued", attempt));
    assert!(reply.contains(why), "{reply}");
    assert!(due_in >= 29, "retried after a backoff: {due_in}");
    let deferred = events(app, id, "deferred").await;
    assert_eq!(deferred.len(), attempt as usize);
    assert_eq!(deferred[attempt as usize - 1]["attempt"], attempt);
}

/// Brings the real server up where the faulty one was and checks the message goes out
/// exactly once, with the Message-ID it had on every attempt.
async fn real_server_takes_it_once(
    app: &TestApp,
    faulty: FaultyServer,
    id: i64,
    expect_message_id: Option<&str>,
) {
    let port = faulty.stop().await;
    let smtp = SmtpServer::start_on(port);
    app.advance(chrono::Duration::hours(1));
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.total()), (1, 1), "{round:?}");
    let received = smtp.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let (status, _, reply, _, message_id) = row(app, id).await;
    assert_eq!(status, "sent");
    assert!(reply.starts_with("250"), "{reply}");
    let message_id = message_id.unwrap();
    assert_eq!(message_id_of(&received[0]), message_id);
    if let Some(expected) = expect_message_id {
        assert_eq!(message_id, expected, "one Message-ID on every attempt");
    }
    // Nothing left to send, nothing sent twice.
    app.advance(chrono::Duration::hours(1));
    assert_eq!(app.send_mail().await.total(), 0);
    assert_eq!(smtp.count(), 1);
    assert_eq!(events(app, id, "sent").await.len(), 1);
}

#[tokio::test]
async fn a_server_that_never_greets_holds_mail_back_without_spending_an_attempt() {
    let faulty = FaultyServer::start(Fault::NoGreeting).await;
    let app = app_sending_to(faulty.port).await;
    let (_, id) = queued_message(&app, "reader@example.com").await;

    let started = Instant::now();
    let round = app.send_mail().await;
    assert!(started.elapsed() >= TIMEOUT, "it waited for the greeting");
    assert!(
        started.elapsed() < TIMEOUT * 10,
        "and gave up: {:?}",
        started.elapsed()
    );
    assert_eq!(
        (round.sent, round.deferred, round.unreachable),
        (0, 0, 1),
        "{round:?}"
    );
    assert!(faulty.connections.load(Ordering::SeqCst) >= 1);
    assert!(faulty.bodies().is_empty());

    // No session, so nothing was attempted: queued, attempt not spent, no `deferred`
    // event, due again after the pause for an unreachable server.
    let (status, attempts, reply, due_in, _) = row(&app, id).await;
    assert_eq!((status.as_str(), attempts), ("queued", 0));
    assert!(
        reply.contains("timed out opening an SMTP session"),
        "{reply}"
    );
    assert!((1..=30).contains(&due_in), "{due_in}");
    assert!(events(&app, id, "deferred").await.is_empty());
    assert!(events(&app, id, "sent").await.is_empty());
    // Not due yet: nothing is tried meanwhile.
    assert_eq!(app.send_mail().await.total(), 0);

    real_server_takes_it_once(&app, faulty, id, None).await;
}

#[tokio::test]
async fn a_server_silent_or_hanging_up_after_the_body_gets_the_message_again_and_once() {
    let faulty = FaultyServer::start(Fault::SilentAfterBody).await;
    let app = app_sending_to(faulty.port).await;
    let (_, id) = queued_message(&app, "reader@example.com").await;

    // Silent after the body: the whole message reached the server, the final reply
    // never came. Not marked sent; deferred with the attempt counted.
    let started = Instant::now();
    let round = app.send_mail().await;
    assert!(started.elapsed() >= TIMEOUT);
    assert_eq!((round.sent, round.deferred), (0, 1), "{round:?}");
    let bodies = faulty.bodies();
    assert_eq!(bodies.len(), 1, "the server had the whole message");
    let first_id = message_id_of(&bodies[0]);
    assert!(first_id.starts_with(&format!("<{id}.")), "{first_id}");
    deferred_with_attempt_spent(&app, id, 1, "timed out").await;
    assert_eq!(app.send_mail().await.total(), 0, "not due yet");

    // Next time it hangs up instead of answering: the same, second attempt counted.
    faulty.set(Fault::HangUpAfterBody);
    app.advance(chrono::Duration::minutes(5));
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.deferred), (0, 1), "{round:?}");
    deferred_with_attempt_spent(&app, id, 2, "connection lost").await;
    let bodies = faulty.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(message_id_of(&bodies[1]), first_id);
    assert!(events(&app, id, "sent").await.is_empty());

    real_server_takes_it_once(&app, faulty, id, Some(&first_id)).await;
}

#[tokio::test]
async fn a_pooled_connection_that_breaks_after_the_body_spends_the_attempt_and_sends_once() {
    let faulty = FaultyServer::start(Fault::HangUpAfterSecondBody).await;
    let app = app_sending_to(faulty.port).await;
    let (_, first) = queued_message(&app, "first@example.com").await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.total()), (1, 1), "{round:?}");
    assert_eq!(row(&app, first).await.0, "sent");

    // The second message goes on the same, pooled connection, which the server closes
    // after the whole body without a reply: it may have the message, so this is not
    // a stale connection (tried again unspent, possibly forever) but a spent attempt.
    let (_, id) = queued_message(&app, "second@example.com").await;
    let round = app.send_mail().await;
    assert_eq!(
        faulty.connections.load(Ordering::SeqCst),
        1,
        "the pooled connection was used"
    );
    assert_eq!(
        (round.sent, round.deferred, round.unreachable),
        (0, 1, 0),
        "{round:?}"
    );
    let bodies = faulty.bodies();
    assert_eq!(bodies.len(), 2, "the server had the whole second message");
    let message_id = message_id_of(&bodies[1]);
    deferred_with_attempt_spent(&app, id, 1, "connection lost").await;

    real_server_takes_it_once(&app, faulty, id, Some(&message_id)).await;
}

/// With a server that offers `PIPELINING`, each message's MAIL, RCPT and DATA go out in
/// the same write as the previous message's body: one connection, one round trip a
/// message, and every message arrives once, under its own Message-ID.
#[tokio::test]
async fn with_pipelining_the_next_message_rides_behind_the_previous_body() {
    let faulty = FaultyServer::start_pipelining(Fault::None).await;
    let app = app_sending_with(faulty.port, Some(1)).await;
    let ids = queued_readers(&app, 4).await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.total()), (4, 4), "{round:?}");
    assert_eq!(faulty.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        faulty.chained.load(Ordering::SeqCst),
        3,
        "the second, third and fourth went behind a body"
    );
    each_sent_once_on_the_first_attempt(&app, &faulty, &ids).await;
}

/// A message that went behind the previous body, on a connection the server closes after
/// its own body with no reply: the first is sent, the second may have been taken, so its
/// attempt counts, and it goes out once later.
#[tokio::test]
async fn a_message_sent_behind_another_whose_connection_breaks_after_its_body_is_deferred_and_sent_once()
 {
    let faulty = FaultyServer::start_pipelining(Fault::HangUpAfterSecondBody).await;
    let app = app_sending_with(faulty.port, Some(1)).await;
    let (_, first) = queued_message(&app, "first@example.com").await;
    let (_, second) = queued_message(&app, "second@example.com").await;
    let round = app.send_mail().await;
    assert_eq!(
        (round.sent, round.deferred, round.unreachable),
        (1, 1, 0),
        "{round:?}"
    );
    assert_eq!(faulty.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        faulty.chained.load(Ordering::SeqCst),
        1,
        "the second rode along"
    );
    assert_eq!(row(&app, first).await.0, "sent");
    let bodies = faulty.bodies();
    assert_eq!(bodies.len(), 2, "the server had the whole second message");
    let message_id = message_id_of(&bodies[1]);
    deferred_with_attempt_spent(&app, second, 1, "connection lost").await;

    real_server_takes_it_once(&app, faulty, second, Some(&message_id)).await;
}

/// A server that refuses a message after its body and then goes silent without closing:
/// the refusal is the message's outcome at once, and the session is dropped rather than
/// left waiting for a reply to `QUIT` that never comes.
#[tokio::test]
async fn a_body_refused_by_a_server_that_then_goes_silent_is_bounced_without_waiting() {
    let faulty = FaultyServer::start(Fault::RefuseBodyThenSilent).await;
    let app = app_sending_to(faulty.port).await;
    let (sid, id) = queued_message(&app, "reader@example.com").await;
    let started = Instant::now();
    let round = app.send_mail().await;
    assert!(
        started.elapsed() < TIMEOUT,
        "no wait on the silent server: {:?}",
        started.elapsed()
    );
    assert_eq!((round.bounced, round.total()), (1, 1), "{round:?}");
    let (status, attempts, reply, _, _) = row(&app, id).await;
    assert_eq!((status.as_str(), attempts), ("bounced", 1));
    assert!(reply.contains("554"), "{reply}");
    // Not a "no such user" bounce: the address stays.
    let sub: String = sqlx::query_scalar("SELECT status::text FROM subscribers WHERE id = $1")
        .bind(sid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sub, "active");
    assert_eq!(faulty.bodies().len(), 1);
}

/// A server that offers PIPELINING but drops the commands that came in behind a body:
/// the message they were for waits one timeout, unanswered, then goes out on its own
/// without spending an attempt, and later messages no longer ride along (one timeout in
/// all, not one per message).
#[tokio::test]
async fn a_server_that_drops_commands_behind_a_body_costs_one_timeout_then_mail_goes_one_by_one() {
    let faulty = FaultyServer::start_pipelining(Fault::DropBehindBody).await;
    let app = app_sending_with(faulty.port, Some(1)).await;
    let ids = queued_readers(&app, 4).await;
    let started = Instant::now();
    let round = app.send_mail().await;
    let elapsed = started.elapsed();
    assert_eq!((round.sent, round.total()), (4, 4), "{round:?}");
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT * 2,
        "one timeout in all: {elapsed:?}"
    );
    assert_eq!(
        faulty.chained.load(Ordering::SeqCst),
        1,
        "only one rode along"
    );
    assert_eq!(faulty.connections.load(Ordering::SeqCst), 2);
    each_sent_once_on_the_first_attempt(&app, &faulty, &ids).await;
}

/// `n` messages queued for `reader0@…` onwards; their outbox ids.
async fn queued_readers(app: &TestApp, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            queued_message(app, &format!("reader{i}@example.com"))
                .await
                .1,
        );
    }
    ids
}

/// Each message is sent on its first attempt, with one `sent` event, and the server got
/// exactly one body with its Message-ID; nothing else arrived.
async fn each_sent_once_on_the_first_attempt(app: &TestApp, faulty: &FaultyServer, ids: &[i64]) {
    let received: Vec<String> = faulty.bodies().iter().map(|b| message_id_of(b)).collect();
    assert_eq!(received.len(), ids.len());
    for &id in ids {
        let (status, attempts, reply, _, message_id) = row(app, id).await;
        assert_eq!((status.as_str(), attempts), ("sent", 1));
        assert!(reply.starts_with("250"), "{reply}");
        let message_id = message_id.unwrap();
        assert_eq!(
            received.iter().filter(|r| **r == message_id).count(),
            1,
            "{message_id} arrived once"
        );
        assert_eq!(events(app, id, "sent").await.len(), 1);
    }
}
