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

/// A problem with the file as a whole, as opposed to one row. The import cannot start
/// (or, for [`FileError::Io`], continue); the message is meant for the uploader.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    /// Carries the full user-facing explanation (what we think the file is and how to
    /// get a CSV out of it).
    #[error("{0}")]
    NotText(String),
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
    #[error("the header row could not be read: {0}")]
    BadHeader(String),
    #[error("the file could not be read: {0}")]
    Io(#[from] std::io::Error),
}
