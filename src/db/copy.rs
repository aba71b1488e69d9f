//! Rows for `COPY … FROM STDIN (FORMAT binary)`: PostgreSQL reads each value in its
//! binary form, so timestamps, numbers and arrays are not printed here and parsed there.
//! The format: <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>.

use chrono::{DateTime, Utc};

/// The OID of `bigint` (`int8`), an array's element type.
const INT8_OID: i32 = 20;
/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A binary COPY stream being written: the header, then one [`BinaryCopy::row`] and its
/// values at a time, then [`BinaryCopy::finish`].
pub struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 19);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        BinaryCopy { buf }
    }

    /// Starts a row of `columns` values.
    pub fn row(&mut self, columns: i16) {
        self.buf.extend_from_slice(&columns.to_be_bytes());
    }

    fn value(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    fn len(&mut self, n: usize) {
        // COPY values are far below 2 GiB (rows are checked before they get here).
        self.buf
            .extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
    }

    /// `text`, and anything whose binary input is its text (an enum's label).
    pub fn text(&mut self, s: &str) {
        self.value(s.as_bytes());
    }

    pub fn bytea(&mut self, bytes: &[u8]) {
        self.value(bytes);
    }

    pub fn int8(&mut self, v: i64) {
        self.len(8);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn timestamptz(&mut self, t: DateTime<Utc>) {
        self.len(8);
        let micros = t.timestamp_micros() - PG_EPOCH_MICROS;
        self.buf.extend_from_slice(&micros.to_be_bytes());
    }

    pub fn timestamptz_or_null(&mut self, t: Option<DateTime<Utc>>) {
        match t {
            Some(t) => self.timestamptz(t),
            None => self.null(),
        }
    }

    /// `jsonb` from its JSON text (binary format version 1).
    pub fn jsonb(&mut self, json: &[u8]) {
        self.len(json.len() + 1);
        self.buf.push(1);
        self.buf.extend_from_slice(json);
    }

    /// A one-dimensional `bigint[]` without NULLs.
    pub fn int8_array(&mut self, values: &[i64]) {
        let dims = if values.is_empty() { 0 } else { 1 };
        self.len(12 + dims * 8 + values.len() * 12);
        self.buf.extend_from_slice(&(dims as i32).to_be_bytes());
        self.buf.extend_from_slice(&0i32.to_be_bytes()); // no NULLs
        self.buf.extend_from_slice(&INT8_OID.to_be_bytes());
        if dims == 1 {
            self.len(values.len());
            self.buf.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for v in values {
                self.buf.extend_from_slice(&8i32.to_be_bytes());
                self.buf.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    /// The stream, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_framed_as_postgresql_reads_them() {
        let mut c = BinaryCopy::with_capacity(0);
        c.row(3);
        c.timestamptz(DateTime::from_timestamp(946_684_801, 0).unwrap());
        c.int8_array(&[]);
        c.null();
        let bytes = c.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&3i16.to_be_bytes());
        expected.extend_from_slice(&8i32.to_be_bytes());
        expected.extend_from_slice(&1_000_000i64.to_be_bytes()); // one second after 2000-01-01
        expected.extend_from_slice(&12i32.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20]); // no dimensions
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(bytes, expected);
    }
}
