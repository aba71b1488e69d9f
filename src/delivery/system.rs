//! Mail Loopline writes itself (the double opt-in confirmation, the links for
//! self-service data export and erasure), in the subscriber's language when Loopline
//! has it (English and Korean so far). None of it is tracked or marketing.

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

const EXPORT_EN: Text = Text {
    subject: "Your data download link",
    preheader: "A copy of everything we hold about you.",
    body: "Hello {{ subscriber.first_name or \"there\" }},\n\n\
           Someone — hopefully you — asked for a copy of everything held about \
           {{ subscriber.email }}.\n\n\
           [Download my data]({{ link }})\n\n\
           The link works for one hour. If you did not ask for this, ignore this message.",
};

const EXPORT_KO: Text = Text {
    subject: "내 정보 내려받기 링크",
    preheader: "보관 중인 내 정보 전체의 사본입니다.",
    body: "{{ subscriber.name or \"구독자\" }}님, 안녕하세요.\n\n\
           {{ subscriber.email }} 주소로 보관된 정보 전체의 사본을 요청하셨습니다.\n\n\
           [내 정보 내려받기]({{ link }})\n\n\
           링크는 1시간 동안 유효합니다. 직접 요청하지 않으셨다면 이 메일을 무시하세요.",
};

const ERASE_EN: Text = Text {
    subject: "Confirm deleting your data",
    preheader: "Nothing is deleted until you confirm.",
    body: "Hello {{ subscriber.first_name or \"there\" }},\n\n\
           Someone — hopefully you — asked to delete everything held about \
           {{ subscriber.email }}. You will receive no more mail afterwards.\n\n\
           [Delete my data]({{ link }})\n\n\
           The link works for one hour. If you did not ask for this, ignore this message \
           and nothing will be deleted.",
};

const ERASE_KO: Text = Text {
    subject: "내 정보 삭제를 확인해 주세요",
    preheader: "확인하기 전에는 아무것도 삭제되지 않습니다.",
    body: "{{ subscriber.name or \"구독자\" }}님, 안녕하세요.\n\n\
           {{ subscriber.email }} 주소로 보관된 정보를 모두 삭제해 달라는 요청이 있었습니다. \
           삭제 후에는 더 이상 메일을 받지 않습니다.\n\n\
           [내 정보 삭제하기]({{ link }})\n\n\
           링크는 1시간 동안 유효합니다. 직접 요청하지 않으셨다면 이 메일을 무시하세요. \
           아무것도 삭제되지 않습니다.",
};

/// The mails Loopline writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemMail {
    /// Double opt-in; data: `confirm_url`, `form`.
    Confirmation,
    /// Self-service export link; data: `link`.
    DataExport,
    /// Self-service erasure link; data: `link`.
    DataErasure,
}

/// Purposes of system mail: never tracked (no pixel, no rewritten links).
pub const UNTRACKED_PURPOSES: &[&str] = &["confirmation", "data-request"];

impl SystemMail {
    fn purpose(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::DataExport | Self::DataErasure => "data-request",
        }
    }

    fn text(self, korean: bool) -> &'static Text {
        match (self, korean) {
            (Self::Confirmation, false) => &CONFIRM_EN,
            (Self::Confirmation, true) => &CONFIRM_KO,
            (Self::DataExport, false) => &EXPORT_EN,
            (Self::DataExport, true) => &EXPORT_KO,
            (Self::DataErasure, false) => &ERASE_EN,
            (Self::DataErasure, true) => &ERASE_KO,
        }
    }
}

/// The confirmation body for a language, stored once and shared.
pub async fn confirmation_body(
    conn: &mut PgConnection,
    language: Option<&str>,
) -> sqlx::Result<i64> {
    body(conn, SystemMail::Confirmation, language).await
}

/// The body of a system mail in a language, stored once and shared by every message.
pub async fn body(
    conn: &mut PgConnection,
    mail: SystemMail,
    language: Option<&str>,
) -> sqlx::Result<i64> {
    let korean = matches!(language, Some(l) if l.eq_ignore_ascii_case("ko") || l.to_ascii_lowercase().starts_with("ko-"));
    let t = mail.text(korean);
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM message_bodies WHERE purpose = $3 AND subject = $1 AND body = $2 ORDER BY id LIMIT 1",
    )
    .bind(t.subject)
    .bind(t.body)
    .bind(mail.purpose())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = existing {
        return Ok(id);
    }
    insert_body(
        conn,
        &NewBody {
            purpose: mail.purpose().into(),
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
        for t in [
            &CONFIRM_EN,
            &CONFIRM_KO,
            &EXPORT_EN,
            &EXPORT_KO,
            &ERASE_EN,
            &ERASE_KO,
        ] {
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
