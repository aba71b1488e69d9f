//! The audience: subscribers, consent, tags, custom fields, signup forms, segments,
//! import and export. Every later capability reads, tags and segments it.

pub mod bulk;
pub mod data_requests;
pub mod export;
pub mod fields;
pub mod forms;
pub mod import;
pub mod imports;
pub mod lifecycle;
pub mod links;
pub mod live_index;
pub mod segments;
pub mod signup;
pub mod subscribers;
pub mod tags;
