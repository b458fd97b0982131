//! A minimal BER reader and writer for the subset of X.690 that LDAP (RFC 4511 §5.1) uses.
//!
//! We decode requests ourselves instead of through `ldap3_proto`'s decoder because that decoder turns filter
//! and assertion values into `String`s and rejects the whole message when they are not UTF-8 — which is exactly
//! what a binary `objectGUID=\XX…` filter or a Latin-1 client sends. Reading raw octets keeps such requests
//! working. The writer builds responses (and pre-encoded entries) directly into byte buffers so a search result
//! is assembled by concatenation.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a PDU could not be read. Every variant ends the connection with a Notice of Disconnection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    #[error("truncated BER element")]
    Truncated,
    #[error("unsupported BER length encoding")]
    BadLength,
    #[error("unexpected BER tag 0x{found:02x} (wanted 0x{wanted:02x})")]
    UnexpectedTag { wanted: u8, found: u8 },
    #[error("BER integer out of range")]
    BadInteger,
    #[error("BER nesting too deep")]
    TooDeep,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// One decoded TLV: the identifier octet and the content. Multi-byte tags are not used by LDAP and are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub tag: u8,
    pub value: Bytes,
}

impl Tlv {
    /// Whether the constructed bit is set.
    pub fn constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }

    /// A reader over the content of a constructed element.
    pub fn reader(&self) -> Reader {
        Reader::new(self.value.clone())
    }
}

/// Read the header of the element at the start of `buf`: `(tag, header length, content length)`. `Ok(None)`
/// means more bytes are needed. Indefinite lengths (forbidden in LDAP) and lengths over 4 octets are errors.
pub fn peek_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, BerError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let tag = buf[0];
    if tag & 0x1f == 0x1f {
        return Err(BerError::Malformed("multi-byte tag"));
    }
    let first = buf[1];
    if first < 0x80 {
        return Ok(Some((tag, 2, first as usize)));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Err(BerError::BadLength);
    }
    if buf.len() < 2 + n {
        return Ok(None);
    }
    let mut len = 0usize;
    for b in &buf[2..2 + n] {
        len = (len << 8) | *b as usize;
    }
    Ok(Some((tag, 2 + n, len)))
}

/// Sequential reader over the content octets of a constructed element.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The tag of the next element without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The next element, whatever its tag.
    pub fn next_tlv(&mut self) -> Result<Tlv, BerError> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let (tag, hl, len) = peek_header(rest)?.ok_or(BerError::Truncated)?;
        let end = hl.checked_add(len).ok_or(BerError::BadLength)?;
        if end > rest.len() {
            return Err(BerError::Truncated);
        }
        let start = self.pos + hl;
        let value = self.buf.slice(start..start + len);
        self.pos += end;
        Ok(Tlv { tag, value })
    }

    /// The next element, which must carry `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv, BerError> {
        let t = self.next_tlv()?;
        if t.tag != tag {
            return Err(BerError::UnexpectedTag {
                wanted: tag,
                found: t.tag,
            });
        }
        Ok(t)
    }

    /// An element with `tag` if it comes next; otherwise nothing is consumed.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv>, BerError> {
        if self.peek_tag() == Some(tag) {
            self.expect(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn octets(&mut self, tag: u8) -> Result<Bytes, BerError> {
        Ok(self.expect(tag)?.value)
    }

    /// An OCTET STRING that must be UTF-8 (LDAPDN, AttributeDescription, LDAPOID).
    pub fn string(&mut self, tag: u8) -> Result<String, BerError> {
        let v = self.octets(tag)?;
        String::from_utf8(v.to_vec()).map_err(|_| BerError::Malformed("UTF-8 string"))
    }

    pub fn integer(&mut self, tag: u8) -> Result<i64, BerError> {
        decode_int(&self.expect(tag)?.value)
    }

    pub fn boolean(&mut self, tag: u8) -> Result<bool, BerError> {
        let v = self.expect(tag)?.value;
        match v.as_ref() {
            [b] => Ok(*b != 0),
            _ => Err(BerError::Malformed("BOOLEAN")),
        }
    }
}

/// Decode a two's-complement INTEGER / ENUMERATED content of 1..=8 octets.
pub fn decode_int(v: &[u8]) -> Result<i64, BerError> {
    if v.is_empty() || v.len() > 8 {
        return Err(BerError::BadInteger);
    }
    let mut n: i64 = if v[0] & 0x80 != 0 { -1 } else { 0 };
    for b in v {
        n = (n << 8) | *b as i64;
    }
    Ok(n)
}

// ---------------------------------------------------------------- writer

/// Append a length in definite form (short form below 128, else the shortest long form).
pub fn put_len(out: &mut BytesMut, len: usize) {
    if len < 0x80 {
        out.put_u8(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.put_u8(0x80 | (8 - skip) as u8);
        out.put_slice(&bytes[skip..]);
    }
}

/// Size of the header for a content of `len` octets.
pub fn header_len(len: usize) -> usize {
    if len < 0x80 {
        2
    } else {
        let bytes = (len as u64).to_be_bytes();
        2 + 8 - bytes.iter().take_while(|b| **b == 0).count()
    }
}

/// Append a primitive element.
pub fn put_tlv(out: &mut BytesMut, tag: u8, value: &[u8]) {
    out.reserve(header_len(value.len()) + value.len());
    out.put_u8(tag);
    put_len(out, value.len());
    out.put_slice(value);
}

/// Minimal two's-complement content octets of `n`.
pub fn int_octets(n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

pub fn put_int(out: &mut BytesMut, tag: u8, n: i64) {
    put_tlv(out, tag, &int_octets(n));
}

/// Append a constructed element whose content is written by `f`. The content is built in place and the
/// header is fixed up afterwards, so nesting does not copy.
pub fn put_constructed(out: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    let mut inner = BytesMut::new();
    f(&mut inner);
    put_tlv(out, tag, &inner);
}

/// Wrap already-encoded content in a header: `tag len content`.
pub fn wrap(tag: u8, content: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(content.len()) + content.len());
    put_tlv(&mut out, tag, content);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_in_minimal_form() {
        for n in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            -1,
            -128,
            -129,
            2147483647,
            -2147483646,
            i64::MAX,
            i64::MIN,
        ] {
            let o = int_octets(n);
            assert_eq!(decode_int(&o).unwrap(), n, "{n}");
        }
        assert_eq!(int_octets(128), vec![0x00, 0x80]);
        assert_eq!(int_octets(-1), vec![0xff]);
        assert!(decode_int(&[]).is_err());
        assert!(decode_int(&[0; 9]).is_err());
    }

    #[test]
    fn lengths_use_short_and_long_forms() {
        for len in [0usize, 127, 128, 255, 256, 65_535, 70_000] {
            let mut b = BytesMut::new();
            put_len(&mut b, len);
            assert_eq!(b.len(), header_len(len) - 1);
            let mut full = BytesMut::new();
            full.put_u8(0x04);
            full.extend_from_slice(&b);
            full.extend(std::iter::repeat_n(0u8, len));
            assert_eq!(peek_header(&full).unwrap(), Some((0x04, header_len(len), len)));
        }
    }

    #[test]
    fn reader_refuses_truncation_and_indefinite_length() {
        let mut r = Reader::new(Bytes::from_static(&[0x04, 0x05, b'a']));
        assert_eq!(r.next_tlv(), Err(BerError::Truncated));
        assert_eq!(peek_header(&[0x30, 0x80]), Err(BerError::BadLength));
        assert_eq!(peek_header(&[0x30, 0x85, 1, 1, 1, 1, 1]), Err(BerError::BadLength));
        let mut r = Reader::new(Bytes::from_static(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]));
        assert_eq!(r.next_tlv(), Err(BerError::Truncated));
        let mut r = Reader::new(Bytes::from_static(&[0x02, 0x01, 0x05, 0x04, 0x00]));
        assert_eq!(r.integer(0x02).unwrap(), 5);
        assert_eq!(r.octets(0x04).unwrap(), Bytes::new());
        assert!(r.is_empty());
    }
}
