//! Delivery: the one place mail leaves Loopline. Rendering (sandboxed merge fields,
//! responsive layout, text part), the outbox written in the deciding transaction, and
//! the senders that claim, send and record; `feedback`: what providers report back
//! (bounces, complaints) by signed webhook.

pub mod dkim;
pub mod feedback;
pub mod mime;
pub mod outbox;
pub mod render;
pub mod sender;
pub mod smtp;
pub mod system;
