//! Search execution: base resolution (RootDSE, subschema, noSuchObject with matchedDN), scope, index-planned
//! filtering, size and time limits, paging, server-side sorting, and encoding results into a buffer that the
//! session writes, or hands over in chunks as it fills ([`SearchEnv::stream`]). After an Abandon, chunks
//! already handed over still go out (RFC 4511 §4.11 allows it); nothing after them does.

use super::encode::{write_entry, write_entry_direct, EncodedEntry, EntryCache, Selection};
use super::filter::Compiled;
use super::paging::{Cursor, PageState, Pages};
use super::proto::{self, put_result_with, Code, Control, RespControl, Scope, SearchRequest};
use super::sort::{Sorter, UnknownRule};
use super::{rootdse, schema};
use crate::directory::dn::parent_norm;
use crate::directory::entry::{normalize_dn, Entry};
use crate::directory::{Candidates, EntryId, Query, Snapshot};
use bytes::{Bytes, BytesMut};
use roaring::RoaringBitmap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Server-side limits for searches.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries a non-paged search returns (AD's MaxPageSize also applies there); 0 = unlimited.
    pub size_limit: usize,
    /// Largest page a paged search gets, whatever it asks for.
    pub max_page_size: usize,
    /// Longest a search (one page of a paged one) may run, whatever its own time limit; zero: no bound of the
    /// server's. Also bounds how long a client that reads slowly keeps a search producing.
    pub time_limit: Duration,
}

/// What a search needs besides the request.
pub struct SearchEnv<'a> {
    pub snap: &'a Arc<Snapshot>,
    pub cache: &'a EntryCache,
    pub pages: &'a Mutex<Pages>,
    pub limits: Limits,
    /// `dnsHostName` for the RootDSE, computed only when a RootDSE is asked for.
    pub host: &'a dyn Fn() -> String,
    pub abandoned: &'a AtomicBool,
    /// Where the response goes while it is being made: every [`STREAM_CHUNK`] bytes of entries are handed to
    /// this (false: the connection is gone, stop) instead of piling up until the search ends. `None` writes
    /// everything into the buffer.
    pub stream: Option<&'a dyn Fn(Bytes) -> bool>,
}

/// How many bytes of entries a streamed search hands to its connection at once.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// How often (in entries) long loops look at the clock and the abandon flag.
const CHECK_EVERY: usize = 256;

const DONE: u8 = 0x65;

/// Write SearchResultDone; the code is handed back for the operation metrics.
fn done(out: &mut BytesMut, id: i64, code: Code, matched: &str, msg: &str, ctl: &[RespControl]) -> Option<Code> {
    put_result_with(out, id, DONE, code, matched, msg, ctl);
    Some(code)
}

fn no_such_object(snap: &Snapshot, base_norm: &str) -> (String, String) {
    let mut cur = parent_norm(base_norm);
    while let Some(p) = cur {
        if let Some(e) = snap.by_dn(p) {
            let msg = format!(
                "0000208D: NameErr: DSID-0310020A, problem 2001 (NO_OBJECT), data 0, best match of:\n\t'{}'\n",
                e.dn
            );
            return (e.dn.to_string(), msg);
        }
        cur = parent_norm(p);
    }
    (
        String::new(),
        "0000208D: NameErr: DSID-0310020A, problem 2001 (NO_OBJECT), data 0, best match of:\n\t''\n".into(),
    )
}

/// Run one search, appending every response message (entries, then SearchResultDone) to `out`, and return the
/// result code. Returns `None` without writing anything when the operation is abandoned.
pub fn search(
    env: &SearchEnv<'_>,
    id: i64,
    req: &SearchRequest,
    controls: &[Control],
    out: &mut BytesMut,
) -> Option<Code> {
    let snap = env.snap;
    if let Ok(mut pages) = env.pages.lock() {
        pages.expire_stale();
    }
    for c in controls {
        if c.critical && !rootdse::SUPPORTED_CONTROLS.contains(&c.oid.as_str()) {
            let msg = format!(
                "00000057: LdapErr: DSID-0C090D3D, comment: Error processing control {}, data 0, v4563",
                c.oid
            );
            return done(out, id, Code::UnavailableCriticalExtension, "", &msg, &[]);
        }
    }
    let paged = match controls.iter().find(|c| c.oid == proto::OID_PAGED) {
        Some(c) => match c.value.as_deref().map(proto::decode_paged) {
            Some(Ok(v)) => Some(v),
            _ => return done(out, id, Code::ProtocolError, "", "malformed paged results control", &[]),
        },
        None => None,
    };
    // The sort response control goes with every result of a search that asked for sorting (RFC 2891 §1.2).
    let mut sort_ctl: Option<RespControl> = None;
    let sort = match controls.iter().find(|c| c.oid == proto::OID_SORT_REQUEST) {
        Some(c) => match c.value.as_deref().map(proto::decode_sort) {
            Some(Ok(keys)) if !keys.is_empty() => match Sorter::new(&keys, snap) {
                Ok(s) => {
                    sort_ctl = Some(sort_response(0));
                    Some(s)
                }
                Err(e) => {
                    let ctl = sort_response(UnknownRule::SORT_RESULT);
                    if c.critical {
                        return done(out, id, Code::UnavailableCriticalExtension, "", &e.to_string(), &[ctl]);
                    }
                    // Not critical: the results, unsorted, and the reason in the response control.
                    sort_ctl = Some(ctl);
                    None
                }
            },
            _ => return done(out, id, Code::ProtocolError, "", "malformed sort control", &[]),
        },
        None => None,
    };
    let sel = Selection::new(&req.attrs, req.types_only);
    // Only needed when the operational attribute is asked for; most searches skip the allocation.
    let subschema_dn = if sel.operational || sel.names.iter().any(|n| n == "subschemasubentry") {
        schema::subschema_dn(&snap.naming.base_dn)
    } else {
        String::new()
    };
    let compiled = Compiled::new(&req.filter, snap);

    // Special bases that are not in the snapshot.
    let base = req.base.trim();
    if base.is_empty() && req.scope == Scope::Base {
        let e = rootdse::root_dse(snap, &(env.host)());
        if compiled.matches(&e, snap) {
            write_entry(out, id, &e, &EncodedEntry::new(&e), &sel, &subschema_dn, None);
        }
        return done(out, id, Code::Success, "", "", &[]);
    }
    // Most searches name the naming context as configured: no need to parse it again.
    let base_norm = if base.is_empty() || base.eq_ignore_ascii_case(&snap.naming.base_dn) {
        snap.naming.base_dn_norm.to_string()
    } else {
        match normalize_dn(base) {
            Some(n) => n,
            None => {
                let msg = format!("0000208F: NameErr: DSID-03100225, problem 2006 (BAD_NAME), data 8350, best match of:\n\t'{base}'\n");
                return done(out, id, Code::InvalidDnSyntax, "", &msg, &[]);
            }
        }
    };
    if rootdse::is_subschema(&base_norm, snap) {
        let e = schema::subschema(&snap.naming.base_dn);
        if req.scope == Scope::Base && compiled.matches(&e, snap) {
            write_entry(out, id, &e, &EncodedEntry::new(&e), &sel, &subschema_dn, None);
        }
        return done(out, id, Code::Success, "", "", &[]);
    }
    let Some(base_entry) = snap.by_dn(&base_norm).cloned() else {
        let (matched, msg) = no_such_object(snap, &base_norm);
        return done(out, id, Code::NoSuchObject, &matched, &msg, &[]);
    };

    let now = Instant::now();
    let asked = (req.time_limit > 0)
        .then(|| now.checked_add(Duration::from_secs(req.time_limit.unsigned_abs())))
        .flatten();
    let bound = (!env.limits.time_limit.is_zero())
        .then(|| now.checked_add(env.limits.time_limit))
        .flatten();
    let deadline = asked.into_iter().chain(bound).min();
    let ctx = Ctx {
        env,
        id,
        sel: &sel,
        subschema_dn: &subschema_dn,
    };

    if let Some((size, cookie)) = paged {
        return paged_search(
            &ctx,
            req,
            &compiled,
            &base_entry,
            (sort.as_ref(), sort_ctl),
            size,
            &cookie,
            deadline,
            out,
        );
    }

    let client_limit = usize::try_from(req.size_limit).unwrap_or(0);
    let limit = [client_limit, env.limits.size_limit]
        .into_iter()
        .filter(|l| *l > 0)
        .min();
    let mut matching = matching(snap, &compiled, &base_entry, req.scope);
    let ctl: Vec<RespControl> = sort_ctl.into_iter().collect();
    if let Some(sorter) = &sort {
        let mut all: Vec<(EntryId, Arc<Entry>)> = matching.map(|(id, e)| (id, e.clone())).collect();
        match limit {
            Some(n) => sorter.sort_first(&mut all, n),
            None => sorter.sort(&mut all),
        }
        let mut it = all.iter().map(|(id, e)| (*id, e));
        return emit(&ctx, &mut it, limit, deadline, out, &ctl);
    }
    emit(&ctx, &mut matching, limit, deadline, out, &ctl)
}

fn sort_response(code: u8) -> RespControl {
    RespControl {
        oid: proto::OID_SORT_RESPONSE,
        value: proto::sort_value(code),
    }
}

struct Ctx<'a, 'e> {
    env: &'a SearchEnv<'e>,
    id: i64,
    sel: &'a Selection,
    subschema_dn: &'a str,
}

impl Ctx<'_, '_> {
    fn write(&self, out: &mut BytesMut, id: EntryId, e: &Arc<Entry>) {
        if self.sel.from_cache() {
            let enc = self.env.cache.get(id, e);
            write_entry(out, self.id, e, &enc, self.sel, self.subschema_dn, Some(self.env.snap));
        } else {
            write_entry_direct(out, self.id, e, self.sel, self.subschema_dn, Some(self.env.snap));
        }
        if out.len() >= STREAM_CHUNK && !self.env.abandoned.load(Ordering::Relaxed) {
            if let Some(stream) = self.env.stream {
                if !stream(out.split().freeze()) {
                    // Nobody to answer: stop as if abandoned (the loops look at the flag).
                    self.env.abandoned.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Write entries until the iterator ends, the size limit is hit (4 if more would follow) or time runs out (3).
fn emit(
    ctx: &Ctx<'_, '_>,
    it: &mut dyn Iterator<Item = (EntryId, &Arc<Entry>)>,
    limit: Option<usize>,
    deadline: Option<Instant>,
    out: &mut BytesMut,
    ctl: &[RespControl],
) -> Option<Code> {
    for (n, (entry_id, e)) in it.enumerate() {
        if limit.is_some_and(|l| n >= l) {
            return done(out, ctx.id, Code::SizeLimitExceeded, "", "", ctl);
        }
        if n % CHECK_EVERY == CHECK_EVERY - 1 {
            if ctx.env.abandoned.load(Ordering::Relaxed) {
                out.clear();
                return None;
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return done(out, ctx.id, Code::TimeLimitExceeded, "", "", ctl);
            }
        }
        ctx.write(out, entry_id, e);
    }
    if ctx.env.abandoned.load(Ordering::Relaxed) {
        out.clear();
        return None;
    }
    done(out, ctx.id, Code::Success, "", "", ctl)
}

/// Every [`CHECK_EVERY`] entries of a page: what to answer when the client abandoned the search (nothing) or
/// its time ran out, `None` to go on.
fn interrupted(
    env: &SearchEnv<'_>,
    msgid: i64,
    n: usize,
    deadline: Option<Instant>,
    out: &mut BytesMut,
) -> Option<Option<Code>> {
    if n % CHECK_EVERY != CHECK_EVERY - 1 {
        return None;
    }
    if env.abandoned.load(Ordering::Relaxed) {
        out.clear();
        return Some(None);
    }
    deadline
        .is_some_and(|d| Instant::now() > d)
        .then(|| done(out, msgid, Code::TimeLimitExceeded, "", "", &[]))
}

/// The index query for a search: the filter's, bounded by the scope.
fn scoped_query(snap: &Snapshot, f: &Compiled, base: &Entry, scope: Scope) -> Query {
    let q = f.query(snap);
    match scope {
        Scope::Base => match snap.id_of_dn(&base.dn_norm) {
            Some(id) => Query::And(vec![Query::Ids(RoaringBitmap::from_iter([id])), q]),
            None => Query::Nothing,
        },
        Scope::One => Query::And(vec![Query::Children(base.dn_norm.to_string()), q]),
        Scope::Sub => Query::And(vec![Query::Subtree(base.dn_norm.to_string()), q]),
    }
}

/// In-scope entries that match, in dense-id order, from the indexes: the caller stops after the page it
/// returns, so only the entries it returns (and candidates that fail the filter) are looked at.
fn matching<'s>(
    snap: &'s Snapshot,
    f: &'s Compiled,
    base: &Arc<Entry>,
    scope: Scope,
) -> Box<dyn Iterator<Item = (EntryId, &'s Arc<Entry>)> + 's> {
    walk(snap, f, snap.query(&scoped_query(snap, f, base, scope)), None)
}

/// The entries of `cands` after `after` that match `f` (checked only where the candidates are not exact).
fn walk<'s>(
    snap: &'s Snapshot,
    f: &'s Compiled,
    cands: Candidates,
    after: Option<EntryId>,
) -> Box<dyn Iterator<Item = (EntryId, &'s Arc<Entry>)> + 's> {
    let exact = cands.exact;
    Box::new(
        cands
            .into_iter_after(snap, after)
            .filter_map(move |id| snap.get(id).map(|e| (id, e)))
            .filter(move |(_, e)| exact || f.matches(e, snap)),
    )
}

fn fingerprint(req: &SearchRequest) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.base.to_lowercase().hash(&mut h);
    req.scope.hash(&mut h);
    req.filter.hash(&mut h);
    h.finish()
}

#[allow(clippy::too_many_arguments)]
fn paged_search(
    ctx: &Ctx<'_, '_>,
    req: &SearchRequest,
    compiled: &Compiled,
    base: &Arc<Entry>,
    (sort, sort_ctl): (Option<&Sorter>, Option<RespControl>),
    size: i64,
    cookie: &[u8],
    deadline: Option<Instant>,
    out: &mut BytesMut,
) -> Option<Code> {
    let env = ctx.env;
    let fp = fingerprint(req);
    let sort_ctl: Vec<RespControl> = sort_ctl.into_iter().collect();
    let state = if cookie.is_empty() {
        None
    } else {
        let taken = env.pages.lock().map(|mut p| p.take(cookie)).unwrap_or(None);
        match taken {
            Some(st) if st.fingerprint == fp => Some(st),
            _ => {
                let msg = "00002024: SvcErr: DSID-02000000, problem 5003 (WILL_NOT_PERFORM), data 0 (invalid paged results cookie)";
                return done(out, ctx.id, Code::UnwillingToPerform, "", msg, &[]);
            }
        }
    };
    if size <= 0 {
        // A zero page size abandons the paged search (RFC 2696 §3).
        let mut ctl = vec![RespControl {
            oid: proto::OID_PAGED,
            value: proto::paged_value(0, &[]),
        }];
        ctl.extend(sort_ctl);
        return done(out, ctx.id, Code::Success, "", "", &ctl);
    }
    let mut st = match state {
        Some(st) => st,
        None => {
            let cursor = match sort {
                Some(sorter) => {
                    let mut all: Vec<(EntryId, Arc<Entry>)> = matching(env.snap, compiled, base, req.scope)
                        .map(|(id, e)| (id, e.clone()))
                        .collect();
                    sorter.sort(&mut all);
                    let ids = all.iter().map(|(id, _)| *id).collect();
                    Cursor::Sorted {
                        ids: Arc::new(ids),
                        pos: 0,
                    }
                }
                None => {
                    let cands = env.snap.query(&scoped_query(env.snap, compiled, base, req.scope));
                    Cursor::Walk {
                        total: cands.len(env.snap),
                        cands: Arc::new(cands),
                        filter: Arc::new(compiled.clone()),
                        after: None,
                    }
                }
            };
            PageState {
                snap: env.snap.clone(),
                cursor,
                fingerprint: fp,
            }
        }
    };
    let page = (size as usize).min(env.limits.max_page_size.max(1));
    // Later pages are served from the snapshot the first page was computed on, so the view stays consistent.
    let snap = st.snap.clone();
    let page_ctx = SearchEnv { snap: &snap, ..*env };
    let inner = Ctx { env: &page_ctx, ..*ctx };
    let (more, total) = match &mut st.cursor {
        Cursor::Sorted { ids, pos } => {
            let end = (*pos + page).min(ids.len());
            for (n, id) in ids[*pos..end].iter().enumerate() {
                if let Some(stop) = interrupted(env, ctx.id, n, deadline, out) {
                    return stop;
                }
                if let Some(e) = snap.get(*id) {
                    inner.write(out, *id, e);
                }
            }
            *pos = end;
            (end < ids.len(), ids.len() as u64)
        }
        Cursor::Walk {
            cands,
            filter,
            after,
            total,
        } => {
            // Resume after the last entry returned; stop at the first match beyond the page (so the cookie is
            // only handed out when another page really follows).
            let mut sent = 0usize;
            let mut more = false;
            for (n, id) in cands.iter_after(&snap, *after).enumerate() {
                if let Some(stop) = interrupted(env, ctx.id, n, deadline, out) {
                    return stop;
                }
                let Some(e) = snap.get(id) else { continue };
                if !cands.exact && !filter.matches(e, &snap) {
                    *after = Some(id);
                    continue;
                }
                if sent == page {
                    more = true;
                    break;
                }
                inner.write(out, id, e);
                sent += 1;
                *after = Some(id);
            }
            (more, *total)
        }
    };
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    let next_cookie = if more {
        let kept = match env.pages.lock() {
            Ok(mut p) => p.put(st),
            Err(poisoned) => poisoned.into_inner().put(st),
        };
        match kept {
            Ok(cookie) => cookie,
            Err(e) => {
                // The page went out, but there is no next one: say so rather than end the search as if complete.
                tracing::warn!(error = %e, "paged search refused");
                let mut ctl = vec![RespControl {
                    oid: proto::OID_PAGED,
                    value: proto::paged_value(0, &[]),
                }];
                ctl.extend(sort_ctl);
                return done(out, ctx.id, Code::AdminLimitExceeded, "", &e.to_string(), &ctl);
            }
        }
    } else {
        Vec::new()
    };
    let mut ctl = vec![RespControl {
        oid: proto::OID_PAGED,
        value: proto::paged_value(total, &next_cookie),
    }];
    ctl.extend(sort_ctl);
    done(out, ctx.id, Code::Success, "", "", &ctl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldap::filter::{tests::sample, Filter};
    use ldap3_proto::proto::{LdapMsg, LdapOp, LdapResultCode};
    use tokio_util::codec::Decoder;

    fn run(
        snap: &Arc<Snapshot>,
        pages: &Mutex<Pages>,
        base: &str,
        scope: Scope,
        f: &str,
        limit: i64,
        ctl: Vec<Control>,
    ) -> Vec<LdapMsg> {
        let cache = EntryCache::new();
        let abandoned = AtomicBool::new(false);
        let env = SearchEnv {
            snap,
            cache: &cache,
            pages,
            limits: Limits {
                size_limit: 1000,
                max_page_size: 2,
                time_limit: Duration::ZERO,
            },
            host: &|| "dc1.contoso.example".to_string(),
            abandoned: &abandoned,
            stream: None,
        };
        let req = SearchRequest {
            base: base.into(),
            scope,
            size_limit: limit,
            time_limit: 0,
            types_only: false,
            filter: Filter::parse(f).unwrap(),
            attrs: vec!["cn".into()],
        };
        let mut out = BytesMut::new();
        let _ = search(&env, 2, &req, &ctl, &mut out);
        let mut codec = ldap3_proto::LdapCodec::default();
        let mut msgs = Vec::new();
        while let Some(m) = codec.decode(&mut out).unwrap() {
            msgs.push(m);
        }
        msgs
    }

    fn result(m: &LdapMsg) -> (LdapResultCode, String) {
        match &m.op {
            LdapOp::SearchResultDone(r) => (r.code.clone(), r.matcheddn.clone()),
            other => panic!("not done: {other:?}"),
        }
    }

    fn dns(msgs: &[LdapMsg]) -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match &m.op {
                LdapOp::SearchResultEntry(e) => Some(e.dn.clone()),
                _ => None,
            })
            .collect()
    }

    const BASE: &str = "DC=contoso,DC=example";

    #[test]
    fn scopes_and_missing_bases() {
        let snap = Arc::new(sample());
        let p = Mutex::new(Pages::default());
        let m = run(&snap, &p, BASE, Scope::One, "(objectClass=*)", 0, vec![]);
        assert_eq!(dns(&m), vec!["CN=Users,DC=contoso,DC=example"]);
        let m = run(
            &snap,
            &p,
            "cn=users,dc=contoso,dc=example",
            Scope::Sub,
            "(objectClass=user)",
            0,
            vec![],
        );
        assert_eq!(dns(&m).len(), 3);
        let m = run(
            &snap,
            &p,
            "CN=Nobody,CN=Users,DC=contoso,DC=example",
            Scope::Base,
            "(objectClass=*)",
            0,
            vec![],
        );
        assert_eq!(
            result(&m[0]),
            (LdapResultCode::NoSuchObject, "CN=Users,DC=contoso,DC=example".into())
        );
        let m = run(&snap, &p, "", Scope::Base, "(objectClass=*)", 0, vec![]);
        assert_eq!(dns(&m), vec![""]);
        let m = run(&snap, &p, "not a dn", Scope::Base, "(objectClass=*)", 0, vec![]);
        assert_eq!(result(&m[0]).0, LdapResultCode::InvalidDNSyntax);
    }

    #[test]
    fn size_limit_returns_partial_results() {
        let snap = Arc::new(sample());
        let p = Mutex::new(Pages::default());
        let m = run(&snap, &p, BASE, Scope::Sub, "(objectClass=user)", 2, vec![]);
        assert_eq!(dns(&m).len(), 2);
        assert_eq!(result(m.last().unwrap()).0, LdapResultCode::SizeLimitExceeded);
        let m = run(&snap, &p, BASE, Scope::Sub, "(objectClass=user)", 3, vec![]);
        assert_eq!(result(m.last().unwrap()).0, LdapResultCode::Success);
    }

    #[test]
    fn paging_with_cookies_and_sorting() {
        let snap = Arc::new(sample());
        let p = Mutex::new(Pages::default());
        let sort = Control {
            oid: proto::OID_SORT_REQUEST.into(),
            critical: true,
            value: Some({
                let mut b = BytesMut::new();
                super::super::ber::put_constructed(&mut b, 0x30, |s| {
                    super::super::ber::put_constructed(s, 0x30, |k| {
                        super::super::ber::put_tlv(k, 0x04, b"cn");
                        super::super::ber::put_tlv(k, 0x81, &[0xff]);
                    })
                });
                b.freeze()
            }),
        };
        let mut cookie = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let paged = Control {
                oid: proto::OID_PAGED.into(),
                critical: true,
                value: Some(proto::paged_value(100, &cookie)),
            };
            let m = run(
                &snap,
                &p,
                BASE,
                Scope::Sub,
                "(objectClass=*)",
                0,
                vec![paged, sort.clone()],
            );
            seen.extend(dns(&m));
            let LdapOp::SearchResultDone(_) = &m.last().unwrap().op else {
                panic!()
            };
            let ctl = m.last().unwrap().ctrl.iter().find_map(|c| match c {
                ldap3_proto::control::LdapControl::SimplePagedResults { cookie, .. } => Some(cookie.clone()),
                _ => None,
            });
            cookie = ctl.unwrap();
            if cookie.is_empty() {
                break;
            }
        }
        assert_eq!(seen.len(), 7, "max_page_size 2 → 4 pages, every entry once");
        let first_cn: Vec<&String> = seen.iter().take(2).collect();
        assert_eq!(
            first_cn,
            vec![
                "CN=Users,DC=contoso,DC=example",
                "CN=Sales Berlin,CN=Users,DC=contoso,DC=example"
            ]
        );
        let bad = Control {
            oid: proto::OID_PAGED.into(),
            critical: true,
            value: Some(proto::paged_value(10, b"0123456789abcdef")),
        };
        let m = run(&snap, &p, BASE, Scope::Sub, "(objectClass=*)", 0, vec![bad]);
        assert_eq!(result(&m[0]).0, LdapResultCode::UnwillingToPerform);
    }

    /// An environment without server-side limits.
    fn unlimited<'a>(
        snap: &'a Arc<Snapshot>,
        cache: &'a EntryCache,
        pages: &'a Mutex<Pages>,
        abandoned: &'a AtomicBool,
        stream: Option<&'a dyn Fn(Bytes) -> bool>,
    ) -> SearchEnv<'a> {
        SearchEnv {
            snap,
            cache,
            pages,
            limits: Limits {
                size_limit: 0,
                max_page_size: 1000,
                time_limit: Duration::ZERO,
            },
            host: &String::new,
            abandoned,
            stream,
        }
    }

    /// Every entry under the base, with every attribute.
    fn everything() -> SearchRequest {
        SearchRequest {
            base: BASE.into(),
            scope: Scope::Sub,
            size_limit: 0,
            time_limit: 0,
            types_only: false,
            filter: Filter::parse("(objectClass=*)").unwrap(),
            attrs: vec!["*".into()],
        }
    }

    #[test]
    fn abandoned_searches_send_nothing() {
        let snap = Arc::new(sample());
        let cache = EntryCache::new();
        let pages = Mutex::new(Pages::default());
        let abandoned = AtomicBool::new(true);
        let env = unlimited(&snap, &cache, &pages, &abandoned, None);
        let mut req = everything();
        req.attrs.clear();
        let mut out = BytesMut::new();
        let _ = search(&env, 9, &req, &[], &mut out);
        assert!(
            out.is_empty(),
            "an abandoned operation gets no response (RFC 4511 §4.11)"
        );
        abandoned.store(false, Ordering::Relaxed);
        let _ = search(&env, 9, &req, &[], &mut out);
        assert!(!out.is_empty());
    }

    #[test]
    fn unknown_critical_control_is_refused() {
        let snap = Arc::new(sample());
        let p = Mutex::new(Pages::default());
        let c = Control {
            oid: "1.2.3.4".into(),
            critical: true,
            value: None,
        };
        let m = run(&snap, &p, BASE, Scope::Sub, "(objectClass=*)", 0, vec![c]);
        assert_eq!(result(&m[0]).0, LdapResultCode::UnavailableCriticalExtension);
        let c = Control {
            oid: "1.2.3.4".into(),
            critical: false,
            value: None,
        };
        assert_eq!(
            dns(&run(&snap, &p, BASE, Scope::Sub, "(objectClass=*)", 0, vec![c])).len(),
            7
        );
    }

    /// A streamed search hands its entries over in chunks of about STREAM_CHUNK bytes, which together with the
    /// rest are exactly the unstreamed answer; when the connection is gone it stops.
    #[test]
    fn streamed_searches_come_in_chunks_and_stop_when_nobody_listens() {
        use crate::carddav::sample::person;
        use crate::directory::phone::PhoneNormalizer;
        use crate::directory::Naming;
        let naming = Naming::new(BASE).unwrap();
        let phones = PhoneNormalizer::new("DE").unwrap();
        let mut entries: Vec<Entry> = (0..3000).map(|i| person(i, 1)).collect();
        for dn in [BASE, "CN=Users,DC=contoso,DC=example"] {
            entries.extend(crate::directory::project::structural(dn, &naming, 1));
        }
        let snap = Arc::new(Snapshot::from_entries(naming, phones, 1, entries));
        let cache = EntryCache::new();
        let pages = Mutex::new(Pages::default());
        let req = everything();
        let answer = |stream: Option<&dyn Fn(Bytes) -> bool>| {
            let abandoned = AtomicBool::new(false);
            let env = unlimited(&snap, &cache, &pages, &abandoned, stream);
            let mut out = BytesMut::new();
            let code = search(&env, 7, &req, &[], &mut out);
            (code, out)
        };
        let (code, whole) = answer(None);
        assert_eq!(code, Some(Code::Success));
        let chunks = std::sync::Mutex::new(Vec::new());
        let collect = |b: Bytes| {
            chunks.lock().unwrap().push(b);
            true
        };
        let (code, rest) = answer(Some(&collect));
        assert_eq!(code, Some(Code::Success));
        let chunks = chunks.into_inner().unwrap();
        assert!(chunks.len() > 10, "{} chunks for {} bytes", chunks.len(), whole.len());
        assert!(
            chunks
                .iter()
                .all(|c| c.len() >= STREAM_CHUNK && c.len() < 2 * STREAM_CHUNK),
            "one entry more at most"
        );
        assert!(rest.len() < STREAM_CHUNK);
        let streamed: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).chain(rest).collect();
        assert_eq!(streamed, whole.to_vec(), "the same messages in the same order");
        // The connection went away after the first chunk: the search stops and says nothing more.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let gone = |_: Bytes| {
            calls.fetch_add(1, Ordering::Relaxed);
            false
        };
        let (code, rest) = answer(Some(&gone));
        assert_eq!(code, None);
        assert!(rest.is_empty());
        assert_eq!(calls.load(Ordering::Relaxed), 1, "stopped before the next chunk");

        // A client that takes each chunk slowly (a trickling reader) cannot keep the search going past the
        // server's time limit, whatever it asked for itself: it gets timeLimitExceeded after part of the entries.
        let slow = |_: Bytes| {
            std::thread::sleep(Duration::from_millis(40));
            true
        };
        let abandoned = AtomicBool::new(false);
        let mut env = unlimited(&snap, &cache, &pages, &abandoned, Some(&slow));
        env.limits.time_limit = Duration::from_millis(100);
        let mut asks_for_an_hour = everything();
        asks_for_an_hour.time_limit = 3600;
        let mut out = BytesMut::new();
        let started = std::time::Instant::now();
        let code = search(&env, 8, &asks_for_an_hour, &[], &mut out);
        assert_eq!(code, Some(Code::TimeLimitExceeded));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "all {} chunks would take {} ms",
            chunks.len(),
            40 * chunks.len()
        );
    }
}
