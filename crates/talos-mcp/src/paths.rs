//! Paths on a node that a model may name: normalisation, the operator's allowlist, and the
//! entries that are refused whatever the allowlist says.
//!
//! Talos opens a path as given, and the kernel follows every link on the way. Some entries of
//! `/proc` are links into another process's view of the filesystem (`/proc/1/root` is machined's
//! `/`, so `/proc/1/root/system/state/config.yaml` is the whole machine config), or expose a
//! process's memory or environment. A path is therefore checked component by component after
//! normalisation: syntax first ([`normalise_path`]), then the allowlist, then the refused
//! entries ([`refusal`]); [`check_path`] does all three.

use crate::error::ToolError;

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub(crate) const MAX_PATH_BYTES: usize = 4096;
/// Longest path component accepted, in bytes (Linux's `NAME_MAX`).
pub(crate) const MAX_COMPONENT_BYTES: usize = 255;

/// Entries of a process directory (`/proc/<pid>/`, `/proc/self/`, `/proc/<pid>/task/<tid>/`)
/// that follow links out of `/proc` or reveal a process's memory, environment or open files.
const PROCESS_ENTRIES: &[&str] = &[
    "root",
    "cwd",
    "exe",
    "fd",
    "fdinfo",
    "map_files",
    "ns",
    "environ",
    "mem",
    "pagemap",
    "auxv",
    "syscall",
    "stack",
];

/// Entries directly under `/proc` that expose kernel or physical memory.
const PROC_ENTRIES: &[&str] = &["kcore", "vmcore", "kpagecount", "kpageflags", "kpagecgroup"];

/// Places on a Talos node that hold secrets (machine config, PKI, kubeconfigs, etcd data,
/// Kubernetes secret volumes) or raw devices, refused whatever the allowlist says.
const SECRET_TREES: &[&[&str]] = &[
    &["system", "state"],
    &["system", "secrets"],
    &["var", "lib", "etcd"],
    &["var", "lib", "kubelet", "pki"],
    &["var", "lib", "kubelet", "pods"],
    &["var", "lib", "kubelet", "kubeconfig"],
    &["etc", "kubernetes"],
    &["dev"],
];

/// Normalises an absolute path, refusing anything ambiguous: it must start with `/`, and may
/// not contain `.` or `..` components, empty components (`//`), NUL or other control
/// characters, or backslashes; it is at most [`MAX_PATH_BYTES`] long with components of at most
/// [`MAX_COMPONENT_BYTES`]. One trailing `/` is dropped. The result is the same path, so
/// normalising it again gives it back unchanged.
pub fn normalise_path(path: &str) -> Result<String, ToolError> {
    normalise(path, "path")
}

pub(crate) fn normalise(path: &str, field: &'static str) -> Result<String, ToolError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ToolError::invalid(
            field,
            format!("is longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(ToolError::invalid(
            field,
            "contains a control character (NUL, newline, …)",
        ));
    }
    if path.contains('\\') {
        return Err(ToolError::invalid(field, "contains a backslash"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ToolError::invalid(
            field,
            format!("must be absolute; `{path}` is not"),
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok("/".to_owned());
    }
    for part in rest.split('/') {
        match part {
            "" => {
                return Err(ToolError::invalid(
                    field,
                    format!("`{path}` has an empty component (`//`); write the path plainly"),
                ));
            }
            "." => {
                return Err(ToolError::invalid(
                    field,
                    format!("`{path}` has a `.` component; write the path plainly"),
                ));
            }
            ".." => {
                return Err(ToolError::invalid(
                    field,
                    format!("`{path}` has a `..` component; name the directory itself"),
                ));
            }
            p if p.len() > MAX_COMPONENT_BYTES => {
                return Err(ToolError::invalid(
                    field,
                    format!("has a component longer than {MAX_COMPONENT_BYTES} bytes"),
                ));
            }
            _ => {}
        }
    }
    Ok(format!("/{rest}"))
}

/// Whether a `/proc` entry is a process directory: a pid, `self` or `thread-self`.
fn is_process_dir(name: &str) -> bool {
    name == "self"
        || name == "thread-self"
        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a normalised path is refused whatever the allowlist says, if it is.
pub fn refusal(normal: &str) -> Option<String> {
    let parts: Vec<&str> = normal.split('/').filter(|p| !p.is_empty()).collect();
    if let ["proc", rest @ ..] = parts.as_slice() {
        if let [entry, ..] = rest
            && PROC_ENTRIES.contains(entry)
        {
            return Some(format!(
                "/proc/{entry} exposes kernel or physical memory, which talos-mcp never reads"
            ));
        }
        // Anywhere below /proc/<pid>/ (task/<tid>/ nests the same entries again).
        if let [pid, inner @ ..] = rest
            && is_process_dir(pid)
            && let Some(entry) = inner.iter().find(|e| PROCESS_ENTRIES.contains(e))
        {
            return Some(format!(
                "`{entry}` of a process ({normal}) follows links to the node's whole filesystem or \
                 exposes the process's memory, environment or open files, which hold secrets; \
                 talos-mcp never reads or lists it"
            ));
        }
    }
    SECRET_TREES
        .iter()
        .find(|tree| parts.len() >= tree.len() && parts[..tree.len()] == tree[..])
        .map(|tree| {
            format!(
                "/{} holds secrets (machine config, keys, kubeconfigs, etcd data) or raw devices, which \
                 talos-mcp never reads or lists; for the machine config read the resource \
                 talos://{{context}}/nodes/{{node}}/machineconfig, which is redacted",
                tree.join("/")
            )
        })
}

/// Whether a path as the node reports it (a listing entry) may be shown: it normalises and is
/// not refused.
pub(crate) fn may_show(path: &str) -> bool {
    normalise(path, "path").is_ok_and(|p| refusal(&p).is_none())
}

/// Normalises `path`, checks it is under one of `allowed` (component by component: `/procfoo`
/// is not under `/proc`), and refuses secret entries. Returns the normalised path.
pub fn check_path(path: &str, allowed: &[String]) -> Result<String, ToolError> {
    let outside = || ToolError::PathNotAllowed {
        path: path.to_owned(),
        allowed: allowed.to_vec(),
    };
    // Walking up is an attempt to leave the allowlist, and is reported as such.
    if path.split('/').any(|c| c == "..") {
        return Err(outside());
    }
    let normal = normalise(path, "path")?;
    let components = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let wanted = components(&normal);
    let ok = allowed.iter().any(|a| {
        let a = components(a);
        a.len() <= wanted.len() && wanted[..a.len()] == a[..]
    });
    if !ok {
        return Err(outside());
    }
    check_normal(&normal)?;
    Ok(normal)
}

/// Refuses a normalised path that names a secret entry.
pub(crate) fn check_normal(normal: &str) -> Result<(), ToolError> {
    match refusal(normal) {
        Some(why) => Err(ToolError::Refused(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed() -> Vec<String> {
        vec![
            "/proc".to_owned(),
            "/sys".to_owned(),
            "/var/log/".to_owned(),
        ]
    }

    #[test]
    fn allowed_paths_normalise_to_themselves() {
        for (given, normal) in [
            ("/proc/loadavg", "/proc/loadavg"),
            ("/var/log/", "/var/log"),
            ("/var/log", "/var/log"),
            ("/proc/1/cmdline", "/proc/1/cmdline"),
            ("/proc/self/status", "/proc/self/status"),
            ("/proc/1/task/1/status", "/proc/1/task/1/status"),
            (
                "/proc/sys/kernel/random/boot_id",
                "/proc/sys/kernel/random/boot_id",
            ),
        ] {
            assert_eq!(check_path(given, &allowed()).unwrap(), normal, "{given}");
        }
    }

    #[test]
    fn links_out_of_proc_and_process_memory_are_refused() {
        for bad in [
            "/proc/1/root/system/state/config.yaml",
            "/proc/1/root",
            "/proc/1/root/",
            "/proc/self/root/system/secrets/kubernetes/kubeconfig",
            "/proc/thread-self/root/etc/kubernetes",
            "/proc/42/cwd/system/state/config.yaml",
            "/proc/1/fd/3",
            "/proc/1/fdinfo/3",
            "/proc/1/environ",
            "/proc/self/environ",
            "/proc/1/mem",
            "/proc/1/exe",
            "/proc/1/map_files/55d0-55e0",
            "/proc/1/ns/mnt",
            "/proc/1/task/1/root/system/state/config.yaml",
            "/proc/self/task/7/task/7/cwd",
            "/proc/thread-self/fd/1",
            "/proc/kcore",
        ] {
            let e = check_path(bad, &allowed()).unwrap_err();
            assert!(matches!(e, ToolError::Refused(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_trees_are_refused_even_when_allowed() {
        let everything = vec!["/".to_owned()];
        for bad in [
            "/system/state/config.yaml",
            "/system/secrets",
            "/var/lib/etcd/member/snap/db",
            "/etc/kubernetes/kubeconfig-kubelet",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~secret/x/token",
            "/dev/sda",
        ] {
            let e = check_path(bad, &everything).unwrap_err();
            assert!(matches!(e, ToolError::Refused(_)), "{bad}: {e}");
        }
        assert_eq!(
            check_path("/var/lib/kubelet/config.yaml", &everything).unwrap(),
            "/var/lib/kubelet/config.yaml"
        );
        assert_eq!(check_path("/devices", &everything).unwrap(), "/devices");
    }

    #[test]
    fn allowlist_is_compared_by_components() {
        for bad in ["/procfoo", "/processes", "/var/logs", "/etc/shadow", "/"] {
            assert!(
                matches!(
                    check_path(bad, &allowed()),
                    Err(ToolError::PathNotAllowed { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            check_path("/proc/../etc/shadow", &allowed()),
            Err(ToolError::PathNotAllowed { .. })
        ));
        assert!(matches!(
            normalise_path("/proc/../etc/shadow"),
            Err(ToolError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn ambiguous_syntax_is_refused() {
        let long_component = format!("/proc/{}", "a".repeat(256));
        let long_path = format!("/proc{}", "/a".repeat(2100));
        for bad in [
            "proc/loadavg",
            "",
            "/proc//loadavg",
            "/proc/./loadavg",
            "/proc/loadavg\0/x",
            "/proc/loadavg\n",
            "/proc\\..\\etc",
            "//proc",
            long_component.as_str(),
            long_path.as_str(),
        ] {
            assert!(
                matches!(
                    check_path(bad, &allowed()),
                    Err(ToolError::InvalidArgument { .. })
                ),
                "{bad:?}"
            );
        }
    }

    /// Path-like strings built from components an attacker would try.
    fn path_strategy() -> impl Strategy<Value = String> {
        let component = prop_oneof![
            Just("proc".to_owned()),
            Just("1".to_owned()),
            Just("self".to_owned()),
            Just("thread-self".to_owned()),
            Just("task".to_owned()),
            Just("root".to_owned()),
            Just("cwd".to_owned()),
            Just("fd".to_owned()),
            Just("environ".to_owned()),
            Just("system".to_owned()),
            Just("state".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just(String::new()),
            Just("\\".to_owned()),
            Just("\0".to_owned()),
            "[a-z0-9.\\-]{1,6}",
        ];
        (
            proptest::bool::ANY,
            proptest::collection::vec(component, 0..8),
            proptest::bool::ANY,
        )
            .prop_map(|(abs, parts, trailing)| {
                let mut s = if abs { "/".to_owned() } else { String::new() };
                s.push_str(&parts.join("/"));
                if trailing {
                    s.push('/');
                }
                s
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn accepted_paths_are_plain_stable_and_never_secret(path in path_strategy()) {
            let everything = vec!["/".to_owned()];
            if let Ok(normal) = check_path(&path, &everything) {
                prop_assert!(normal.starts_with('/'));
                prop_assert!(!normal.contains('\0') && !normal.contains('\\'));
                if normal != "/" {
                    for part in normal[1..].split('/') {
                        prop_assert!(!part.is_empty() && part != "." && part != "..", "{normal}");
                    }
                }
                prop_assert_eq!(normalise_path(&normal).ok(), Some(normal.clone()));
                let parts: Vec<&str> = normal.split('/').collect();
                if parts.len() > 3 && parts[1] == "proc" && is_process_dir(parts[2]) {
                    for part in &parts[3..] {
                        prop_assert!(!PROCESS_ENTRIES.contains(part), "{normal} reaches a process link");
                    }
                }
                prop_assert!(!normal.starts_with("/system/state"), "{normal}");
            }
        }

        #[test]
        fn normalising_never_panics_and_is_idempotent(path in "\\PC{0,64}") {
            if let Ok(normal) = normalise_path(&path) {
                prop_assert_eq!(normalise_path(&normal).ok(), Some(normal));
            }
        }
    }
}
