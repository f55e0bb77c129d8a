//! Changing a site: adopting it, and converging it with the journaled
//! transaction (in place, or a release directory and a symlink swap), its
//! recovery and rollback, the owner's hooks and the health checks that
//! judge a change. What a change reads comes from [`crate::observe`];
//! read-only commands never import this module.

pub mod adopt;
pub mod clock;
pub mod converge;
pub mod data;
pub mod error;
pub mod fsops;
pub mod group;
pub mod health;
pub mod hooks;
pub mod swap;
pub mod txn;
