//! Path normalisation and the file allowlist: any string is refused or becomes a plain absolute
//! path that normalises to itself, is inside the allowlist by whole components, and never names a
//! process link or a secret location.
#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_mcp::fuzzing::{check_path, normalise_path, refusal};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(normal) = normalise_path(path) {
        assert!(normal.starts_with('/'), "not absolute: {normal:?}");
        assert_eq!(normalise_path(&normal).ok().as_deref(), Some(normal.as_str()), "not stable");
        for part in normal.split('/').skip(1).filter(|_| normal != "/") {
            assert!(!matches!(part, "" | "." | ".."), "a bad component in {normal:?}");
            assert!(!part.contains(['\\', '\0']), "a bad byte in {normal:?}");
        }
    }
    let allowed = vec!["/".to_owned()];
    if let Ok(checked) = check_path(path, &allowed) {
        assert!(refusal(&checked).is_none(), "a refused place passed: {checked:?}");
        // Independently of `refusal`: below a process directory, no link-following entry.
        let parts: Vec<&str> = checked.split('/').skip(1).collect();
        if let ["proc", pid, rest @ ..] = parts.as_slice()
            && (pid.bytes().all(|b| b.is_ascii_digit()) || matches!(*pid, "self" | "thread-self"))
        {
            assert!(
                !rest
                    .iter()
                    .any(|p| matches!(*p, "root" | "cwd" | "fd" | "environ" | "mem" | "map_files")),
                "a process link passed: {checked:?}"
            );
        }
    }
    let narrow = vec!["/proc".to_owned(), "/var/log".to_owned()];
    if let Ok(checked) = check_path(path, &narrow) {
        assert!(
            checked == "/proc"
                || checked.starts_with("/proc/")
                || checked == "/var/log"
                || checked.starts_with("/var/log/"),
            "outside the allowlist: {checked:?}"
        );
    }
});
