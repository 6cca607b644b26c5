//! Unpacking the kubeconfig that Talos streams as a gzip'd tar.

use std::fmt;
use std::io::Read as _;

/// The admin kubeconfig. `Debug` and `Display` never show its content.
#[derive(Clone, PartialEq, Eq)]
pub struct Kubeconfig(Vec<u8>);

impl Kubeconfig {
    /// Wraps kubeconfig bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The kubeconfig YAML. Handle with care: it grants cluster-admin.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kubeconfig([redacted; {} bytes])", self.0.len())
    }
}

/// Largest kubeconfig we accept after decompression.
const MAX_KUBECONFIG: usize = 4 * 1024 * 1024;

/// Extracts the `kubeconfig` file from a gzip'd tar, tolerating a missing end-of-archive marker.
pub(crate) fn unpack(gzipped_tar: &[u8]) -> Result<Kubeconfig, String> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gzipped_tar)
        .take(MAX_KUBECONFIG as u64 * 2)
        .read_to_end(&mut tar)
        .map_err(|e| format!("kubeconfig archive is not valid gzip ({e})"))?;

    let mut offset = 0;
    while offset + 512 <= tar.len() {
        let header = &tar[offset..offset + 512];
        if header.iter().all(|b| *b == 0) {
            break; // end-of-archive block
        }
        let name = cstr(&header[0..100]);
        let size = octal(&header[124..136]).ok_or("tar header has an invalid size field")?;
        let kind = header[156];
        let data_start = offset + 512;
        let data_end = data_start
            .checked_add(size)
            .filter(|end| *end <= tar.len())
            .ok_or("tar entry is truncated")?;
        let base = name.rsplit('/').next().unwrap_or(&name);
        if (kind == b'0' || kind == 0) && base == "kubeconfig" {
            if size > MAX_KUBECONFIG {
                return Err("kubeconfig is implausibly large".into());
            }
            return Ok(Kubeconfig(tar[data_start..data_end].to_vec()));
        }
        offset = data_start + size.div_ceil(512) * 512;
    }
    Err("archive holds no file named kubeconfig".into())
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> Option<usize> {
    let text = cstr(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    usize::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_sim::archive::pack;

    #[test]
    fn unpacks_with_and_without_end_marker() {
        let kc = b"apiVersion: v1\nkind: Config\n";
        for end in [true, false] {
            let archive = pack(&[("README", b"x"), ("kubeconfig", kc)], end);
            assert_eq!(unpack(&archive).unwrap().expose_bytes(), kc);
        }
    }

    #[test]
    fn rejects_garbage_and_missing_file() {
        assert!(unpack(b"not gzip").is_err());
        assert!(
            unpack(&pack(&[("other", b"x")], true))
                .unwrap_err()
                .contains("no file named kubeconfig")
        );
        let mut truncated = pack(&[("kubeconfig", &[b'a'; 2000])], false);
        truncated.truncate(truncated.len() / 2);
        assert!(unpack(&truncated).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let kc = Kubeconfig::new(b"client-key-data: SECRET".to_vec());
        let shown = format!("{kc:?}");
        assert!(!shown.contains("SECRET") && shown.contains("redacted"));
    }
}
