//! LDAP messages as this server reads and writes them (RFC 4511 §4), decoded from raw BER by [`super::ber`].
//!
//! Only the request side is decoded; responses are written directly as bytes. Values that may be binary
//! (filter assertions, compare values, passwords) stay `Bytes`, so nothing a client sends is rejected for not
//! being UTF-8.

use super::ber::{self, put_constructed, put_int, put_tlv, BerError, Reader, Tlv};
use super::filter::Filter;
use bytes::{Bytes, BytesMut};

pub const OID_PAGED: &str = "1.2.840.113556.1.4.319";
pub const OID_SORT_REQUEST: &str = "1.2.840.113556.1.4.473";
pub const OID_SORT_RESPONSE: &str = "1.2.840.113556.1.4.474";
pub const OID_STARTTLS: &str = "1.3.6.1.4.1.1466.20037";
pub const OID_WHOAMI: &str = "1.3.6.1.4.1.4203.1.11.3";
pub const OID_NOTICE_OF_DISCONNECTION: &str = "1.3.6.1.4.1.1466.20036";

/// Result codes we send (RFC 4511 §4.1.9 and Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Success = 0,
    OperationsError = 1,
    ProtocolError = 2,
    TimeLimitExceeded = 3,
    SizeLimitExceeded = 4,
    CompareFalse = 5,
    CompareTrue = 6,
    AuthMethodNotSupported = 7,
    AdminLimitExceeded = 11,
    UnavailableCriticalExtension = 12,
    NoSuchAttribute = 16,
    NoSuchObject = 32,
    InvalidDnSyntax = 34,
    InvalidCredentials = 49,
    Busy = 51,
    Unavailable = 52,
    UnwillingToPerform = 53,
    Other = 80,
}

/// A request control (RFC 4511 §4.1.11); the value is kept raw and parsed by whoever understands the OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub oid: String,
    pub critical: bool,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Base,
    One,
    Sub,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub base: String,
    pub scope: Scope,
    pub size_limit: i64,
    pub time_limit: i64,
    pub types_only: bool,
    pub filter: Filter,
    pub attrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAuth {
    Simple(Bytes),
    Sasl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Bind {
        version: i64,
        name: String,
        auth: BindAuth,
    },
    Unbind,
    Search(Box<SearchRequest>),
    Compare {
        dn: String,
        attr: String,
        value: Bytes,
    },
    Abandon(i64),
    Extended {
        oid: String,
        value: Option<Bytes>,
    },
    /// Add, modify, delete, modify DN: refused; carries the response tag to answer with.
    Write {
        response_tag: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub op: Op,
    pub controls: Vec<Control>,
}

impl Request {
    pub fn control(&self, oid: &str) -> Option<&Control> {
        self.controls.iter().find(|c| c.oid == oid)
    }
}

/// Why a request could not be decoded; `id` is set when the message id was readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    pub id: Option<i64>,
    pub error: BerError,
}

/// Decode one complete LDAPMessage (the full TLV including the outer SEQUENCE header).
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    let mut outer = Reader::new(frame);
    let msg = outer.expect(0x30).map_err(|error| DecodeError { id: None, error })?;
    let mut r = msg.reader();
    let id = r.integer(0x02).map_err(|error| DecodeError { id: None, error })?;
    decode_body(id, &mut r).map_err(|error| DecodeError { id: Some(id), error })
}

fn decode_body(id: i64, r: &mut Reader) -> Result<Request, BerError> {
    if !(0..=i32::MAX as i64).contains(&id) {
        return Err(BerError::BadInteger);
    }
    let op_tlv = r.next_tlv()?;
    let op = decode_op(&op_tlv)?;
    let mut controls = Vec::new();
    if let Some(ctl) = r.optional(0xa0)? {
        let mut cr = ctl.reader();
        while !cr.is_empty() {
            let mut c = cr.expect(0x30)?.reader();
            let oid = c.string(0x04)?;
            let critical = if c.peek_tag() == Some(0x01) {
                c.boolean(0x01)?
            } else {
                false
            };
            let value = c.optional(0x04)?.map(|t| t.value);
            controls.push(Control { oid, critical, value });
        }
    }
    Ok(Request { id, op, controls })
}

fn decode_op(t: &Tlv) -> Result<Op, BerError> {
    Ok(match t.tag {
        0x60 => {
            let mut r = t.reader();
            let version = r.integer(0x02)?;
            let name = r.string(0x04)?;
            let a = r.next_tlv()?;
            let auth = match a.tag {
                0x80 => BindAuth::Simple(a.value),
                0xa3 => BindAuth::Sasl(a.reader().string(0x04)?),
                _ => return Err(BerError::Malformed("bind authentication choice")),
            };
            Op::Bind { version, name, auth }
        }
        0x42 => Op::Unbind,
        0x63 => Op::Search(Box::new(decode_search(t)?)),
        0x6e => {
            let mut r = t.reader();
            let dn = r.string(0x04)?;
            let mut ava = r.expect(0x30)?.reader();
            let attr = ava.string(0x04)?;
            let value = ava.octets(0x04)?;
            Op::Compare { dn, attr, value }
        }
        0x50 => Op::Abandon(ber::decode_int(&t.value)?),
        0x77 => {
            let mut r = t.reader();
            let oid = r.string(0x80)?;
            let value = r.optional(0x81)?.map(|t| t.value);
            Op::Extended { oid, value }
        }
        0x66 => Op::Write { response_tag: 0x67 },
        0x68 => Op::Write { response_tag: 0x69 },
        0x4a => Op::Write { response_tag: 0x6b },
        0x6c => Op::Write { response_tag: 0x6d },
        _ => return Err(BerError::Malformed("protocol operation")),
    })
}

fn decode_search(t: &Tlv) -> Result<SearchRequest, BerError> {
    let mut r = t.reader();
    let base = r.string(0x04)?;
    let scope = match r.integer(0x0a)? {
        0 => Scope::Base,
        1 => Scope::One,
        2 => Scope::Sub,
        // RFC 4533's subordinate scope (3): the subtree without the base; treat as subtree.
        3 => Scope::Sub,
        _ => return Err(BerError::Malformed("search scope")),
    };
    let _deref = r.integer(0x0a)?;
    let size_limit = limit(r.integer(0x02)?);
    let time_limit = limit(r.integer(0x02)?);
    let types_only = r.boolean(0x01)?;
    let filter = Filter::decode(&r.next_tlv()?, 0)?;
    let mut attrs = Vec::new();
    let mut ar = r.expect(0x30)?.reader();
    while !ar.is_empty() {
        attrs.push(ar.string(0x04)?);
    }
    Ok(SearchRequest {
        base,
        scope,
        size_limit,
        time_limit,
        types_only,
        filter,
        attrs,
    })
}

/// RFC 4511's `maxInt`, the bound of every limit and size a request carries.
pub const MAX_INT: i64 = i32::MAX as i64;

/// A `sizeLimit`/`timeLimit` (`INTEGER (0 .. maxInt)`), clamped into that range rather than refused: a bad
/// PDU ends the connection, and a client asking for more than `maxInt` (or a negative "none") means no limit
/// of its own, which is what 0 says. The server's limits apply either way.
fn limit(v: i64) -> i64 {
    v.clamp(0, MAX_INT)
}

/// Value of the Simple Paged Results control (RFC 2696): `(size, cookie)`, the size clamped to `maxInt` like
/// the search limits (a size of zero or below ends the paged search).
pub fn decode_paged(value: &[u8]) -> Result<(i64, Bytes), BerError> {
    let mut r = Reader::new(Bytes::copy_from_slice(value));
    let mut s = r.expect(0x30)?.reader();
    Ok((s.integer(0x02)?.min(MAX_INT), s.octets(0x04)?))
}

/// One sort key of the server-side sort control (RFC 2891).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub attr: String,
    /// The ordering rule (a matching rule OID or name), when the client names one.
    pub rule: Option<String>,
    pub reverse: bool,
}

pub fn decode_sort(value: &[u8]) -> Result<Vec<SortKey>, BerError> {
    let mut r = Reader::new(Bytes::copy_from_slice(value));
    let mut list = r.expect(0x30)?.reader();
    let mut keys = Vec::new();
    while !list.is_empty() {
        let mut k = list.expect(0x30)?.reader();
        let attr = k.string(0x04)?;
        let rule = k
            .optional(0x80)?
            .map(|t| String::from_utf8_lossy(&t.value).into_owned());
        let reverse = match k.optional(0x81)? {
            Some(t) => t.value.first().is_some_and(|b| *b != 0),
            None => false,
        };
        keys.push(SortKey { attr, rule, reverse });
    }
    Ok(keys)
}

// ---------------------------------------------------------------- responses

/// A response control to attach to a result.
#[derive(Debug, Clone)]
pub struct RespControl {
    pub oid: &'static str,
    pub value: Bytes,
}

/// Append `LDAPMessage { id, <op>, controls }` where `op` is written by `f`.
pub fn put_message(out: &mut BytesMut, id: i64, controls: &[RespControl], f: impl FnOnce(&mut BytesMut)) {
    put_constructed(out, 0x30, |m| {
        put_int(m, 0x02, id);
        f(m);
        if !controls.is_empty() {
            put_constructed(m, 0xa0, |cs| {
                for c in controls {
                    put_constructed(cs, 0x30, |cv| {
                        put_tlv(cv, 0x04, c.oid.as_bytes());
                        put_tlv(cv, 0x04, &c.value);
                    });
                }
            });
        }
    });
}

fn put_result_fields(m: &mut BytesMut, code: Code, matched: &str, message: &str) {
    put_tlv(m, 0x0a, &[code as u8]);
    put_tlv(m, 0x04, matched.as_bytes());
    put_tlv(m, 0x04, message.as_bytes());
}

/// Append a response whose body is just an LDAPResult (bind, search done, compare, modify, ...).
pub fn put_result(out: &mut BytesMut, id: i64, tag: u8, code: Code, matched: &str, message: &str) {
    put_result_with(out, id, tag, code, matched, message, &[]);
}

pub fn put_result_with(
    out: &mut BytesMut,
    id: i64,
    tag: u8,
    code: Code,
    matched: &str,
    message: &str,
    controls: &[RespControl],
) {
    put_message(out, id, controls, |m| {
        put_constructed(m, tag, |r| put_result_fields(r, code, matched, message))
    });
}

/// Append an ExtendedResponse, optionally naming the operation and carrying a value.
pub fn put_extended(out: &mut BytesMut, id: i64, code: Code, message: &str, oid: Option<&str>, value: Option<&[u8]>) {
    put_message(out, id, &[], |m| {
        put_constructed(m, 0x78, |r| {
            put_result_fields(r, code, "", message);
            if let Some(oid) = oid {
                put_tlv(r, 0x8a, oid.as_bytes());
            }
            if let Some(v) = value {
                put_tlv(r, 0x8b, v);
            }
        })
    });
}

/// The unsolicited Notice of Disconnection (RFC 4511 §4.4.1): message id 0, then the connection is closed.
pub fn notice_of_disconnection(code: Code, message: &str) -> Bytes {
    let mut out = BytesMut::new();
    put_extended(&mut out, 0, code, message, Some(OID_NOTICE_OF_DISCONNECTION), None);
    out.freeze()
}

/// The paged-results response control value: `SEQUENCE { size INTEGER, cookie OCTET STRING }`.
pub fn paged_value(size: i64, cookie: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_constructed(&mut out, 0x30, |s| {
        put_int(s, 0x02, size);
        put_tlv(s, 0x04, cookie);
    });
    out.freeze()
}

/// The sort response control value: `SEQUENCE { sortResult ENUMERATED }`.
pub fn sort_value(code: u8) -> Bytes {
    let mut out = BytesMut::new();
    put_constructed(&mut out, 0x30, |s| put_tlv(s, 0x0a, &[code]));
    out.freeze()
}

// ---------------------------------------------------------------- client side (load tool, tests)

/// Encode a simple BindRequest.
pub fn encode_bind(id: i64, name: &str, password: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_message(&mut out, id, &[], |m| {
        put_constructed(m, 0x60, |b| {
            put_int(b, 0x02, 3);
            put_tlv(b, 0x04, name.as_bytes());
            put_tlv(b, 0x80, password);
        })
    });
    out.freeze()
}

/// Encode a SearchRequest with optional request controls `(oid, critical, value)`.
pub fn encode_search(
    id: i64,
    base: &str,
    scope: Scope,
    size_limit: i64,
    filter: &Filter,
    attrs: &[&str],
    controls: &[(&str, bool, Option<&[u8]>)],
) -> Bytes {
    let mut out = BytesMut::new();
    put_constructed(&mut out, 0x30, |m| {
        put_int(m, 0x02, id);
        put_constructed(m, 0x63, |s| {
            put_tlv(s, 0x04, base.as_bytes());
            let scope = match scope {
                Scope::Base => 0,
                Scope::One => 1,
                Scope::Sub => 2,
            };
            put_tlv(s, 0x0a, &[scope]);
            put_tlv(s, 0x0a, &[0]);
            put_int(s, 0x02, size_limit);
            put_int(s, 0x02, 0);
            put_tlv(s, 0x01, &[0]);
            filter.encode(s);
            put_constructed(s, 0x30, |a| attrs.iter().for_each(|n| put_tlv(a, 0x04, n.as_bytes())));
        });
        if !controls.is_empty() {
            put_constructed(m, 0xa0, |cs| {
                for (oid, critical, value) in controls {
                    put_constructed(cs, 0x30, |c| {
                        put_tlv(c, 0x04, oid.as_bytes());
                        if *critical {
                            put_tlv(c, 0x01, &[0xff]);
                        }
                        if let Some(v) = value {
                            put_tlv(c, 0x04, v);
                        }
                    });
                }
            });
        }
    });
    out.freeze()
}

/// Encode an AbandonRequest.
pub fn encode_abandon(id: i64, target: i64) -> Bytes {
    let mut out = BytesMut::new();
    put_constructed(&mut out, 0x30, |m| {
        put_int(m, 0x02, id);
        put_int(m, 0x50, target);
    });
    out.freeze()
}

/// One response message as a client sees it: id, protocolOp tag, and the result code for results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: i64,
    pub tag: u8,
    pub code: Option<i64>,
}

/// Split one complete response message off the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn take_response(buf: &mut BytesMut) -> Result<Option<Response>, BerError> {
    let Some((_, hl, len)) = ber::peek_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < hl + len {
        return Ok(None);
    }
    let frame = buf.split_to(hl + len).freeze();
    let mut r = Reader::new(frame);
    let mut m = r.expect(0x30)?.reader();
    let id = m.integer(0x02)?;
    let op = m.next_tlv()?;
    let code = match op.tag {
        0x61 | 0x65 | 0x67 | 0x69 | 0x6b | 0x6d | 0x6f | 0x78 => Some(op.reader().integer(0x0a)?),
        _ => None,
    };
    Ok(Some(Response { id, tag: op.tag, code }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::proto::{LdapMsg, LdapOp, LdapResultCode};
    use tokio_util::codec::{Decoder, Encoder};

    /// Encode with ldap3_proto (an independent implementation) and decode with ours.
    fn via_ldap3(msg: LdapMsg) -> Request {
        let mut buf = BytesMut::new();
        ldap3_proto::LdapCodec::default().encode(msg, &mut buf).unwrap();
        decode_request(buf.freeze()).unwrap()
    }

    #[test]
    fn decodes_what_ldap3_proto_encodes() {
        let req = via_ldap3(LdapMsg {
            msgid: 7,
            op: LdapOp::SearchRequest(ldap3_proto::proto::LdapSearchRequest {
                base: "DC=contoso,DC=example".into(),
                scope: ldap3_proto::proto::LdapSearchScope::Subtree,
                aliases: ldap3_proto::proto::LdapDerefAliases::Never,
                sizelimit: 50,
                timelimit: 5,
                typesonly: false,
                filter: ldap3_proto::parse_ldap_filter_str("(&(objectClass=user)(telephoneNumber=*1234567))").unwrap(),
                attrs: vec!["cn".into(), "Mobile".into()],
            }),
            ctrl: vec![ldap3_proto::control::LdapControl::SimplePagedResults {
                size: 100,
                cookie: Vec::new(),
            }],
        });
        assert_eq!(req.id, 7);
        let Op::Search(s) = &req.op else {
            panic!("not a search: {req:?}")
        };
        assert_eq!(s.scope, Scope::Sub);
        assert_eq!(s.size_limit, 50);
        assert_eq!(s.attrs, vec!["cn".to_string(), "Mobile".to_string()]);
        let paged = req.control(OID_PAGED).unwrap();
        assert_eq!(
            decode_paged(paged.value.as_ref().unwrap()).unwrap(),
            (100, Bytes::new())
        );
    }

    #[test]
    fn binds_and_abandon_decode() {
        let req = via_ldap3(LdapMsg {
            msgid: 1,
            op: LdapOp::BindRequest(ldap3_proto::proto::LdapBindRequest {
                version: 3,
                dn: "svc@contoso.example".into(),
                cred: ldap3_proto::proto::LdapBindCred::Simple("pässword".into()),
            }),
            ctrl: vec![],
        });
        assert_eq!(
            req.op,
            Op::Bind {
                version: 3,
                name: "svc@contoso.example".into(),
                auth: BindAuth::Simple("pässword".into())
            }
        );
        let req = via_ldap3(LdapMsg {
            msgid: 3,
            op: LdapOp::AbandonRequest(2),
            ctrl: vec![],
        });
        assert_eq!(req.op, Op::Abandon(2));
    }

    #[test]
    fn our_responses_decode_with_ldap3_proto() {
        let mut out = BytesMut::new();
        put_result(&mut out, 5, 0x65, Code::NoSuchObject, "DC=contoso,DC=example", "gone");
        out.extend_from_slice(&notice_of_disconnection(Code::ProtocolError, "bad PDU"));
        let mut codec = ldap3_proto::LdapCodec::default();
        let done = codec.decode(&mut out).unwrap().unwrap();
        match done.op {
            LdapOp::SearchResultDone(r) => {
                assert_eq!(r.code, LdapResultCode::NoSuchObject);
                assert_eq!(r.matcheddn, "DC=contoso,DC=example");
            }
            other => panic!("unexpected {other:?}"),
        }
        let notice = codec.decode(&mut out).unwrap().unwrap();
        assert_eq!(notice.msgid, 0);
        match notice.op {
            LdapOp::ExtendedResponse(r) => {
                assert_eq!(r.res.code, LdapResultCode::ProtocolError);
                assert_eq!(r.name.as_deref(), Some(OID_NOTICE_OF_DISCONNECTION));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A search as ldapsearch sends it with `-z`/`-l`, with any limits.
    fn search_with_limits(size: i64, time: i64) -> Bytes {
        let mut out = BytesMut::new();
        put_constructed(&mut out, 0x30, |m| {
            put_int(m, 0x02, 7);
            put_constructed(m, 0x63, |s| {
                put_tlv(s, 0x04, b"DC=x");
                put_tlv(s, 0x0a, &[2]);
                put_tlv(s, 0x0a, &[0]);
                put_int(s, 0x02, size);
                put_int(s, 0x02, time);
                put_tlv(s, 0x01, &[0]);
                Filter::Present("objectClass".into()).encode(s);
                put_constructed(s, 0x30, |_| {});
            });
        });
        out.freeze()
    }

    /// `timeLimit` 2^63-1 once overflowed `Instant + Duration` in the search: limits are clamped to RFC 4511's
    /// `0 .. maxInt` when decoded.
    #[test]
    fn limits_are_clamped_to_max_int() {
        for (size, time, want) in [
            (i64::MAX, i64::MAX, (MAX_INT, MAX_INT)),
            (MAX_INT + 1, 5, (MAX_INT, 5)),
            (-1, i64::MIN, (0, 0)),
            (50, 0, (50, 0)),
        ] {
            let Op::Search(s) = decode_request(search_with_limits(size, time)).unwrap().op else {
                panic!("not a search")
            };
            assert_eq!((s.size_limit, s.time_limit), want, "{size} {time}");
        }
        let mut v = BytesMut::new();
        put_constructed(&mut v, 0x30, |s| {
            put_int(s, 0x02, i64::MAX);
            put_tlv(s, 0x04, b"");
        });
        assert_eq!(decode_paged(&v).unwrap().0, MAX_INT);
    }

    /// A random BER element shaped like LDAP: the tags requests use, nested up to `depth`, and now and then a
    /// length that lies or an integer too long.
    fn random_tlv(rng: &mut rand::rngs::SmallRng, depth: u32) -> Vec<u8> {
        use rand::Rng;
        const TAGS: &[u8] = &[
            0x02, 0x04, 0x0a, 0x01, 0x30, 0x31, 0x60, 0x63, 0x6e, 0x77, 0x80, 0x81, 0x87, 0x42, 0x50, 0xa0, 0xa1, 0xa2,
            0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
        ];
        let tag = TAGS[rng.gen_range(0..TAGS.len())];
        let content = if tag & 0x20 != 0 && depth > 0 {
            (0..rng.gen_range(0..5))
                .flat_map(|_| random_tlv(rng, depth - 1))
                .collect()
        } else {
            let n = if rng.gen_bool(0.2) {
                rng.gen_range(0..12)
            } else {
                rng.gen_range(0..4)
            };
            let mut v: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            if tag == 0x04 && rng.gen_bool(0.5) {
                v = b"member;range=5-1".to_vec();
            }
            v
        };
        let mut out = BytesMut::new();
        if rng.gen_bool(0.05) {
            // A lying length: longer, shorter, or in a long form we refuse.
            out.extend_from_slice(&[tag, [0x84, 0x85, 0x80][rng.gen_range(0..3)], 0xff, 0xff, 0xff, 0xff]);
            out.extend_from_slice(&content);
        } else {
            put_tlv(&mut out, tag, &content);
        }
        out.to_vec()
    }

    /// Property: whatever arrives — random LDAP-shaped trees, real requests with random bytes changed — decoding
    /// returns `Ok` or `Err` and never panics, and what it accepts is within RFC 4511's bounds (message id and
    /// limits in `0 .. maxInt`). Seeded, so a failure is reproducible; the failing PDU is printed in hex.
    #[test]
    fn random_and_mutated_pdus_decode_without_panicking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x2545_f491_4f6c_dd1d);
        let valid = [
            encode_bind(1, "CN=pbx,DC=x", b"secret"),
            search_with_limits(i64::MAX, i64::MAX),
            encode_abandon(4, 2),
        ];
        let (mut decoded, mut searches) = (0, 0);
        for round in 0..40_000 {
            let pdu: Vec<u8> = if round % 2 == 0 {
                let mut body = BytesMut::new();
                put_int(&mut body, 0x02, [1, -1, i64::MAX, MAX_INT + 1, 0][rng.gen_range(0..5)]);
                body.extend_from_slice(&random_tlv(&mut rng, 5));
                if rng.gen_bool(0.3) {
                    body.extend_from_slice(&random_tlv(&mut rng, 3));
                }
                let mut m = BytesMut::new();
                put_tlv(&mut m, 0x30, &body);
                m.to_vec()
            } else {
                let mut m = valid[rng.gen_range(0..valid.len())].to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..m.len());
                    m[i] = rng.gen();
                }
                m
            };
            let result = std::panic::catch_unwind(|| decode_request(Bytes::from(pdu.clone())));
            let Ok(result) = result else {
                panic!(
                    "decoding panicked on {}",
                    pdu.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
            };
            if let Ok(req) = result {
                decoded += 1;
                assert!((0..=MAX_INT).contains(&req.id), "message id {}", req.id);
                if let Op::Search(s) = &req.op {
                    searches += 1;
                    assert!((0..=MAX_INT).contains(&s.size_limit) && (0..=MAX_INT).contains(&s.time_limit));
                }
            }
        }
        // The generator must reach past the envelope, or the property says nothing.
        assert!(
            decoded > 1000 && searches > 100,
            "decoded {decoded}, searches {searches}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Valid requests of every kind, then every truncation and many byte mutations of them: decoding must
    /// return Ok or Err, never panic, and what decodes must re-decode the same.
    #[test]
    fn mutated_requests_never_panic() {
        let f = Filter::parse(r"(&(|(cn=Jan*)(sn=*oe))(!(userAccountControl:1.2.840.113556.1.4.803:=2))(objectGUID=\00\ff)(telephoneNumber>=1)(mail=*))").unwrap();
        let sort = {
            let mut b = BytesMut::new();
            put_constructed(&mut b, 0x30, |s| put_constructed(s, 0x30, |k| put_tlv(k, 0x04, b"cn")));
            b.freeze()
        };
        let corpus = vec![
            encode_bind(1, "CN=pbx,DC=x", b"secret"),
            encode_search(2, "DC=x", Scope::Sub, 50, &f, &["cn", "thumbnailPhoto"], &[]),
            encode_search(
                3,
                "",
                Scope::Base,
                0,
                &Filter::Present("objectClass".into()),
                &[],
                &[
                    (OID_PAGED, true, Some(&paged_value(100, b"cookie"))),
                    (OID_SORT_REQUEST, false, Some(&sort)),
                ],
            ),
            encode_abandon(4, 2),
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for msg in &corpus {
            assert!(decode_request(msg.clone()).is_ok());
            for cut in 0..msg.len() {
                assert!(
                    decode_request(msg.slice(..cut)).is_err(),
                    "truncated at {cut} must not decode"
                );
            }
            for _ in 0..3000 {
                let mut m = msg.to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                if let Ok(req) = decode_request(Bytes::from(m)) {
                    if let Op::Search(s) = &req.op {
                        let mut b = BytesMut::new();
                        s.filter.encode(&mut b);
                        let mut r = Reader::new(b.freeze());
                        assert_eq!(Filter::decode(&r.next_tlv().unwrap(), 0).unwrap(), s.filter);
                    }
                }
            }
        }
    }
}
