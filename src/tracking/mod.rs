//! Open and click tracking: signed tokens, the events they record, and how each is
//! judged human or machine.

pub mod classify;
pub mod events;
pub mod tokens;
