//! Sequencing plans with the store: gathering a site's observed state
//! (inventory, rollback points, ledger, payloads) for the planner, adopting
//! a site, and converging it: the journaled transaction, its recovery,
//! rollback, hooks and health checks; upgrade notices; and publishing the opt-in status
//! reports of sites to the fleet's report repository.

pub mod adopt;
pub mod context;
pub mod converge;
pub mod error;
pub mod fsops;
pub mod health;
pub mod hooks;
pub mod notices;
pub mod preflight;
pub mod report;
pub mod status;
pub mod swap;
pub mod trust;
pub mod txn;

pub use context::{ContextError, SiteContext};
