//! What the daemon tells the world, and only the daemon: upgrade notices
//! (`notices.json`) and the opt-in status reports pushed to the fleet's
//! report repository (SPEC §7): [`privacy`] decides, purely, what a site's
//! report may say; [`report`] publishes that through git.

pub mod notices;
pub mod privacy;
pub mod report;
