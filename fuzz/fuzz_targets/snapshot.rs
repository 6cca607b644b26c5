//! The etcd snapshot verifier: any bytes as a snapshot file, and a genuine snapshot whose
//! database bytes the input overwrites before the trailing hash is recomputed (so the bbolt
//! walk is reached). No panic, no unbounded work; a verified file's facts are consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_mcp::fuzzing::verify_snapshot;

fuzz_target!(|data: &[u8]| {
    for expect_hash in [true, false] {
        if let Ok(report) = verify_snapshot(data, expect_hash) {
            assert_eq!(report.size, data.len() as u64);
            assert!(report.revision.is_none() || report.keys.is_some());
        }
    }
    // Splice the input into a real database at an offset it chooses, then hash it as etcd does.
    let Some((&at, patch)) = data.split_first() else {
        return;
    };
    let mut db = talos_sim::etcd_db::database("fuzz", 2500);
    let start = (usize::from(at) * 97) % db.len();
    for (i, b) in patch.iter().enumerate() {
        if let Some(slot) = db.get_mut(start + i) {
            *slot = *b;
        }
    }
    let file = talos_sim::etcd_db::with_hash(db.clone());
    if let Ok(report) = verify_snapshot(&file, true) {
        assert!(report.hash_checked);
        assert_eq!(report.size, file.len() as u64);
    }
    let _ = verify_snapshot(&db, false);
});
