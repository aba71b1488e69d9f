//! From CSV records to subscribers: the row-level half of the import.
//!
//! A bad row never stops the import. It becomes a [`RowReport`] with its line number
//! and a reason, so a shop owner can fix the handful of broken lines in their
//! spreadsheet and re-upload only those.

use std::hash::{DefaultHasher, Hasher};
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::FileError;
use super::decode::{DecodingReader, SourceEncoding, open};
use super::mapping::{
    ColumnMapping, StatusKind, Target, Vendor, guess_mapping, implied_status, status_kind, validate,
};
use super::records::{Next, Record, RecordReader, truncate_chars};
use super::values::{convert_field, parse_datetime, parse_status, parse_tags};
use crate::address::EmailAddress;
use crate::audience::fields::{FieldDef, FieldType};

/// Longest cell value quoted back in a report or shown in the preview.
const SHOWN_CHARS: usize = 200;

/// A subscriber's status as the source tool recorded it.
///
/// Declared from least to most restrictive: when several status columns disagree
/// (say a status column says "subscribed" but a blocklist column says "1") the most
/// restrictive wins, since mailing someone who opted out is the costly mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    Active,
    Unconfirmed,
    Unsubscribed,
    Bounced,
    Complained,
}

impl ImportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Active => "active",
            ImportStatus::Unconfirmed => "unconfirmed",
            ImportStatus::Unsubscribed => "unsubscribed",
            ImportStatus::Bounced => "bounced",
            ImportStatus::Complained => "complained",
        }
    }
}

/// One subscriber read from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    /// 1-based line in the file, counting the header, where the row starts.
    pub line: u64,
    pub email: EmailAddress,
    /// The Name column, or first and last name joined (Korean style, family name first
    /// and without a space, when both are Hangul). Empty when the file has no name.
    pub name: String,
    /// `None` when the file says nothing; the caller applies its own default.
    pub status: Option<ImportStatus>,
    pub subscribed_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    /// Custom field values by key, already converted to the stored JSON types.
    pub fields: Map<String, Value>,
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowReport {
    pub line: u64,
    /// The offending value (for an email problem, the raw email cell), shortened.
    pub value: String,
    pub reason: String,
    pub code: super::ReportCode,
}

/// What a column contributes, resolved once so each row is a cheap walk.
#[derive(Debug, Clone)]
enum Col {
    Email,
    Name,
    First,
    Last,
    Status(StatusKind),
    SubscribedAt,
    Tags,
    /// Index into `Rows::fields`.
    Field(usize),
    Ignore,
}

/// Streaming iterator over the rows of an uploaded file.
///
/// ```text
/// let mut rows = Rows::new(file, mapping, &field_defs)?;
/// for row in &mut rows {
///     match row { Ok(r) => upsert(r), Err(report) => failures.push(report) }
/// }
/// if let Some(e) = rows.io_error() { /* the file was cut short */ }
/// ```
pub struct Rows<R: Read> {
    reader: RecordReader<DecodingReader<R>>,
    encoding: SourceEncoding,
    headers: Vec<String>,
    plan: Vec<Col>,
    fields: Vec<FieldDef>,
    default_status: Option<ImportStatus>,
    seen: SeenEmails,
    done: bool,
    io_error: Option<std::io::Error>,
}

impl<R: Read> Rows<R> {
    /// Open the file, read its header row and check `mapping` against `fields`.
    pub fn new(r: R, mapping: ColumnMapping, fields: &[FieldDef]) -> Result<Self, FileError> {
        validate(&mapping)?;
        let (encoding, decoded) = open(r)?;
        let mut reader = RecordReader::new(decoded)?;
        let headers = read_headers(&mut reader)?;
        let mut plan = Vec::with_capacity(mapping.columns.len());
        for (i, target) in mapping.columns.iter().enumerate() {
            let header = headers.get(i).map(String::as_str).unwrap_or("");
            plan.push(match target {
                Target::Email => Col::Email,
                Target::Name => Col::Name,
                Target::FirstName => Col::First,
                Target::LastName => Col::Last,
                Target::Status => Col::Status(status_kind(header)),
                Target::SubscribedAt => Col::SubscribedAt,
                Target::Tags => Col::Tags,
                Target::Field(key) => {
                    Col::Field(fields.iter().position(|f| f.key == *key).ok_or_else(|| {
                        FileError::UnknownField {
                            column: i + 1,
                            key: key.clone(),
                        }
                    })?)
                }
                Target::Ignore => Col::Ignore,
            });
        }
        Ok(Self {
            reader,
            encoding,
            headers,
            plan,
            fields: fields.to_vec(),
            default_status: None,
            seen: SeenEmails::new(),
            done: false,
            io_error: None,
        })
    }

    /// Status for rows whose file says nothing about status, e.g. from
    /// [`implied_status`] for a Mailchimp `unsubscribed_…` export.
    pub fn with_default_status(mut self, status: Option<ImportStatus>) -> Self {
        self.default_status = status;
        self
    }

    pub fn encoding(&self) -> SourceEncoding {
        self.encoding
    }

    /// The header row, trimmed.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Set when reading the upload failed part-way; the iterator has then ended early
    /// and the import should be marked incomplete rather than finished.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.io_error.as_ref()
    }

    /// Convert the current record. `None` for a row with nothing in it.
    fn convert(&mut self) -> Option<Result<ImportRow, RowReport>> {
        let rec = self.reader.record();
        if rec.iter().all(|c| c.trim().is_empty()) {
            return None;
        }
        if rec.lines > 1
            && let Some(report) = self.swallowed_lines(rec)
        {
            self.reader.replay_last();
            return Some(Err(report));
        }
        let rec = self.reader.record();
        let line = rec.line;
        let report = |value: &str, reason: String, code| RowReport {
            line,
            value: truncate_chars(value.trim(), SHOWN_CHARS),
            reason,
            code,
        };
        use super::ReportCode::{Duplicate, Email, Value};
        let column_reason = |i: usize, reason: String| match self.headers.get(i) {
            Some(h) if !h.is_empty() => format!("column {} ({h}): {reason}", i + 1),
            _ => format!("column {}: {reason}", i + 1),
        };

        let mut email_cell = "";
        let (mut name, mut first, mut last) = ("", "", "");
        let mut status: Option<ImportStatus> = None;
        let mut subscribed_at = None;
        let mut tags = Vec::new();
        let mut fields = Map::new();
        for (i, col) in self.plan.iter().enumerate() {
            let cell = rec.get(i);
            match col {
                Col::Email => email_cell = cell,
                Col::Name => name = cell,
                Col::First => first = cell,
                Col::Last => last = cell,
                Col::Status(kind) => match parse_status(cell, *kind) {
                    Ok(s) => status = status.max(s),
                    Err(reason) => return Some(Err(report(cell, column_reason(i, reason), Value))),
                },
                Col::SubscribedAt if subscribed_at.is_none() && !cell.trim().is_empty() => {
                    match parse_datetime(cell) {
                        Ok(t) => subscribed_at = Some(t),
                        Err(reason) => {
                            return Some(Err(report(cell, column_reason(i, reason), Value)));
                        }
                    }
                }
                Col::Tags => {
                    if let Err(reason) = parse_tags(cell, &mut tags) {
                        return Some(Err(report(cell, column_reason(i, reason), Value)));
                    }
                }
                Col::Field(f) if !cell.trim().is_empty() => {
                    let Some(def) = self.fields.get(*f) else {
                        continue;
                    };
                    match convert_field(def, cell) {
                        Ok(v) => {
                            fields.insert(def.key.clone(), v);
                        }
                        Err(reason) => {
                            return Some(Err(report(cell, column_reason(i, reason), Value)));
                        }
                    }
                }
                Col::SubscribedAt | Col::Field(_) | Col::Ignore => {}
            }
        }
        let email = match EmailAddress::parse(email_cell) {
            Ok(e) => e,
            Err(e) => return Some(Err(report(email_cell, e.to_string(), Email))),
        };
        if let Some(first_line) = self.seen.check_insert(email.as_str(), line) {
            let reason = match first_line {
                Some(n) => format!("duplicate of line {n}"),
                None => "duplicate of an earlier line".to_string(),
            };
            return Some(Err(report(email_cell, reason, Duplicate)));
        }
        Some(Ok(ImportRow {
            line,
            name: compose_name(name, first, last),
            email,
            status: status.or(self.default_status),
            subscribed_at,
            tags,
            fields,
        }))
    }

    /// A record spanning several lines is legitimate for a notes-like text column, but
    /// a line break inside an email, name, status, date or tag means a stray quote
    /// joined several rows into one. Report it so the caller can re-read the lines.
    fn swallowed_lines(&self, rec: Record<'_>) -> Option<RowReport> {
        let breaks_ok = |col: &Col| match col {
            Col::Ignore => true,
            Col::Field(f) => self
                .fields
                .get(*f)
                .is_some_and(|d| d.field_type == FieldType::Text),
            _ => false,
        };
        let bad = self
            .plan
            .iter()
            .enumerate()
            .any(|(i, col)| !breaks_ok(col) && rec.get(i).contains(['\n', '\r']));
        if !bad {
            return None;
        }
        let email_col = self.plan.iter().position(|c| matches!(c, Col::Email));
        let value = email_col.map(|i| rec.get(i)).unwrap_or("");
        let value = value.split(['\r', '\n']).next().unwrap_or("");
        Some(RowReport {
            line: rec.line,
            value: truncate_chars(value.trim(), SHOWN_CHARS),
            reason: "a quote on this line is not closed, so the next lines were read as part \
                     of this row; the lines after it were read again on their own"
                .into(),
            code: super::ReportCode::Unreadable,
        })
    }
}

impl<R: Read> Iterator for Rows<R> {
    type Item = Result<ImportRow, RowReport>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            match self.reader.read_next() {
                Err(e) => {
                    self.done = true;
                    let report = RowReport {
                        line: self.reader.line(),
                        value: String::new(),
                        reason: format!("the file could not be read past this line: {e}"),
                        code: super::ReportCode::Unreadable,
                    };
                    self.io_error = Some(e);
                    return Some(Err(report));
                }
                Ok(Next::Eof) => {
                    self.done = true;
                    return None;
                }
                Ok(Next::Bad(report)) => return Some(Err(report)),
                Ok(Next::Record) => {
                    if let Some(result) = self.convert() {
                        return Some(result);
                    }
                }
            }
        }
    }
}

/// The first row with any content is the header. Bad quoting there is a file-level
/// error: without headers there is nothing to map.
fn read_headers<R: Read>(reader: &mut RecordReader<R>) -> Result<Vec<String>, FileError> {
    loop {
        match reader.read_next()? {
            Next::Eof => return Err(FileError::Empty),
            Next::Bad(report) => {
                return Err(FileError::BadHeader {
                    line: report.line,
                    reason: report.reason,
                });
            }
            Next::Record => {
                let rec = reader.record();
                if rec.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                return Ok(rec
                    .iter()
                    .map(|c| truncate_chars(c.trim_start_matches('\u{feff}').trim(), SHOWN_CHARS))
                    .collect());
            }
        }
    }
}

/// Korean names written in two columns are family name + given name without a space
/// (홍 + 길동 = 홍길동); everything else is "First Last".
fn compose_name(name: &str, first: &str, last: &str) -> String {
    let name = name.trim();
    if !name.is_empty() {
        return name.to_string();
    }
    let (first, last) = (first.trim(), last.trim());
    let hangul = |s: &str| {
        s.chars().all(|c| {
            matches!(c, '\u{AC00}'..='\u{D7A3}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}')
        })
    };
    match (first.is_empty(), last.is_empty()) {
        (false, false) if hangul(first) && hangul(last) => format!("{last}{first}"),
        (false, false) => format!("{first} {last}"),
        (false, true) => first.to_string(),
        (true, false) => last.to_string(),
        (true, true) => String::new(),
    }
}

/// Emails already seen in this file, for duplicate detection in bounded memory.
///
/// Stores a 64-bit hash of the lower-cased address and the line it was on (12 bytes
/// per entry, open addressing, growth by 1.5x): about 18 MB for a million distinct
/// addresses, against 100+ MB for a `HashMap<String, u64>`. The price is a one in
/// ~10^7 chance per million-row file of reporting two different addresses as
/// duplicates, which the report makes visible.
struct SeenEmails {
    /// 0 marks an empty slot; real hashes are never 0.
    keys: Vec<u64>,
    lines: Vec<u32>,
    len: usize,
}

impl SeenEmails {
    fn new() -> Self {
        Self::with_capacity(1024)
    }

    fn with_capacity(cap: usize) -> Self {
        Self {
            keys: vec![0; cap],
            lines: vec![0; cap],
            len: 0,
        }
    }

    fn hash(email: &str) -> u64 {
        let mut h = DefaultHasher::new();
        for c in email.chars().flat_map(char::to_lowercase) {
            h.write_u32(c as u32);
        }
        h.finish().max(1)
    }

    /// If the address was seen before, the line it was first seen on (`Some(None)`
    /// beyond line 4,294,967,295); otherwise remember it and return `None`.
    fn check_insert(&mut self, email: &str, line: u64) -> Option<Option<u64>> {
        self.check_insert_hash(Self::hash(email), line)
    }

    fn check_insert_hash(&mut self, hash: u64, line: u64) -> Option<Option<u64>> {
        if (self.len + 1) * 5 > self.keys.len() * 4 {
            self.grow();
        }
        let cap = self.keys.len();
        let mut i = slot(hash, cap);
        loop {
            let k = self.keys[i];
            if k == 0 {
                self.keys[i] = hash;
                self.lines[i] = u32::try_from(line).unwrap_or(u32::MAX);
                self.len += 1;
                return None;
            }
            if k == hash {
                let l = self.lines[i];
                return Some((l != u32::MAX).then_some(u64::from(l)));
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
    }

    fn grow(&mut self) {
        let cap = self.keys.len();
        let mut bigger = Self::with_capacity(cap + cap / 2);
        for (&k, &l) in self.keys.iter().zip(&self.lines) {
            if k != 0 {
                let mut i = slot(k, bigger.keys.len());
                while bigger.keys[i] != 0 {
                    i = if i + 1 == bigger.keys.len() { 0 } else { i + 1 };
                }
                bigger.keys[i] = k;
                bigger.lines[i] = l;
            }
        }
        bigger.len = self.len;
        *self = bigger;
    }

    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.keys.capacity() * 8 + self.lines.capacity() * 4
    }
}

/// Map a hash onto `0..cap` without a division (Lemire's multiply-shift).
fn slot(hash: u64, cap: usize) -> usize {
    ((u128::from(hash) * cap as u128) >> 64) as usize
}

/// What the mapping-confirmation screen needs.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub encoding: SourceEncoding,
    /// The detected delimiter: `,`, `;` or tab.
    pub delimiter: char,
    pub vendor: Option<Vendor>,
    pub headers: Vec<String>,
    pub mapping: ColumnMapping,
    /// Status implied by the columns alone (Mailchimp unsubscribed/cleaned exports);
    /// call [`implied_status`] with the file name as well for a better answer.
    pub implied_status: Option<ImportStatus>,
    /// The first rows as raw cells (long cells shortened), malformed ones skipped.
    pub records: Vec<Vec<String>>,
}

/// Read just enough of the file to show its first `n` rows and our guess at the
/// column mapping.
pub fn preview<R: Read>(r: R, fields: &[FieldDef], n: usize) -> Result<Preview, FileError> {
    let (encoding, decoded) = open(r)?;
    let mut reader = RecordReader::new(decoded)?;
    let headers = read_headers(&mut reader)?;
    let (vendor, mapping) = guess_mapping(&headers, fields);
    let mut records = Vec::new();
    while records.len() < n {
        match reader.read_next()? {
            Next::Eof => break,
            Next::Bad(_) => {}
            Next::Record => {
                let rec = reader.record();
                if rec.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                records.push(rec.iter().map(|c| truncate_chars(c, SHOWN_CHARS)).collect());
            }
        }
    }
    Ok(Preview {
        encoding,
        delimiter: char::from(reader.delimiter()),
        vendor,
        implied_status: implied_status(&headers, None),
        headers,
        mapping,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::import::decode::tests::Trickle;
    use serde_json::json;

    fn field(key: &str, field_type: FieldType, choices: &[&str]) -> FieldDef {
        FieldDef {
            key: key.into(),
            label: key.into(),
            field_type,
            choices: choices.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Guess the mapping, then import everything.
    fn import(bytes: &[u8], fields: &[FieldDef]) -> Vec<Result<ImportRow, RowReport>> {
        let p = preview(bytes, fields, 0).expect("preview");
        Rows::new(bytes, p.mapping, fields).expect("rows").collect()
    }

    fn oks(results: &[Result<ImportRow, RowReport>]) -> Vec<&ImportRow> {
        results.iter().filter_map(|r| r.as_ref().ok()).collect()
    }

    fn errs(results: &[Result<ImportRow, RowReport>]) -> Vec<&RowReport> {
        results.iter().filter_map(|r| r.as_ref().err()).collect()
    }

    #[test]
    fn mailerlite_file() {
        let csv = "Email,Name,Last name,Subscribed,Status,Groups\n\
                   jane@example.com,Jane,Doe,2024-01-02 03:04:05,active,\"Customers, VIP\"\n\
                   kim@example.kr,길동,홍,2024.01.03,unsubscribed,\n";
        let got = import(csv.as_bytes(), &[]);
        let rows = oks(&got);
        assert_eq!(rows.len(), 2, "{got:?}");
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].email.as_str(), "jane@example.com");
        assert_eq!(rows[0].name, "Jane Doe");
        assert_eq!(rows[0].status, Some(ImportStatus::Active));
        assert_eq!(
            rows[0].subscribed_at.map(|d| d.to_rfc3339()),
            Some("2024-01-02T03:04:05+00:00".into())
        );
        assert_eq!(rows[0].tags, ["Customers", "VIP"]);
        assert_eq!(rows[1].name, "홍길동");
        assert_eq!(rows[1].status, Some(ImportStatus::Unsubscribed));
    }

    #[test]
    fn mailchimp_file_with_bom_and_crlf() {
        let csv = "\u{feff}Email Address,First Name,Last Name,Birthday,MEMBER_RATING,OPTIN_TIME,\
                   CONFIRM_TIME,LEID,TAGS\r\n\
                   a@example.com,Ann,Lee,03/15,2,,2023-05-06 07:08:09,123,\"\"\"Spring, 2024\"\",\"\"VIP\"\"\"\r\n";
        let fields = [field("birthday", FieldType::Text, &[])];
        let p = preview(csv.as_bytes(), &fields, 5).expect("preview");
        assert_eq!(p.encoding, SourceEncoding::Utf8Bom);
        assert_eq!(p.vendor, Some(Vendor::Mailchimp));
        assert_eq!(p.headers[0], "Email Address");
        assert_eq!(p.records.len(), 1);
        let got: Vec<_> = Rows::new(csv.as_bytes(), p.mapping, &fields)
            .expect("rows")
            .with_default_status(Some(ImportStatus::Active))
            .collect();
        let rows = oks(&got);
        assert_eq!(rows.len(), 1, "{got:?}");
        assert_eq!(rows[0].name, "Ann Lee");
        assert_eq!(rows[0].status, Some(ImportStatus::Active));
        assert_eq!(rows[0].tags, ["Spring, 2024", "VIP"]);
        assert_eq!(
            rows[0].subscribed_at.map(|d| d.to_rfc3339()),
            Some("2023-05-06T07:08:09+00:00".into())
        );
        assert_eq!(rows[0].fields.get("birthday"), Some(&json!("03/15")));
    }

    #[test]
    fn korean_euc_kr_file_with_korean_values() {
        let text = "이메일,성,이름,태그,상태,가입일,수신동의,지역\r\n\
                    hong@example.kr,홍,길동,\"신규; VIP\",구독중,2024. 3. 15.,Y,서울\r\n\
                    lee@example.kr,이,순신,,수신거부,,,부산\r\n\
                    kim@example.kr,김,철수,,구독,,N,\r\n";
        let (bytes, _, _) = encoding_rs::EUC_KR.encode(text);
        let fields = [field("지역", FieldType::Choice, &["서울", "부산"])];
        let p = preview(Trickle::new(&bytes), &fields, 10).expect("preview");
        assert_eq!(p.encoding, SourceEncoding::EucKr);
        assert_eq!(p.headers[1], "성");
        let got: Vec<_> = Rows::new(Trickle::new(&bytes), p.mapping, &fields)
            .expect("rows")
            .collect();
        let rows = oks(&got);
        assert_eq!(rows.len(), 3, "{got:?}");
        assert_eq!(rows[0].name, "홍길동");
        assert_eq!(rows[0].tags, ["신규", "VIP"]);
        assert_eq!(rows[0].status, Some(ImportStatus::Active));
        assert_eq!(
            rows[0].subscribed_at.map(|d| d.date_naive().to_string()),
            Some("2024-03-15".into())
        );
        assert_eq!(rows[0].fields.get("지역"), Some(&json!("서울")));
        assert_eq!(rows[1].name, "이순신");
        assert_eq!(rows[1].status, Some(ImportStatus::Unsubscribed));
        // "구독" but no consent: the more restrictive answer wins.
        assert_eq!(rows[2].status, Some(ImportStatus::Unsubscribed));
        assert!(rows[2].fields.is_empty());
    }

    #[test]
    fn utf16_file_imports() {
        let text = "Email\tName\r\na@example.com\t김민지\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let got = import(&bytes, &[]);
        assert_eq!(oks(&got)[0].name, "김민지");
    }

    #[test]
    fn ragged_rows_blank_lines_and_extra_cells() {
        let csv = "email,name,tags\n\na@example.com\n\n,,\nb@example.com,Bob,t1,extra,cells\n";
        let got = import(csv.as_bytes(), &[]);
        assert!(errs(&got).is_empty(), "{got:?}");
        let rows = oks(&got);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].name.as_str()), (3, ""));
        assert_eq!((rows[1].line, rows[1].name.as_str()), (6, "Bob"));
        assert_eq!(rows[1].tags, ["t1"]);
    }

    #[test]
    fn bad_quoting_mid_file_then_good_rows() {
        let csv = "email,name\n\
                   a@example.com,Ann\n\
                   b@example.com,\"Bob\n\
                   c@example.com,Cho\n\
                   d@example.com,\"Dan\"iel\n\
                   e@example.com,Eve\n";
        let got = import(csv.as_bytes(), &[]);
        let lines: Vec<u64> = oks(&got).iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4, 6], "{got:?}");
        let bad: Vec<u64> = errs(&got).iter().map(|r| r.line).collect();
        assert_eq!(bad, [3, 5]);
    }

    #[test]
    fn stray_quotes_that_pair_up_across_rows_are_caught() {
        // The quote opened on line 3 is "closed" on line 5, which would silently merge
        // lines 3-5 into one row with a line break in the name.
        let csv = "email,name\n\
                   a@example.com,Ann\n\
                   b@example.com,\"Bob\n\
                   c@example.com,Cho\n\
                   d@example.com,Dan\"\n\
                   e@example.com,Eve\n";
        let got = import(csv.as_bytes(), &[]);
        let lines: Vec<u64> = oks(&got).iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4, 5, 6], "{got:?}");
        let bad: Vec<(u64, &str)> = errs(&got)
            .iter()
            .map(|r| (r.line, r.value.as_str()))
            .collect();
        assert_eq!(bad, [(3, "b@example.com")]);
        // As in RFC 4180 readers generally, a quote inside an unquoted value is text.
        assert_eq!(oks(&got)[2].name, "Dan\"");
    }

    #[test]
    fn multiline_notes_are_kept() {
        let fields = [field("notes", FieldType::Text, &[])];
        let csv = "email,notes\na@example.com,\"line one\nline two\"\nb@example.com,x\n";
        let got = import(csv.as_bytes(), &fields);
        let rows = oks(&got);
        assert_eq!(rows.len(), 2, "{got:?}");
        assert_eq!(
            rows[0].fields.get("notes"),
            Some(&json!("line one\nline two"))
        );
        assert_eq!(rows[1].line, 4);
    }

    #[test]
    fn invalid_and_duplicate_emails() {
        let csv = "email\n\
                   good@example.com\n\
                   not-an-email\n\
                   a@localhost\n\
                   GOOD@Example.com\n\
                   \"\"\n";
        let got = import(csv.as_bytes(), &[]);
        assert_eq!(oks(&got).len(), 1);
        let e = errs(&got);
        assert_eq!(e.len(), 3, "{got:?}");
        assert_eq!((e[0].line, e[0].value.as_str()), (3, "not-an-email"));
        assert!(e[0].reason.contains("@"), "{}", e[0].reason);
        assert_eq!(e[1].line, 4);
        assert!(e[1].reason.contains("domain"));
        assert_eq!(
            (e[2].line, e[2].value.as_str(), e[2].reason.as_str()),
            (5, "GOOD@Example.com", "duplicate of line 2")
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_column() {
        let fields = [
            field("age", FieldType::Number, &[]),
            field("vip", FieldType::Boolean, &[]),
        ];
        let csv = "email,age,vip,status,created_at\n\
                   a@example.com,\"1,234\",예,,\n\
                   b@example.com,lots,,,\n\
                   c@example.com,,maybe,,\n\
                   d@example.com,,,VIP,\n\
                   e@example.com,,,,yesterday\n\
                   b@example.com,5,아니오,,\n";
        let got = import(csv.as_bytes(), &fields);
        let rows = oks(&got);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fields.get("age"), Some(&json!(1234)));
        assert_eq!(rows[0].fields.get("vip"), Some(&json!(true)));
        // The first b@ row was rejected, so the later one is not a duplicate.
        assert_eq!(rows[1].line, 7);
        let e = errs(&got);
        let summary: Vec<(u64, &str)> = e.iter().map(|r| (r.line, r.value.as_str())).collect();
        assert_eq!(
            summary,
            [(3, "lots"), (4, "maybe"), (5, "VIP"), (6, "yesterday")]
        );
        assert!(
            e[0].reason.starts_with("column 2 (age): "),
            "{}",
            e[0].reason
        );
    }

    #[test]
    fn file_level_errors() {
        assert!(matches!(preview(&b""[..], &[], 5), Err(FileError::Empty)));
        assert!(matches!(
            preview(&b"\n\n  \n"[..], &[], 5),
            Err(FileError::Empty)
        ));
        assert!(matches!(
            preview(&b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..], &[], 5),
            Err(FileError::NotText(_))
        ));
        assert!(matches!(
            preview(&b"PK\x03\x04\x14\0\x06\0"[..], &[], 5),
            Err(FileError::NotText(_))
        ));
        let p = preview(&b"name,phone\nKim,010\n"[..], &[], 5).expect("preview");
        assert!(matches!(
            validate(&p.mapping),
            Err(FileError::NoEmailColumn)
        ));
        assert!(matches!(
            Rows::new(&b"name,phone\n"[..], p.mapping, &[]),
            Err(FileError::NoEmailColumn)
        ));
        let mapping = ColumnMapping {
            columns: vec![Target::Email, Target::Field("nope".into())],
        };
        assert!(matches!(
            Rows::new(&b"email,x\n"[..], mapping, &[]),
            Err(FileError::UnknownField { column: 2, .. })
        ));
    }

    #[test]
    fn read_errors_end_the_iteration_with_a_report() {
        /// Serves more than the sniffing window, then fails.
        struct Failing(Vec<u8>, usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.1 >= self.0.len() {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let mut data = String::from("email\n");
        for i in 0..5000 {
            data.push_str(&format!("u{i}@example.com\n"));
        }
        let mapping = ColumnMapping {
            columns: vec![Target::Email],
        };
        let mut rows = Rows::new(Failing(data.into_bytes(), 0), mapping, &[]).expect("rows");
        let got: Vec<_> = rows.by_ref().collect();
        assert_eq!(oks(&got).len(), 5000);
        assert_eq!(errs(&got).len(), 1);
        assert!(rows.io_error().is_some());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let alphabet: &[&[u8]] = &[
            b"\"",
            b",",
            b";",
            b"\r",
            b"\n",
            b"a",
            b"@",
            b"x.kr",
            b" ",
            b"\0",
            b"\xFF",
            "홍".as_bytes(),
            b"\xC8\xAB",
            b"\xEF\xBB\xBF",
            b"2024-01-01",
            b"\t",
        ];
        let mut seed: u32 = 12345;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as usize
        };
        let fields = [field("n", FieldType::Number, &[])];
        for _ in 0..300 {
            let mut bytes = b"email,name,tags,status,n,subscribed_at\n".to_vec();
            for _ in 0..(next() % 200) {
                bytes.extend_from_slice(alphabet[next() % alphabet.len()]);
            }
            if let Ok(p) = preview(&bytes[..], &fields, 3)
                && let Ok(rows) = Rows::new(Trickle::new(&bytes), p.mapping, &fields)
            {
                for r in rows {
                    let line = match r {
                        Ok(row) => row.line,
                        Err(report) => report.line,
                    };
                    assert!(line >= 2);
                }
            }
        }
    }

    #[test]
    fn names() {
        assert_eq!(compose_name("", "길동", "홍"), "홍길동");
        assert_eq!(compose_name("", "Gildong", "Hong"), "Gildong Hong");
        assert_eq!(compose_name("", "길동", "Hong"), "길동 Hong");
        assert_eq!(compose_name(" 홍길동 ", "x", "y"), "홍길동");
        assert_eq!(compose_name("", "", " 홍 "), "홍");
    }

    #[test]
    fn seen_emails_stay_small_for_a_million_rows() {
        let mut seen = SeenEmails::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for line in 0..1_000_000u64 {
            // splitmix64: distinct, well-spread stand-ins for email hashes
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            assert_eq!(seen.check_insert_hash(z.max(1), line + 2), None);
        }
        assert!(
            seen.heap_bytes() < 30 * 1024 * 1024,
            "{}",
            seen.heap_bytes()
        );
        assert_eq!(seen.check_insert("a@b.kr", 5), None);
        assert_eq!(seen.check_insert("A@B.KR", 9), Some(Some(5)));
    }
}
