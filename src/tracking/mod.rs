//! Open and click tracking: what reaches the tracking endpoints and how it is judged.

pub mod classify;
