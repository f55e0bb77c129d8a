//! Reading a site without changing it: its observed state gathered for
//! the planner (inventory, rollback points, ledger, quarantine, payloads),
//! the trust verdict on the fleet and catalog commits, the preflight
//! checks, and the status that `status`, `check` and `/status` report.
//! Never writes a site's files; the only state it may write is the stat
//! cache, which is a cache.

pub mod context;
pub mod history;
pub mod preflight;
pub mod status;
pub mod trust;

pub use context::{ContextError, SiteContext};
