//! Who is on the other end of a loopback TCP connection: the uid that owns
//! its socket, asked of the kernel by the connection's addresses (netlink
//! `sock_diag`, one exact lookup; `/proc/net/tcp` is read as a fallback
//! where netlink is not allowed). The IPC endpoint checks it against the
//! user the token's instance runs as, so a token that leaked to another
//! user's process is of no use.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// Where `idiag_uid` is in a reply: the 16-byte header, then 4 bytes,
/// the 48-byte socket id and three u32s of `inet_diag_msg`.
const UID_AT: usize = 16 + 4 + 48 + 12;

/// One `inet_diag_req_v2` for the TCP socket from `src` to `dst`
/// (addresses as 16 bytes; IPv4 in the first 4).
fn request(family: u8, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    m.extend_from_slice(&sport.to_be_bytes());
    m.extend_from_slice(&dport.to_be_bytes());
    m.extend_from_slice(&src);
    m.extend_from_slice(&dst);
    m.extend_from_slice(&0u32.to_ne_bytes()); // interface
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m
}

/// Asks the kernel for the owner of one socket: `Ok(None)` if it has none
/// such, `Err` if netlink cannot be used here.
fn ask(
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
) -> nix::Result<Option<u32>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    sendto(
        fd.as_raw_fd(),
        &request(family, src, dst, sport, dport),
        &kernel,
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    if n < 16 {
        return Ok(None);
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY || n < UID_AT + 4 {
        return Ok(None);
    }
    let uid = &buf[UID_AT..UID_AT + 4];
    Ok(Some(u32::from_ne_bytes([uid[0], uid[1], uid[2], uid[3]])))
}

fn v4(addr: SocketAddrV4) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&addr.ip().octets());
    a
}

fn mapped(addr: SocketAddrV4) -> [u8; 16] {
    addr.ip().to_ipv6_mapped().octets()
}

/// The uid owning the client socket at `peer` of our connection at
/// `local`: an IPv4 socket, or a dual-stack IPv6 one (Java's HTTP client)
/// connected through the mapped address.
pub fn uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (SocketAddr::V4(p), SocketAddr::V4(l)) = (peer, local) else {
        return None;
    };
    let asked =
        ask(libc::AF_INET as u8, v4(p), v4(l), p.port(), l.port()).and_then(|found| match found {
            Some(uid) => Ok(Some(uid)),
            None => ask(
                libc::AF_INET6 as u8,
                mapped(p),
                mapped(l),
                p.port(),
                l.port(),
            ),
        });
    match asked {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!("sock_diag: {e}; reading /proc/net/tcp");
            from_proc(peer, local)
        }
    }
}

/// The hex form of an IPv4 socket address in `/proc/net/tcp`
/// (`0100007F:1F40` for 127.0.0.1:8000).
fn hex(addr: SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// The same address as an IPv4-mapped IPv6 one in `/proc/net/tcp6`.
fn hex6(addr: SocketAddrV4) -> String {
    format!(
        "0000000000000000FFFF0000{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// The uid owning the socket at `peer` connected to `local`, in `table`
/// (the text of `/proc/net/tcp`, or with `v6` of `/proc/net/tcp6`).
pub fn uid_in(table: &str, peer: SocketAddr, local: SocketAddr, v6: bool) -> Option<u32> {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, local) else {
        return None;
    };
    let form = if v6 { hex6 } else { hex };
    let (peer, local) = (form(peer), form(local));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&peer.as_str()) && fields.get(2) == Some(&local.as_str()))
            .then(|| fields.get(7)?.parse().ok())
            .flatten()
    })
}

/// The fallback: the socket tables in `/proc/net` (slow with many
/// sockets, and a socket can be missed while others come and go).
fn from_proc(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    [("/proc/net/tcp", false), ("/proc/net/tcp6", true)]
        .iter()
        .find_map(|(path, v6)| {
            let table = std::fs::read_to_string(path).ok()?;
            uid_in(&table, peer, local, *v6)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_side_of_a_connection() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11 1\n\
   1: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12 1\n\
   2: 0100007F:C350 0100007F:1F40 01 00000000:00000000 00:00000000 00000000 65534        0 13 1\n";
        let server: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(uid_in(table, client, server, false), Some(65534));
        let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert_eq!(uid_in(table, other, server, false), None);
        let six = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0000000000000000FFFF00000100007F:C350 0000000000000000FFFF00000100007F:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 14 1\n";
        assert_eq!(uid_in(six, client, server, true), Some(1000));
    }

    #[test]
    fn a_dual_stack_client_is_found_in_tcp6() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let socket = dual_stack_client(local);
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(uid(peer, local), Some(nix::unistd::geteuid().as_raw()));
        drop(socket);
    }

    /// A client socket of the IPv6 family connected to an IPv4 address
    /// through its mapped form (what Java's HTTP client makes).
    fn dual_stack_client(to: SocketAddr) -> std::net::TcpStream {
        let SocketAddr::V4(v4) = to else { panic!() };
        let mapped = std::net::SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
        std::net::TcpStream::connect(mapped).unwrap()
    }

    #[test]
    fn our_own_connection_is_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(uid(peer, local), Some(me));
        assert_eq!(from_proc(peer, local), Some(me));
        // Through netlink, not the fallback.
        let (SocketAddr::V4(p), SocketAddr::V4(l)) = (peer, local) else {
            panic!("IPv4")
        };
        assert_eq!(
            ask(libc::AF_INET as u8, v4(p), v4(l), p.port(), l.port()),
            Ok(Some(me))
        );
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(uid(nobody, local), None);
    }
}
