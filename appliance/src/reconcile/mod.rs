//! The server lifecycle: the pure state machine (`lifecycle`), ServerClass membership
//! (`classes`), agent boots (`boots`, pure: who may make which agent call), and the
//! effectful side that applies transitions to the store in one
//! transaction each and runs their actions (`apply`, `task`).
//!
//! May touch: the store (typed API), the power hook (`power::PowerActions`). Never sockets.

pub mod apply;
pub mod boots;
pub mod class_status;
pub mod classes;
pub mod edits;
pub mod lifecycle;
pub mod power;
pub mod qualify;
pub mod task;

pub use apply::LifecycleError;
pub use task::{Lifecycle, ReconcileTask};
