//! Where talosctl looks for its configuration, in the same order.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the talosconfig file.
pub const TALOSCONFIG_ENV: &str = "TALOSCONFIG";
/// Environment variable naming the Talos state directory (used only when absolute).
pub const TALOS_HOME_ENV: &str = "TALOS_HOME";
/// Where Talos mounts a talosconfig into pods whose ServiceAccount has Talos API access.
pub const SERVICE_ACCOUNT_CONFIG: &str = "/var/run/secrets/talos.dev/config";

/// The candidate paths in lookup order, with environment variables read through `env`.
///
/// An explicit path is the only candidate. Otherwise: `$TALOSCONFIG`, then `config` in the Talos
/// directory (`$TALOS_HOME` when set to an absolute path, else `~/.talos`), then the ServiceAccount
/// mount. The first that exists wins.
pub fn candidate_paths(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    let mut paths = Vec::with_capacity(3);
    if let Some(path) = env(TALOSCONFIG_ENV).filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(path));
    }
    let talos_home = env(TALOS_HOME_ENV)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let talos_dir = talos_home.or_else(|| {
        env("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".talos"))
    });
    if let Some(dir) = talos_dir {
        paths.push(dir.join("config"));
    }
    paths.push(PathBuf::from(SERVICE_ACCOUNT_CONFIG));
    paths
}

/// The first candidate that exists, or every candidate tried.
pub(crate) fn first_existing(candidates: Vec<PathBuf>) -> Result<PathBuf, Vec<PathBuf>> {
    match candidates.iter().find(|p| p.exists()) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn explicit_path_is_the_only_candidate() {
        let paths = candidate_paths(Some(Path::new("/x/cfg")), env(&[("TALOSCONFIG", "/y")]));
        assert_eq!(paths, vec![PathBuf::from("/x/cfg")]);
    }

    #[test]
    fn order_matches_talosctl() {
        let paths = candidate_paths(
            None,
            env(&[("TALOSCONFIG", "/etc/tc"), ("HOME", "/home/u")]),
        );
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/etc/tc"),
                PathBuf::from("/home/u/.talos/config"),
                PathBuf::from(SERVICE_ACCOUNT_CONFIG),
            ]
        );
    }

    #[test]
    fn absolute_talos_home_replaces_dot_talos() {
        let paths = candidate_paths(
            None,
            env(&[("TALOS_HOME", "/srv/talos"), ("HOME", "/home/u")]),
        );
        assert_eq!(paths[0], PathBuf::from("/srv/talos/config"));
    }

    #[test]
    fn relative_talos_home_is_ignored_like_talosctl() {
        let paths = candidate_paths(None, env(&[("TALOS_HOME", "rel"), ("HOME", "/home/u")]));
        assert_eq!(paths[0], PathBuf::from("/home/u/.talos/config"));
    }

    #[test]
    fn without_home_only_the_mount_remains() {
        assert_eq!(
            candidate_paths(None, env(&[])),
            vec![PathBuf::from(SERVICE_ACCOUNT_CONFIG)]
        );
    }

    #[test]
    fn first_existing_prefers_earlier_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&b, "").unwrap();
        assert_eq!(first_existing(vec![a.clone(), b.clone()]), Ok(b.clone()));
        std::fs::write(&a, "").unwrap();
        assert_eq!(first_existing(vec![a.clone(), b]), Ok(a));
        let missing = dir.path().join("missing");
        assert_eq!(first_existing(vec![missing.clone()]), Err(vec![missing]));
    }
}
