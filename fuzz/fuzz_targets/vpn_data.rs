#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nm_vpn_netns_fuzz::vpn_data(data));
