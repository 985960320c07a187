//! libFuzzer target: `imhost_fuzz::manifest` (see fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imhost_fuzz::manifest(data));
