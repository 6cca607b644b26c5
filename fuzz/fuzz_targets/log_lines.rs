//! Log chunk reassembly: any bytes cut into any chunks give the same lines as one chunk, each
//! line bounded; the tail buffer keeps the newest lines within its budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use talos_client::{LineAssembler, MAX_LINE_BYTES, TailBuffer};

fn assemble<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut out = Vec::new();
    let mut a = LineAssembler::default();
    for c in chunks {
        a.push(c, |l| out.push(l));
    }
    a.finish(|l| out.push(l));
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (head, body) = data.split_at(3);
    let step = usize::from(head[0]).max(1);
    let whole = assemble(std::iter::once(body));
    let chunked = assemble(body.chunks(step));
    assert_eq!(whole, chunked, "chunk boundaries changed the lines");
    let newlines = body.iter().filter(|b| **b == b'\n').count();
    assert!(whole.len() == newlines || whole.len() == newlines + 1);
    for l in &whole {
        // Invalid UTF-8 bytes become U+FFFD (3 bytes), plus the cut marker.
        assert!(
            l.len() <= 3 * MAX_LINE_BYTES + 32,
            "a line beyond the bound"
        );
    }

    let max_lines = usize::from(head[1]) + 1;
    let max_bytes = usize::from(head[2]) * 16 + 1;
    let mut tail = TailBuffer::new(max_lines, max_bytes);
    for l in &whole {
        tail.push(l.clone());
    }
    let dropped = usize::try_from(tail.dropped()).unwrap_or(usize::MAX);
    let kept = tail.into_lines();
    assert_eq!(kept.len() + dropped, whole.len());
    assert_eq!(
        kept.as_slice(),
        &whole[whole.len() - kept.len()..],
        "not the newest lines"
    );
    assert!(kept.len() <= max_lines);
    let bytes: usize = kept.iter().map(String::len).sum();
    assert!(
        bytes <= max_bytes || kept.len() == 1,
        "over the byte budget"
    );
});
