//! pier: GitOps for plain Docker hosts.
//!
//! Desired state (services, nodes, pipeline stages) lives as YAML in a git
//! repository; pier tests and builds each new commit, then converges the
//! containers on the nodes to what the repository declares. See DESIGN.md for
//! the loop (load → observe → plan → apply → record) and the module map.

pub mod apply;
pub mod daemon;
pub mod deploy;
pub mod docker;
pub mod edit;
pub mod fault;
pub mod manifest;
pub mod observe;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod prepare;
pub mod registry;
pub mod resolver;
pub mod source;
pub mod validate;
