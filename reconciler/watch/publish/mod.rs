//! What the daemon tells the world, and only the daemon: upgrade notices
//! (`notices.json`) and the opt-in status reports pushed to the fleet's
//! report repository (SPEC §7).

pub mod notices;
pub mod report;
