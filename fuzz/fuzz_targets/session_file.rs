//! libFuzzer target `session_file`: see `fuzz/checks.rs`.
#![no_main]

#[allow(dead_code)] // TARGETS is for the stable replay
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    checks::check("session_file", data, checks::tokenizer(&repo));
});
