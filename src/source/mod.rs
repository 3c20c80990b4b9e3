//! Where desired state comes from: git repositories, read at a commit.

pub mod auth;
pub mod git;
pub mod history;
