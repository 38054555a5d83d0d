//! What the front doors share: the loaded agent and its tools ([`setup`]), the sessions in
//! memory ([`sessions`]) and on disk ([`store`]), and the approval questions waiting for a
//! client ([`approvals`]).

pub mod approvals;
pub mod sessions;
pub mod setup;
pub mod store;
