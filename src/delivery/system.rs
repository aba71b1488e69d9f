//! Mail Loopline writes itself (the double opt-in confirmation), in the subscriber's
//! language when Loopline has it (English and Korean so far).

use sqlx::PgConnection;

use super::{
    outbox::{NewBody, insert_body},
    render::{BodyFormat, Draft},
};

struct Text {
    subject: &'static str,
    preheader: &'static str,
    body: &'static str,
}

const CONFIRM_EN: Text = Text {
    subject: "Please confirm your subscription",
    preheader: "One click and you are in.",
    body: "Hello {{ subscriber.first_name or \"there\" }},\n\n\
           Please confirm that you want to receive mail from **{{ form }}**:\n\n\
           [Confirm my subscription]({{ confirm_url }})\n\n\
           If you did not sign up, ignore this message and nothing will happen. \
           The link works for 7 days.",
};

const CONFIRM_KO: Text = Text {
    subject: "구독을 확인해 주세요",
    preheader: "한 번만 누르면 구독이 완료됩니다.",
    body: "{{ subscriber.name or \"구독자\" }}님, 안녕하세요.\n\n\
           **{{ form }}** 메일을 받으시려면 아래 버튼을 눌러 구독을 확인해 주세요.\n\n\
           [구독 확인하기]({{ confirm_url }})\n\n\
           직접 신청하지 않으셨다면 이 메일을 무시하셔도 됩니다. 링크는 7일 동안 유효합니다.",
};

/// The confirmation body for a language, stored once and shared.
pub async fn confirmation_body(
    conn: &mut PgConnection,
    language: Option<&str>,
) -> sqlx::Result<i64> {
    let t = match language {
        Some(l) if l.eq_ignore_ascii_case("ko") || l.to_ascii_lowercase().starts_with("ko-") => {
            &CONFIRM_KO
        }
        _ => &CONFIRM_EN,
    };
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM message_bodies WHERE purpose = 'confirmation' AND subject = $1 AND body = $2 ORDER BY id LIMIT 1",
    )
    .bind(t.subject)
    .bind(t.body)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    insert_body(
        conn,
        &NewBody {
            purpose: "confirmation".into(),
            draft: Draft {
                subject: t.subject.into(),
                preheader: t.preheader.into(),
                body: t.body.into(),
                format: BodyFormat::Markdown,
            },
            from_name: String::new(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_texts_are_valid_templates() {
        for t in [&CONFIRM_EN, &CONFIRM_KO] {
            let draft = Draft {
                subject: t.subject.into(),
                preheader: t.preheader.into(),
                body: t.body.into(),
                format: BodyFormat::Markdown,
            };
            super::super::render::check(&draft).unwrap();
        }
    }
}
