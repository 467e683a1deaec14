//! libFuzzer target: `pixgate::fuzzing::decision` under a 256 MiB allocation bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: pixgate_fuzz::Counting = pixgate_fuzz::Counting;

fuzz_target!(|data: &[u8]| {
    pixgate_fuzz::within_memory(256 << 20, || pixgate::fuzzing::decision(data));
});
