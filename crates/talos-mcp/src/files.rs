//! Private files on the server: directories 0700, secret-bearing files 0600.

use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}
