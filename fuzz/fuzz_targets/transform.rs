//! libFuzzer target: the whole engine (`pixgate::fuzzing::transform`: first line options,
//! the rest the source) under its small limits and their memory bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: pixgate_fuzz::Counting = pixgate_fuzz::Counting;

fuzz_target!(|data: &[u8]| {
    pixgate_fuzz::within_memory(pixgate::fuzzing::TRANSFORM_MEMORY_BOUND, || {
        pixgate::fuzzing::transform(data)
    });
});
