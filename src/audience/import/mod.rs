//! CSV import: decoding, column mapping and row parsing (pure, streaming).
//!
//! The pieces, in the order an upload goes through them:
//!
//! 1. [`decode`]: sniff the encoding (UTF-8, UTF-16, or the CP949 that Korean Excel
//!    writes) and stream the file as UTF-8.
//! 2. [`records`]: split it into CSV records without ever buffering more than one
//!    record, recovering from stray quotes instead of losing the rest of the file.
//! 3. [`mapping`]: guess which column is the email, name, tags… from the export format
//!    of the tool the user is leaving, for the user to confirm.
//! 4. [`rows`]: turn each record into an [`ImportRow`] or a [`RowReport`] the user can
//!    act on ("line 812: not a valid email address").
//!
//! Nothing here touches the database or holds the whole file: a 1 GB upload costs a few
//! fixed buffers plus about 12 bytes per distinct email for duplicate detection.

pub mod decode;
pub mod mapping;
pub mod records;
pub mod rows;
pub mod values;

pub use decode::{DecodingReader, SourceEncoding, open};
pub use mapping::{ColumnMapping, Target, Vendor, guess_mapping, implied_status, validate};
pub use rows::{ImportRow, ImportStatus, Preview, RowReport, Rows, preview};

/// Why a row was not imported, as a stable code: the report CSV carries it beside the
/// English reason, and the import page names it in the reader's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportCode {
    /// The email cell is not an address.
    Email,
    /// The address appears on an earlier line.
    Duplicate,
    /// A status, date, tag or custom-field cell could not be read.
    Value,
    /// The name is too long, or a value holds a NUL character.
    Name,
    /// The line itself could not be read (an unclosed quote, bad bytes).
    Unreadable,
    /// Erased at the person's request.
    Erased,
    /// Already in the list (mode: add new only).
    Exists,
    /// Not in the list (mode: update existing only).
    Missing,
    /// Deleted by someone else while importing.
    Changed,
}

impl ReportCode {
    pub const ALL: [ReportCode; 9] = [
        Self::Email,
        Self::Duplicate,
        Self::Value,
        Self::Name,
        Self::Unreadable,
        Self::Erased,
        Self::Exists,
        Self::Missing,
        Self::Changed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Duplicate => "duplicate",
            Self::Value => "value",
            Self::Name => "name",
            Self::Unreadable => "unreadable",
            Self::Erased => "erased",
            Self::Exists => "exists",
            Self::Missing => "missing",
            Self::Changed => "changed",
        }
    }

    /// The English reason for the codes whose reason is always the same.
    pub fn english(self) -> &'static str {
        match self {
            Self::Erased => "this address was erased at the person's request",
            Self::Exists => "already in the list (mode: add new only)",
            Self::Missing => "not in the list (mode: update existing only)",
            Self::Changed => "changed by someone else while importing; import again to update",
            Self::Email => "not a valid email address",
            Self::Duplicate => "duplicate of an earlier line",
            Self::Value => "a value could not be read",
            Self::Name => "the name is too long or contains a NUL character",
            Self::Unreadable => "this line could not be read",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// What a file that is not a CSV seems to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCsv {
    /// An Excel workbook (.xlsx/.xls).
    Spreadsheet,
    /// Anything else that is not text: an image, a PDF, an archive.
    Binary,
}

impl NotCsv {
    /// What to do instead, in English (logs and the stored detail).
    pub fn hint(self) -> &'static str {
        match self {
            NotCsv::Spreadsheet => {
                "This doesn't look like a CSV file: it seems to be an Excel workbook \
                 (.xlsx/.xls). Open it in Excel, use File > Save As > CSV (comma delimited), \
                 and upload the CSV file."
            }
            NotCsv::Binary => {
                "This doesn't look like a CSV file. Export your subscribers as CSV \
                 (or in a spreadsheet use Save As > CSV) and upload that file."
            }
        }
    }
}

/// A problem with the file as a whole, as opposed to one row. The import cannot start
/// (or, for [`FileError::Io`], continue). `Display` is English for logs; the import page
/// words it through [`ImportFailure`].
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error("{}", .0.hint())]
    NotText(NotCsv),
    #[error("no column is set to email address; choose the column that holds the addresses")]
    NoEmailColumn,
    #[error("columns {first} and {second} are both set to email address; choose only one of them")]
    DuplicateEmailColumn { first: usize, second: usize },
    #[error("columns {first} and {second} are both set to {target}; choose only one of them")]
    DuplicateColumn {
        target: String,
        first: usize,
        second: usize,
    },
    #[error("column {column} is set to the custom field \"{key}\", which does not exist")]
    UnknownField { column: usize, key: String },
    #[error("the header row could not be read: line {line}: {reason}")]
    BadHeader { line: u64, reason: String },
    #[error("the file could not be read: {0}")]
    Io(#[from] std::io::Error),
}

/// Why an import ended without importing its file (or all of it), as a stable code with
/// its parameters: stored in `imports.error_code` / `error_params` beside the English
/// detail in `imports.error`, and worded on the import page in the reader's language
/// (`web::i18n`, `Strings::import_failure`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ImportFailure {
    /// Nothing in the file (or only a byte-order mark, or only blank lines).
    Empty,
    /// An Excel workbook instead of a CSV.
    Spreadsheet,
    /// Not text at all (an image, a PDF, an archive…).
    NotCsv,
    /// The header row is broken (an unclosed quote…) on this line.
    BadHeader { line: u64 },
    /// No column is mapped to the email address.
    NoEmailColumn,
    /// Two columns are mapped to the email address.
    EmailColumnTwice { first: usize, second: usize },
    /// Two columns are mapped to the same target (a `Target::key`).
    ColumnTwice {
        target: String,
        first: usize,
        second: usize,
    },
    /// A column is mapped to a custom field that no longer exists.
    UnknownField { column: usize },
    /// The stored upload could not be read.
    Unreadable,
    /// Reading the stored upload broke off part-way, on every attempt.
    Interrupted,
    /// The database refused or lost the work, on every attempt.
    Database,
    /// Anything else went wrong, on every attempt.
    Stopped,
    /// Someone cancelled it.
    Cancelled,
}

impl ImportFailure {
    /// The code and parameters to store (`imports.error_code`, `error_params`).
    pub fn to_stored(&self) -> (String, serde_json::Value) {
        crate::error::to_stored(self)
    }

    /// Read back from the stored code and parameters; `None` for a row written before
    /// codes existed, or by a newer Loopline with codes this one does not know.
    pub fn from_stored(code: &str, params: &serde_json::Value) -> Option<Self> {
        crate::error::from_stored(code, params)
    }

    /// One of each, for tests of the wording.
    pub fn examples() -> Vec<Self> {
        let all = vec![
            Self::Empty,
            Self::Spreadsheet,
            Self::NotCsv,
            Self::BadHeader { line: 1 },
            Self::NoEmailColumn,
            Self::EmailColumnTwice {
                first: 1,
                second: 3,
            },
            Self::ColumnTwice {
                target: "name".into(),
                first: 2,
                second: 4,
            },
            Self::UnknownField { column: 5 },
            Self::Unreadable,
            Self::Interrupted,
            Self::Database,
            Self::Stopped,
            Self::Cancelled,
        ];
        // A new variant must be added above: this match stops compiling until it is.
        for f in &all {
            match f {
                Self::Empty
                | Self::Spreadsheet
                | Self::NotCsv
                | Self::BadHeader { .. }
                | Self::NoEmailColumn
                | Self::EmailColumnTwice { .. }
                | Self::ColumnTwice { .. }
                | Self::UnknownField { .. }
                | Self::Unreadable
                | Self::Interrupted
                | Self::Database
                | Self::Stopped
                | Self::Cancelled => {}
            }
        }
        all
    }
}

impl std::fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::web::strings_for(crate::web::Lang::En).import_failure(self))
    }
}

impl From<&FileError> for ImportFailure {
    fn from(e: &FileError) -> Self {
        match e {
            FileError::Empty => Self::Empty,
            FileError::NotText(NotCsv::Spreadsheet) => Self::Spreadsheet,
            FileError::NotText(NotCsv::Binary) => Self::NotCsv,
            FileError::NoEmailColumn => Self::NoEmailColumn,
            FileError::DuplicateEmailColumn { first, second } => Self::EmailColumnTwice {
                first: *first,
                second: *second,
            },
            FileError::DuplicateColumn {
                target,
                first,
                second,
            } => Self::ColumnTwice {
                target: target.clone(),
                first: *first,
                second: *second,
            },
            FileError::UnknownField { column, .. } => Self::UnknownField { column: *column },
            FileError::BadHeader { line, .. } => Self::BadHeader { line: *line },
            FileError::Io(_) => Self::Unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_stored_as_code_and_parameters_and_read_back() {
        for f in ImportFailure::examples() {
            let (code, params) = f.to_stored();
            assert!(!code.is_empty() && params.get("code").is_none(), "{f:?}");
            assert_eq!(ImportFailure::from_stored(&code, &params), Some(f.clone()));
        }
        assert_eq!(
            ImportFailure::BadHeader { line: 7 }.to_stored(),
            ("bad_header".to_string(), serde_json::json!({ "line": 7 }))
        );
        assert_eq!(
            ImportFailure::from_stored("cancelled", &serde_json::Value::Null),
            Some(ImportFailure::Cancelled)
        );
        assert_eq!(
            ImportFailure::from_stored("from_the_future", &serde_json::json!({})),
            None
        );
        assert_eq!(
            ImportFailure::from_stored("bad_header", &serde_json::json!({})),
            None
        );
    }
}
