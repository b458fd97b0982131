//! The PROXY protocol (HAProxy's `send-proxy` and `send-proxy-v2`): a load balancer in TCP mode tells the
//! server who the client is before the client's own bytes. Without it every LDAP connection through HAProxy
//! comes from HAProxy's address, so per-source limits, account networks and logs all see one client.
//!
//! Only connections from the configured proxies (`ldap.proxy_protocol_from`) are read this way, and from them
//! the header is required: a client elsewhere cannot claim another address, and a proxy that is configured
//! without `send-proxy` is noticed at once instead of having its first LDAP bytes taken for a header.
//! The header is read byte-exactly (v1 up to its CRLF, v2 by its length), so nothing of the client's first
//! request is consumed. `LOCAL` (the proxy's own health checks) and `UNKNOWN` keep the proxy's address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
/// The longest v1 header, CRLF included (the specification's limit).
const V1_MAX: usize = 107;
/// v2 headers carry TLVs after the addresses; more than this is not a proxy we know.
const V2_MAX_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProxyError {
    #[error("no PROXY protocol header (is the load balancer configured with send-proxy or send-proxy-v2?)")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed before the PROXY protocol header ended")]
    Closed,
}

/// Read the header from `io`; the client's address, or `peer` when the proxy speaks for itself.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(io: &mut R, peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let mut first = [0u8; 12];
    read_exact(io, &mut first[..5]).await?;
    if &first[..5] == b"PROXY" {
        return v1(io, peer).await;
    }
    if first[..5] != V2_SIGNATURE[..5] {
        return Err(ProxyError::Missing);
    }
    read_exact(io, &mut first[5..]).await?;
    if first != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let mut head = [0u8; 4];
    read_exact(io, &mut head).await?;
    let (ver_cmd, family, len) = (head[0], head[1], u16::from_be_bytes([head[2], head[3]]) as usize);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    if len > V2_MAX_LEN {
        return Err(ProxyError::Malformed("header longer than 4 KiB"));
    }
    let mut body = vec![0u8; len];
    read_exact(io, &mut body).await?;
    match ver_cmd & 0x0F {
        0 => return Ok(peer), // LOCAL: the proxy's own connection (health checks)
        1 => {}
        _ => return Err(ProxyError::Malformed("unknown command")),
    }
    match family >> 4 {
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
        }
        2 if body.len() >= 36 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&body[..16]);
            Ok(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(b)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        1 | 2 => Err(ProxyError::Malformed("addresses shorter than their family")),
        // AF_UNSPEC or AF_UNIX: nothing to say about an IP client.
        _ => Ok(peer),
    }
}

async fn v1<R: AsyncRead + Unpin>(io: &mut R, peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let mut line = b"PROXY".to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed("v1 line longer than 107 bytes"));
        }
        let mut b = [0u8; 1];
        read_exact(io, &mut b).await?;
        line.push(b[0]);
    }
    let text = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(peer),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyError::Malformed("bad source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed("address does not match TCP4/TCP6"));
            }
            let port: u16 = sport.parse().map_err(|_| ProxyError::Malformed("bad source port"))?;
            Ok(SocketAddr::new(ip, port))
        }
        _ => Err(ProxyError::Malformed("v1 line is not PROXY TCP4|TCP6|UNKNOWN …")),
    }
}

async fn read_exact<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> Result<(), ProxyError> {
    io.read_exact(buf).await.map(|_| ()).map_err(|_| ProxyError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.5:40000".parse().unwrap()
    }

    async fn read(bytes: &[u8]) -> (Result<SocketAddr, ProxyError>, Vec<u8>) {
        let mut io = bytes;
        let r = read_header(&mut io, peer()).await;
        (r, io.to_vec())
    }

    #[tokio::test]
    async fn v1_headers_give_the_client_and_leave_its_bytes() {
        let (r, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 389\r\n0\x0c\x02\x01\x01").await;
        assert_eq!(r, Ok("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(rest, b"0\x0c\x02\x01\x01", "the LDAP bytes are not consumed");
        let (r, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 389\r\n").await;
        assert_eq!(r, Ok("[2001:db8::7]:51000".parse().unwrap()));
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(peer()));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51000\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 999.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 70000 2\r\n",
        ] {
            assert!(matches!(read(bad).await.0, Err(ProxyError::Malformed(_))), "{bad:?}");
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(read(&long).await.0, Err(ProxyError::Malformed(_))));
        assert_eq!(read(b"PROXY TCP4 192.0.2.7").await.0, Err(ProxyError::Closed));
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[tokio::test]
    async fn v2_headers_give_the_client_and_leave_its_bytes() {
        let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1];
        body.extend_from_slice(&51000u16.to_be_bytes());
        body.extend_from_slice(&389u16.to_be_bytes());
        // A TLV (as HAProxy sends for unique ids) after the addresses is skipped.
        body.extend_from_slice(&[0x05, 0x00, 0x02, b'i', b'd']);
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"0\x0c");
        let (r, rest) = read(&bytes).await;
        assert_eq!(r, Ok("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(rest, b"0\x0c");
        let mut body6 = Vec::new();
        body6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&[0; 16]);
        body6.extend_from_slice(&[0xC7, 0x38, 0x01, 0x85]);
        assert_eq!(
            read(&v2(1, 0x21, &body6)).await.0,
            Ok("[2001:db8::7]:51000".parse().unwrap())
        );
        assert_eq!(read(&v2(0, 0x00, &[])).await.0, Ok(peer()), "LOCAL: the proxy itself");
        assert!(matches!(
            read(&v2(1, 0x11, &[1, 2, 3])).await.0,
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            read(&v2(7, 0x11, &body)).await.0,
            Err(ProxyError::Malformed(_))
        ));
        let truncated = &v2(1, 0x11, &body)[..20];
        assert_eq!(read(truncated).await.0, Err(ProxyError::Closed));
    }

    #[tokio::test]
    async fn anything_else_is_missing_not_guessed() {
        // An LDAP bind request straight from a proxy configured without send-proxy.
        assert_eq!(
            read(b"0\x0c\x02\x01\x01`\x07\x02\x01\x03\x04\x00\x80\x00").await.0,
            Err(ProxyError::Missing)
        );
        assert_eq!(read(b"GET / HTTP/1.1\r\n").await.0, Err(ProxyError::Missing));
        assert_eq!(read(b"\r\n\r\n\0\r\nQUIX\n").await.0, Err(ProxyError::Missing));
        assert_eq!(read(b"").await.0, Err(ProxyError::Closed));
    }
}
