use super::*;
use tokio::io::AsyncWriteExt;

fn done(buf: &[u8]) -> (Header, usize) {
    match parse(buf) {
        Ok(Parsed::Done { header, len }) => (header, len),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn proxied(src: &str, dst: &str) -> Header {
    Header::Proxied { source: src.parse().unwrap(), destination: dst.parse().unwrap() }
}

/// A v2 header: command, family/transport, address block, then `tlvs`.
fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(addresses.len() + tlvs.len()).unwrap().to_be_bytes());
    out.extend_from_slice(addresses);
    out.extend_from_slice(tlvs);
    out
}

fn v4_block() -> Vec<u8> {
    let mut a = vec![203, 0, 113, 7, 10, 0, 0, 2];
    a.extend_from_slice(&51234u16.to_be_bytes());
    a.extend_from_slice(&443u16.to_be_bytes());
    a
}

#[test]
fn v1_tcp4_with_what_follows_left_alone() {
    let buf = b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 443\r\nGET / HTTP/1.1\r\n";
    let (header, len) = done(buf);
    assert_eq!(header, proxied("203.0.113.7:51234", "10.0.0.2:443"));
    assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n");
}

#[test]
fn v1_tcp6() {
    let (header, _) = done(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8443\r\n");
    assert_eq!(header, proxied("[2001:db8::7]:40000", "[2001:db8::1]:8443"));
}

#[test]
fn v1_unknown_keeps_the_connection_addresses() {
    assert_eq!(done(b"PROXY UNKNOWN\r\n"), (Header::Local, 15));
    // Anything after UNKNOWN is ignored.
    assert_eq!(done(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").0, Header::Local);
}

#[test]
fn v1_the_longest_line_fits_and_one_more_byte_does_not() {
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), V1_MAX);
    assert_eq!(done(longest).1, V1_MAX);
    let mut over = b"PROXY UNKNOWN ".to_vec();
    over.resize(V1_MAX, b'x');
    over.extend_from_slice(b"\r\n");
    assert!(parse(&over).is_err());
}

#[test]
fn v1_malformed_lines_are_refused() {
    for bad in [
        &b"PROXY TCP4 203.0.113.7 10.0.0.2 51234\r\n"[..],
        b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 443 9\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.2 1 2\r\n",
        b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.2 65536 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.2 0443 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.2 -1 443\r\n",
        b"PROXY UDP4 203.0.113.7 10.0.0.2 1 2\r\n",
        b"PROXY  TCP4 203.0.113.7 10.0.0.2 1 2\r\n",
        b"PROXY TCP4 host.example 10.0.0.2 1 2\r\n",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn truncated_headers_are_partial() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 443\r\n";
    for cut in 1..line.len() {
        assert_eq!(parse(&line[..cut]), Ok(Parsed::Partial), "v1 cut at {cut}");
    }
    let header = v2(1, 0x11, &v4_block(), &[]);
    for cut in 1..header.len() {
        assert_eq!(parse(&header[..cut]), Ok(Parsed::Partial), "v2 cut at {cut}");
    }
}

#[test]
fn garbage_and_requests_without_a_header_are_refused_at_once() {
    for bad in [&b"GET / HTTP/1.1\r\n"[..], b"\x16\x03\x01\x02\x00", b"PRI * HTTP/2.0", b"P\r", b"\r\n\r\nX"] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn v2_tcp4_proxy() {
    let mut buf = v2(1, 0x11, &v4_block(), &[]);
    buf.extend_from_slice(b"GET /");
    let (header, len) = done(&buf);
    assert_eq!(header, proxied("203.0.113.7:51234", "10.0.0.2:443"));
    assert_eq!(&buf[len..], b"GET /");
}

#[test]
fn v2_tcp6_proxy_with_tlvs_skipped() {
    let mut block = Vec::new();
    block.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&40000u16.to_be_bytes());
    block.extend_from_slice(&8443u16.to_be_bytes());
    // PP2_TYPE_AUTHORITY "example.com", then a NOOP.
    let tlvs = [&[0x02, 0, 11][..], b"example.com", &[0x04, 0, 0]].concat();
    let buf = v2(1, 0x21, &block, &tlvs);
    let (header, len) = done(&buf);
    assert_eq!(header, proxied("[2001:db8::7]:40000", "[2001:db8::1]:8443"));
    assert_eq!(len, buf.len());
    // The addresses are known before the TLVs arrive; the length says how much to skip.
    assert_eq!(done(&buf[..16 + 36]).1, buf.len());
}

#[test]
fn v2_local_and_unspec_keep_the_connection_addresses() {
    assert_eq!(done(&v2(0, 0x00, &[], &[])), (Header::Local, 16));
    // LOCAL ignores any address block.
    assert_eq!(done(&v2(0, 0x11, &v4_block(), &[])), (Header::Local, 28));
    assert_eq!(done(&v2(1, 0x00, &[], &[])).0, Header::Local);
    assert_eq!(done(&v2(1, 0x31, &[0; 216], &[])).0, Header::Local);
}

#[test]
fn v2_malformed_headers_are_refused() {
    let mut bad_version = v2(1, 0x11, &v4_block(), &[]);
    bad_version[12] = 0x11;
    assert!(parse(&bad_version).is_err());
    assert!(parse(&v2(2, 0x11, &v4_block(), &[])).is_err(), "unknown command");
    assert!(parse(&v2(1, 0x41, &v4_block(), &[])).is_err(), "unknown family");
    assert!(parse(&v2(1, 0x21, &v4_block(), &[])).is_err(), "block too short for IPv6");
}

#[test]
fn v2_oversized_is_refused() {
    let mut header = v2(1, 0x11, &v4_block(), &[]);
    header[14..16].copy_from_slice(&u16::try_from(V2_MAX_PAYLOAD + 1).unwrap().to_be_bytes());
    assert!(parse(&header[..16]).is_err());
}

/// The reader over a real socket: a header sent in pieces, then a request; the
/// request's bytes are all still there.
#[tokio::test]
async fn read_takes_the_header_and_nothing_more() {
    for header in [b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 443\r\n".to_vec(), v2(1, 0x11, &v4_block(), &[0x04, 0, 3, 1, 2, 3])] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = header.clone();
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            for piece in sent.chunks(5) {
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            s
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let got = read(&mut server).await.unwrap();
        assert_eq!(got, proxied("203.0.113.7:51234", "10.0.0.2:443"));
        let mut rest = vec![0u8; 18];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n\r\n");
        drop(client.await.unwrap());
    }
}

#[tokio::test]
async fn read_over_a_unix_socket() {
    let (mut client, mut server) = tokio::net::UnixStream::pair().unwrap();
    client.write_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8443\r\nrest").await.unwrap();
    assert_eq!(read(&mut server).await.unwrap(), proxied("[2001:db8::7]:40000", "[2001:db8::1]:8443"));
    let mut rest = [0u8; 4];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"rest");
}

#[tokio::test]
async fn read_fails_on_a_close_mid_header() {
    let (mut client, mut server) = tokio::net::UnixStream::pair().unwrap();
    client.write_all(b"PROXY TCP4 203.0").await.unwrap();
    drop(client);
    assert!(read(&mut server).await.unwrap_err().contains("closed"));
}
