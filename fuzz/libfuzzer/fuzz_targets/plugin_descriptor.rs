//! libFuzzer target: `imhost_fuzz::plugin_descriptor` (see fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imhost_fuzz::plugin_descriptor(data));
