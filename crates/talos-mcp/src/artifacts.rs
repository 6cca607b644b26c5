//! The artifact directory: where snapshots, machine-configuration backups and kubeconfigs are
//! written (directory 0700, files 0600), how they are named, listed and pruned, and how a file
//! name a model gives is resolved inside it.
//!
//! Names this server writes are `etcd_<context>_<node>_<stamp>.snapshot` and
//! `config_<context>_<node>_<stamp>.yaml`: context and node keep `[A-Za-z0-9.-]` and encode any
//! other byte as `~XX`, so `_` only separates fields and a name parses back; the stamp is UTC
//! `YYYYMMDDTHHMMSS.nnnnnnnnnZ` and sorts by time. Retention deletes only files whose names
//! parse so, of one kind and context, never following a symlink.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::error::ToolError;

/// What an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An etcd snapshot.
    Snapshot,
    /// A node's machine configuration.
    Config,
    /// An admin kubeconfig.
    Kubeconfig,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Snapshot => "etcd",
            Self::Config => "config",
            Self::Kubeconfig => "kubeconfig",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Snapshot => ".snapshot",
            Self::Config | Self::Kubeconfig => ".yaml",
        }
    }
}

/// A name this server wrote, parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub kind: Kind,
    pub context: String,
    pub node: String,
    /// `YYYYMMDDTHHMMSS.nnnnnnnnnZ`.
    pub stamp: String,
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes().take(96) {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The stamp of `t`: UTC, sortable, nanoseconds.
pub fn stamp(t: SystemTime) -> String {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let civil = crate::tools::rfc3339(t).replace(['-', ':'], "");
    format!("{}.{nanos:09}Z", civil.trim_end_matches('Z'))
}

/// The stamp as RFC 3339 (what the model is shown).
pub fn stamp_rfc3339(stamp: &str) -> Option<String> {
    stamp_time(stamp)
}

fn stamp_time(stamp: &str) -> Option<String> {
    let b = stamp.as_bytes();
    if b.len() != 26 || b[8] != b'T' || b[15] != b'.' || b[25] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| {
        stamp
            .get(r)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
    };
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    ))
}

/// The file name of a new artifact.
pub fn file_name(kind: Kind, context: &str, node: &str, at: SystemTime) -> String {
    format!(
        "{}_{}_{}_{}{}",
        kind.prefix(),
        encode(context),
        encode(node),
        stamp(at),
        kind.suffix()
    )
}

/// Parses a name this server wrote (snapshots and config backups).
pub fn parse(name: &str) -> Option<Name> {
    for kind in [Kind::Snapshot, Kind::Config] {
        let Some(rest) = name
            .strip_prefix(kind.prefix())
            .and_then(|r| r.strip_prefix('_'))
            .and_then(|r| r.strip_suffix(kind.suffix()))
        else {
            continue;
        };
        let mut fields = rest.split('_');
        let (Some(context), Some(node), Some(stamp), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        stamp_time(stamp)?;
        return Some(Name {
            kind,
            context: decode(context)?,
            node: decode(node)?,
            stamp: stamp.to_owned(),
        });
    }
    None
}

/// Creates the directory (0700) if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), ToolError> {
    crate::files::private_dir(dir)
        .map_err(|e| ToolError::Local(format!("cannot create {}: {e}", dir.display())))
}

/// Creates a new file (0600, never replacing one) for writing.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(file: &mut std::fs::File) -> std::io::Result<String> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Deletes the oldest artifacts of `kind` and `context` (and `node`, if given) beyond the newest
/// `keep`; returns the names deleted. Only regular files whose names parse as this server's are
/// considered.
pub fn prune(
    dir: &Path,
    kind: Kind,
    context: &str,
    node: Option<&str>,
    keep: usize,
) -> Result<Vec<String>, ToolError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ToolError::Local(format!("cannot list {}: {e}", dir.display())))?;
    let mut ours: Vec<(String, String)> = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(parsed) = parse(&name) else { continue };
        if parsed.kind != kind
            || parsed.context != context
            || node.is_some_and(|n| n != parsed.node)
        {
            continue;
        }
        // symlink_metadata: a symlink is never followed, nor deleted.
        if entry
            .path()
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file())
        {
            ours.push((parsed.stamp, name));
        }
    }
    ours.sort_by(|a, b| b.cmp(a));
    let mut deleted = Vec::new();
    for (_, name) in ours.into_iter().skip(keep) {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => deleted.push(name),
            Err(e) => tracing::warn!(file = %name, error = %e, "cannot delete an old artifact"),
        }
    }
    Ok(deleted)
}

/// One file in the artifact directory.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Entry {
    pub name: String,
    /// `snapshot`, `config` or `kubeconfig` (a plain string in the schema: the read-only tool
    /// list is tight).
    #[schemars(with = "String")]
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it was written (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A verified snapshot's highest revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// A verified snapshot's revision keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
}

/// Most files listed.
pub const MAX_LISTED: usize = 200;

/// The artifacts in the directory (regular files only: symlinks, hidden files and unknown names
/// left out), newest first, at most [`MAX_LISTED`], each hashed; and how many more there were.
pub fn list(dir: &Path) -> Result<(Vec<Entry>, usize), ToolError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => {
            return Err(ToolError::Local(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
        }
    };
    let mut found: Vec<(String, String, u64)> = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        // Snapshots, configuration backups and kubeconfigs (a snapshot copied in by hand keeps
        // a `.snapshot` or `.db` name); nothing else.
        let known = parse(&name).is_some()
            || name.starts_with("kubeconfig-")
            || name.ends_with(".snapshot")
            || name.ends_with(".db");
        if !meta.file_type().is_file() || !known {
            continue;
        }
        let sort = parse(&name).map_or_else(
            || meta.modified().map(stamp).unwrap_or_default(),
            |n| n.stamp,
        );
        found.push((sort, name, meta.len()));
    }
    found.sort_by(|a, b| b.cmp(a));
    let more = found.len().saturating_sub(MAX_LISTED);
    let mut out = Vec::new();
    for (sort, name, size) in found.into_iter().take(MAX_LISTED) {
        let parsed = parse(&name);
        let kind = match &parsed {
            Some(p) => p.kind,
            None if name.starts_with("kubeconfig-") => Kind::Kubeconfig,
            None => Kind::Snapshot,
        };
        let sha256 = open_regular(dir, &name)
            .ok()
            .and_then(|mut f| sha256_file(&mut f).ok());
        out.push(Entry {
            kind,
            context: parsed.as_ref().map(|p| p.context.clone()),
            node: parsed.as_ref().map(|p| p.node.clone()),
            time: stamp_time(&sort),
            size_bytes: size,
            sha256,
            name,
            revision: None,
            keys: None,
        });
    }
    Ok((out, more))
}

/// Resolves a file a model names — a bare file name in the artifact directory, or a path to
/// one — to that file's name. Refused: anything outside the directory, `..`, subdirectories,
/// hidden and temporary files, and NUL bytes.
pub fn resolve(dir: &Path, given: &str) -> Result<String, ToolError> {
    let refuse = |why: &str| {
        ToolError::invalid(
            "path",
            format!(
                "`{}` {why}; name a file of the artifact directory (list them by calling without `path`)",
                crate::error::echo(given)
            ),
        )
    };
    if given.is_empty() || given.len() > 4096 || given.contains('\0') {
        return Err(refuse("is not a usable file name"));
    }
    let path = Path::new(given);
    let relative = if path.is_absolute() {
        let canonical = dir.canonicalize().ok();
        path.strip_prefix(dir)
            .ok()
            .or_else(|| canonical.as_deref().and_then(|c| path.strip_prefix(c).ok()))
            .ok_or_else(|| refuse("is outside the artifact directory"))?
            .to_path_buf()
    } else {
        path.to_path_buf()
    };
    let mut components = relative.components();
    let name = match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) => name
            .to_str()
            .ok_or_else(|| refuse("is not a usable file name"))?,
        _ => return Err(refuse("is not a file directly in the artifact directory")),
    };
    if name.starts_with('.') {
        return Err(refuse("is a hidden or temporary file"));
    }
    Ok(name.to_owned())
}

/// Opens `dir/name` for reading only if it is a regular file, not a symlink — checked before
/// and after opening (same device and inode), so a swap in between is caught.
pub fn open_regular(dir: &Path, name: &str) -> std::io::Result<std::fs::File> {
    let path: PathBuf = dir.join(name);
    let before = path.symlink_metadata()?;
    if !before.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (symlinks are not followed)",
        ));
    }
    let file = std::fs::File::open(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let after = file.metadata()?;
        if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the file changed while it was opened",
            ));
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let name = file_name(Kind::Snapshot, "prod_eu/1", "10.0.0.1", t);
        assert_eq!(
            name,
            "etcd_prod~5Feu~2F1_10.0.0.1_20231114T221320.000000005Z.snapshot"
        );
        let p = parse(&name).unwrap();
        assert_eq!(
            (p.kind, p.context.as_str(), p.node.as_str()),
            (Kind::Snapshot, "prod_eu/1", "10.0.0.1")
        );
        assert_eq!(
            stamp_time(&p.stamp).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        let later = file_name(
            Kind::Snapshot,
            "a",
            "n",
            t + std::time::Duration::from_secs(1),
        );
        assert!(stamp(t) < parse(&later).unwrap().stamp);
        for bad in [
            "etcd_a_b.snapshot",
            "etcd_a_b_c_d.snapshot",
            "etcd_a_b_notastamp.snapshot",
            "etcd_a b_n_20231114T221320.000000005Z.snapshot",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn retention_keeps_exactly_n_of_one_context_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut names = Vec::new();
        for i in 0..6 {
            let n = file_name(
                Kind::Snapshot,
                "a",
                "n1",
                t0 + std::time::Duration::from_secs(i),
            );
            std::fs::write(d.join(&n), b"x").unwrap();
            names.push(n);
        }
        let other = file_name(Kind::Snapshot, "b", "n1", t0);
        std::fs::write(d.join(&other), b"x").unwrap();
        let config = file_name(Kind::Config, "a", "n1", t0);
        std::fs::write(d.join(&config), b"x").unwrap();
        std::fs::write(d.join("etcd-legacy.snapshot"), b"x").unwrap();
        // A symlink named like an old snapshot, pointing at a file outside: never touched.
        let outside = tempfile::NamedTempFile::new().unwrap();
        let link = file_name(
            Kind::Snapshot,
            "a",
            "n1",
            t0 - std::time::Duration::from_secs(10),
        );
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), d.join(&link)).unwrap();

        let deleted = prune(d, Kind::Snapshot, "a", None, 2).unwrap();
        assert_eq!(
            deleted,
            names[..4].iter().rev().cloned().collect::<Vec<_>>()
        );
        for n in &names[4..] {
            assert!(d.join(n).exists());
        }
        for kept in [&other, &config, &"etcd-legacy.snapshot".to_owned()] {
            assert!(d.join(kept).exists(), "{kept}");
        }
        assert!(outside.path().exists());
        #[cfg(unix)]
        assert!(d.join(&link).symlink_metadata().is_ok());
    }

    #[test]
    fn model_paths_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.snapshot"), b"x").unwrap();
        assert_eq!(resolve(d, "a.snapshot").unwrap(), "a.snapshot");
        let abs = d.join("a.snapshot");
        assert_eq!(resolve(d, abs.to_str().unwrap()).unwrap(), "a.snapshot");
        for bad in [
            "",
            "../a.snapshot",
            "/etc/passwd",
            "sub/a.snapshot",
            ".hidden",
            "a\0b",
            "..",
            "./../x",
        ] {
            assert!(resolve(d, bad).is_err(), "{bad:?}");
        }
        let outside = d.join("../elsewhere");
        assert!(resolve(d, outside.to_str().unwrap()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_in_the_directory_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(secret.path(), dir.path().join("link.snapshot")).unwrap();
        assert!(open_regular(dir.path(), "link.snapshot").is_err());
        std::fs::write(dir.path().join("real.snapshot"), b"x").unwrap();
        assert!(open_regular(dir.path(), "real.snapshot").is_ok());
        let (listed, _) = list(dir.path()).unwrap();
        assert_eq!(
            listed.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["real.snapshot"]
        );
    }
}
