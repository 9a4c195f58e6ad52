//! Packet rewriting for the handshake: find, attach and strip the trireme marker option and
//! the token that rides as TCP payload. Pure functions over IP packets (what NFQUEUE hands
//! to userspace: an IPv4 or IPv6 header, a TCP header, the payload); no I/O.
//!
//! Wire format (see `docs/protocol.md`):
//! - marker: TCP option kind 253 (RFC 6994 experimental), length 6, ExID [`EXID`], then the
//!   token length as a big-endian u16: `253, 6, 0x54, 0x52, len_hi, len_lo`. [`attach`]
//!   puts it first in the option list followed by two NOPs, so the header grows by 8 bytes
//!   and stays 32-bit aligned.
//! - token: the last `token_len` bytes of the TCP payload, after any payload the packet
//!   already carried (a TCP Fast Open SYN keeps its data in front of the token).
//!
//! Parsing uses `etherparse`; only the option list is walked here (etherparse stops at
//! option kinds it does not know). Every rewritten packet gets a complete, correct IPv4
//! header checksum and TCP checksum: after userspace changes a packet the kernel no longer
//! trusts its checksum.

use etherparse::checksum::Sum16BitWords;
use etherparse::{IpNumber, IpSlice, TcpSlice};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// TCP option kind of the marker (RFC 6994 shared experimental option).
pub const OPTION_KIND: u8 = 253;
/// Our experiment identifier inside option kind 253 ("TR").
pub const EXID: u16 = 0x5452;
/// Length of the marker option itself (kind, length, ExID, token length).
pub const OPTION_LEN: usize = 6;
/// Bytes the TCP header grows by when [`attach`] adds the marker (option + 2 NOPs).
pub const MARKER_GROWTH: usize = 8;
/// Longest TCP option area (data offset 15 → 60-byte header).
pub const MAX_OPTIONS_LEN: usize = 40;
/// Default largest packet [`attach`] produces (the usual Ethernet MTU).
pub const DEFAULT_MAX_PACKET: usize = 1500;

const TCP_OPT_EOL: u8 = 0;
const TCP_OPT_NOP: u8 = 1;
const TCP_MIN_HEADER: usize = 20;

/// Why a packet could not be parsed or rewritten. The packet is never changed on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not a well-formed IP packet (etherparse's reason).
    #[error("malformed IP packet: {0}")]
    Ip(String),
    /// Not a TCP packet.
    #[error("not TCP (IP protocol {0})")]
    NotTcp(u8),
    /// A form we do not rewrite (fragments, IPv6 extension headers, IPsec AH).
    #[error("unsupported packet: {0}")]
    Unsupported(&'static str),
    /// Malformed TCP header (etherparse's reason).
    #[error("malformed TCP header: {0}")]
    Tcp(String),
    /// The TCP option list cannot be walked (bad length byte).
    #[error("malformed TCP options at offset {0}")]
    BadOptions(usize),
    /// Our marker is present but inconsistent (wrong length, repeated, token longer than the payload).
    #[error("bad trireme marker: {0}")]
    BadMarker(&'static str),
    /// [`attach`] on a packet that already carries our marker.
    #[error("packet already carries a trireme marker")]
    AlreadyMarked,
    /// [`strip`] on a packet without our marker.
    #[error("packet carries no trireme marker")]
    NoMarker,
    /// The marker does not fit in the TCP option area.
    #[error("TCP options full: {used} bytes used, the marker needs {MARKER_GROWTH} of {MAX_OPTIONS_LEN}")]
    OptionsFull { used: usize },
    /// The rewritten packet would exceed the size limit.
    #[error("packet would be {len} bytes, limit {max}")]
    TooBig { len: usize, max: usize },
    /// The token is empty or longer than the 16-bit length field allows.
    #[error("token length {0} out of range 1..=65535")]
    TokenLen(usize),
    /// Checksum verification failed (from [`verify_checksums`]).
    #[error("bad {0} checksum")]
    Checksum(&'static str),
}

/// TCP flags of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

/// What the handshake needs to know about a TCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpView<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// TCP payload without our token (e.g. TCP Fast Open data on a SYN).
    pub payload: &'a [u8],
    /// Our token, when the marker is present.
    pub token: Option<&'a [u8]>,
}

impl TcpView<'_> {
    /// A pure ACK: ACK set, no SYN/FIN/RST, no payload besides our token.
    pub fn is_pure_ack(&self) -> bool {
        self.flags.ack
            && !self.flags.syn
            && !self.flags.fin
            && !self.flags.rst
            && self.payload.is_empty()
    }
}

/// Byte offsets of one parsed packet.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v4: bool,
    /// IP header length (IPv4 with options, or IPv6's 40 bytes).
    ip_len: usize,
    /// TCP header length.
    tcp_len: usize,
    /// End of the IP packet (IP total length); bytes beyond are ignored and dropped.
    end: usize,
    /// Our marker: offset inside the option area and announced token length.
    marker: Option<(usize, usize)>,
}

impl Layout {
    fn options(&self) -> Range<usize> {
        self.ip_len + TCP_MIN_HEADER..self.ip_len + self.tcp_len
    }
}

fn layout(pkt: &[u8]) -> Result<(Layout, IpSlice<'_>, TcpSlice<'_>), PacketError> {
    let ip = IpSlice::from_slice(pkt).map_err(|e| PacketError::Ip(e.to_string()))?;
    let (v4, ip_len) = match &ip {
        IpSlice::Ipv4(v4) => {
            if !v4.extensions().is_empty() {
                return Err(PacketError::Unsupported(
                    "IPv4 with IPsec authentication header",
                ));
            }
            (true, v4.header().slice().len())
        }
        IpSlice::Ipv6(v6) => {
            if !v6.extensions().slice().is_empty() {
                return Err(PacketError::Unsupported("IPv6 extension headers"));
            }
            (false, v6.header().slice().len())
        }
    };
    if ip.is_fragmenting_payload() {
        return Err(PacketError::Unsupported("IP fragment"));
    }
    let proto = ip.payload_ip_number();
    if proto != IpNumber::TCP {
        return Err(PacketError::NotTcp(proto.0));
    }
    let seg = ip.payload().payload;
    let tcp = TcpSlice::from_slice(seg).map_err(|e| PacketError::Tcp(e.to_string()))?;
    let tcp_len = tcp.header_slice().len();
    let end = ip_len + seg.len();
    let mut lay = Layout {
        v4,
        ip_len,
        tcp_len,
        end,
        marker: None,
    };
    lay.marker = find_marker(tcp.options(), tcp.payload().len())?;
    Ok((lay, ip, tcp))
}

/// Walks the TCP option list; returns our marker's (offset, token length) if present.
fn find_marker(opts: &[u8], payload_len: usize) -> Result<Option<(usize, usize)>, PacketError> {
    let mut found = None;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            TCP_OPT_EOL => break,
            TCP_OPT_NOP => i += 1,
            kind => {
                let len = *opts.get(i + 1).ok_or(PacketError::BadOptions(i))? as usize;
                if len < 2 || i + len > opts.len() {
                    return Err(PacketError::BadOptions(i));
                }
                if kind == OPTION_KIND
                    && len >= 4
                    && u16::from_be_bytes([opts[i + 2], opts[i + 3]]) == EXID
                {
                    if len != OPTION_LEN {
                        return Err(PacketError::BadMarker("option length is not 6"));
                    }
                    if found.is_some() {
                        return Err(PacketError::BadMarker("marker repeated"));
                    }
                    let token_len = u16::from_be_bytes([opts[i + 4], opts[i + 5]]) as usize;
                    if token_len == 0 {
                        return Err(PacketError::BadMarker("token length 0"));
                    }
                    if token_len > payload_len {
                        return Err(PacketError::BadMarker("token longer than the payload"));
                    }
                    found = Some((i, token_len));
                }
                i += len;
            }
        }
    }
    Ok(found)
}

/// Parses an IP/TCP packet: addresses, ports, flags, sequence numbers, payload, our token.
pub fn parse(pkt: &[u8]) -> Result<TcpView<'_>, PacketError> {
    let (lay, ip, tcp) = layout(pkt)?;
    let payload = tcp.payload();
    let (payload, token) = match lay.marker {
        Some((_, n)) => {
            let (p, t) = payload.split_at(payload.len() - n);
            (p, Some(t))
        }
        None => (payload, None),
    };
    Ok(TcpView {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
        },
        payload,
        token,
    })
}

/// Appends `token` to the packet's payload and adds the marker option; lengths and
/// checksums are fixed. Refuses (`OptionsFull`, `TooBig`, `AlreadyMarked`, ...) without
/// producing anything when the marker or the token does not fit.
pub fn attach(pkt: &[u8], token: &[u8], max_len: usize) -> Result<Vec<u8>, PacketError> {
    let mut out = Vec::new();
    attach_into(pkt, token, max_len, &mut out)?;
    Ok(out)
}

/// [`attach`] into a reusable buffer (cleared first; left empty on error).
pub fn attach_into(
    pkt: &[u8],
    token: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), PacketError> {
    out.clear();
    if token.is_empty() || token.len() > u16::MAX as usize {
        return Err(PacketError::TokenLen(token.len()));
    }
    let (lay, _, _) = layout(pkt)?;
    if lay.marker.is_some() {
        return Err(PacketError::AlreadyMarked);
    }
    let opts = lay.options();
    if opts.len() + MARKER_GROWTH > MAX_OPTIONS_LEN {
        return Err(PacketError::OptionsFull { used: opts.len() });
    }
    let new_len = lay.end + MARKER_GROWTH + token.len();
    if new_len > max_len {
        return Err(PacketError::TooBig {
            len: new_len,
            max: max_len,
        });
    }
    let tl = (token.len() as u16).to_be_bytes();
    let ex = EXID.to_be_bytes();
    out.reserve(new_len);
    out.extend_from_slice(&pkt[..opts.start]);
    out.extend_from_slice(&[OPTION_KIND, OPTION_LEN as u8, ex[0], ex[1], tl[0], tl[1]]);
    out.extend_from_slice(&[TCP_OPT_NOP, TCP_OPT_NOP]);
    out.extend_from_slice(&pkt[opts.start..lay.end]);
    out.extend_from_slice(token);
    let tcp_len = lay.tcp_len + MARKER_GROWTH;
    finish(out, &lay, tcp_len)
}

/// A packet with the marker and token removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// The rewritten packet.
    pub packet: Vec<u8>,
    /// Where the token was in the ORIGINAL packet (`&pkt[token]`).
    pub token: Range<usize>,
}

/// Removes our marker and token. When the marker sits where [`attach`] puts it (first,
/// followed by two NOPs) the header shrinks back by 8 bytes, so `strip(attach(p)) == p`;
/// elsewhere it is overwritten with NOPs. Lengths and checksums are fixed.
pub fn strip(pkt: &[u8]) -> Result<Stripped, PacketError> {
    let mut out = Vec::new();
    let token = strip_into(pkt, &mut out)?;
    Ok(Stripped { packet: out, token })
}

/// [`strip`] into a reusable buffer (cleared first; left empty on error); returns where the
/// token was in `pkt`.
pub fn strip_into(pkt: &[u8], out: &mut Vec<u8>) -> Result<Range<usize>, PacketError> {
    out.clear();
    let (lay, _, _) = layout(pkt)?;
    let (off, token_len) = lay.marker.ok_or(PacketError::NoMarker)?;
    let opts = lay.options();
    let token = lay.end - token_len..lay.end;
    let at = opts.start + off;
    out.reserve(lay.end);
    let tcp_len = if off == 0
        && pkt.get(at + OPTION_LEN..at + MARKER_GROWTH) == Some(&[TCP_OPT_NOP, TCP_OPT_NOP][..])
    {
        out.extend_from_slice(&pkt[..at]);
        out.extend_from_slice(&pkt[at + MARKER_GROWTH..token.start]);
        lay.tcp_len - MARKER_GROWTH
    } else {
        out.extend_from_slice(&pkt[..token.start]);
        out[at..at + OPTION_LEN].fill(TCP_OPT_NOP);
        lay.tcp_len
    };
    finish(out, &lay, tcp_len)?;
    Ok(token)
}

/// Turns a SYN-ACK into a RST|ACK with the same addresses, ports, seq and ack, no options
/// and no payload: the local socket in SYN-SENT accepts it (its ACK acknowledges our SYN)
/// and `connect()` fails at once with ECONNREFUSED.
pub fn synack_to_rst(pkt: &[u8]) -> Result<Vec<u8>, PacketError> {
    let (lay, _, tcp) = layout(pkt)?;
    if !(tcp.syn() && tcp.ack()) {
        return Err(PacketError::Unsupported("not a SYN-ACK"));
    }
    let mut out = Vec::with_capacity(lay.ip_len + TCP_MIN_HEADER);
    let t = lay.ip_len;
    out.extend_from_slice(&pkt[..t + TCP_MIN_HEADER]);
    out[t + 13] = 0x14; // flags: RST | ACK
    out[t + 14..t + 16].fill(0); // window
    out[t + 18..t + 20].fill(0); // urgent pointer
    finish(&mut out, &lay, TCP_MIN_HEADER)?;
    Ok(out)
}

/// The packet with its source and destination address and port replaced, as a NAT on
/// the path rewrites it (e.g. kube-proxy's Service DNAT), with correct checksums. Options,
/// payload and any marker and token are kept. Both addresses must be of the packet's
/// family. The enforcer itself never rewrites addresses; this is for tests, fuzzing and
/// diagnostics that need to see the same packet on both sides of a NAT.
pub fn rewrite_endpoints(
    pkt: &[u8],
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<Vec<u8>, PacketError> {
    let (lay, _, _) = layout(pkt)?;
    let mut out = pkt[..lay.end].to_vec();
    match (src.ip(), dst.ip(), lay.v4) {
        (IpAddr::V4(s), IpAddr::V4(d), true) => {
            out[12..16].copy_from_slice(&s.octets());
            out[16..20].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d), false) => {
            out[8..24].copy_from_slice(&s.octets());
            out[24..40].copy_from_slice(&d.octets());
        }
        _ => {
            return Err(PacketError::Unsupported(
                "address family differs from the packet's",
            ))
        }
    }
    let t = lay.ip_len;
    out[t..t + 2].copy_from_slice(&src.port().to_be_bytes());
    out[t + 2..t + 4].copy_from_slice(&dst.port().to_be_bytes());
    finish(&mut out, &lay, lay.tcp_len)?;
    Ok(out)
}

/// Fixes the TCP data offset, IP lengths, IPv4 header checksum and TCP checksum of a packet
/// assembled in `out` with the IP header of `lay` and a TCP header of `tcp_len` bytes.
fn finish(out: &mut Vec<u8>, lay: &Layout, tcp_len: usize) -> Result<(), PacketError> {
    let t = lay.ip_len;
    let total = out.len();
    let seg_len = total - t;
    if lay.v4 {
        let total16 = u16::try_from(total).map_err(|_| {
            out.clear();
            PacketError::TooBig {
                len: total,
                max: u16::MAX as usize,
            }
        })?;
        out[2..4].copy_from_slice(&total16.to_be_bytes());
        out[10..12].fill(0);
        let c = Sum16BitWords::new().add_slice(&out[..t]).ones_complement();
        out[10..12].copy_from_slice(&c.to_ne_bytes());
    } else {
        let plen = u16::try_from(seg_len).map_err(|_| {
            out.clear();
            PacketError::TooBig {
                len: total,
                max: u16::MAX as usize + 40,
            }
        })?;
        out[4..6].copy_from_slice(&plen.to_be_bytes());
    }
    out[t + 12] = ((tcp_len / 4) as u8) << 4 | (out[t + 12] & 0x0f);
    out[t + 16..t + 18].fill(0);
    let c = pseudo_header(out, lay.v4, seg_len)
        .add_slice(&out[t..])
        .ones_complement();
    out[t + 16..t + 18].copy_from_slice(&c.to_ne_bytes());
    Ok(())
}

fn pseudo_header(pkt: &[u8], v4: bool, seg_len: usize) -> Sum16BitWords {
    let tcp = [0, IpNumber::TCP.0];
    if v4 {
        Sum16BitWords::new()
            .add_slice(&pkt[12..20])
            .add_2bytes(tcp)
            .add_2bytes((seg_len as u16).to_be_bytes())
    } else {
        Sum16BitWords::new()
            .add_slice(&pkt[8..40])
            .add_4bytes((seg_len as u32).to_be_bytes())
            .add_2bytes(tcp)
    }
}

/// Checks the IPv4 header checksum and the TCP checksum of a packet (tests, fuzzing,
/// diagnostics).
pub fn verify_checksums(pkt: &[u8]) -> Result<(), PacketError> {
    let (lay, _, _) = layout(pkt)?;
    let t = lay.ip_len;
    if lay.v4 && Sum16BitWords::new().add_slice(&pkt[..t]).ones_complement() != 0 {
        return Err(PacketError::Checksum("IPv4 header"));
    }
    let seg = &pkt[t..lay.end];
    if pseudo_header(pkt, lay.v4, seg.len())
        .add_slice(seg)
        .ones_complement()
        != 0
    {
        return Err(PacketError::Checksum("TCP"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

    const MSS: TcpOptionElement = TcpOptionElement::MaximumSegmentSize(1460);

    fn syn_v4(payload: &[u8], opts: &[TcpOptionElement]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 64240)
            .syn()
            .options(opts)
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn syn_v6(payload: &[u8]) -> Vec<u8> {
        let mut src = [0u8; 16];
        src[15] = 1;
        let mut dst = [0u8; 16];
        dst[15] = 2;
        let b = PacketBuilder::ipv6(src, dst, 64)
            .tcp(40000, 80, 7, 64240)
            .syn()
            .options(&[MSS])
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// etherparse's own view of the rewritten packet: it must parse and its checksum match.
    fn etherparse_ok(pkt: &[u8]) {
        let s = SlicedPacket::from_ip(pkt).expect("etherparse parses the rewritten packet");
        let Some(TransportSlice::Tcp(tcp)) = s.transport else {
            panic!("not tcp")
        };
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
            return;
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let want = tcp
            .calc_checksum_ipv4(h.source, h.destination)
            .expect("checksum computes");
        assert_eq!(
            tcp.checksum(),
            want,
            "TCP checksum as etherparse computes it"
        );
    }

    #[test]
    fn attach_then_parse_then_strip_round_trips_v4() {
        let p = syn_v4(
            &[],
            &[MSS, TcpOptionElement::SelectiveAcknowledgementPermitted],
        );
        let token = vec![0xAB; 600];
        let a = attach(&p, &token, 1500).unwrap();
        assert_eq!(a.len(), p.len() + 8 + 600);
        verify_checksums(&a).unwrap();
        etherparse_ok(&a);
        let v = parse(&a).unwrap();
        assert_eq!(v.token, Some(&token[..]));
        assert!(v.payload.is_empty());
        assert!(v.flags.syn && !v.flags.ack);
        assert_eq!((v.src_port, v.dst_port, v.seq), (40000, 80, 1000));
        assert_eq!(v.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        let s = strip(&a).unwrap();
        assert_eq!(s.packet, p);
        assert_eq!(&a[s.token], &token[..]);
        assert_eq!(parse(&p).unwrap().token, None);
    }

    #[test]
    fn attach_then_strip_round_trips_v6() {
        let p = syn_v6(b"hi");
        let a = attach(&p, b"token", 1500).unwrap();
        verify_checksums(&a).unwrap();
        let v = parse(&a).unwrap();
        assert_eq!(v.payload, b"hi");
        assert_eq!(v.token, Some(&b"token"[..]));
        assert_eq!(strip(&a).unwrap().packet, p);
    }

    #[test]
    fn fast_open_data_is_kept_in_front_of_the_token() {
        let p = syn_v4(b"GET / HTTP/1.0\r\n", &[MSS]);
        let a = attach(&p, b"TOKEN", 1500).unwrap();
        let v = parse(&a).unwrap();
        assert_eq!(v.payload, b"GET / HTTP/1.0\r\n");
        assert_eq!(v.token, Some(&b"TOKEN"[..]));
        let s = strip(&a).unwrap();
        assert_eq!(parse(&s.packet).unwrap().payload, b"GET / HTTP/1.0\r\n");
        assert_eq!(s.packet, p);
    }

    /// Builds a SYN with raw option bytes (etherparse's builder knows only some kinds).
    fn syn_raw_opts(opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut p = syn_v4(&[], &[]);
        // rebuild: IP header 20, TCP header 20 + opts
        let mut out = p[..40].to_vec();
        out.extend_from_slice(opts);
        out.extend_from_slice(payload);
        p.clear();
        let lay = Layout {
            v4: true,
            ip_len: 20,
            tcp_len: 20 + opts.len(),
            end: 0,
            marker: None,
        };
        finish(&mut out, &lay, 20 + opts.len()).unwrap();
        out
    }

    #[test]
    fn tfo_cookie_options_are_untouched_and_not_ours() {
        // kind 34 cookie (8 bytes) + kind 254/0xF989 experimental TFO, padded with NOPs.
        let opts = [34, 10, 1, 2, 3, 4, 5, 6, 7, 8, 254, 4, 0xF9, 0x89, 1, 1];
        let p = syn_raw_opts(&opts, b"tfo-data");
        verify_checksums(&p).unwrap();
        let v = parse(&p).unwrap();
        assert_eq!(v.token, None);
        assert_eq!(v.payload, b"tfo-data");
        assert_eq!(strip(&p), Err(PacketError::NoMarker));
        let a = attach(&p, b"tok", 1500).unwrap();
        // the peer's options are still there, byte for byte, after ours
        assert_eq!(&a[40 + 8..40 + 8 + opts.len()], &opts);
        let v = parse(&a).unwrap();
        assert_eq!(v.payload, b"tfo-data");
        assert_eq!(v.token, Some(&b"tok"[..]));
        assert_eq!(strip(&a).unwrap().packet, p);
    }

    #[test]
    fn other_experiments_in_kind_253_are_not_ours() {
        let opts = [253, 6, 0x12, 0x34, 0, 1, 1, 1];
        let p = syn_raw_opts(&opts, b"x");
        assert_eq!(parse(&p).unwrap().token, None);
    }

    #[test]
    fn marker_elsewhere_is_replaced_with_nops() {
        let ex = EXID.to_be_bytes();
        let opts = [2, 4, 5, 0xb4, 253, 6, ex[0], ex[1], 0, 3, 1, 1];
        let p = syn_raw_opts(&opts, b"abcXYZ");
        let v = parse(&p).unwrap();
        assert_eq!(v.payload, b"abc");
        assert_eq!(v.token, Some(&b"XYZ"[..]));
        let s = strip(&p).unwrap();
        verify_checksums(&s.packet).unwrap();
        etherparse_ok(&s.packet);
        let v = parse(&s.packet).unwrap();
        assert_eq!(v.payload, b"abc");
        assert_eq!(v.token, None);
        // MSS still there, marker turned into NOPs
        let o = &s.packet[40..52];
        assert_eq!(o, &[2, 4, 5, 0xb4, 1, 1, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn bad_markers_are_errors() {
        let ex = EXID.to_be_bytes();
        let too_long = syn_raw_opts(&[253, 6, ex[0], ex[1], 0, 9, 1, 1], b"abc");
        assert!(matches!(parse(&too_long), Err(PacketError::BadMarker(_))));
        let wrong_len = syn_raw_opts(&[253, 8, ex[0], ex[1], 0, 1, 0, 0], b"abc");
        assert!(matches!(parse(&wrong_len), Err(PacketError::BadMarker(_))));
        let twice = syn_raw_opts(
            &[253, 6, ex[0], ex[1], 0, 1, 253, 6, ex[0], ex[1], 0, 1],
            b"abc",
        );
        assert!(matches!(parse(&twice), Err(PacketError::BadMarker(_))));
        let zero = syn_raw_opts(&[253, 6, ex[0], ex[1], 0, 0, 1, 1], b"abc");
        assert!(matches!(parse(&zero), Err(PacketError::BadMarker(_))));
        let bad_opts = syn_raw_opts(&[2, 0, 1, 1], b"");
        assert!(matches!(parse(&bad_opts), Err(PacketError::BadOptions(0))));
    }

    #[test]
    fn attach_refuses_when_options_are_full_or_packet_too_big() {
        // 36 bytes of options: 4 left, the marker needs 8
        let mut opts = vec![1u8; 32];
        opts.extend_from_slice(&[2, 4, 5, 0xb4]);
        let p = syn_raw_opts(&opts, b"");
        assert_eq!(
            attach(&p, b"t", 1500),
            Err(PacketError::OptionsFull { used: 36 })
        );
        let p = syn_v4(&[], &[MSS]);
        let big = vec![0u8; 1500];
        assert!(matches!(
            attach(&p, &big, 1500),
            Err(PacketError::TooBig { .. })
        ));
        assert_eq!(attach(&p, b"", 1500), Err(PacketError::TokenLen(0)));
        let a = attach(&p, b"t", 1500).unwrap();
        assert_eq!(attach(&a, b"t", 1500), Err(PacketError::AlreadyMarked));
        // exactly at the limit is fine
        let room = 1500 - p.len() - 8;
        assert_eq!(attach(&p, &vec![1; room], 1500).unwrap().len(), 1500);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x45; 10]).is_err());
        let mut udp = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 5)
            .udp(1, 2)
            .write(&mut udp, b"x")
            .unwrap();
        assert_eq!(parse(&udp), Err(PacketError::NotTcp(17)));
        assert!(strip(&udp).is_err());
    }

    #[test]
    fn synack_becomes_a_rst_the_syn_sent_socket_accepts() {
        let b = PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(80, 40000, 5000, 65160)
            .syn()
            .ack(1001)
            .options(&[MSS])
            .unwrap();
        let mut p = Vec::new();
        b.write(&mut p, &[]).unwrap();
        let p = attach(&p, b"token", 1500).unwrap();
        let r = synack_to_rst(&p).unwrap();
        verify_checksums(&r).unwrap();
        etherparse_ok(&r);
        let v = parse(&r).unwrap();
        assert!(v.flags.rst && v.flags.ack && !v.flags.syn);
        assert_eq!((v.seq, v.ack), (5000, 1001));
        assert_eq!(r.len(), 40);
        assert!(v.payload.is_empty() && v.token.is_none());
        assert!(synack_to_rst(&syn_v4(&[], &[])).is_err());
    }

    #[test]
    fn reserved_bits_survive_the_round_trip() {
        let mut p = syn_v4(b"", &[MSS]);
        p[20 + 12] |= 0x0f; // reserved bits + AE
        let lay = layout(&p).unwrap().0;
        finish(&mut p, &lay, lay.tcp_len).unwrap();
        let a = attach(&p, b"t", 1500).unwrap();
        assert_eq!(a[32] & 0x0f, 0x0f);
        assert_eq!(strip(&a).unwrap().packet, p);
    }

    #[test]
    fn ipv4_header_options_are_kept_and_checksummed() {
        let mut h = etherparse::Ipv4Header::new(0, 64, IpNumber::TCP, [10, 0, 0, 1], [10, 0, 0, 2])
            .unwrap();
        h.options = (&[1u8, 1, 1, 0][..]).try_into().unwrap(); // NOP NOP NOP EOL: IHL 6
        let b = PacketBuilder::ip(etherparse::IpHeaders::Ipv4(h, Default::default()))
            .tcp(1, 2, 3, 4)
            .syn()
            .options(&[MSS])
            .unwrap();
        let mut p = Vec::new();
        b.write(&mut p, b"").unwrap();
        assert_eq!(p[0] & 0x0f, 6);
        verify_checksums(&p).unwrap();
        let a = attach(&p, b"tok", 1500).unwrap();
        verify_checksums(&a).unwrap();
        etherparse_ok(&a);
        assert_eq!(&a[20..24], &[1, 1, 1, 0], "IP options untouched");
        assert_eq!(parse(&a).unwrap().token, Some(&b"tok"[..]));
        assert_eq!(strip(&a).unwrap().packet, p);
    }

    #[test]
    fn bytes_beyond_the_ip_length_are_dropped() {
        let p = syn_v4(b"", &[MSS]);
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xEE; 6]); // e.g. Ethernet padding
        let a = attach(&padded, b"t", 1500).unwrap();
        assert_eq!(strip(&a).unwrap().packet, p);
    }

    #[test]
    fn rewrite_endpoints_is_a_nat_with_correct_checksums() {
        let p = attach(&syn_v4(b"", &[]), b"token", 1500).unwrap();
        let (src, dst): (SocketAddr, SocketAddr) = (
            "10.0.0.1:40000".parse().unwrap(),
            "10.244.9.9:80".parse().unwrap(),
        );
        let n = rewrite_endpoints(&p, src, dst).unwrap();
        verify_checksums(&n).unwrap();
        etherparse_ok(&n);
        let v = parse(&n).unwrap();
        assert_eq!((v.src, v.src_port), (src.ip(), src.port()));
        assert_eq!((v.dst, v.dst_port), (dst.ip(), dst.port()));
        assert_eq!(v.token, Some(&b"token"[..]), "marker and token kept");
        assert_eq!(n.len(), p.len());
        // rewriting back gives the original bytes
        let o = parse(&p).unwrap();
        let back = rewrite_endpoints(
            &n,
            SocketAddr::new(o.src, o.src_port),
            SocketAddr::new(o.dst, o.dst_port),
        )
        .unwrap();
        assert_eq!(back, p);
        // IPv6 too; a family mismatch changes nothing and is an error
        let p6 = syn_v6(b"");
        let (s6, d6): (SocketAddr, SocketAddr) = (
            "[fd00::1]:40000".parse().unwrap(),
            "[fd00::9]:80".parse().unwrap(),
        );
        let n6 = rewrite_endpoints(&p6, s6, d6).unwrap();
        verify_checksums(&n6).unwrap();
        assert_eq!(parse(&n6).unwrap().dst, d6.ip());
        assert!(matches!(
            rewrite_endpoints(&p6, src, dst),
            Err(PacketError::Unsupported(_))
        ));
    }

    #[test]
    fn corrupted_checksum_is_detected() {
        let mut a = attach(&syn_v4(b"", &[MSS]), b"t", 1500).unwrap();
        let n = a.len();
        a[n - 1] ^= 1;
        assert_eq!(verify_checksums(&a), Err(PacketError::Checksum("TCP")));
    }
}
