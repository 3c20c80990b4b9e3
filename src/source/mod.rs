//! Where desired state comes from: git repositories, read at a commit.

pub mod git;
