//! pier: GitOps for plain Docker hosts.
//!
//! Desired state (services, nodes, pipeline stages) lives as YAML in a git
//! repository; pier tests and builds each new commit, then converges the
//! containers on the nodes to what the repository declares. See the README's
//! map of the code for where each part lives; one pass (load → observe →
//! resolve → plan → apply) is `pass`, the pure planner `plan`.

pub mod daemon;
pub mod docker;
pub mod edit;
pub mod fault;
pub mod manifest;
pub mod ops;
pub mod pass;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod source;
pub mod validate;
