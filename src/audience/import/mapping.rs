//! Which column means what.
//!
//! People migrating from another tool upload that tool's export unchanged, so we
//! recognise the header names of MailerLite, Mailchimp, Kit (ConvertKit) and Brevo, and
//! the Korean headers people type themselves. The guess is only a starting point: the
//! UI shows it for confirmation, and [`validate`] checks whatever the user settles on.

use serde::{Deserialize, Serialize};

use super::FileError;
use super::rows::ImportStatus;
use crate::audience::fields::FieldDef;

/// What one column of the file is imported as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Email,
    Name,
    FirstName,
    LastName,
    Status,
    SubscribedAt,
    Tags,
    /// A custom field, by key.
    Field(String),
    Ignore,
}

impl Target {
    /// A stable string for form values in the mapping UI (`field:<key>` for custom
    /// fields).
    pub fn key(&self) -> String {
        match self {
            Target::Email => "email".into(),
            Target::Name => "name".into(),
            Target::FirstName => "first_name".into(),
            Target::LastName => "last_name".into(),
            Target::Status => "status".into(),
            Target::SubscribedAt => "subscribed_at".into(),
            Target::Tags => "tags".into(),
            Target::Field(key) => format!("field:{key}"),
            Target::Ignore => "ignore".into(),
        }
    }

    /// Inverse of [`Target::key`].
    pub fn from_key(s: &str) -> Option<Target> {
        Some(match s {
            "email" => Target::Email,
            "name" => Target::Name,
            "first_name" => Target::FirstName,
            "last_name" => Target::LastName,
            "status" => Target::Status,
            "subscribed_at" => Target::SubscribedAt,
            "tags" => Target::Tags,
            "ignore" | "" => Target::Ignore,
            other => Target::Field(other.strip_prefix("field:")?.to_string()),
        })
    }

    /// Targets that make sense only once per file (several Status, SubscribedAt or
    /// Tags columns are combined instead).
    fn is_single(&self) -> bool {
        matches!(
            self,
            Target::Email | Target::Name | Target::FirstName | Target::LastName | Target::Field(_)
        )
    }
}

/// One target per column, in file order. Columns beyond the end are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ColumnMapping {
    pub columns: Vec<Target>,
}

/// The tool a file was exported from, when we can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    MailerLite,
    Mailchimp,
    Kit,
    Brevo,
}

impl Vendor {
    pub fn label(self) -> &'static str {
        match self {
            Vendor::MailerLite => "MailerLite",
            Vendor::Mailchimp => "Mailchimp",
            Vendor::Kit => "Kit (ConvertKit)",
            Vendor::Brevo => "Brevo",
        }
    }
}

/// How a status column's values are read. A Brevo blacklist column says "1" for
/// unsubscribed, a Korean consent column says "Y" for subscribed; a plain status
/// column says "subscribed". The header tells which, and is available both when we
/// guess and when the user maps a column to Status by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Plain,
    /// True means the address must not be mailed.
    Blocklist,
    /// True means the person agreed to receive email.
    Consent,
}

/// Header text reduced to what identifies it: trimmed, lower-case, without spaces,
/// underscores, hyphens and dots, so "Email Address", "email_address" and
/// "E-mail address" compare equal.
pub fn normalize_header(h: &str) -> String {
    h.trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '_' | '-' | '.')))
        .flat_map(char::to_lowercase)
        .collect()
}

const EMAIL: &[&str] = &[
    "email",
    "emailaddress",
    "mail",
    "mailaddress",
    "이메일",
    "이메일주소",
    "메일",
    "메일주소",
    "전자우편",
    "전자메일",
    "email주소",
];
const NAME: &[&str] = &[
    "name",
    "fullname",
    "이름",
    "성명",
    "성함",
    "고객명",
    "회원명",
    "구독자명",
];
const FIRST_NAME: &[&str] = &[
    "firstname",
    "fname",
    "givenname",
    "first",
    "prenom",
    "prénom",
];
const LAST_NAME: &[&str] = &[
    "lastname",
    "lname",
    "surname",
    "familyname",
    "last",
    "nom",
    "성",
    "성씨",
];
const STATUS: &[&str] = &[
    "status",
    "memberstatus",
    "subscriberstatus",
    "subscriptionstatus",
    "상태",
    "구독상태",
    "회원상태",
];
const BLOCKLIST: &[&str] = &[
    "emailblacklisted",
    "blacklisted",
    "blacklist",
    "emailblocklisted",
    "blocklisted",
    "수신거부",
    "수신거부여부",
];
const CONSENT: &[&str] = &[
    "수신동의",
    "수신동의여부",
    "이메일수신동의",
    "메일수신동의",
    "마케팅수신동의",
    "이메일수신여부",
    "수신여부",
    "acceptsemailmarketing",
    "acceptsmarketing",
];
const SUBSCRIBED_AT: &[&str] = &[
    "subscribedat",
    "subscribed",
    "datesubscribed",
    "subscribeddate",
    "subscribedon",
    "subscriptiondate",
    "optintime",
    "confirmtime",
    "createdat",
    "addedtime",
    "addedat",
    "dateadded",
    "signupdate",
    "signedupat",
    "joinedat",
    "가입일",
    "가입일자",
    "가입일시",
    "가입날짜",
    "구독일",
    "구독일자",
    "구독일시",
    "구독시작일",
    "등록일",
    "등록일자",
    "등록일시",
];
const TAGS: &[&str] = &[
    "tags", "tag", "groups", "group", "labels", "label", "태그", "그룹", "라벨",
];

/// The built-in target a header names, if any.
fn builtin_target(norm: &str) -> Option<Target> {
    let is = |list: &[&str]| list.contains(&norm);
    Some(if is(EMAIL) {
        Target::Email
    } else if is(NAME) {
        Target::Name
    } else if is(FIRST_NAME) {
        Target::FirstName
    } else if is(LAST_NAME) {
        Target::LastName
    } else if is(STATUS) || is(BLOCKLIST) || is(CONSENT) {
        Target::Status
    } else if is(SUBSCRIBED_AT) {
        Target::SubscribedAt
    } else if is(TAGS) {
        Target::Tags
    } else {
        return None;
    })
}

/// How values in a Status column with this header are to be read.
pub fn status_kind(header: &str) -> StatusKind {
    let norm = normalize_header(header);
    if BLOCKLIST.contains(&norm.as_str()) {
        StatusKind::Blocklist
    } else if CONSENT.contains(&norm.as_str()) {
        StatusKind::Consent
    } else {
        StatusKind::Plain
    }
}

/// Headers characteristic of each vendor's export, compared lower-cased and trimmed
/// but otherwise verbatim: the spelling style ("Email Address" vs "email_address")
/// is itself the fingerprint. Weight 2 for headers only that vendor writes.
const FINGERPRINTS: &[(Vendor, &str, u32)] = &[
    (Vendor::Mailchimp, "email address", 2),
    (Vendor::Mailchimp, "first name", 1),
    (Vendor::Mailchimp, "member_rating", 2),
    (Vendor::Mailchimp, "optin_time", 2),
    (Vendor::Mailchimp, "optin_ip", 2),
    (Vendor::Mailchimp, "confirm_time", 2),
    (Vendor::Mailchimp, "confirm_ip", 2),
    (Vendor::Mailchimp, "gmtoff", 2),
    (Vendor::Mailchimp, "dstoff", 2),
    (Vendor::Mailchimp, "leid", 2),
    (Vendor::Mailchimp, "euid", 2),
    (Vendor::Mailchimp, "last_changed", 2),
    (Vendor::Mailchimp, "unsub_time", 2),
    (Vendor::Mailchimp, "clean_time", 2),
    (Vendor::MailerLite, "groups", 2),
    (Vendor::MailerLite, "date subscribed", 2),
    (Vendor::MailerLite, "subscribed", 1),
    (Vendor::MailerLite, "subscribed_at", 1),
    (Vendor::MailerLite, "last name", 1),
    (Vendor::MailerLite, "last_name", 1),
    (Vendor::MailerLite, "z_i_p", 2),
    (Vendor::MailerLite, "sent", 1),
    (Vendor::MailerLite, "opens", 1),
    (Vendor::MailerLite, "clicks", 1),
    (Vendor::Kit, "email_address", 1),
    (Vendor::Kit, "first_name", 1),
    (Vendor::Kit, "created_at", 1),
    (Vendor::Brevo, "email_blacklisted", 2),
    (Vendor::Brevo, "sms_blacklisted", 2),
    (Vendor::Brevo, "blacklisted", 1),
    (Vendor::Brevo, "firstname", 1),
    (Vendor::Brevo, "lastname", 1),
    (Vendor::Brevo, "prenom", 2),
    (Vendor::Brevo, "nom", 2),
    (Vendor::Brevo, "contact id", 2),
    (Vendor::Brevo, "added_time", 2),
    (Vendor::Brevo, "modified_time", 2),
    (Vendor::Brevo, "double_opt-in", 2),
    (Vendor::Brevo, "sms", 1),
];

fn guess_vendor(headers: &[String]) -> Option<Vendor> {
    let lowered: Vec<String> = headers
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_lowercase())
        .collect();
    let has = |name: &str| lowered.iter().any(|h| h == name);
    let mut scores = [
        (Vendor::MailerLite, 0u32),
        (Vendor::Mailchimp, 0),
        (Vendor::Kit, 0),
        (Vendor::Brevo, 0),
    ];
    for &(vendor, name, weight) in FINGERPRINTS {
        if has(name)
            && let Some(score) = scores.iter_mut().find(|(v, _)| *v == vendor)
        {
            score.1 += weight;
        }
    }
    // MailerLite calls the first name just "name" next to "last name"; Kit has
    // "first_name" and no last name at all.
    if has("name") && (has("last name") || has("last_name")) {
        scores[0].1 += 1;
    }
    if has("first_name") && !has("last_name") {
        scores[2].1 += 1;
    }
    scores.sort_by_key(|s| std::cmp::Reverse(s.1));
    let (best, best_score) = scores[0];
    (best_score >= 2 && best_score > scores[1].1).then_some(best)
}

/// Guess what each column is from its header.
///
/// Built-in targets win over custom fields, so a custom field that happens to be
/// labelled "Email" cannot steal the address column. Of several columns that look like
/// the same single-valued target (two email columns, say), the first wins and the rest
/// are ignored.
pub fn guess_mapping(headers: &[String], fields: &[FieldDef]) -> (Option<Vendor>, ColumnMapping) {
    let field_names: Vec<(String, String, &str)> = fields
        .iter()
        .map(|f| {
            (
                normalize_header(&f.key),
                normalize_header(&f.label),
                f.key.as_str(),
            )
        })
        .collect();
    let mut columns: Vec<Target> = headers
        .iter()
        .map(|h| {
            let norm = normalize_header(h);
            if norm.is_empty() {
                return Target::Ignore;
            }
            builtin_target(&norm)
                .or_else(|| {
                    field_names
                        .iter()
                        .find(|(k, l, _)| *k == norm || *l == norm)
                        .map(|(_, _, key)| Target::Field((*key).to_string()))
                })
                .unwrap_or(Target::Ignore)
        })
        .collect();

    // "Name" next to "Last name" (MailerLite) or "이름" next to "성" is a first name.
    let has = |cols: &[Target], t: &Target| cols.contains(t);
    if has(&columns, &Target::LastName)
        && !has(&columns, &Target::FirstName)
        && let Some(c) = columns.iter_mut().find(|t| **t == Target::Name)
    {
        *c = Target::FirstName;
    }

    let mut seen: Vec<Target> = Vec::new();
    for c in columns.iter_mut() {
        if c.is_single() {
            if seen.contains(c) {
                *c = Target::Ignore;
            } else {
                seen.push(c.clone());
            }
        }
    }
    (guess_vendor(headers), ColumnMapping { columns })
}

/// Check a (possibly user-edited) mapping before importing: exactly one email column,
/// and no single-valued target on two columns, since we could not say which one wins.
/// Column numbers in errors are 1-based, as a spreadsheet user counts them.
pub fn validate(mapping: &ColumnMapping) -> Result<(), FileError> {
    let mut first_of: Vec<(&Target, usize)> = Vec::new();
    for (i, t) in mapping.columns.iter().enumerate() {
        if !t.is_single() {
            continue;
        }
        if let Some(&(_, first)) = first_of.iter().find(|(seen, _)| *seen == t) {
            return Err(if *t == Target::Email {
                FileError::DuplicateEmailColumn {
                    first: first + 1,
                    second: i + 1,
                }
            } else {
                FileError::DuplicateColumn {
                    target: t.key(),
                    first: first + 1,
                    second: i + 1,
                }
            });
        }
        first_of.push((t, i));
    }
    if !mapping.columns.contains(&Target::Email) {
        return Err(FileError::NoEmailColumn);
    }
    Ok(())
}

/// The status every row of a file has when the file itself says so rather than a
/// column. Mailchimp exports an audience as a ZIP of `subscribed_…`, `unsubscribed_…`,
/// `cleaned_…` and `nonsubscribed_…` CSVs without a status column; the unsubscribed and
/// cleaned files can also be recognised by their `UNSUB_TIME` / `CLEAN_TIME` columns.
/// Only meaningful when no column is mapped to Status.
pub fn implied_status(headers: &[String], file_name: Option<&str>) -> Option<ImportStatus> {
    if let Some(name) = file_name {
        let name = name.to_lowercase();
        let base = name.rsplit(['/', '\\']).next().unwrap_or(&name);
        if base.starts_with("nonsubscribed") || base.starts_with("non_subscribed") {
            return Some(ImportStatus::Unconfirmed);
        }
        if base.starts_with("unsubscribed") {
            return Some(ImportStatus::Unsubscribed);
        }
        if base.starts_with("cleaned") {
            return Some(ImportStatus::Bounced);
        }
        if base.starts_with("subscribed") {
            return Some(ImportStatus::Active);
        }
    }
    let norm: Vec<String> = headers.iter().map(|h| normalize_header(h)).collect();
    if norm.iter().any(|h| h == "unsubtime") {
        Some(ImportStatus::Unsubscribed)
    } else if norm.iter().any(|h| h == "cleantime") {
        Some(ImportStatus::Bounced)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::fields::FieldType;

    fn h(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn field(key: &str, label: &str, field_type: FieldType) -> FieldDef {
        FieldDef {
            key: key.into(),
            label: label.into(),
            field_type,
            choices: Vec::new(),
        }
    }

    use Target::*;

    #[test]
    fn mailchimp_export() {
        let headers = h(&[
            "Email Address",
            "First Name",
            "Last Name",
            "Address",
            "Phone Number",
            "MEMBER_RATING",
            "OPTIN_TIME",
            "OPTIN_IP",
            "CONFIRM_TIME",
            "CONFIRM_IP",
            "LATITUDE",
            "LONGITUDE",
            "GMTOFF",
            "DSTOFF",
            "TIMEZONE",
            "CC",
            "REGION",
            "LAST_CHANGED",
            "LEID",
            "EUID",
            "NOTES",
            "TAGS",
        ]);
        let fields = [field("phone", "Phone Number", FieldType::Text)];
        let (vendor, m) = guess_mapping(&headers, &fields);
        assert_eq!(vendor, Some(Vendor::Mailchimp));
        assert_eq!(m.columns[..3], [Email, FirstName, LastName]);
        assert_eq!(m.columns[4], Field("phone".into()));
        assert_eq!(m.columns[6], SubscribedAt);
        assert_eq!(m.columns[8], SubscribedAt);
        assert_eq!(m.columns[21], Tags);
        assert_eq!(m.columns.iter().filter(|t| **t == Ignore).count(), 15);
        assert!(validate(&m).is_ok());
    }

    #[test]
    fn mailerlite_export() {
        let headers = h(&[
            "Email",
            "Name",
            "Last name",
            "Subscribed",
            "Status",
            "Groups",
            "Sent",
        ]);
        let (vendor, m) = guess_mapping(&headers, &[]);
        assert_eq!(vendor, Some(Vendor::MailerLite));
        assert_eq!(
            m.columns,
            [
                Email,
                FirstName,
                LastName,
                SubscribedAt,
                Status,
                Tags,
                Ignore
            ]
        );
        let (vendor, m) = guess_mapping(
            &h(&["email", "name", "last_name", "subscribed_at", "groups"]),
            &[],
        );
        assert_eq!(vendor, Some(Vendor::MailerLite));
        assert_eq!(m.columns, [Email, FirstName, LastName, SubscribedAt, Tags]);
    }

    #[test]
    fn kit_and_brevo_exports() {
        let (vendor, m) = guess_mapping(
            &h(&[
                "email_address",
                "first_name",
                "created_at",
                "tags",
                "status",
            ]),
            &[],
        );
        assert_eq!(vendor, Some(Vendor::Kit));
        assert_eq!(m.columns, [Email, FirstName, SubscribedAt, Tags, Status]);

        let headers = h(&[
            "CONTACT ID",
            "EMAIL",
            "FIRSTNAME",
            "LASTNAME",
            "SMS",
            "EMAIL_BLACKLISTED",
            "SMS_BLACKLISTED",
            "ADDED_TIME",
        ]);
        let (vendor, m) = guess_mapping(&headers, &[]);
        assert_eq!(vendor, Some(Vendor::Brevo));
        assert_eq!(
            m.columns,
            [
                Ignore,
                Email,
                FirstName,
                LastName,
                Ignore,
                Status,
                Ignore,
                SubscribedAt
            ]
        );
        assert_eq!(status_kind("EMAIL_BLACKLISTED"), StatusKind::Blocklist);
        let (_, m) = guess_mapping(&h(&["EMAIL", "NOM", "PRENOM"]), &[]);
        assert_eq!(m.columns, [Email, LastName, FirstName]);
    }

    #[test]
    fn korean_headers() {
        let (vendor, m) = guess_mapping(
            &h(&["이메일", "이름", "태그", "상태", "가입일", "생일"]),
            &[field("birthday", "생일", FieldType::Date)],
        );
        assert_eq!(vendor, None);
        assert_eq!(
            m.columns,
            [
                Email,
                Name,
                Tags,
                Status,
                SubscribedAt,
                Field("birthday".into())
            ]
        );
        let (_, m) = guess_mapping(&h(&["\u{feff}이메일 주소", "성", "이름", "수신동의"]), &[]);
        assert_eq!(m.columns, [Email, LastName, FirstName, Status]);
        assert_eq!(status_kind("수신 동의"), StatusKind::Consent);
    }

    #[test]
    fn custom_fields_match_key_or_label_loosely() {
        let fields = [field("favorite_color", "좋아하는 색", FieldType::Text)];
        let (_, m) = guess_mapping(
            &h(&["email", "Favorite-Color", "좋아하는색", "whatever"]),
            &fields,
        );
        assert_eq!(
            m.columns,
            [Email, Field("favorite_color".into()), Ignore, Ignore]
        );
    }

    #[test]
    fn validation() {
        assert!(matches!(
            validate(&ColumnMapping {
                columns: vec![Name, Tags]
            }),
            Err(FileError::NoEmailColumn)
        ));
        assert!(matches!(
            validate(&ColumnMapping {
                columns: vec![Email, Name, Email]
            }),
            Err(FileError::DuplicateEmailColumn {
                first: 1,
                second: 3
            })
        ));
        assert!(matches!(
            validate(&ColumnMapping {
                columns: vec![Email, Field("a".into()), Field("a".into())]
            }),
            Err(FileError::DuplicateColumn { .. })
        ));
        assert!(
            validate(&ColumnMapping {
                columns: vec![Tags, Email, Tags, Status, Status]
            })
            .is_ok()
        );
        // The guess never produces two email columns.
        let (_, m) = guess_mapping(&h(&["Email", "E-mail"]), &[]);
        assert_eq!(m.columns, [Email, Ignore]);
    }

    #[test]
    fn target_keys_round_trip() {
        for t in [
            Email,
            Name,
            FirstName,
            LastName,
            Status,
            SubscribedAt,
            Tags,
            Ignore,
            Field("x:y".into()),
        ] {
            assert_eq!(Target::from_key(&t.key()), Some(t));
        }
        assert_eq!(Target::from_key("bogus"), None);
    }

    #[test]
    fn mailchimp_status_implied_by_file() {
        assert_eq!(
            implied_status(&[], Some("unsubscribed_members_export_1a2b.csv")),
            Some(ImportStatus::Unsubscribed)
        );
        assert_eq!(
            implied_status(&[], Some("export/cleaned_members_export_1a2b.csv")),
            Some(ImportStatus::Bounced)
        );
        assert_eq!(
            implied_status(&[], Some("subscribed_members_export_1a2b.csv")),
            Some(ImportStatus::Active)
        );
        assert_eq!(
            implied_status(&h(&["Email Address", "UNSUB_TIME"]), None),
            Some(ImportStatus::Unsubscribed)
        );
        assert_eq!(implied_status(&h(&["Email"]), Some("list.csv")), None);
    }
}
