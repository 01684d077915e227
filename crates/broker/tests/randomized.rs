//! Randomized tests of what faces the network, run on every CI build (the
//! cargo-fuzz targets in `crates/broker/fuzz` run the same code for longer).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use verdant_broker::codec;
use verdant_broker::topic::{self, TopicLimits};
use verdant_broker::wire::{Decoder, Version};

const LIMITS: TopicLimits = TopicLimits {
    max_bytes: 1024,
    max_levels: 32,
};

/// Decodes everything in `bytes` as a connection would; never panics,
/// always consumes or stops.
fn drain(bytes: &[u8], max: usize) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(&first) = buf.first() {
        let before = buf.len();
        let _ = codec::check_fixed_header(first);
        let _ = codec::peek_connect(&buf);
        match codec::decode(&mut buf, max) {
            Ok(Some(p)) => {
                assert!(buf.len() < before, "a decoded packet consumes bytes");
                out.push(p);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// The obvious matcher, level by level, for comparison.
fn reference(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match t.get(i) {
            Some(tl) if *level == "+" || level == tl => {}
            _ => return false,
        }
    }
    f.len() == t.len()
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        drain(&bytes, 256);
    }

    #[test]
    fn mqtt5_packet_like_bytes_never_panic_nor_stall(
        first in prop_oneof![Just(0x10u8), Just(0x30), Just(0x32), Just(0x34), Just(0x40), Just(0x62), Just(0x82), Just(0xa2), Just(0xc0), Just(0xe0), Just(0xf0)],
        len in 0u8..200,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![first, len];
        bytes.extend(body);
        let mut decoder = Decoder::new(Version::V5, 1024);
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn packet_like_bytes_never_panic(
        first in prop_oneof![Just(0x10u8), Just(0x30), Just(0x32), Just(0x34), Just(0x62), Just(0x82), Just(0xa2), Just(0xc0), Just(0xe0)],
        len in 0u8..200,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![first, len];
        bytes.extend(body);
        drain(&bytes, 1024);
    }

    #[test]
    fn publishes_round_trip(
        topic in "[a-z0-9/ $]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        q in qos(),
        retain: bool,
        pkid in 1u16..,
    ) {
        let mut p = Publish::from_bytes(topic, q, Bytes::from(payload));
        p.retain = retain;
        p.pkid = if q == QoS::AtMostOnce { 0 } else { pkid };
        let mut buf = BytesMut::new();
        Packet::Publish(p.clone()).write(&mut buf, usize::MAX).unwrap();
        let got = drain(&buf, 1 << 20);
        prop_assert_eq!(got, vec![Packet::Publish(p)]);
    }

    #[test]
    fn split_input_decodes_the_same(
        filters in proptest::collection::vec(("[a-z+#/]{1,12}", qos()), 1..5),
        cut in 0usize..64,
    ) {
        let sub = Subscribe::new_many(filters.iter().map(|(f, q)| rumqttc::mqttbytes::v4::SubscribeFilter::new(f.clone(), *q)));
        let mut buf = BytesMut::new();
        Packet::Subscribe(sub.clone()).write(&mut buf, usize::MAX).unwrap();
        let cut = cut.min(buf.len());
        let mut partial = BytesMut::from(&buf[..cut]);
        if cut < buf.len() {
            prop_assert_eq!(codec::decode(&mut partial, 1 << 20), Ok(None));
        }
        partial.extend_from_slice(&buf[cut..]);
        prop_assert_eq!(codec::decode(&mut partial, 1 << 20), Ok(Some(Packet::Subscribe(sub))));
    }

    #[test]
    fn matcher_agrees_with_the_reference(
        filter in "[ab+#/$]{1,10}",
        topic in "[ab/$]{1,10}",
    ) {
        if topic::validate_filter(&filter, LIMITS).is_ok() && topic::validate_name(&topic, LIMITS).is_ok() {
            prop_assert_eq!(topic::matches(&filter, &topic), reference(&filter, &topic), "{} vs {}", filter, topic);
        }
    }
}
