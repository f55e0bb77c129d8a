//! Sequencing plans with the store: gathering a site's observed state
//! (inventory, rollback points, ledger, payloads) for the planner, and
//! adopting a site. Converging (the transaction, recovery, rollback)
//! builds on this.

pub mod adopt;
pub mod context;
pub mod converge;
pub mod fsops;
pub mod health;
pub mod hooks;
pub mod txn;

pub use context::{ContextError, SiteContext};
