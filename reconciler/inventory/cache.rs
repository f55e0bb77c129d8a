//! The stat side of the site index under the name the transaction code
//! knows it by: a lookup of a file's hashes by path and stat data. The
//! stat cache of earlier versions (`statcache.bin`) is now one side of
//! [`super::index::Index`]; this name keeps its callers unchanged.

pub use super::index::{Index as StatCache, now_ns};
