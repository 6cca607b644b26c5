//! Bounded property tests of stream consumption: log chunk reassembly, the tail buffer and the
//! kubeconfig tar.gz reader (the `log_lines` and `kubeconfig` fuzz targets explore the same
//! surface without a bound; see docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use talos_client::{LineAssembler, MAX_LINE_BYTES, TailBuffer, unpack_kubeconfig};
use talos_sim::archive::pack;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn assemble(chunks: &[&[u8]]) -> Vec<String> {
    let mut out = Vec::new();
    let mut a = LineAssembler::default();
    for c in chunks {
        a.push(c, |l| out.push(l));
    }
    a.finish(|l| out.push(l));
    out
}

/// Log-like bytes: mostly text and newlines, some CR, some invalid UTF-8, sometimes long lines.
fn log_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![8 => b'a'..=b'z', 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => any::<u8>()],
            0..2000,
        ),
        1 => (1usize..3, 0usize..100).prop_map(|(n, extra)| {
            let mut v = vec![b'x'; n * MAX_LINE_BYTES + extra];
            v.push(b'\n');
            v.extend_from_slice(b"after");
            v
        }),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    /// Wherever the chunks are cut, the lines are the same as from one chunk.
    #[test]
    fn lines_do_not_depend_on_chunk_boundaries(
        data in log_bytes(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&data[start..p]);
            start = p;
        }
        chunks.push(&data[start..]);
        let whole = assemble(&[&data]);
        prop_assert_eq!(&assemble(&chunks), &whole);

        let newlines = data.iter().filter(|b| **b == b'\n').count();
        let trailing = !data.is_empty() && data.last() != Some(&b'\n');
        prop_assert_eq!(whole.len(), newlines + usize::from(trailing));
        for l in &whole {
            prop_assert!(!l.contains('\n'));
            prop_assert!(l.len() <= 3 * MAX_LINE_BYTES + 32, "line of {} bytes", l.len());
        }
        // Plain text lines come through as they were.
        if data.iter().all(|b| b.is_ascii_lowercase() || *b == b'\n') {
            let text = std::str::from_utf8(&data).unwrap();
            let mut expected: Vec<String> = text
                .split('\n')
                .map(|l| {
                    if l.len() > MAX_LINE_BYTES {
                        format!("{} …[line cut]", &l[..MAX_LINE_BYTES])
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            if !trailing {
                expected.pop();
            }
            prop_assert_eq!(whole, expected);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The tail buffer keeps exactly the newest lines that fit both budgets.
    #[test]
    fn the_tail_is_the_newest_lines_within_budget(
        lines in proptest::collection::vec("[a-z]{0,40}", 0..200),
        max_lines in 1usize..50,
        max_bytes in 1usize..800,
    ) {
        let mut tail = TailBuffer::new(max_lines, max_bytes);
        for l in &lines {
            tail.push(l.clone());
        }
        let dropped = usize::try_from(tail.dropped()).unwrap();
        let peak = tail.peak_bytes();
        let kept = tail.into_lines();
        prop_assert_eq!(kept.len() + dropped, lines.len());
        prop_assert_eq!(kept.as_slice(), &lines[lines.len() - kept.len()..]);
        prop_assert!(kept.len() <= max_lines);
        let bytes: usize = kept.iter().map(String::len).sum();
        prop_assert!(bytes <= max_bytes || kept.len() == 1);
        prop_assert!(peak <= max_bytes.max(41));
        // Maximal: one more of the dropped lines would break a budget.
        if dropped > 0 {
            let next = &lines[lines.len() - kept.len() - 1];
            prop_assert!(kept.len() + 1 > max_lines || bytes + next.len() > max_bytes);
        }
    }

    /// Any bytes: the kubeconfig reader answers or refuses, never panics.
    #[test]
    fn any_bytes_are_read_or_refused(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = unpack_kubeconfig(&data);
    }

    /// Real archives: the first regular file named `kubeconfig` (in any directory) is returned
    /// exactly; without one, or cut short before it ends, the archive is refused.
    #[test]
    fn archives_yield_their_kubeconfig(
        files in proptest::collection::vec(
            (prop_oneof!["[a-z]{1,12}", Just("kubeconfig".to_owned()), Just("dir/kubeconfig".to_owned())],
             proptest::collection::vec(any::<u8>(), 0..1500)),
            0..5,
        ),
        end_marker in any::<bool>(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let mut archive = pack(&refs, end_marker);
        let expected = files
            .iter()
            .find(|(n, _)| n.rsplit('/').next() == Some("kubeconfig"))
            .map(|(_, d)| d.clone());
        match cut {
            None => match (&expected, unpack_kubeconfig(&archive)) {
                (Some(want), Ok(kc)) => prop_assert_eq!(kc.expose_bytes(), want.as_slice()),
                (None, Err(e)) => prop_assert!(e.contains("no file named kubeconfig"), "{e}"),
                (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want.is_some(), got.map(|k| k.len())),
            },
            Some(i) => {
                archive.truncate(i.index(archive.len()));
                // A truncated gzip stream is refused, or (cut inside the trailer) what it
                // yields is still the exact file.
                if let Ok(kc) = unpack_kubeconfig(&archive) {
                    prop_assert_eq!(Some(kc.expose_bytes().to_vec()), expected);
                }
            }
        }
    }
}
