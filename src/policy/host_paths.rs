//! What a host path means to the host: the canonical form the engine will
//! mount, and whether binding it hands a container the host.
//!
//! The rule is not a list of spellings. A path is first resolved the way the
//! kernel would on a standard Linux host (`.` and `..`, repeated slashes,
//! `/proc/<pid>/root` which is the root seen by that process, and the
//! `/var/run` → `/run` link every distribution ships), then compared by
//! whole components with the trees that control the host: binding one of
//! them, anything under one, or a folder holding one is refused unless the
//! policy names that very path.

use std::path::{Component, Path};

/// Trees that give a container control of the host when bound: its
/// kernel interfaces, devices, boot files, configuration, root's home, the
/// system binaries and libraries, the container engines' state and
/// sockets, and the service managers' sockets. A bind of any of them, of a
/// path under one, or of a folder above one (`/`, `/var`, `/run`, …) is
/// refused unless the policy names the exact path.
const HOST_CONTROL_TREES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/etc",
    "/root",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/spool/cron",
    "/run/docker.sock",
    "/run/docker",
    "/run/containerd",
    "/run/dbus",
    "/run/systemd",
];

/// Files of the host control trees that containers commonly mount
/// read-only and that hold nothing but the host's time zone.
pub const READ_ONLY_HARMLESS: &[&str] = &["/etc/localtime", "/etc/timezone"];

/// `/a//b/./c/../d/` → `/a/b/d`; `/proc/<pid>/root/x` → `/x` (any pid,
/// `self` and `thread-self` alike, repeated); `/var/run/x` → `/run/x`.
/// Symlinks of the host's own making are not followed: the policy cannot
/// see them (an operator's allowed prefix should not hold writable ones).
pub fn canonical(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in Path::new(path).components() {
        match part {
            Component::Normal(name) => {
                parts.push(name.to_string_lossy().into_owned());
                // `/proc/<pid>/root` is that process's root: for the
                // engine's and every host process's, the host's `/`.
                if parts.len() == 3 && parts[0] == "proc" && parts[2] == "root" {
                    parts.clear();
                }
                if parts.len() == 2 && parts[0] == "var" && parts[1] == "run" {
                    parts = vec!["run".into()];
                }
            }
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `path` is `prefix` or inside it, by whole components.
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a bind of the canonical `path` gives a container the host: it
/// is, holds or lies in one of [`HOST_CONTROL_TREES`].
pub fn controls_host(path: &str) -> bool {
    HOST_CONTROL_TREES
        .iter()
        .any(|tree| is_under(path, tree) || is_under(tree, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_resolve_to_it() {
        for (written, meant) in [
            ("/a//b/./c/../d/", "/a/b/d"),
            ("/proc/1/root", "/"),
            ("/proc/self/root/etc/shadow", "/etc/shadow"),
            ("/proc/thread-self/root/proc/42/root/var/run", "/run"),
            ("/var/run/docker.sock", "/run/docker.sock"),
            ("/srv/../var/./run//docker.sock", "/run/docker.sock"),
            ("/proc/self/cwd", "/proc/self/cwd"),
            ("/srv/app", "/srv/app"),
        ] {
            assert_eq!(canonical(written), meant, "{written}");
        }
    }

    #[test]
    fn the_host_control_trees_their_contents_and_their_parents_control_the_host() {
        for path in [
            "/",
            "/proc/1/root",
            "/proc/self/root/",
            "/proc/self/cwd",
            "/var/run/docker.sock",
            "/run/containerd/containerd.sock",
            "/var/lib/docker/volumes",
            "/var/lib",
            "/var",
            "/run",
            "/etc",
            "/etc/ssl/certs",
            "/root/.ssh",
            "/dev/sda",
            "/sys/kernel",
            "/boot",
            "/usr/bin",
        ] {
            assert!(controls_host(&canonical(path)), "{path}");
        }
        for path in [
            "/srv/data",
            "/var/lib/app",
            "/run/user/1000",
            "/tmp/x",
            "/home/app",
        ] {
            assert!(!controls_host(&canonical(path)), "{path}");
        }
    }
}
