//! Verification of etcd snapshot files, without a cluster.
//!
//! An etcd snapshot is a bbolt database followed by the SHA-256 of the database bytes. The
//! checks, in order: the trailing hash (unless the operator says the file is a copied database
//! without one), the bbolt meta pages (magic, version 2, page size, FNV-64a checksum; the valid
//! one with the highest transaction id wins), the file's length against the meta page's page
//! count, and then — where readable — the `key` bucket's B+tree, counting its revision keys
//! (8-byte big-endian main revision, `_`, 8-byte sub revision) and finding the highest revision.
//!
//! Nothing read from the file is trusted: every page id is bounded by the file's length, every
//! element by its page, every page is visited at most once, and no read is larger than
//! [`MAX_PAGE_BYTES`]. The whole file is never held in memory.

use std::collections::HashSet;
use std::io::Read as _;

/// bbolt's magic number.
const MAGIC: u32 = 0xED0C_DAED;
/// bbolt's file format version.
const VERSION: u32 = 2;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_LEAF: u32 = 0x01;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
/// Bytes of a meta page's fields the checksum covers.
const META_SUMMED: usize = 56;
/// Largest page (with its overflow) read at once.
pub const MAX_PAGE_BYTES: u64 = 16 << 20;
/// Deepest B+tree walked.
const MAX_DEPTH: usize = 32;
/// Length of etcd's trailing hash.
const HASH_LEN: u64 = 32;

/// Random-access bytes: a file, or a buffer (tests and fuzzing).
pub trait Source {
    /// Total length.
    fn len(&self) -> u64;
    /// Whether there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset` (the caller keeps within `len`).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = self
            .get(start..start.saturating_add(buf.len()))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A file and its length (taken once, when it was opened).
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

impl FileSource {
    /// Wraps an open file.
    pub fn new(file: std::fs::File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::io::Seek as _;
        self.file.seek(std::io::SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }
}

/// Why a snapshot is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFault {
    /// Too short to be a snapshot.
    #[error("the file is truncated: {0}")]
    Truncated(String),
    /// The trailing SHA-256 does not match the database bytes.
    #[error("the trailing SHA-256 does not match the database: the file is truncated or corrupted")]
    HashMismatch,
    /// No valid bbolt meta page.
    #[error("not a valid bbolt database: {0}")]
    BadMeta(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// What a snapshot's checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Bytes of the whole file.
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// Whether etcd's trailing hash was present and checked (false: skipped on request).
    pub hash_checked: bool,
    /// bbolt page size.
    pub page_size: u32,
    /// The meta page's transaction id.
    pub txid: u64,
    /// Highest revision in the `key` bucket, where readable.
    pub revision: Option<u64>,
    /// Revision keys in the `key` bucket, where readable.
    pub keys: Option<u64>,
    /// Why the `key` bucket could not be read (the snapshot's integrity still holds).
    pub note: Option<String>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A valid meta page: page size, root bucket page, page count, transaction id.
#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: u32,
    root: u64,
    pages: u64,
    txid: u64,
}

fn parse_meta(page: &[u8]) -> Result<Meta, String> {
    if u16_at(page, 8) != Some(META) {
        return Err("page is not a meta page".into());
    }
    let m = page
        .get(PAGE_HEADER..PAGE_HEADER + META_SUMMED + 8)
        .ok_or("meta page is cut short")?;
    if u32_at(m, 0) != Some(MAGIC) {
        return Err("wrong magic number".into());
    }
    if u32_at(m, 4) != Some(VERSION) {
        return Err(format!("unsupported version {}", u32_at(m, 4).unwrap_or(0)));
    }
    if u64_at(m, META_SUMMED) != Some(fnv64a(&m[..META_SUMMED])) {
        return Err("meta page checksum mismatch".into());
    }
    let page_size = u32_at(m, 8).unwrap_or(0);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("invalid page size {page_size}"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(m, 16).unwrap_or(0),
        pages: u64_at(m, 40).unwrap_or(0),
        txid: u64_at(m, 48).unwrap_or(0),
    })
}

/// Streams the file once: its SHA-256, and whether the last 32 bytes are the SHA-256 of the
/// bytes before them.
fn hashes(src: &mut dyn Source) -> Result<(String, bool), SnapshotFault> {
    let len = src.len();
    let body = len.saturating_sub(HASH_LEN);
    let mut whole = ring::digest::Context::new(&ring::digest::SHA256);
    let mut db = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < body {
        let n = usize::try_from((body - at).min(buf.len() as u64)).unwrap_or(buf.len());
        src.read_at(at, &mut buf[..n])
            .map_err(|e| SnapshotFault::Io(e.to_string()))?;
        whole.update(&buf[..n]);
        db.update(&buf[..n]);
        at += n as u64;
    }
    let mut trailer = vec![0u8; usize::try_from(len - body).unwrap_or(0)];
    src.read_at(body, &mut trailer)
        .map_err(|e| SnapshotFault::Io(e.to_string()))?;
    whole.update(&trailer);
    let matches = trailer.len() as u64 == HASH_LEN && db.finish().as_ref() == trailer.as_slice();
    Ok((hex(whole.finish().as_ref()), matches))
}

/// Checks a snapshot. `expect_hash`: the file ends with etcd's SHA-256 (a snapshot as etcd and
/// Talos write it); false only for a copied database file, whose structure alone is checked.
pub fn verify(src: &mut dyn Source, expect_hash: bool) -> Result<Report, SnapshotFault> {
    let size = src.len();
    if size < 1024 + if expect_hash { HASH_LEN } else { 0 } {
        return Err(SnapshotFault::Truncated(format!(
            "{size} bytes cannot hold a bbolt database{}",
            if expect_hash { " and its hash" } else { "" }
        )));
    }
    let (sha256, hash_ok) = hashes(src)?;
    if expect_hash && !hash_ok {
        return Err(SnapshotFault::HashMismatch);
    }
    let mut db_len = if expect_hash { size - HASH_LEN } else { size };
    let meta = read_metas(src, db_len)?;
    let page = u64::from(meta.page_size);
    // Without the hash check, a snapshot that still carries etcd's trailer is read without it.
    if !expect_hash && db_len % page != 0 && db_len % page == HASH_LEN {
        db_len -= HASH_LEN;
    }
    let pages = db_len / page;
    if db_len % u64::from(meta.page_size) != 0 || pages < meta.pages {
        return Err(SnapshotFault::Truncated(format!(
            "the database has {pages} whole pages of {} bytes, its meta page counts {}",
            meta.page_size, meta.pages
        )));
    }
    let mut report = Report {
        size,
        sha256,
        hash_checked: expect_hash,
        page_size: meta.page_size,
        txid: meta.txid,
        revision: None,
        keys: None,
        note: None,
    };
    let mut walker = Walker {
        src,
        page_size: u64::from(meta.page_size),
        pages: meta.pages,
        seen: HashSet::new(),
    };
    match walker.key_bucket(meta.root) {
        Ok((keys, revision)) => {
            report.keys = Some(keys);
            report.revision = revision;
        }
        Err(e) => report.note = Some(e),
    }
    Ok(report)
}

/// The valid meta page with the highest transaction id (page 0 at offset 0; page 1 one page
/// size further, by page 0's size, else by common sizes).
fn read_metas(src: &mut dyn Source, db_len: u64) -> Result<Meta, SnapshotFault> {
    let mut read = |offset: u64| -> Option<Vec<u8>> {
        let end = offset.checked_add((PAGE_HEADER + META_SUMMED + 8) as u64)?;
        (end <= db_len).then_some(())?;
        let mut buf = vec![0u8; PAGE_HEADER + META_SUMMED + 8];
        src.read_at(offset, &mut buf).ok()?;
        Some(buf)
    };
    let first = read(0).ok_or_else(|| SnapshotFault::Truncated("no meta page".into()));
    let first = first.map(|p| parse_meta(&p));
    let mut errors = Vec::new();
    let mut best: Option<Meta> = None;
    let mut sizes = vec![];
    match first {
        Ok(Ok(m)) => {
            sizes.push(u64::from(m.page_size));
            best = Some(m);
        }
        Ok(Err(e)) => errors.push(format!("meta page 0: {e}")),
        Err(e) => return Err(e),
    }
    sizes.extend([4096u64, 16384, 65536, 8192]);
    sizes.dedup();
    for size in sizes {
        if let Some(page) = read(size)
            && let Ok(m) = parse_meta(&page)
            && u64::from(m.page_size) == size
        {
            if best.is_none_or(|b| m.txid > b.txid) {
                best = Some(m);
            }
            break;
        }
    }
    best.ok_or_else(|| {
        errors.push("meta page 1: not found or invalid".into());
        SnapshotFault::BadMeta(errors.join("; "))
    })
}

/// What a walk calls for each leaf element: flags, key, value.
type Visit<'a> = dyn FnMut(u32, &[u8], &[u8]) + 'a;

/// Walks pages, each at most once.
struct Walker<'a> {
    src: &'a mut dyn Source,
    page_size: u64,
    pages: u64,
    seen: HashSet<u64>,
}

impl Walker<'_> {
    /// Reads page `id` with its overflow, bounded by the page count and [`MAX_PAGE_BYTES`].
    fn page(&mut self, id: u64) -> Result<Vec<u8>, String> {
        if id < 2 || id >= self.pages {
            return Err(format!("page id {id} is outside the database"));
        }
        if !self.seen.insert(id) {
            return Err(format!("page {id} is referenced twice"));
        }
        let offset = id * self.page_size;
        let mut header = [0u8; PAGE_HEADER];
        self.src
            .read_at(offset, &mut header)
            .map_err(|e| e.to_string())?;
        let overflow = u64::from(u32_at(&header, 12).unwrap_or(0));
        let span = overflow
            .checked_add(1)
            .ok_or("page overflow is too large")?;
        if id.checked_add(span).is_none_or(|end| end > self.pages) {
            return Err(format!("page {id} runs past the end of the database"));
        }
        let len = span * self.page_size;
        if len > MAX_PAGE_BYTES {
            return Err(format!("page {id} is larger than {MAX_PAGE_BYTES} bytes"));
        }
        let mut buf = vec![0u8; usize::try_from(len).map_err(|e| e.to_string())?];
        self.src
            .read_at(offset, &mut buf)
            .map_err(|e| e.to_string())?;
        if u64_at(&buf, 0) != Some(id) {
            return Err(format!("page {id} carries another id"));
        }
        Ok(buf)
    }

    /// Finds the `key` bucket in the root bucket's tree and counts it.
    fn key_bucket(&mut self, root: u64) -> Result<(u64, Option<u64>), String> {
        let mut header = None;
        self.walk(root, 0, &mut |flags, key, value| {
            if flags & BUCKET_LEAF != 0 && key == b"key" && header.is_none() {
                header = Some(value.to_vec());
            }
        })?;
        let header = header.ok_or("the database has no `key` bucket")?;
        let bucket_root = u64_at(&header, 0).ok_or("the `key` bucket header is cut short")?;
        let (mut keys, mut revision) = (0u64, None::<u64>);
        let mut count = |flags: u32, key: &[u8], _: &[u8]| {
            if flags & BUCKET_LEAF == 0 {
                keys += 1;
                if key.len() >= 17 && key[8] == b'_' {
                    let mut main = [0u8; 8];
                    main.copy_from_slice(&key[..8]);
                    let rev = u64::from_be_bytes(main);
                    revision = Some(revision.map_or(rev, |r| r.max(rev)));
                }
            }
        };
        if bucket_root == 0 {
            // An inline bucket: its page follows the 16-byte header in the value.
            let page = header
                .get(16..)
                .ok_or("the inline `key` bucket is cut short")?;
            leaf_elements(page, &mut count)?;
        } else {
            self.walk(bucket_root, 0, &mut count)?;
        }
        Ok((keys, revision))
    }

    /// Visits the leaf elements (flags, key, value) of the tree rooted at page `id`.
    fn walk(&mut self, id: u64, depth: usize, visit: &mut Visit<'_>) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("the tree is deeper than any real database".into());
        }
        let page = self.page(id)?;
        match u16_at(&page, 8) {
            Some(LEAF) => leaf_elements(&page, visit),
            Some(BRANCH) => {
                let count = usize::from(u16_at(&page, 10).unwrap_or(0));
                let mut children = Vec::with_capacity(count);
                for i in 0..count {
                    let at = PAGE_HEADER + i * ELEMENT;
                    let child = u64_at(&page, at + 8)
                        .ok_or_else(|| format!("branch page {id} is cut short"))?;
                    children.push(child);
                }
                for child in children {
                    self.walk(child, depth + 1, visit)?;
                }
                Ok(())
            }
            other => Err(format!(
                "page {id} is neither a branch nor a leaf (flags {:#x})",
                other.unwrap_or(0)
            )),
        }
    }
}

/// Visits the elements of one leaf page (the page's bytes, header first).
fn leaf_elements(page: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
    if u16_at(page, 8) != Some(LEAF) {
        return Err("expected a leaf page".into());
    }
    let count = usize::from(u16_at(page, 10).unwrap_or(0));
    for i in 0..count {
        let at = PAGE_HEADER + i * ELEMENT;
        let cut = || format!("leaf element {i} is outside its page");
        let flags = u32_at(page, at).ok_or_else(cut)?;
        let pos = u32_at(page, at + 4).ok_or_else(cut)? as usize;
        let ksize = u32_at(page, at + 8).ok_or_else(cut)? as usize;
        let vsize = u32_at(page, at + 12).ok_or_else(cut)? as usize;
        let kstart = at.checked_add(pos).ok_or_else(cut)?;
        let vstart = kstart.checked_add(ksize).ok_or_else(cut)?;
        let vend = vstart.checked_add(vsize).ok_or_else(cut)?;
        let key = page.get(kstart..vstart).ok_or_else(cut)?;
        let value = page.get(vstart..vend).ok_or_else(cut)?;
        visit(flags, key, value);
    }
    Ok(())
}

/// Verifies a snapshot held in memory (fuzzing, tests).
pub fn verify_bytes(bytes: &[u8], expect_hash: bool) -> Result<Report, SnapshotFault> {
    let mut src = bytes;
    verify(&mut src, expect_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database built by hand, byte by byte, independently of the simulator's writer: page
    /// size 1024, meta pages 0 and 1, root leaf page 2 with an inline `key` bucket of three
    /// revisions (5, 9, 7), no freelist (id 0 is never read).
    fn hand_built() -> Vec<u8> {
        const PS: usize = 1024;
        let mut db = vec![0u8; PS * 3];
        let meta = |db: &mut Vec<u8>, id: usize, txid: u64| {
            let p = id * PS;
            db[p..p + 8].copy_from_slice(&(id as u64).to_le_bytes());
            db[p + 8..p + 10].copy_from_slice(&META.to_le_bytes());
            let m = p + PAGE_HEADER;
            db[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            db[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
            db[m + 8..m + 12].copy_from_slice(&(PS as u32).to_le_bytes());
            db[m + 16..m + 24].copy_from_slice(&2u64.to_le_bytes()); // root bucket page
            db[m + 40..m + 48].copy_from_slice(&3u64.to_le_bytes()); // pages
            db[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv64a(&db[m..m + META_SUMMED]);
            db[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        };
        meta(&mut db, 0, 4);
        meta(&mut db, 1, 3);
        // The inline key bucket's value: bucket header (root 0) + a leaf page of 3 elements.
        let mut inline = vec![0u8; 16];
        let mut leaf = vec![0u8; PAGE_HEADER + 3 * ELEMENT];
        leaf[8..10].copy_from_slice(&LEAF.to_le_bytes());
        leaf[10..12].copy_from_slice(&3u16.to_le_bytes());
        for (i, rev) in [5u64, 9, 7].into_iter().enumerate() {
            let at = PAGE_HEADER + i * ELEMENT;
            let pos = leaf.len() - at;
            leaf[at + 4..at + 8].copy_from_slice(&(pos as u32).to_le_bytes());
            leaf[at + 8..at + 12].copy_from_slice(&17u32.to_le_bytes());
            leaf[at + 12..at + 16].copy_from_slice(&1u32.to_le_bytes());
            leaf.extend_from_slice(&rev.to_be_bytes());
            leaf.push(b'_');
            leaf.extend_from_slice(&0u64.to_be_bytes());
            leaf.push(b'v');
        }
        inline.extend(leaf);
        // Root leaf page 2: one bucket element "key".
        let p = 2 * PS;
        db[p..p + 8].copy_from_slice(&2u64.to_le_bytes());
        db[p + 8..p + 10].copy_from_slice(&LEAF.to_le_bytes());
        db[p + 10..p + 12].copy_from_slice(&1u16.to_le_bytes());
        let at = p + PAGE_HEADER;
        db[at..at + 4].copy_from_slice(&BUCKET_LEAF.to_le_bytes());
        db[at + 4..at + 8].copy_from_slice(&(ELEMENT as u32).to_le_bytes());
        db[at + 8..at + 12].copy_from_slice(&3u32.to_le_bytes());
        db[at + 12..at + 16].copy_from_slice(&(inline.len() as u32).to_le_bytes());
        let data = at + ELEMENT;
        db[data..data + 3].copy_from_slice(b"key");
        db[data + 3..data + 3 + inline.len()].copy_from_slice(&inline);
        db
    }

    fn with_hash(mut db: Vec<u8>) -> Vec<u8> {
        let sum = ring::digest::digest(&ring::digest::SHA256, &db);
        db.extend_from_slice(sum.as_ref());
        db
    }

    #[test]
    fn a_hand_built_snapshot_verifies_with_its_revisions() {
        let file = with_hash(hand_built());
        let r = verify_bytes(&file, true).unwrap();
        assert_eq!(
            (r.revision, r.keys, r.page_size, r.txid),
            (Some(9), Some(3), 1024, 4)
        );
        assert!(r.hash_checked && r.note.is_none());
        // A copied database without the hash verifies only when asked to skip the hash; a
        // snapshot with its trailer verifies either way.
        assert_eq!(
            verify_bytes(&hand_built(), false).unwrap().revision,
            Some(9)
        );
        assert_eq!(verify_bytes(&file, false).unwrap().revision, Some(9));
        assert!(verify_bytes(&hand_built(), true).is_err());
    }

    #[test]
    fn truncated_and_corrupted_snapshots_are_refused() {
        let file = with_hash(hand_built());
        for cut in [1, 31, 32, 100, file.len() - 1] {
            assert!(
                verify_bytes(&file[..file.len() - cut], true).is_err(),
                "cut {cut}"
            );
        }
        let mut flipped = file.clone();
        flipped[2 * 1024 + 60] ^= 0x40;
        assert_eq!(
            verify_bytes(&flipped, true),
            Err(SnapshotFault::HashMismatch)
        );
        // A database cut short but re-hashed (so the hash holds) is refused by its page count.
        let short = with_hash(hand_built()[..2 * 1024].to_vec());
        assert!(matches!(
            verify_bytes(&short, true),
            Err(SnapshotFault::Truncated(_))
        ));
        // Both meta pages broken: refused even with a matching hash.
        let mut db = hand_built();
        db[PAGE_HEADER + 2] ^= 1;
        db[1024 + PAGE_HEADER + 2] ^= 1;
        assert!(matches!(
            verify_bytes(&with_hash(db), true),
            Err(SnapshotFault::BadMeta(_))
        ));
    }

    #[test]
    fn a_damaged_tree_is_reported_not_trusted() {
        // The root page id points past the end: integrity holds, the revision is unreadable.
        let mut db = hand_built();
        for id in [0usize, 1] {
            let m = id * 1024 + PAGE_HEADER;
            db[m + 16..m + 24].copy_from_slice(&u64::MAX.to_le_bytes());
            let sum = fnv64a(&db[m..m + META_SUMMED]);
            db[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        }
        let r = verify_bytes(&with_hash(db), true).unwrap();
        assert_eq!(r.revision, None);
        assert!(r.note.unwrap().contains("outside"));
    }

    #[test]
    fn the_simulators_snapshots_verify_with_their_revision() {
        for rev in [1u64, 77, 4_500] {
            let file = talos_sim::etcd_db::snapshot("c", rev);
            let r = verify_bytes(&file, true).unwrap();
            assert_eq!(r.revision, Some(rev));
            assert_eq!(r.keys, Some(rev.min(2000)));
        }
    }

    proptest::proptest! {
        /// Any corruption of any byte, and any truncation, never panics; a changed byte under
        /// the hash is always refused.
        #[test]
        fn corruption_never_passes(at in 0usize..20_000, bit in 0u8..8, cut in 0usize..20_000) {
            let file = talos_sim::etcd_db::snapshot("c", 300);
            let mut bad = file.clone();
            let at = at % bad.len();
            bad[at] ^= 1 << bit;
            proptest::prop_assert!(verify_bytes(&bad, true).is_err());
            let _ = verify_bytes(&bad, false);
            let cut = cut % file.len();
            proptest::prop_assert!(verify_bytes(&file[..cut], true).is_err());
            let _ = verify_bytes(&file[..cut], false);
        }
    }
}
