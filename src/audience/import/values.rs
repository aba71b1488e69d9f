//! Reading individual cell values: statuses, tags, dates and typed custom fields.
//!
//! Each function accepts the spellings the vendors and Korean spreadsheets actually
//! produce, and returns a human reason on failure so the user can fix the file.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;

use super::mapping::StatusKind;
use super::rows::ImportStatus;
use crate::audience::fields::{FieldDef, FieldType};

/// Longest tag we accept, matching the tag names the app lets people create.
pub const MAX_TAG_CHARS: usize = 100;
/// Longest text field value.
pub const MAX_TEXT_CHARS: usize = 1000;

/// Lower-case and drop spaces, underscores and hyphens, so "Hard bounce",
/// "hard_bounce" and "HARDBOUNCE" are one spelling.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '_' | '-')))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Yes/no spellings: English, digits, Korean (예/아니오, 네/아니요) and the O/X that
/// Korean spreadsheets use for checkmarks.
pub fn parse_bool(s: &str) -> Option<bool> {
    match squash(s).as_str() {
        "true" | "t" | "yes" | "y" | "1" | "on" | "o" | "예" | "네" | "동의" | "✓" | "✔" => {
            Some(true)
        }
        "false" | "f" | "no" | "n" | "0" | "off" | "x" | "아니오" | "아니요" | "미동의"
        | "비동의" => Some(false),
        _ => None,
    }
}

/// Read a status cell. `Ok(None)` means the cell doesn't change the status (empty, or
/// "not blocklisted").
pub fn parse_status(s: &str, kind: StatusKind) -> Result<Option<ImportStatus>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match kind {
        StatusKind::Blocklist => match parse_bool(s) {
            Some(true) => Ok(Some(ImportStatus::Unsubscribed)),
            Some(false) => Ok(None),
            None => Err("expected yes/no (or 1/0) for a blocklist column".into()),
        },
        StatusKind::Consent => match parse_bool(s) {
            Some(true) => Ok(Some(ImportStatus::Active)),
            Some(false) => Ok(Some(ImportStatus::Unsubscribed)),
            None => Err("expected yes/no (Y/N, 예/아니오) for a consent column".into()),
        },
        StatusKind::Plain => plain_status(&squash(s)).map(Some).ok_or_else(|| {
            "unknown status; use subscribed, unsubscribed, unconfirmed, bounced or \
             complained (or 구독, 수신거부)"
                .into()
        }),
    }
}

fn plain_status(v: &str) -> Option<ImportStatus> {
    use ImportStatus::*;
    Some(match v {
        "subscribed" | "active" | "confirmed" | "subscriber" | "optedin" | "optin" | "구독"
        | "구독중" | "활성" | "정상" | "수신" | "수신동의" | "동의" => Active,
        "unconfirmed" | "pending" | "notconfirmed" | "unverified" | "transactional"
        | "nonsubscribed" | "미인증" | "대기" | "인증대기" | "확인대기" | "미확인" => {
            Unconfirmed
        }
        "unsubscribed" | "cancelled" | "canceled" | "inactive" | "optedout" | "optout"
        | "archived" | "blocklisted" | "blacklisted" | "blocked" | "수신거부" | "구독취소"
        | "구독해지" | "해지" | "탈퇴" | "비활성" | "거부" => Unsubscribed,
        "cleaned" | "bounced" | "bounce" | "hardbounce" | "hardbounced" | "invalid" | "반송"
        | "수신불가" => Bounced,
        "complained" | "complaint" | "spam" | "junk" | "spamcomplaint" | "markedasspam"
        | "스팸" | "스팸신고" => Complained,
        _ => return None,
    })
}

/// Split a tags cell. Mailchimp writes `"Tag A","Tag B"` (quotes inside the cell,
/// commas inside quotes belong to the tag), others a plain `a, b; c` list.
pub fn parse_tags(s: &str, out: &mut Vec<String>) -> Result<(), String> {
    let mut current = String::new();
    let mut in_quotes = false;
    let mut chars = s.chars().peekable();
    let mut pieces = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => in_quotes = !in_quotes,
            ',' | ';' | '|' if !in_quotes => pieces.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    pieces.push(current);
    for piece in pieces {
        let tag = piece.trim();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > MAX_TAG_CHARS {
            return Err(format!("a tag is longer than {MAX_TAG_CHARS} characters"));
        }
        let lower = tag.to_lowercase();
        if !out.iter().any(|t| t.to_lowercase() == lower) {
            out.push(tag.to_string());
        }
    }
    Ok(())
}

/// A date (and time) as written, with its UTC offset if the text had one.
fn parse_when(s: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some((dt.naive_local(), Some(*dt.offset())));
    }
    // Some exports write "2024-03-15 09:30:00 +0900". (Guarded because chrono's
    // format parsing was the slowest step of a million-row import.)
    if s.split_once(' ')
        .is_some_and(|(_, t)| t.contains(['+', '-']))
    {
        for fmt in [
            "%Y-%m-%d %H:%M:%S %z",
            "%Y-%m-%d %H:%M:%S%.f %z",
            "%Y-%m-%d %H:%M %z",
        ] {
            if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
                return Some((dt.naive_local(), Some(*dt.offset())));
            }
        }
    }
    let s = s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix(" GMT"))
        .or_else(|| s.strip_suffix('Z'))
        .unwrap_or(s)
        .trim();
    let (date, rest) = parse_date_prefix(s)?;
    let rest = rest.trim_start_matches(['T', 't']).trim();
    let time = if rest.is_empty() {
        NaiveTime::MIN
    } else {
        parse_time(rest)?
    };
    Some((date.and_time(time), None))
}

/// The date at the start of `s` and whatever follows it. Accepts `YYYY-MM-DD`,
/// `YYYY/MM/DD`, `YYYY.MM.DD` (also `2024. 3. 15.` as Korean Excel writes it),
/// `2024년 3월 15일` and US `MM/DD/YYYY`.
fn parse_date_prefix(s: &str) -> Option<(NaiveDate, &str)> {
    let mut nums = [0u32; 3];
    let mut lens = [0usize; 3];
    let mut seps = ['\0'; 2];
    let mut rest = s;
    for i in 0..3 {
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 4 {
            return None;
        }
        nums[i] = rest[..digits].parse().ok()?;
        lens[i] = digits;
        rest = &rest[digits..];
        let sep = rest.chars().next();
        let korean = ['년', '월', '일'][i];
        match sep {
            Some(c) if c == korean => {
                rest = &rest[c.len_utf8()..];
                if i < 2 {
                    seps[i] = c;
                }
            }
            Some(c @ ('-' | '/' | '.')) if i < 2 => {
                rest = &rest[1..];
                seps[i] = c;
            }
            // An optional trailing dot: "2024.03.15."
            Some('.') if seps[0] == '.' => rest = &rest[1..],
            _ if i < 2 => return None,
            _ => {}
        }
    }
    let korean = seps == ['년', '월'];
    if !korean && seps[0] != seps[1] {
        return None;
    }
    let date = if lens[0] == 4 && lens[1] <= 2 && lens[2] <= 2 {
        NaiveDate::from_ymd_opt(nums[0] as i32, nums[1], nums[2])?
    } else if lens[0] <= 2 && lens[1] <= 2 && lens[2] == 4 && !korean {
        // Year last: slashes are the US month-first order; dashes and dots are the
        // European day-first order (Brevo, a French tool, writes 15-03-2024).
        let (month, day) = if seps[0] == '/' {
            (nums[0], nums[1])
        } else {
            (nums[1], nums[0])
        };
        NaiveDate::from_ymd_opt(nums[2] as i32, month, day)?
    } else {
        return None;
    };
    Some((date, rest))
}

/// `HH:MM[:SS[.fff]]`, optionally with 오전/오후 or AM/PM before or after it.
fn parse_time(s: &str) -> Option<NaiveTime> {
    let mut s = s.trim();
    let mut pm = None;
    const MARKERS: [(&str, bool); 6] = [
        ("오전", false),
        ("오후", true),
        ("AM", false),
        ("PM", true),
        ("am", false),
        ("pm", true),
    ];
    for (marker, is_pm) in MARKERS {
        if let Some(r) = s.strip_prefix(marker).or_else(|| s.strip_suffix(marker)) {
            s = r.trim();
            pm = Some(is_pm);
        }
    }
    let t = ["%H:%M:%S%.f", "%H:%M:%S", "%H:%M"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(s, f).ok())?;
    match pm {
        None => Some(t),
        Some(is_pm) => {
            use chrono::Timelike;
            let h = t.hour();
            if h == 0 || h > 12 {
                return None;
            }
            let h24 = match (is_pm, h) {
                (false, 12) => 0,
                (true, 12) => 12,
                (true, h) => h + 12,
                (false, h) => h,
            };
            t.with_hour(h24)
        }
    }
}

const DATE_HINT: &str = "expected a date like 2024-03-15, 2024.03.15 or 03/15/2024";

/// A subscription timestamp. Times without an offset are taken as UTC, which is what
/// the vendors' exports use.
pub fn parse_datetime(s: &str) -> Result<DateTime<Utc>, String> {
    let (naive, offset) = parse_when(s).ok_or(DATE_HINT)?;
    match offset {
        Some(off) => off
            .from_local_datetime(&naive)
            .single()
            .map(|dt| dt.with_timezone(&Utc))
            .ok_or_else(|| DATE_HINT.to_string()),
        None => Ok(Utc.from_utc_datetime(&naive)),
    }
}

/// A number, allowing thousands separators ("1,234.5") and a leading sign, stored as
/// an integer when it is one.
pub fn parse_number(s: &str) -> Result<Value, String> {
    const HINT: &str = "expected a number like 1234 or 1,234.5";
    let t = s.trim();
    let (sign, unsigned) = match t.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let int_digits: String = if int_part.contains(',') {
        // Only accept proper grouping: "1,234,567", never "1,2" (a European decimal
        // comma, which we would otherwise silently read as 12).
        let mut groups = int_part.split(',');
        let first = groups.next().unwrap_or("");
        let ok = (1..=3).contains(&first.len())
            && groups.all(|g| g.len() == 3)
            && int_part.bytes().all(|b| b.is_ascii_digit() || b == b',');
        if !ok {
            return Err(HINT.into());
        }
        int_part.replace(',', "")
    } else {
        int_part.to_string()
    };
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int_digits.is_empty() && frac_part.is_none_or(str::is_empty))
        || !digits_ok(&int_digits)
        || !frac_part.is_none_or(|f| !f.is_empty() && digits_ok(f))
    {
        return Err(HINT.into());
    }
    if frac_part.is_none()
        && let Ok(i) = format!("{sign}{int_digits}").parse::<i64>()
    {
        return Ok(Value::from(i));
    }
    let int_digits = if int_digits.is_empty() {
        "0".to_string()
    } else {
        int_digits
    };
    let text = format!("{sign}{int_digits}.{}", frac_part.unwrap_or("0"));
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| HINT.into())
}

/// Convert a non-empty cell to the JSON value stored for a custom field.
pub fn convert_field(def: &FieldDef, s: &str) -> Result<Value, String> {
    let t = s.trim();
    match def.field_type {
        FieldType::Text => {
            if t.chars().count() > MAX_TEXT_CHARS {
                Err(format!("longer than {MAX_TEXT_CHARS} characters"))
            } else {
                Ok(Value::String(t.to_string()))
            }
        }
        FieldType::Number => parse_number(t),
        // The date as written: a birthday typed as 2024-03-15T23:00+09:00 is the 15th.
        FieldType::Date => parse_when(t)
            .map(|(dt, _)| Value::String(dt.date().format("%Y-%m-%d").to_string()))
            .ok_or_else(|| DATE_HINT.to_string()),
        FieldType::Boolean => parse_bool(t)
            .map(Value::Bool)
            .ok_or_else(|| "expected yes/no, true/false, 1/0 or 예/아니오".to_string()),
        FieldType::Choice => {
            // Case-insensitive, but store the spelling the field defines.
            let lower = t.to_lowercase();
            def.choices
                .iter()
                .find(|c| c.trim().to_lowercase() == lower)
                .map(|c| Value::String(c.clone()))
                .ok_or_else(|| {
                    let list = def.choices.join(", ");
                    format!("not one of the choices ({list})")
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dt(s: &str) -> String {
        parse_datetime(s)
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|e| e)
    }

    #[test]
    fn dates_in_every_accepted_shape() {
        let utc = "2024-03-15T09:30:00+00:00";
        let midnight = "2024-03-15T00:00:00+00:00";
        assert_eq!(dt("2024-03-15T09:30:00Z"), utc);
        assert_eq!(dt("2024-03-15T18:30:00+09:00"), utc);
        assert_eq!(dt("2024-03-15 09:30:00"), utc);
        assert_eq!(dt("2024-03-15 09:30:00 UTC"), utc);
        assert_eq!(dt("2024-03-15 18:30:00 +0900"), utc);
        assert_eq!(dt("2024-03-15 09:30"), utc);
        assert_eq!(dt("2024-03-15"), midnight);
        assert_eq!(dt("2024/03/15"), midnight);
        assert_eq!(dt("2024.03.15"), midnight);
        assert_eq!(dt("2024.03.15."), midnight);
        assert_eq!(dt("2024. 3. 15."), midnight);
        assert_eq!(dt("2024년 3월 15일"), midnight);
        assert_eq!(dt("03/15/2024"), midnight);
        assert_eq!(dt("15-03-2024"), midnight);
        assert_eq!(dt("15.03.2024"), midnight);
        assert_eq!(dt("2024. 3. 15. 오전 9:30:00"), utc);
        assert_eq!(dt("2024-03-15 9:30 PM"), "2024-03-15T21:30:00+00:00");
        for bad in [
            "2024-13-01",
            "15/03/2024",
            "yesterday",
            "2024-03",
            "2024-03/15",
            "",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_including_korean_and_column_kinds() {
        use ImportStatus::*;
        let p = |s| parse_status(s, StatusKind::Plain);
        assert_eq!(p("subscribed"), Ok(Some(Active)));
        assert_eq!(p("Active"), Ok(Some(Active)));
        assert_eq!(p("cancelled"), Ok(Some(Unsubscribed)));
        assert_eq!(p("cleaned"), Ok(Some(Bounced)));
        assert_eq!(p("Hard bounce"), Ok(Some(Bounced)));
        assert_eq!(p("junk"), Ok(Some(Complained)));
        assert_eq!(p("pending"), Ok(Some(Unconfirmed)));
        assert_eq!(p("구독중"), Ok(Some(Active)));
        assert_eq!(p("수신거부"), Ok(Some(Unsubscribed)));
        assert_eq!(p("구독 취소"), Ok(Some(Unsubscribed)));
        assert_eq!(p(""), Ok(None));
        assert!(p("VIP").is_err());
        let b = |s| parse_status(s, StatusKind::Blocklist);
        assert_eq!(b("1"), Ok(Some(Unsubscribed)));
        assert_eq!(b("true"), Ok(Some(Unsubscribed)));
        assert_eq!(b("yes"), Ok(Some(Unsubscribed)));
        assert_eq!(b("0"), Ok(None));
        let c = |s| parse_status(s, StatusKind::Consent);
        assert_eq!(c("Y"), Ok(Some(Active)));
        assert_eq!(c("아니오"), Ok(Some(Unsubscribed)));
    }

    #[test]
    fn tags_split_trim_dedupe() {
        let mut tags = Vec::new();
        parse_tags(" VIP, 신규고객; vip |  | 이벤트 ", &mut tags).expect("ok");
        assert_eq!(tags, ["VIP", "신규고객", "이벤트"]);
        let mut tags = Vec::new();
        parse_tags(r#""Spring, 2024","Newsletter""#, &mut tags).expect("ok");
        assert_eq!(tags, ["Spring, 2024", "Newsletter"]);
        assert!(parse_tags(&"t".repeat(101), &mut Vec::new()).is_err());
    }

    fn def(field_type: FieldType, choices: &[&str]) -> FieldDef {
        FieldDef {
            key: "k".into(),
            label: "K".into(),
            field_type,
            choices: choices.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn field_conversions() {
        let num = def(FieldType::Number, &[]);
        assert_eq!(convert_field(&num, "1,234.5"), Ok(json!(1234.5)));
        assert_eq!(convert_field(&num, "1,234,567"), Ok(json!(1234567)));
        assert_eq!(convert_field(&num, "-42"), Ok(json!(-42)));
        assert_eq!(convert_field(&num, ".5"), Ok(json!(0.5)));
        for bad in ["1,2", "12,34", "abc", "1.2.3", "-", "1e5", "NaN"] {
            assert!(convert_field(&num, bad).is_err(), "{bad}");
        }
        let date = def(FieldType::Date, &[]);
        assert_eq!(convert_field(&date, "2024. 3. 5."), Ok(json!("2024-03-05")));
        assert_eq!(
            convert_field(&date, "2024-03-15T23:00:00+09:00"),
            Ok(json!("2024-03-15"))
        );
        let b = def(FieldType::Boolean, &[]);
        assert_eq!(convert_field(&b, "예"), Ok(json!(true)));
        assert_eq!(convert_field(&b, "N"), Ok(json!(false)));
        assert!(convert_field(&b, "maybe").is_err());
        let choice = def(FieldType::Choice, &["서울", "Busan"]);
        assert_eq!(convert_field(&choice, "busan"), Ok(json!("Busan")));
        assert_eq!(convert_field(&choice, " 서울 "), Ok(json!("서울")));
        assert!(convert_field(&choice, "대구").is_err());
        let text = def(FieldType::Text, &[]);
        assert_eq!(convert_field(&text, " 안녕 "), Ok(json!("안녕")));
        assert!(convert_field(&text, &"가".repeat(1001)).is_err());
    }
}
