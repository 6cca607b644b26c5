//! The kubeconfig tar.gz reader: any gzip stream, and any tar inside a valid gzip stream (so the
//! fuzzer reaches the tar parser past the gzip checksum), never panics and stays bounded.
#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = gz.write_all(rest);
        gz.finish().unwrap_or_default()
    };
    if let Ok(kc) = talos_client::unpack_kubeconfig(&input) {
        assert!(
            kc.len() <= 4 * 1024 * 1024,
            "an oversized kubeconfig was accepted"
        );
        assert!(
            !format!("{kc:?}").contains("apiVersion"),
            "Debug shows the content"
        );
    }
});
