//! Whatever a client sends, the broker's decoder must neither panic nor
//! stall: each step consumes bytes, asks for more, or refuses.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use verdant_broker::codec;
use verdant_broker::wire::{Decoder, Version};

fuzz_target!(|data: &[u8]| {
    let mut v5 = Decoder::new(Version::V5, 4096);
    let mut buf = BytesMut::from(data);
    while !buf.is_empty() {
        let before = buf.len();
        match v5.decode(&mut buf) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) | Err(_) => break,
        }
    }
    let mut buf = BytesMut::from(data);
    let _ = codec::peek_connect(&buf);
    while !buf.is_empty() {
        let before = buf.len();
        match codec::decode(&mut buf, 4096) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) | Err(_) => break,
        }
    }
});
