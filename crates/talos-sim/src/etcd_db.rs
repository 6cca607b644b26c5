//! etcd snapshots in etcd's own file format, for the simulated `EtcdSnapshot` and `EtcdRecover`.
//!
//! A snapshot is a bbolt database followed by the SHA-256 of the database bytes (etcd appends it
//! and checks it on restore). The database written here is genuine bbolt, version 2: two meta
//! pages (magic, page size, root bucket, freelist and high-water page, transaction id, FNV-64a
//! checksum), an empty freelist page, the root bucket's leaf page naming a `key` bucket and an
//! inline `meta` bucket, and the `key` bucket's B+tree — leaf pages of revision keys (8-byte
//! big-endian main revision, `_`, 8-byte big-endian sub revision) under one branch page.
//! The layout was written from bbolt's documented on-disk format; nothing here is copied.

/// Page size of the databases written here (bbolt's default on most systems).
pub const PAGE_SIZE: usize = 4096;
/// bbolt's magic number (first field of a meta page).
const MAGIC: u32 = 0xED0C_DAED;
/// bbolt's file format version.
const VERSION: u32 = 2;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
/// A leaf element that is a nested bucket.
const BUCKET_LEAF: u32 = 0x01;
/// Page header: id u64, flags u16, count u16, overflow u32.
const PAGE_HEADER: usize = 16;
/// Leaf element: flags, pos, ksize, vsize (u32 each); branch element: pos, ksize u32, pgid u64.
const ELEMENT: usize = 16;
/// At most this many revisions go into a snapshot (older ones count as compacted).
const MAX_REVISIONS: u64 = 2000;

/// A leaf element: flags, key, value.
type Item = (u32, Vec<u8>, Vec<u8>);

/// The FNV-64a hash bbolt uses for meta page checksums.
pub fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The 17-byte revision key etcd's `key` bucket uses.
pub fn revision_key(main: u64, sub: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8] = b'_';
    k[9..].copy_from_slice(&sub.to_be_bytes());
    k
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A `mvccpb.KeyValue`-shaped value (key 1, create_revision 2, mod_revision 3, version 4,
/// value 5).
fn key_value(key: &[u8], rev: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + value.len() + 24);
    out.push(0x0a);
    varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    for (tag, v) in [(0x10, rev), (0x18, rev), (0x20, 1)] {
        out.push(tag);
        varint(&mut out, v);
    }
    out.push(0x2a);
    varint(&mut out, value.len() as u64);
    out.extend_from_slice(value);
    out
}

fn put_header(page: &mut [u8], id: u64, flags: u16, count: u16) {
    page[0..8].copy_from_slice(&id.to_le_bytes());
    page[8..10].copy_from_slice(&flags.to_le_bytes());
    page[10..12].copy_from_slice(&count.to_le_bytes());
    page[12..16].copy_from_slice(&0u32.to_le_bytes());
}

/// A leaf page body (header included) holding `items` (flags, key, value), in key order.
fn leaf(id: u64, items: &[Item], size: usize) -> Vec<u8> {
    let mut page = vec![0u8; size];
    put_header(&mut page, id, LEAF, items.len() as u16);
    let mut data = PAGE_HEADER + items.len() * ELEMENT;
    for (i, (flags, k, v)) in items.iter().enumerate() {
        let at = PAGE_HEADER + i * ELEMENT;
        let pos = (data - at) as u32;
        page[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        page[at + 4..at + 8].copy_from_slice(&pos.to_le_bytes());
        page[at + 8..at + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
        page[at + 12..at + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        page[data..data + k.len()].copy_from_slice(k);
        data += k.len();
        page[data..data + v.len()].copy_from_slice(v);
        data += v.len();
    }
    page
}

fn leaf_len(items: &[Item]) -> usize {
    PAGE_HEADER
        + items
            .iter()
            .map(|(_, k, v)| ELEMENT + k.len() + v.len())
            .sum::<usize>()
}

fn meta_page(id: u64, root: u64, freelist: u64, high_water: u64, txid: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    put_header(&mut page, id, META, 0);
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&MAGIC.to_le_bytes());
    m.extend_from_slice(&VERSION.to_le_bytes());
    m.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&root.to_le_bytes());
    m.extend_from_slice(&0u64.to_le_bytes());
    m.extend_from_slice(&freelist.to_le_bytes());
    m.extend_from_slice(&high_water.to_le_bytes());
    m.extend_from_slice(&txid.to_le_bytes());
    let sum = fnv64a(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    page[PAGE_HEADER..PAGE_HEADER + m.len()].copy_from_slice(&m);
    page
}

/// The bbolt database of an etcd member at `revision` (without the trailing hash): the newest
/// revisions (at most 2000, each a key of `cluster`) in the `key` bucket, the consistent index
/// and term in the `meta` bucket.
pub fn database(cluster: &str, revision: u64) -> Vec<u8> {
    let first = revision.saturating_sub(MAX_REVISIONS - 1).max(1);
    let entries: Vec<Item> = (first..=revision)
        .map(|rev| {
            let key = format!("/registry/configmaps/{cluster}/config-{}", rev % 97);
            let value = format!("{{\"revision\":{rev}}}");
            (
                0,
                revision_key(rev, 0).to_vec(),
                key_value(key.as_bytes(), rev, value.as_bytes()),
            )
        })
        .collect();
    // Pages: 0, 1 meta; 2 freelist; 3 root leaf; 4.. key leaves; then the key branch.
    let mut leaves: Vec<Vec<Item>> = vec![Vec::new()];
    let mut used = PAGE_HEADER;
    for e in entries {
        let need = ELEMENT + e.1.len() + e.2.len();
        if used + need > PAGE_SIZE {
            leaves.push(Vec::new());
            used = PAGE_HEADER;
        }
        used += need;
        if let Some(last) = leaves.last_mut() {
            last.push(e);
        }
    }
    let first_leaf = 4u64;
    let branch_id = first_leaf + leaves.len() as u64;
    let key_root = if leaves.len() == 1 {
        first_leaf
    } else {
        branch_id
    };
    let high_water = if leaves.len() == 1 {
        branch_id
    } else {
        branch_id + 1
    };

    // The `meta` bucket, inline: bucket header (root 0, sequence 0), then its leaf page.
    let meta_items = vec![
        (
            0,
            b"consistent_index".to_vec(),
            (revision + 7).to_be_bytes().to_vec(),
        ),
        (0, b"term".to_vec(), 2u64.to_be_bytes().to_vec()),
    ];
    let mut inline = vec![0u8; 16];
    inline.extend(leaf(0, &meta_items, leaf_len(&meta_items)));
    let mut key_header = key_root.to_le_bytes().to_vec();
    key_header.extend_from_slice(&0u64.to_le_bytes());
    let root_items = vec![
        (BUCKET_LEAF, b"key".to_vec(), key_header),
        (BUCKET_LEAF, b"meta".to_vec(), inline),
    ];

    let txid = revision + 1;
    let mut db = Vec::with_capacity(high_water as usize * PAGE_SIZE + 32);
    db.extend(meta_page(0, 3, 2, high_water, txid));
    db.extend(meta_page(1, 3, 2, high_water, txid - 1));
    let mut freelist = vec![0u8; PAGE_SIZE];
    put_header(&mut freelist, 2, FREELIST, 0);
    db.extend(freelist);
    db.extend(leaf(3, &root_items, PAGE_SIZE));
    for (i, items) in leaves.iter().enumerate() {
        db.extend(leaf(first_leaf + i as u64, items, PAGE_SIZE));
    }
    if leaves.len() > 1 {
        let mut page = vec![0u8; PAGE_SIZE];
        put_header(&mut page, branch_id, BRANCH, leaves.len() as u16);
        let mut data = PAGE_HEADER + leaves.len() * ELEMENT;
        for (i, items) in leaves.iter().enumerate() {
            let at = PAGE_HEADER + i * ELEMENT;
            let key = items.first().map(|e| e.1.clone()).unwrap_or_default();
            page[at..at + 4].copy_from_slice(&((data - at) as u32).to_le_bytes());
            page[at + 4..at + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
            page[at + 8..at + 16].copy_from_slice(&(first_leaf + i as u64).to_le_bytes());
            page[data..data + key.len()].copy_from_slice(&key);
            data += key.len();
        }
        db.extend(page);
    }
    db
}

/// `data` followed by its SHA-256, as etcd writes a snapshot file.
pub fn with_hash(mut data: Vec<u8>) -> Vec<u8> {
    let sum = ring::digest::digest(&ring::digest::SHA256, &data);
    data.extend_from_slice(sum.as_ref());
    data
}

/// A complete snapshot file of `cluster`'s etcd at `revision`.
pub fn snapshot(cluster: &str, revision: u64) -> Vec<u8> {
    with_hash(database(cluster, revision))
}

/// What the simulated node's restore makes of an uploaded snapshot: its highest revision, after
/// the checks a restore does (the trailing hash unless `skip_hash_check`, the meta page's magic,
/// version and checksum). Scans leaf pages for revision keys, bounded by the file's length.
pub(crate) fn restore(upload: &[u8], skip_hash_check: bool) -> Result<u64, String> {
    let db = if skip_hash_check {
        upload
    } else {
        let Some(split) = upload.len().checked_sub(32) else {
            return Err("snapshot file is too small to hold its hash".into());
        };
        let (db, sum) = upload.split_at(split);
        if ring::digest::digest(&ring::digest::SHA256, db).as_ref() != sum {
            return Err("snapshot file integrity check failed: the SHA-256 does not match".into());
        }
        db
    };
    let meta = db
        .get(PAGE_HEADER..PAGE_HEADER + 64)
        .ok_or("snapshot file is too small to hold a bbolt meta page")?;
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    };
    if u32_at(meta, 0) != Some(MAGIC) || u32_at(meta, 4) != Some(VERSION) {
        return Err("not a bbolt database: invalid meta page".into());
    }
    let sum = meta
        .get(56..64)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes);
    if sum != Some(fnv64a(&meta[..56])) {
        return Err("bbolt meta page checksum mismatch".into());
    }
    let page_size = u32_at(meta, 8).unwrap_or(0) as usize;
    if !(512..=65536).contains(&page_size) {
        return Err("bbolt page size is invalid".into());
    }
    let mut best = None;
    for page in db.chunks(page_size) {
        let flags = page.get(8..10).map(|f| u16::from_le_bytes([f[0], f[1]]));
        if flags != Some(LEAF) {
            continue;
        }
        let count = page
            .get(10..12)
            .map_or(0, |c| u16::from_le_bytes([c[0], c[1]])) as usize;
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let (Some(pos), Some(ksize)) = (u32_at(page, at + 4), u32_at(page, at + 8)) else {
                break;
            };
            let start = at + pos as usize;
            if ksize == 17
                && let Some(key) = page.get(start..start + 17)
                && key[8] == b'_'
            {
                let mut main = [0u8; 8];
                main.copy_from_slice(&key[..8]);
                let rev = u64::from_be_bytes(main);
                best = Some(best.map_or(rev, |b: u64| b.max(rev)));
            }
        }
    }
    best.ok_or_else(|| "the snapshot holds no revisions".to_owned())
}

impl crate::state::Shared {
    /// Sets every control plane's etcd service to `state` (healthy only when running).
    fn set_etcd_services(&self, state: &str) {
        self.with_nodes(|nodes| {
            for n in nodes.iter_mut().filter(|n| n.etcd_member_id.is_some()) {
                if let Some(s) = n.services.get_mut("etcd") {
                    s.state = state.into();
                    s.healthy = state == "Running";
                }
            }
        });
    }

    /// The control planes lose etcd quorum: etcd stops serving everywhere; the members' data
    /// stays (so a plain bootstrap is refused), waiting for a recovery.
    pub(crate) fn lose_etcd_quorum(&self) {
        self.tracked(|| {
            crate::state::lock(&self.etcd).running = false;
            self.set_etcd_services("Failed");
        });
    }

    /// etcd as before a new cluster's first bootstrap: no members, not running.
    pub(crate) fn unbootstrap_etcd(&self) {
        self.tracked(|| {
            {
                let mut etcd = crate::state::lock(&self.etcd);
                etcd.running = false;
                etcd.members.clear();
                etcd.leader = 0;
            }
            self.set_etcd_services("Preparing");
        });
    }

    /// `Bootstrap` on control plane `idx`: a new cluster (no data anywhere), or a recovery from
    /// the snapshot uploaded to the node. Afterwards every control plane is a member again.
    pub(crate) fn bootstrap_etcd(
        &self,
        idx: usize,
        recover: bool,
        skip_hash_check: bool,
    ) -> Result<(), tonic::Status> {
        let id = self.with_node(idx, |n| n.etcd_member_id);
        let Some(id) = id else {
            return Err(tonic::Status::failed_precondition(
                "bootstrap is only possible on control plane nodes",
            ));
        };
        self.tracked(|| {
            let mut etcd = crate::state::lock(&self.etcd);
            if etcd.running {
                return Err(tonic::Status::already_exists(
                    "etcd is already running: the cluster is bootstrapped",
                ));
            }
            let revision = if recover {
                let upload = etcd.uploads.remove(&idx).ok_or_else(|| {
                    tonic::Status::failed_precondition(
                        "no snapshot was uploaded to this node: upload one with EtcdRecover first",
                    )
                })?;
                restore(&upload, skip_hash_check).map_err(|e| {
                    tonic::Status::failed_precondition(format!("etcd recovery failed: {e}"))
                })?
            } else {
                if !etcd.members.is_empty() {
                    return Err(tonic::Status::already_exists(
                        "etcd data directory is not empty: recover from a snapshot instead",
                    ));
                }
                1
            };
            let members: Vec<(u64, String)> = self.with_nodes(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n.etcd_member_id.map(|m| (m, n.info.hostname.clone())))
                    .collect()
            });
            etcd.members = members;
            etcd.leader = id;
            etcd.raft_term += 1;
            etcd.alarms.clear();
            etcd.revision = revision;
            etcd.running = true;
            drop(etcd);
            self.set_etcd_services("Running");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_restore_to_their_revision() {
        for rev in [1, 5, 100, 4321] {
            let file = snapshot("c", rev);
            assert_eq!((file.len() - 32) % PAGE_SIZE, 0);
            assert_eq!(restore(&file, false), Ok(rev));
        }
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let mut file = snapshot("c", 300);
        let len = file.len();
        assert!(restore(&file[..len - 1], false).is_err());
        file[PAGE_SIZE * 4 + 100] ^= 1;
        assert!(restore(&file, false).unwrap_err().contains("integrity"));
        // Without the hash check the database alone restores.
        let db = database("c", 300);
        assert_eq!(restore(&db, true), Ok(300));
        let mut bad_meta = db.clone();
        bad_meta[PAGE_HEADER + 30] ^= 1;
        assert!(restore(&bad_meta, true).unwrap_err().contains("checksum"));
    }
}
