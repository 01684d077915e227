//! Decoding what a client sends: rumqttc's MQTT 3.1.1 codec, behind the
//! strict checks it leaves out. No I/O, so the fuzz targets and the
//! randomized tests drive exactly what connections run.

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::Packet;

/// The next whole packet at the start of `buf` (consumed), `None` if more
/// bytes are needed, `Err` if the client broke the protocol. A packet
/// larger than `max_packet` is refused from its header alone.
pub fn decode(buf: &mut BytesMut, max_packet: usize) -> Result<Option<Packet>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_fixed_header(first)?;
    match Packet::read(buf, max_packet) {
        Ok(p) => Ok(Some(p)),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The next whole MQTT 5.0 packet at the start of `buf` (consumed), as
/// [`decode`] does for 3.1.1.
pub fn decode_v5(
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<rumqttc::v5::mqttbytes::v5::Packet>, crate::wire::Violation> {
    use crate::wire::Violation;
    use rumqttc::v5::mqttbytes::{Error, v5};
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first == 0xF0 {
        // AUTH: reported by the session as unsupported.
    } else {
        check_fixed_header(first).map_err(Violation::malformed)?;
    }
    let max = u32::try_from(max_packet).unwrap_or(u32::MAX);
    let header = match v5::check(buf.iter(), Some(max)) {
        Ok(h) => h,
        Err(Error::InsufficientBytes(_)) => return Ok(None),
        Err(Error::PayloadSizeLimitExceeded { pkt_size, max }) => {
            return Err(Violation {
                reason: 0x95,
                text: format!("a packet of {pkt_size} bytes, over the maximum of {max}"),
            });
        }
        Err(e) => return Err(Violation::malformed(e.to_string())),
    };
    // A DISCONNECT with no reason code means 0x00 (MQTT 3.14.2.1); the
    // codec takes every empty packet but PINGREQ/PINGRESP for malformed.
    if first == 0xE0 && header.frame_length() == 2 {
        buf.advance(2);
        return Ok(Some(v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        ))));
    }
    match v5::Packet::read(buf, Some(max)) {
        Ok(p) => Ok(Some(p)),
        Err(Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(Violation::malformed(e.to_string())),
    }
}

/// Checks what the codec does not: reserved bits of the fixed header
/// (MQTT-2.2.2-1/2) and the packet types a client may not send.
pub fn check_fixed_header(first: u8) -> Result<(), String> {
    let (kind, flags) = (first >> 4, first & 0x0f);
    let ok = match kind {
        3 => (flags >> 1) & 0b11 != 0b11, // PUBLISH: QoS 3 is malformed
        6 | 8 | 10 => flags == 0b0010,    // PUBREL, SUBSCRIBE, UNSUBSCRIBE
        1 | 4 | 5 | 7 | 12 | 14 => flags == 0,
        _ => return Err(format!("packet type {kind} is not one a client sends")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "reserved flags {flags:#06b} set in a packet of type {kind}"
        ))
    }
}

/// The protocol level and connect flags of a CONNECT at the start of `buf`,
/// once enough of it is there.
pub fn peek_connect(buf: &[u8]) -> Option<(u8, u8)> {
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        i += 1;
        if b & 0x80 == 0 || i > 4 {
            break;
        }
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]));
    let level = *buf.get(i + 2 + name_len)?;
    let flags = *buf.get(i + 3 + name_len)?;
    Some((level, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header_flags() {
        assert!(check_fixed_header(0x10).is_ok()); // CONNECT
        assert!(check_fixed_header(0x11).is_err());
        assert!(check_fixed_header(0x30).is_ok()); // PUBLISH QoS 0
        assert!(check_fixed_header(0x3d).is_ok()); // dup, QoS 2, retain
        assert!(check_fixed_header(0x36).is_err()); // QoS 3
        assert!(check_fixed_header(0x82).is_ok()); // SUBSCRIBE
        assert!(check_fixed_header(0x80).is_err());
        assert!(check_fixed_header(0x62).is_ok()); // PUBREL
        assert!(check_fixed_header(0x60).is_err());
        assert!(check_fixed_header(0x20).is_err()); // CONNACK from a client
        assert!(check_fixed_header(0x00).is_err());
        assert!(check_fixed_header(0xf0).is_err());
    }

    #[test]
    fn peeks_level_and_flags() {
        // CONNECT, remaining 12, "MQTT", level 4, flags 0x02, keep-alive 60, id "".
        let buf = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0];
        assert_eq!(peek_connect(&buf), Some((4, 0x02)));
        assert_eq!(peek_connect(&buf[..8]), None);
    }
}
