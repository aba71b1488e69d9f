//! The harness's SMTP server is real: lettre talks SMTP to aiosmtpd, and the test
//! parses the MIME that arrived. Korean survives headers and body.

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::header::ContentType,
};
use mailparse::MailHeaderMap;

use crate::harness::SmtpServer;

#[tokio::test]
async fn korean_mail_round_trips_through_a_real_smtp_server() {
    let smtp = SmtpServer::start();
    let mailer: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(smtp.port)
            .build();
    let message = Message::builder()
        .from("홍길동 <sender@example.kr>".parse().unwrap())
        .to("김철수 <user@example.kr>".parse().unwrap())
        .subject("3일 연속 미오픈 — 관심이 줄었나요?")
        .header(ContentType::TEXT_PLAIN)
        .body("안녕하세요, 홍길동입니다. 마케팅 사례를 보내드립니다.".to_string())
        .unwrap();
    mailer.send(message).await.unwrap();

    let received = smtp.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let parsed = mailparse::parse_mail(&received[0]).unwrap();
    assert_eq!(
        parsed.headers.get_first_value("Subject").as_deref(),
        Some("3일 연속 미오픈 — 관심이 줄었나요?")
    );
    assert!(
        parsed
            .headers
            .get_first_value("From")
            .unwrap()
            .contains("홍길동")
    );
    assert_eq!(
        parsed.headers.get_first_value("X-RcptTo").as_deref(),
        Some("user@example.kr"),
        "the envelope recipient is recorded"
    );
    assert_eq!(
        parsed.get_body().unwrap().trim(),
        "안녕하세요, 홍길동입니다. 마케팅 사례를 보내드립니다."
    );
}
