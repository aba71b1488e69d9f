//! CSV import: decoding, column mapping and row parsing (pure, streaming).
