//! The client's socket and its buffers: reading and decoding packets,
//! encoding what goes out, and writing it (cancel-safe). Buffers start
//! small and grow with a busy client.

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connect::Hello;
use crate::config::BrokerConfig;
use crate::wire::{self, Decoder, In, Out, Version, Violation};

/// What a connection's buffers start with: most devices send small packets
/// now and then, and a thousand idle connections should cost little.
const INITIAL_BUFFER: usize = 256;
/// The most a busy connection reads at a time.
const READ_CHUNK: usize = 32 * 1024;

/// A client's socket, its buffers and its version of the protocol.
pub(super) struct Conn<R, W> {
    pub(super) rd: R,
    pub(super) wr: W,
    pub(super) inbuf: BytesMut,
    pub(super) outbuf: BytesMut,
    pub(super) decoder: Decoder,
    /// A 5.0 client's Maximum Packet Size.
    pub(super) client_max_packet: usize,
    /// Topic aliases set up at a 5.0 client that takes them.
    pub(super) aliases: Option<Box<wire::Aliases>>,
    /// Bytes the last read brought: how large the next buffer should be.
    pub(super) last_read: usize,
    /// How much the next read offers room for.
    pub(super) read_step: usize,
}

/// Why reading a packet failed.
pub(super) enum ReadError {
    Closed,
    Io(std::io::Error),
    Protocol(Violation),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// A connection speaking 3.1.1 until its CONNECT says otherwise.
    pub(super) fn new(rd: R, wr: W, max_packet: usize) -> Self {
        Conn {
            rd,
            wr,
            inbuf: BytesMut::with_capacity(INITIAL_BUFFER),
            outbuf: BytesMut::new(),
            decoder: Decoder::new(Version::V311, max_packet),
            client_max_packet: usize::MAX,
            aliases: None,
            last_read: 0,
            read_step: INITIAL_BUFFER,
        }
    }

    /// The next whole packet already in the buffer, if any.
    pub(super) fn decode(&mut self) -> Result<Option<In>, ReadError> {
        self.decoder
            .decode(&mut self.inbuf)
            .map_err(ReadError::Protocol)
    }

    pub(super) fn version(&self) -> Version {
        self.decoder.version
    }

    pub(super) async fn fill(&mut self) -> Result<(), ReadError> {
        // A read that took all it was offered asks for twice as much next
        // time (up to READ_CHUNK: fewer system calls for a busy
        // publisher); one whose last read was small goes back to a small
        // buffer (a thousand quiet devices would otherwise hold megabytes).
        let busy = self.last_read >= INITIAL_BUFFER;
        if !busy && self.inbuf.is_empty() && self.inbuf.capacity() > INITIAL_BUFFER {
            self.inbuf = BytesMut::with_capacity(INITIAL_BUFFER);
        }
        self.read_step = if !busy {
            INITIAL_BUFFER
        } else if self.last_read >= self.read_step {
            (self.read_step * 2).min(READ_CHUNK)
        } else {
            self.read_step.max(4096)
        };
        let step = self.read_step;
        if self.inbuf.capacity() - self.inbuf.len() < step / 4 {
            self.inbuf.reserve(step);
        }
        match self.rd.read_buf(&mut self.inbuf).await {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.last_read = n;
                Ok(())
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    pub(super) fn queue(&mut self, out: &Out<'_>) {
        wire::encode(self.decoder.version, out, &mut self.outbuf);
    }

    /// What a 5.0 client's CONNECT asks of what it is sent.
    pub(super) fn take_client_limits(&mut self, connect: &Hello, config: &BrokerConfig) {
        self.client_max_packet = connect.max_packet.map_or(usize::MAX, |m| m as usize);
        if config.send_topic_aliases {
            self.aliases = wire::Aliases::new(connect.topic_alias_max);
        }
    }

    /// Queues `p`; false if it is larger than the client's Maximum Packet
    /// Size, and so not sent.
    pub(super) fn publish(&mut self, p: &wire::Publish) -> bool {
        let before = self.outbuf.len();
        let alias = self.aliases.as_deref().and_then(|a| a.choose(&p.topic));
        match alias {
            Some((alias, first)) => wire::encode_aliased(p, alias, first, &mut self.outbuf),
            None => self.queue(&Out::Publish(p)),
        }
        if self.outbuf.len() - before > self.client_max_packet {
            self.outbuf.truncate(before);
            return false; // and the alias, if new, was not given
        }
        if let (Some((alias, true)), Some(aliases)) = (alias, self.aliases.as_deref_mut()) {
            aliases.learned(&p.topic, alias);
        }
        true
    }

    /// CONNACK in the client's version: `refusal` is the 5.0 reason code
    /// (0x84, 0x85, 0x87), mapped to 3.1.1's return codes.
    pub(super) fn connack(
        &mut self,
        refusal: Option<u8>,
        session_present: bool,
        props: Option<v5::ConnAckProperties>,
    ) {
        match self.decoder.version {
            Version::V311 => {
                let code = match refusal {
                    None => v4::ConnectReturnCode::Success,
                    Some(0x85) => v4::ConnectReturnCode::BadClientId,
                    Some(0x84) => v4::ConnectReturnCode::RefusedProtocolVersion,
                    Some(_) => v4::ConnectReturnCode::NotAuthorized,
                };
                let packet = v4::Packet::ConnAck(v4::ConnAck::new(code, session_present));
                let _ = packet.write(&mut self.outbuf, usize::MAX);
            }
            Version::V5 => {
                let code = match refusal {
                    None => v5::ConnectReturnCode::Success,
                    Some(0x85) => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    Some(0x84) => v5::ConnectReturnCode::UnsupportedProtocolVersion,
                    Some(0x81) => v5::ConnectReturnCode::MalformedPacket,
                    Some(0x82) => v5::ConnectReturnCode::ProtocolError,
                    Some(0x8C) => v5::ConnectReturnCode::BadAuthenticationMethod,
                    Some(_) => v5::ConnectReturnCode::NotAuthorized,
                };
                let packet = v5::Packet::ConnAck(v5::ConnAck {
                    session_present,
                    code,
                    properties: props,
                });
                let _ = packet.write(&mut self.outbuf, None);
            }
        }
    }

    /// Writes what is queued. Cancel-safe: what was written is taken off
    /// the buffer as it goes, so a flush begun again goes on from there.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbuf.is_empty() {
            // A small write after a burst gives the burst's buffer back.
            let give_back =
                self.outbuf.len() < INITIAL_BUFFER && self.outbuf.capacity() > 4 * INITIAL_BUFFER;
            // `write` (send(2)) rather than `write_all_buf`'s vectored
            // write: one buffer either way, and `writev` took about 0.4 µs
            // longer per delivery in a system-call trace.
            while !self.outbuf.is_empty() {
                let n = self.wr.write(&self.outbuf).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                self.outbuf.advance(n);
            }
            if give_back {
                self.outbuf = BytesMut::new();
            } else {
                self.outbuf.clear();
            }
        }
        Ok(())
    }
}
