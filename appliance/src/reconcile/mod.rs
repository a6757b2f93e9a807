//! The server lifecycle: the pure state machine (`lifecycle`), ServerClass membership
//! (`classes`), and the effectful side that applies transitions to the store in one
//! transaction each and runs their actions (`apply`, `task`).
//!
//! May touch: the store (typed API), the power hook (`power::PowerActions`). Never sockets.

pub mod lifecycle;
pub mod qualify;
