//! netns helpers (filled by the built-in delegates work).

pub mod ipam;
