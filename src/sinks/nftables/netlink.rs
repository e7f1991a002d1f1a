//! Talking to nf_tables over netlink: reading rocsync's table ([`snapshot`]) and committing one
//! batch ([`commit`]); knowing the kernel without reading it back ([`with_kernel`],
//! [`commit_known`]: the ruleset's generation id says whether anyone changed anything since
//! rocsync's last commit or read); and listening to nf_tables' notifications ([`monitor`]) to
//! see a change someone else makes to rocsync's table as it happens.
//!
//! The unsafe code of rocsync lives here and nowhere else: the `nftnl`
//! crate wraps tables, chains, rules and batches; set flags, concatenated keys, element
//! timeouts, dumps and the expressions rocsync needs go through `nftnl-sys` (see
//! NFTABLES.md in the design notes for the facts this rests on).
//!
//! Every pointer allocated here is freed by a guard in the same function, and every
//! allocation is checked: libnftnl answers null when memory runs out (and, for an expression,
//! when it does not know the name), and that is an error of the pass, not a crash.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_void};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::raw::c_char;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mnl::mnl_sys::libc as mlibc;
use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{Batch, Chain, MsgType, ProtoFamily, Table};

use crate::clock::Millis;
use crate::sinks::nft_script::NftNames;
use crate::sinks::nftables::{
    ChainStep, Element, Elements, Family, Kernel, KernelChain, KernelRule, KernelSet, Layout, Leftover, MANAGED_CHAINS, Managed,
    Rule, SET_FLAGS, Steps,
};

const INET: u16 = libc::NFPROTO_INET as u16;
/// Large enough for any one message of a dump (the kernel sends up to 32 KiB).
const RECV_BUFFER: usize = 256 * 1024;
/// Elements per message: an IPv6 element with a timeout takes about 64 bytes, and a message
/// holds at most 64 KiB.
const ELEMENTS_PER_MESSAGE: usize = 512;
/// At most this many reads of a set's elements (see `get_elements`).
const DUMP_READS: usize = 5;
/// What a callback returns to stop reading (MNL_CB_STOP): used when a message cannot be read
/// for want of memory, which the caller then reports.
const CB_STOP: libc::c_int = 0;

/// A libnftnl object just allocated, or the error that says it could not be.
fn allocated<T>(pointer: *mut T, what: &str) -> io::Result<NonNull<T>> {
    NonNull::new(pointer).ok_or_else(|| not_allocated(what))
}

fn not_allocated(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, format!("libnftnl could not allocate {what}"))
}

/// Reads what the kernel holds of the layout's table.
pub fn snapshot(layout: &Layout) -> io::Result<Kernel> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let table = cstring(&layout.names.table)?;
    let mut kernel = Kernel { table: exists(get_table(&socket, &table))?.is_some(), ..Kernel::default() };
    if !kernel.table {
        return Ok(kernel);
    }
    for family in [Family::V4, Family::V6] {
        let name = cstring(layout.set_name(family))?;
        let set = match exists(get_set(&socket, &table, &name))? {
            Some(mut set) => {
                set.elements = get_elements(&socket, &table, &name, family)?;
                Some(set)
            }
            None => None,
        };
        match family {
            Family::V4 => kernel.v4 = set,
            Family::V6 => kernel.v6 = set,
        }
    }
    // The managed chain, and the other chains rocsync would have made under another mode or
    // hook (whether they are rocsync's is for `reconcile` to tell, by their rules' comments).
    let current = layout.managed.as_ref().map(Managed::chain);
    for name in MANAGED_CHAINS {
        let chain = cstring(name)?;
        let Some((hook, policy, priority)) = exists(get_chain(&socket, &table, &chain))? else { continue };
        let found = KernelChain { hook, policy, priority, rules: get_rules(&socket, &table, &chain)? };
        if current == Some(name) {
            kernel.chain = Some(found);
        } else {
            kernel.other_chains.push((name.to_owned(), found));
        }
    }
    Ok(kernel)
}

/// Sends `steps` as one nf_tables transaction: all of it takes effect, or none. What this
/// process knew of the kernel is forgotten (the next [`with_kernel`] reads it back): use
/// [`commit_known`] after [`with_kernel`] to keep it.
pub fn commit(layout: &Layout, steps: &Steps, now: Millis) -> io::Result<()> {
    let batch = build(layout, steps, now)?;
    let mut session = session();
    session.known = None;
    session.send(batch, None)
}

/// The batch that carries `steps`.
fn build(layout: &Layout, steps: &Steps, now: Millis) -> io::Result<Batch> {
    let table_name = cstring(&layout.names.table)?;
    let table = Table::new(&table_name, ProtoFamily::Inet);
    let mut batch = Batch::new();
    if steps.create_table {
        batch.add(&table, MsgType::Add);
    }
    // First, as their rules may refer to a set deleted below.
    remove_leftovers(&mut batch, &table, &steps.leftovers)?;
    let mut set_ids = BTreeMap::new();
    for (n, (family, delete_first)) in steps.sets.iter().enumerate() {
        let name = cstring(layout.set_name(*family))?;
        let id = n as u32 + 1;
        if *delete_first {
            batch.add(&SetMsg::new(&table_name, &name, *family, id)?, MsgType::Del);
        }
        batch.add(&SetMsg::new(&table_name, &name, *family, id)?, MsgType::Add);
        set_ids.insert(*family, id);
    }
    if let Some(managed) = &layout.managed {
        add_chain(&mut batch, &table, layout, managed, steps.chain, &set_ids)?;
    }
    for family in [Family::V4, Family::V6] {
        let name = cstring(layout.set_name(family))?;
        let id = set_ids.get(&family).copied().unwrap_or(0);
        let delete: Vec<(Element, Option<Millis>)> =
            steps.delete.iter().filter(|e| Family::of(&e.addr) == family).map(|e| (*e, None)).collect();
        let add: Vec<(Element, Option<Millis>)> =
            steps.add.iter().filter(|(e, _)| Family::of(&e.addr) == family).copied().collect();
        for (list, kind) in [(delete, MsgType::Del), (add, MsgType::Add)] {
            if list.is_empty() {
                continue;
            }
            // Chunks small enough for one message each (a message is at most 64 KiB).
            for chunk in list.chunks(ELEMENTS_PER_MESSAGE) {
                let mut set = SetMsg::new(&table_name, &name, family, id)?;
                for (element, end) in chunk {
                    set.push(element, end.map(|end| end.saturating_sub(now).max(1)))?;
                }
                set.elements = true;
                batch.add(&set, kind);
            }
        }
    }
    Ok(batch)
}

/// Deletes what an earlier configuration made: a chain with its rules (flushed first, as for a
/// recreated chain), or rocsync's rules alone, by handle, in a chain that holds an
/// administrator's too.
fn remove_leftovers(batch: &mut Batch, table: &Table, leftovers: &[Leftover]) -> io::Result<()> {
    for leftover in leftovers {
        match leftover {
            Leftover::Chain(name) => {
                let name = cstring(name)?;
                let chain = Chain::new(&name, table);
                // A rule message naming only the chain flushes it.
                batch.add(&nftnl::Rule::new(&chain), MsgType::Del);
                batch.add(&chain, MsgType::Del);
            }
            Leftover::Rules { chain, handles } => {
                let name = cstring(chain)?;
                let chain = Chain::new(&name, table);
                for handle in handles {
                    let mut rule = nftnl::Rule::new(&chain);
                    rule.set_handle(*handle);
                    batch.add(&rule, MsgType::Del);
                }
            }
        }
    }
    Ok(())
}

fn add_chain(
    batch: &mut Batch,
    table: &Table,
    layout: &Layout,
    managed: &Managed,
    step: ChainStep,
    set_ids: &BTreeMap<Family, u32>,
) -> io::Result<()> {
    if step == ChainStep::Keep {
        return Ok(());
    }
    let name = cstring(managed.chain())?;
    let mut chain = Chain::new(&name, table);
    let hook = match managed.hook {
        crate::sinks::nftables::NftHook::Forward => nftnl::Hook::Forward,
        crate::sinks::nftables::NftHook::Output => nftnl::Hook::Out,
    };
    chain.set_hook(hook, 0);
    chain.set_type(nftnl::ChainType::Filter);
    chain.set_policy(nftnl::Policy::Accept);
    if matches!(step, ChainStep::Refill | ChainStep::Recreate) {
        // A rule message naming only the chain flushes it.
        batch.add(&nftnl::Rule::new(&chain), MsgType::Del);
    }
    if step == ChainStep::Recreate {
        batch.add(&chain, MsgType::Del);
    }
    batch.add(&chain, MsgType::Add);
    for rule in managed.rules() {
        // Every expression is allocated before the rule takes one: a failure is an error here.
        let built = expressions(rule, layout, managed, set_ids).iter().map(Expr::build).collect::<io::Result<Vec<_>>>()?;
        let mut r = nftnl::Rule::new(&chain);
        for expr in &built {
            r.add_expr(expr);
        }
        r.set_comment(cstring(&rule.comment())?).map_err(io::Error::other)?;
        batch.add(&r, MsgType::Add);
    }
    Ok(())
}

/// The expressions of a rule, as `nft --debug=netlink` shows them for the same rule.
fn expressions(rule: Rule, layout: &Layout, managed: &Managed, set_ids: &BTreeMap<Family, u32>) -> Vec<Expr> {
    let accept = Expr::verdict(libc::NF_ACCEPT);
    match rule {
        Rule::Established => vec![
            Expr::new(c"ct").u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32).u32(sys::NFTNL_EXPR_CT_DREG, reg(libc::NFT_REG_1)),
            Expr::new(c"bitwise")
                .u32(sys::NFTNL_EXPR_BITWISE_SREG, reg(libc::NFT_REG_1))
                .u32(sys::NFTNL_EXPR_BITWISE_DREG, reg(libc::NFT_REG_1))
                .u32(sys::NFTNL_EXPR_BITWISE_LEN, 4)
                // IP_CT_ESTABLISHED and IP_CT_RELATED as state bits.
                .data(sys::NFTNL_EXPR_BITWISE_MASK, &(2u32 | 4).to_ne_bytes())
                .data(sys::NFTNL_EXPR_BITWISE_XOR, &0u32.to_ne_bytes()),
            Expr::cmp(libc::NFT_CMP_NEQ, &0u32.to_ne_bytes()),
            accept,
        ],
        Rule::Allow(family) | Rule::LogAllow(family) => {
            let (nfproto, offset, len, port_reg) = match family {
                Family::V4 => (libc::NFPROTO_IPV4, 16, 4, reg(libc::NFT_REG32_01)),
                Family::V6 => (libc::NFPROTO_IPV6, 24, 16, reg(libc::NFT_REG_2)),
            };
            let set = CString::new(layout.set_name(family)).unwrap_or_default();
            let mut lookup = Expr::new(c"lookup").u32(sys::NFTNL_EXPR_LOOKUP_SREG, reg(libc::NFT_REG_1)).str(sys::NFTNL_EXPR_LOOKUP_SET, set);
            if let Some(id) = set_ids.get(&family) {
                lookup = lookup.u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, *id);
            }
            let mut exprs = vec![
                Expr::meta(libc::NFT_META_NFPROTO),
                Expr::cmp(libc::NFT_CMP_EQ, &[nfproto as u8]),
                Expr::meta(libc::NFT_META_L4PROTO),
                Expr::cmp(libc::NFT_CMP_EQ, &[libc::IPPROTO_TCP as u8]),
                Expr::payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len, reg(libc::NFT_REG_1)),
                Expr::payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, port_reg),
                lookup,
            ];
            // `log prefix "rocsync-accept: "` between the lookup and the verdict, as nft sends
            // it: the same log as the drop rules' (kernel log, default level), another prefix.
            if matches!(rule, Rule::LogAllow(_)) {
                exprs.push(Expr::new(c"log").str(sys::NFTNL_EXPR_LOG_PREFIX, CString::new(crate::usage::ACCEPT_PREFIX).unwrap_or_default()));
            }
            exprs.push(accept);
            exprs
        }
        // The uid as the kernel keeps it, in host order (`nft --debug=netlink`: `cmp eq reg 1
        // 0x0000000d` for uid 13).
        Rule::Exempt(uid) => vec![Expr::meta(libc::NFT_META_SKUID), Expr::cmp(libc::NFT_CMP_EQ, &uid.to_ne_bytes()), accept],
        Rule::LogDrop(port) => vec![
            Expr::meta(libc::NFT_META_L4PROTO),
            Expr::cmp(libc::NFT_CMP_EQ, &[libc::IPPROTO_TCP as u8]),
            Expr::payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg(libc::NFT_REG_1)),
            Expr::cmp(libc::NFT_CMP_EQ, &port.to_be_bytes()),
            Expr::new(c"log").str(sys::NFTNL_EXPR_LOG_PREFIX, CString::new(managed.log_prefix.clone()).unwrap_or_default()),
            Expr::verdict(libc::NF_DROP),
        ],
    }
}

fn reg(r: libc::c_int) -> u32 {
    r as u32
}

/// An expression given by its name and attributes: the handful of `nftnl` wrappers rocsync
/// would need do not all exist (log, ct state, payload into another register).
struct Expr {
    name: &'static CStr,
    attrs: Vec<(u16, Value)>,
}

enum Value {
    U32(u32),
    Str(CString),
    Data(Vec<u8>),
}

impl Expr {
    fn new(name: &'static CStr) -> Expr {
        Expr { name, attrs: Vec::new() }
    }
    fn u32(mut self, attr: u32, v: u32) -> Expr {
        self.attrs.push((attr as u16, Value::U32(v)));
        self
    }
    fn str(mut self, attr: u32, v: CString) -> Expr {
        self.attrs.push((attr as u16, Value::Str(v)));
        self
    }
    fn data(mut self, attr: u32, v: &[u8]) -> Expr {
        self.attrs.push((attr as u16, Value::Data(v.to_vec())));
        self
    }
    fn meta(key: libc::c_int) -> Expr {
        Expr::new(c"meta").u32(sys::NFTNL_EXPR_META_KEY, key as u32).u32(sys::NFTNL_EXPR_META_DREG, reg(libc::NFT_REG_1))
    }
    fn cmp(op: libc::c_int, data: &[u8]) -> Expr {
        Expr::new(c"cmp").u32(sys::NFTNL_EXPR_CMP_SREG, reg(libc::NFT_REG_1)).u32(sys::NFTNL_EXPR_CMP_OP, op as u32).data(sys::NFTNL_EXPR_CMP_DATA, data)
    }
    fn payload(base: libc::c_int, offset: u32, len: u32, dreg: u32) -> Expr {
        Expr::new(c"payload")
            .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
            .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
            .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
            .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg)
    }
    fn verdict(v: libc::c_int) -> Expr {
        Expr::new(c"immediate").u32(sys::NFTNL_EXPR_IMM_DREG, reg(libc::NFT_REG_VERDICT)).u32(sys::NFTNL_EXPR_IMM_VERDICT, v as u32)
    }
}

impl Expr {
    /// Allocates the libnftnl expression and sets its attributes. Done before a rule asks for
    /// it: nftnl's `Expression::to_expr` cannot fail, and aborting the daemon is no answer.
    fn build(&self) -> io::Result<BuiltExpr> {
        // SAFETY: the expression is freshly allocated and owned by the `BuiltExpr` (freed by
        // its Drop unless a rule took it); every value is copied by libnftnl.
        unsafe {
            let what = format!("the expression `{}` (out of memory, or unknown to this libnftnl)", self.name.to_string_lossy());
            let expr = allocated(sys::nftnl_expr_alloc(self.name.as_ptr()), &what)?;
            let built = BuiltExpr(Cell::new(Some(expr)));
            for (attr, value) in &self.attrs {
                match value {
                    Value::U32(v) => sys::nftnl_expr_set_u32(expr.as_ptr(), *attr, *v),
                    Value::Str(s) => {
                        sys::nftnl_expr_set_str(expr.as_ptr(), *attr, s.as_ptr());
                    }
                    Value::Data(d) => {
                        sys::nftnl_expr_set(expr.as_ptr(), *attr, d.as_ptr().cast::<c_void>(), d.len() as u32);
                    }
                }
            }
            Ok(built)
        }
    }
}

/// An expression allocated and filled, waiting for `Rule::add_expr`, which takes it over.
struct BuiltExpr(Cell<Option<NonNull<sys::nftnl_expr>>>);

impl Expression for BuiltExpr {
    fn to_expr(&self, _rule: &nftnl::Rule) -> NonNull<sys::nftnl_expr> {
        match self.0.take() {
            Some(expr) => expr,
            // Handed over twice, the rule would free it twice: `add_chain` adds each once.
            None => std::process::abort(),
        }
    }
}

impl Drop for BuiltExpr {
    fn drop(&mut self) {
        if let Some(expr) = self.0.take() {
            // SAFETY: allocated in `Expr::build`, never handed to a rule, freed once.
            unsafe { sys::nftnl_expr_free(expr.as_ptr()) }
        }
    }
}

/// A set as a message: its definition (add, delete) and its element lists.
struct SetMsg {
    set: NonNull<sys::nftnl_set>,
    /// Whether the message carries the set's elements rather than its definition.
    elements: bool,
}

impl SetMsg {
    fn new(table: &CStr, name: &CStr, family: Family, id: u32) -> io::Result<SetMsg> {
        // SAFETY: a fresh set, freed by Drop; libnftnl copies the strings.
        unsafe {
            let set = allocated(sys::nftnl_set_alloc(), "a set")?;
            let s = set.as_ptr();
            let (key_type, key_len) = family.key();
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(INET));
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            if id != 0 {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            }
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, SET_FLAGS);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, key_type);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, key_len);
            Ok(SetMsg { set, elements: false })
        }
    }

    /// Adds an element, with a timeout in milliseconds or none.
    fn push(&self, element: &Element, timeout: Option<Millis>) -> io::Result<()> {
        let key = key_bytes(element);
        // SAFETY: the element is handed over to the set, which frees it.
        unsafe {
            let e = allocated(sys::nftnl_set_elem_alloc(), "a set element")?;
            sys::nftnl_set_elem_set(e.as_ptr(), sys::NFTNL_SET_ELEM_KEY as u16, key.as_ptr().cast::<c_void>(), key.len() as u32);
            if let Some(ms) = timeout {
                sys::nftnl_set_elem_set_u64(e.as_ptr(), sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
            }
            sys::nftnl_set_elem_add(self.set.as_ptr(), e.as_ptr());
        }
        Ok(())
    }
}

unsafe impl nftnl::NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, kind: MsgType) {
        let (kind, flags) = match (self.elements, kind) {
            (false, MsgType::Add) => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            (false, MsgType::Del) => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
            // Without NLM_F_EXCL: adding an element that is there already is not an error.
            (true, MsgType::Add) => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            (true, MsgType::Del) => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: `buf` is the batch's buffer, large enough for any one message (the element
        // lists are cut to fit).
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), kind as u16, INET, flags as u16, seq);
            if self.elements {
                sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.set.as_ptr());
            } else {
                sys::nftnl_set_nlmsg_build_payload(nlh, self.set.as_ptr());
            }
        }
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`, freed once.
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) }
    }
}

/// A concatenated key: the address, then the port in network order padded to 4 bytes.
fn key_bytes(e: &Element) -> Vec<u8> {
    let mut key = match e.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    key.extend_from_slice(&e.port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

fn element_of(key: &[u8], family: Family) -> Option<Element> {
    let (addr, rest): (IpAddr, &[u8]) = match family {
        Family::V4 if key.len() >= 6 => (Ipv4Addr::from(<[u8; 4]>::try_from(&key[..4]).ok()?).into(), &key[4..]),
        Family::V6 if key.len() >= 18 => (Ipv6Addr::from(<[u8; 16]>::try_from(&key[..16]).ok()?).into(), &key[16..]),
        _ => return None,
    };
    Some(Element { addr, port: u16::from_be_bytes([rest[0], rest[1]]) })
}

/// Sends a batch in one datagram (nf_tables takes a transaction from one message only) and
/// waits for every acknowledgement. With `generation`, the kernel applies the batch only if
/// the ruleset is still at that generation, and refuses it whole (ERESTART) otherwise.
///
/// On the socket the caller keeps: closing a netfilter socket that sent a transaction costs
/// the kernel about 10 ms (measured here on 6.18: 0.2 ms to send a 10-element batch on a new
/// socket, 9.7 ms to close it), which was most of a commit's time.
fn send_batch(socket: &mnl::Socket, batch: Batch, generation: Option<u32>) -> io::Result<()> {
    let batch = batch.finalize();
    let mut bytes: Vec<u8> = batch.iter().flat_map(|page| page.iter().copied()).collect();
    if let Some(generation) = generation {
        bytes = with_generation(&bytes, generation)?;
    }
    let seqs = batch.sequence_numbers();
    grow_buffers(socket, bytes.len(), seqs.len())?;
    let sent = socket.send(&bytes)?;
    if sent < bytes.len() {
        return Err(io::Error::other("netlink sent part of the batch"));
    }
    let portid = socket.portid();
    let mut buffer = vec![0u8; RECV_BUFFER];
    // One datagram can carry several acknowledgements: each is checked on its own (sequence
    // numbers are counted, not matched: the batch's are consecutive).
    let mut pending = seqs.len();
    while pending > 0 {
        let n = socket.recv(&mut buffer)?;
        let mut rest = &buffer[..n];
        while rest.len() >= 16 {
            let len = message_len(rest);
            if len < 16 || len > rest.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink answer"));
            }
            mnl::cb_run(&rest[..len], 0, portid)?;
            pending = pending.saturating_sub(1);
            rest = &rest[align4(len).min(rest.len())..];
        }
    }
    Ok(())
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Makes room for a large batch and its acknowledgements (CAP_NET_ADMIN may exceed the
/// system's limits, as nft does).
fn grow_buffers(socket: &mnl::Socket, bytes: usize, acks: usize) -> io::Result<()> {
    let fd = socket_fd(socket);
    let want_send = bytes + 64 * 1024;
    let want_recv = (acks * 1024).max(256 * 1024);
    for (opt, size) in [(mlibc::SO_SNDBUFFORCE, want_send), (mlibc::SO_RCVBUFFORCE, want_recv)] {
        let size = size as libc::c_int;
        // SAFETY: setsockopt on a socket this function's caller owns, with an int option.
        let r = unsafe {
            mlibc::setsockopt(fd, mlibc::SOL_SOCKET, opt, ptr::from_ref(&size).cast::<c_void>(), size_of::<libc::c_int>() as u32)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn socket_fd(socket: &mnl::Socket) -> mlibc::c_int {
    // SAFETY: the socket is open for as long as `socket` lives.
    unsafe { mnl::mnl_sys::mnl_socket_get_fd(socket.as_raw_socket()) }
}

/// Sends one request and hands every answer to `callback`, until the kernel says done.
fn talk<T>(socket: &mnl::Socket, request: &[u8], seq: u32, callback: mnl::Callback<T>, data: &mut T) -> io::Result<()> {
    socket.send(request)?;
    let portid = socket.portid();
    let mut buffer = vec![0u8; RECV_BUFFER];
    loop {
        let n = socket.recv(&mut buffer)?;
        if let mnl::CbResult::Stop = mnl::cb_run2(&buffer[..n], seq, portid, callback, data)? {
            return Ok(());
        }
    }
}

/// `Ok(None)` for "no such object".
fn exists<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn header(buffer: &mut [u8], kind: libc::c_int, flags: libc::c_int, seq: u32) -> *mut libc::nlmsghdr {
    // SAFETY: `buffer` is larger than any request built here.
    unsafe { sys::nftnl_nlmsg_build_hdr(buffer.as_mut_ptr().cast::<c_char>(), kind as u16, INET, (flags | libc::NLM_F_ACK) as u16, seq) }
}

fn message_len(buffer: &[u8]) -> usize {
    u32::from_ne_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize
}

fn get_table(socket: &mnl::Socket, name: &CStr) -> io::Result<()> {
    let mut request = vec![0u8; 4096];
    // SAFETY: a table freed below; only its name is set.
    unsafe {
        let t = allocated(sys::nftnl_table_alloc(), "a table")?.as_ptr();
        sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
        let nlh = header(&mut request, libc::NFT_MSG_GETTABLE, 0, 1);
        sys::nftnl_table_nlmsg_build_payload(nlh, t);
        sys::nftnl_table_free(t);
    }
    let len = message_len(&request);
    talk(socket, &request[..len], 1, |_, _: &mut ()| mnl_sys_ok(), &mut ())
}

fn mnl_sys_ok() -> libc::c_int {
    1 // MNL_CB_OK
}

fn get_set(socket: &mnl::Socket, table: &CStr, name: &CStr) -> io::Result<KernelSet> {
    let mut request = vec![0u8; 4096];
    // SAFETY: a set freed below; only table and name are set.
    unsafe {
        let s = allocated(sys::nftnl_set_alloc(), "a set")?.as_ptr();
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
        let nlh = header(&mut request, libc::NFT_MSG_GETSET, 0, 2);
        sys::nftnl_set_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
    }
    let len = message_len(&request);
    // The set, and whether a message could not be read for want of memory.
    let mut found = (KernelSet::default(), false);
    talk(
        socket,
        &request[..len],
        2,
        |nlh, found: &mut (KernelSet, bool)| {
            // SAFETY: `nlh` is a message the kernel sent; the set is freed here.
            unsafe {
                let s = sys::nftnl_set_alloc();
                if s.is_null() {
                    found.1 = true;
                    return CB_STOP;
                }
                if sys::nftnl_set_nlmsg_parse(ptr::from_ref(nlh).cast(), s) >= 0 {
                    found.0.key_type = sys::nftnl_set_get_u32(s, sys::NFTNL_SET_KEY_TYPE as u16);
                    found.0.key_len = sys::nftnl_set_get_u32(s, sys::NFTNL_SET_KEY_LEN as u16);
                    found.0.flags = sys::nftnl_set_get_u32(s, sys::NFTNL_SET_FLAGS as u16);
                }
                sys::nftnl_set_free(s);
            }
            1
        },
        &mut found,
    )?;
    if found.1 {
        return Err(not_allocated("a set to read the kernel's answer into"));
    }
    Ok(found.0)
}

struct ElementDump {
    family: Family,
    now: Millis,
    elements: Elements,
    /// A message could not be read for want of memory: the dump is incomplete.
    failed: bool,
}

fn get_elements(socket: &mnl::Socket, table: &CStr, name: &CStr, family: Family) -> io::Result<Elements> {
    let mut request = vec![0u8; 4096];
    // SAFETY: as in `get_set`.
    unsafe {
        let s = allocated(sys::nftnl_set_alloc(), "a set")?.as_ptr();
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
        let nlh = header(&mut request, libc::NFT_MSG_GETSETELEM, libc::NLM_F_DUMP, 3);
        sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
    }
    let len = message_len(&request);
    // A dump walks the kernel's hash table, and a walk during a resize (which follows a bulk
    // add) can miss elements: read until two reads agree, and keep everything seen.
    let mut seen = Elements::new();
    let mut last = None;
    for attempt in 0..DUMP_READS {
        if attempt > 1 {
            // Two reads disagreed: give the resize time to finish.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut dump = ElementDump { family, now: crate::clock::now_millis(), elements: Elements::new(), failed: false };
        talk(socket, &request[..len], 3, parse_elements, &mut dump)?;
        if dump.failed {
            return Err(not_allocated("a set to read the kernel's elements into"));
        }
        let count = dump.elements.len();
        seen.extend(dump.elements);
        if last == Some(count) {
            break;
        }
        last = Some(count);
    }
    Ok(seen)
}

fn parse_elements(nlh: &mlibc::nlmsghdr, dump: &mut ElementDump) -> libc::c_int {
    // SAFETY: `nlh` is a message the kernel sent; the set, its elements and the iterator are
    // freed here; a key is read within the length libnftnl reports.
    unsafe {
        let s = sys::nftnl_set_alloc();
        if s.is_null() {
            dump.failed = true;
            return CB_STOP;
        }
        let rc = sys::nftnl_set_elems_nlmsg_parse(ptr::from_ref(nlh).cast(), s);
        if rc >= 0 {
            let iter = sys::nftnl_set_elems_iter_create(s);
            // An iterator is an allocation too: without it, the elements would go unread.
            if iter.is_null() {
                dump.failed = true;
            } else {
                let mut e = sys::nftnl_set_elems_iter_next(iter);
                while !e.is_null() {
                    let mut len = 0u32;
                    let data = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
                    if !data.is_null() {
                        let key = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
                        if let Some(element) = element_of(key, dump.family) {
                            let end = sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_TIMEOUT as u16).then(|| {
                                dump.now + sys::nftnl_set_elem_get_u64(e, sys::NFTNL_SET_ELEM_EXPIRATION as u16)
                            });
                            dump.elements.insert(element, end);
                        }
                    }
                    e = sys::nftnl_set_elems_iter_next(iter);
                }
                sys::nftnl_set_elems_iter_destroy(iter);
            }
        }
        sys::nftnl_set_free(s);
    }
    if dump.failed { CB_STOP } else { 1 }
}

/// A chain's hook, policy and priority (each `None` when the chain is not a base chain).
type ChainInfo = (Option<u32>, Option<u32>, Option<i32>);

fn get_chain(socket: &mnl::Socket, table: &CStr, name: &CStr) -> io::Result<ChainInfo> {
    let mut request = vec![0u8; 4096];
    // SAFETY: as in `get_set`.
    unsafe {
        let c = allocated(sys::nftnl_chain_alloc(), "a chain")?.as_ptr();
        sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
        sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
        let nlh = header(&mut request, libc::NFT_MSG_GETCHAIN, 0, 4);
        sys::nftnl_chain_nlmsg_build_payload(nlh, c);
        sys::nftnl_chain_free(c);
    }
    let len = message_len(&request);
    // The chain's hook, policy and priority, and whether a message could not be read for want
    // of memory.
    let mut hook: (ChainInfo, bool) = ((None, None, None), false);
    talk(
        socket,
        &request[..len],
        4,
        |nlh, hook: &mut (ChainInfo, bool)| {
            // SAFETY: as in `get_set`.
            unsafe {
                let c = sys::nftnl_chain_alloc();
                if c.is_null() {
                    hook.1 = true;
                    return CB_STOP;
                }
                if sys::nftnl_chain_nlmsg_parse(ptr::from_ref(nlh).cast(), c) >= 0 {
                    let is_set = |attr: u32| sys::nftnl_chain_is_set(c, attr as u16);
                    if is_set(sys::NFTNL_CHAIN_HOOKNUM) {
                        hook.0.0 = Some(sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16));
                    }
                    if is_set(sys::NFTNL_CHAIN_POLICY) {
                        hook.0.1 = Some(sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_POLICY as u16));
                    }
                    if is_set(sys::NFTNL_CHAIN_PRIO) {
                        hook.0.2 = Some(sys::nftnl_chain_get_s32(c, sys::NFTNL_CHAIN_PRIO as u16));
                    }
                }
                sys::nftnl_chain_free(c);
            }
            1
        },
        &mut hook,
    )?;
    if hook.1 {
        return Err(not_allocated("a chain to read the kernel's answer into"));
    }
    Ok(hook.0)
}

struct RuleDump {
    chain: CString,
    rules: Vec<KernelRule>,
    /// A message could not be read for want of memory: the dump is incomplete.
    failed: bool,
}

/// The rules of a chain, in order, with their comments and handles.
fn get_rules(socket: &mnl::Socket, table: &CStr, chain: &CStr) -> io::Result<Vec<KernelRule>> {
    let mut request = vec![0u8; 4096];
    // SAFETY: as in `get_set`.
    unsafe {
        let r = allocated(sys::nftnl_rule_alloc(), "a rule")?.as_ptr();
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        let nlh = header(&mut request, libc::NFT_MSG_GETRULE, libc::NLM_F_DUMP, 5);
        sys::nftnl_rule_nlmsg_build_payload(nlh, r);
        sys::nftnl_rule_free(r);
    }
    let len = message_len(&request);
    let mut dump = RuleDump { chain: chain.to_owned(), rules: Vec::new(), failed: false };
    talk(socket, &request[..len], 5, parse_rule, &mut dump)?;
    if dump.failed {
        return Err(not_allocated("a rule to read the kernel's answer into"));
    }
    Ok(dump.rules)
}

fn parse_rule(nlh: &mlibc::nlmsghdr, dump: &mut RuleDump) -> libc::c_int {
    // SAFETY: as in `parse_elements`.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if r.is_null() {
            dump.failed = true;
            return CB_STOP;
        }
        if sys::nftnl_rule_nlmsg_parse(ptr::from_ref(nlh).cast(), r) >= 0 {
            let chain = sys::nftnl_rule_get_str(r, sys::NFTNL_RULE_CHAIN as u16);
            if !chain.is_null() && CStr::from_ptr(chain) == dump.chain.as_c_str() {
                let mut len = 0u32;
                let data = sys::nftnl_rule_get_data(r, sys::NFTNL_RULE_USERDATA as u16, &mut len);
                let udata = if data.is_null() { &[][..] } else { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) };
                let handle = sys::nftnl_rule_get_u64(r, sys::NFTNL_RULE_HANDLE as u16);
                dump.rules.push(KernelRule { comment: comment_of(udata), handle });
            }
        }
        sys::nftnl_rule_free(r);
    }
    1
}

/// The comment in a rule's user data: type-length-value records, the comment being type 0,
/// a NUL-terminated string.
fn comment_of(mut udata: &[u8]) -> String {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], udata[1] as usize);
        let Some(value) = udata.get(2..2 + len) else { break };
        if kind == sys::NFTNL_UDATA_RULE_COMMENT as u8 {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return String::from_utf8_lossy(text).into_owned();
        }
        udata = &udata[2 + len..];
    }
    String::new()
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in nftables name {s:?}")))
}

// ---------------------------------------------------------------------------------------------
// Knowing the kernel without reading it back.
//
// nf_tables counts its commits: every transaction that changes any table of the network
// namespace moves the ruleset's generation id by one (NFT_MSG_GETGEN answers it). After its own
// commit, rocsync knows the generation and what its table holds; a pass that finds the
// generation where rocsync left it diffs against that knowledge, without the read-back that
// costs half a second for 100,000 elements. A batch carries the generation its diff was made
// against (NFNL_BATCH_GENID): the kernel refuses it whole (ERESTART) if anything was committed
// in between, so knowledge is never applied on top of a change it did not see.

/// nfnetlink's subsystem number for nf_tables, and the message types used here
/// (`linux/netfilter/nfnetlink.h`, `nf_tables.h`).
const SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_TRACE: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
/// `NFTA_GEN_ID`, the generation in a NEWGEN message (a big-endian u32).
const NFTA_GEN_ID: u16 = 1;
/// `NFNL_BATCH_GENID`, the generation a batch is made against (a big-endian u32).
const NFNL_BATCH_GENID: u16 = 1;
/// `NFNLGRP_NFTABLES`, the multicast group of nf_tables' notifications (`nft monitor`).
const NFNLGRP_NFTABLES: u32 = 7;
/// The netlink header, then nfnetlink's `nfgenmsg`.
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// The safety net: what rocsync knows is read back at least every this many looks at it (a
/// daemon looks once or twice a poll), and at least once an hour, even when the generation says
/// nobody changed anything: a model that drifted from the kernel by a bug of rocsync's own, an
/// element the kernel timed out early, is found within that.
pub const READ_BACK_EVERY: u32 = 10;
pub const READ_BACK_AFTER: Duration = Duration::from_secs(3600);

/// What this process has read back from the kernel, and how often it used what it knew
/// instead: for the logs, `/metrics` and the benches.
static READBACKS: AtomicU64 = AtomicU64::new(0);
static KNOWN_LOOKS: AtomicU64 = AtomicU64::new(0);
/// The port id of the socket this process commits with, so that the monitor tells rocsync's own
/// changes (their notifications carry it) from anyone else's.
static OWN_PORTID: AtomicU32 = AtomicU32::new(0);

/// How many times this process read its table back from the kernel.
/// Forgets what rocsync knows of the kernel: the next look reads the table back. For a change
/// the monitor saw, which the generation alone cannot always tell from rocsync's own.
pub fn forget() {
    session().known = None;
}

pub fn readbacks() -> u64 {
    READBACKS.load(Ordering::Relaxed)
}

/// How many times this process used what it knew instead of reading back.
pub fn known_looks() -> u64 {
    KNOWN_LOOKS.load(Ordering::Relaxed)
}

/// What one process keeps between passes: one netlink socket for its commits and generation
/// queries, and what it knows of its table. One per process: the daemon's worker is the only
/// one to enforce, and a command line process starts knowing nothing.
struct Session {
    socket: Option<KeptSocket>,
    seq: u32,
    known: Option<Known>,
    /// Looks at the knowledge since the last read-back, and when that was.
    looks: u32,
    read_at: Option<Instant>,
}

static SESSION: Mutex<Session> = Mutex::new(Session { socket: None, seq: 0, known: None, looks: 0, read_at: None });

fn session() -> MutexGuard<'static, Session> {
    // A panic while holding it leaves nothing half-written that matters: the knowledge is
    // dropped, and the next look reads back.
    SESSION.lock().unwrap_or_else(|poisoned| {
        let mut session = poisoned.into_inner();
        session.known = None;
        session
    })
}

struct KeptSocket(mnl::Socket);

// SAFETY: an mnl socket is a file descriptor and its bound address, with no tie to the thread
// that opened it; the session's mutex keeps it to one thread at a time.
unsafe impl Send for KeptSocket {}

impl Session {
    fn socket(&mut self) -> io::Result<&mnl::Socket> {
        if self.socket.is_none() {
            let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
            OWN_PORTID.store(socket.portid(), Ordering::Relaxed);
            self.socket = Some(KeptSocket(socket));
        }
        match &self.socket {
            Some(kept) => Ok(&kept.0),
            None => Err(io::Error::other("no netlink socket")),
        }
    }

    /// The ruleset's generation now. On any error the socket is dropped: what it still holds
    /// would be taken for the next answer.
    fn generation(&mut self) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let result = self.socket().and_then(|socket| get_generation(socket, seq));
        if result.is_err() {
            self.socket = None;
        }
        result
    }

    fn send(&mut self, batch: Batch, generation: Option<u32>) -> io::Result<()> {
        let result = self.socket().and_then(|socket| send_batch(socket, batch, generation));
        if result.is_err() {
            // Acknowledgements of a refused batch may still be queued.
            self.socket = None;
        }
        result
    }
}

/// What is known of the table, and at which generation.
struct Known {
    key: LayoutKey,
    generation: u32,
    kernel: Kernel,
    /// The earliest end of an element with a timeout: the kernel drops it then, by itself.
    next_expiry: Option<Millis>,
}

impl Known {
    fn new(key: LayoutKey, generation: u32, kernel: Kernel) -> Known {
        let next_expiry = earliest_end(&kernel);
        Known { key, generation, kernel, next_expiry }
    }

    /// Drops the elements the kernel timed out by now (a timeout moves no generation).
    fn prune(&mut self, now: Millis) {
        if self.next_expiry.is_some_and(|end| end <= now) {
            for set in [self.kernel.v4.as_mut(), self.kernel.v6.as_mut()].into_iter().flatten() {
                set.elements.retain(|_, end| end.is_none_or(|end| end > now));
            }
            self.next_expiry = earliest_end(&self.kernel);
        }
    }
}

fn earliest_end(kernel: &Kernel) -> Option<Millis> {
    [kernel.v4.as_ref(), kernel.v6.as_ref()].into_iter().flatten().flat_map(|s| s.elements.values().flatten().copied()).min()
}

/// What a snapshot depends on besides the kernel: the names, and which chain is the managed
/// one (another chain of [`MANAGED_CHAINS`] is read as an "other" chain).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayoutKey {
    names: NftNames,
    chain: Option<&'static str>,
}

impl LayoutKey {
    fn of(layout: &Layout) -> LayoutKey {
        LayoutKey { names: layout.names.clone(), chain: layout.managed.as_ref().map(Managed::chain) }
    }
}

/// Why the table is read back rather than known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadReason {
    /// The caller asked (a commit made from knowledge was refused).
    Asked,
    /// Nothing is known yet in this process, or it was known under another layout.
    Unknown,
    /// Someone committed since rocsync's last commit or read: maybe to rocsync's table.
    Moved { known: u32, now: u32 },
    /// The safety net ([`READ_BACK_EVERY`], [`READ_BACK_AFTER`]).
    Periodic,
}

impl std::fmt::Display for ReadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadReason::Asked => write!(f, "asked"),
            ReadReason::Unknown => write!(f, "nothing known yet"),
            ReadReason::Moved { known, now } => write!(f, "the generation moved from {known} to {now}: a change rocsync did not make"),
            ReadReason::Periodic => write!(f, "the periodic check"),
        }
    }
}

/// Whether what is known (`known`: its layout and generation) can stand for the kernel at
/// `generation`, or why not.
fn read_back_why(
    known: Option<(&LayoutKey, u32)>,
    key: &LayoutKey,
    generation: u32,
    looks: u32,
    since_read: Duration,
    asked: bool,
) -> Option<ReadReason> {
    match known {
        _ if asked => Some(ReadReason::Asked),
        None => Some(ReadReason::Unknown),
        Some((k, _)) if k != key => Some(ReadReason::Unknown),
        Some((_, g)) if g != generation => Some(ReadReason::Moved { known: g, now: generation }),
        Some(_) if looks + 1 >= READ_BACK_EVERY || since_read >= READ_BACK_AFTER => Some(ReadReason::Periodic),
        Some(_) => None,
    }
}

/// The generation that follows `generation` (the kernel skips 0).
fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1).max(1)
}

/// Calls `f` with what the kernel holds of the layout's table: what this process knows when
/// the ruleset's generation is where rocsync left it, else read back (`read_back` forces it).
/// A [`commit_known`] of steps computed here is applied only if the generation has not moved.
pub fn with_kernel<T>(layout: &Layout, read_back: bool, f: impl FnOnce(&Kernel) -> T) -> io::Result<T> {
    let mut session = session();
    let key = LayoutKey::of(layout);
    // The generation before the read: a change during the read moves it past this one, and
    // the commit that follows is refused.
    let generation = session.generation()?;
    let since_read = session.read_at.map_or(Duration::MAX, |at| at.elapsed());
    let known = session.known.as_ref().map(|k| (&k.key, k.generation));
    match read_back_why(known, &key, generation, session.looks, since_read, read_back) {
        Some(why) => {
            session.known = None;
            let started = Instant::now();
            let kernel = snapshot(layout)?;
            READBACKS.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                generation,
                ms = started.elapsed().as_millis() as u64,
                "nftables: read table inet {} back from the kernel ({why}).",
                layout.names.table
            );
            session.known = Some(Known::new(key, generation, kernel));
            session.looks = 0;
            session.read_at = Some(Instant::now());
        }
        None => {
            KNOWN_LOOKS.fetch_add(1, Ordering::Relaxed);
            session.looks += 1;
            tracing::debug!(generation, "nftables: generation unchanged since rocsync's last commit or read: no read-back.");
        }
    }
    let now = crate::clock::now_millis();
    match session.known.as_mut() {
        Some(known) => {
            known.prune(now);
            Ok(f(&known.kernel))
        }
        None => Err(io::Error::other("nothing known of the kernel")),
    }
}

/// Sends `steps`, computed from what [`with_kernel`] gave, as one transaction that the kernel
/// applies only if the ruleset is still at the generation it was known at (else ERESTART, and
/// the next look reads back). Afterwards the knowledge holds the steps and the new generation.
pub fn commit_known(layout: &Layout, steps: &Steps, now: Millis) -> io::Result<()> {
    let batch = build(layout, steps, now)?;
    let mut session = session();
    let key = LayoutKey::of(layout);
    let basis = session.known.as_ref().filter(|k| k.key == key).map(|k| k.generation);
    let Some(basis) = basis else {
        session.known = None;
        return session.send(batch, None);
    };
    if let Err(e) = session.send(batch, Some(basis)) {
        session.known = None;
        return Err(e);
    }
    // Ours is the only commit since `basis` (the kernel checked): the generation after it is
    // the next one, unless someone committed since, or the batch changed nothing.
    let expected = next_generation(basis);
    let ours = session.generation().ok() == Some(expected);
    let mut known = if ours { session.known.take() } else { None };
    if let Some(known) = known.as_mut() {
        known.kernel.apply(layout, steps);
        known.generation = expected;
        if let Some(end) = steps.add.iter().filter_map(|(_, end)| *end).min() {
            known.next_expiry = Some(known.next_expiry.map_or(end, |e| e.min(end)));
        }
    }
    session.known = known;
    Ok(())
}

/// The ruleset's generation, on a socket of its own (for tests and tools).
pub fn generation() -> io::Result<u32> {
    session().generation()
}

/// Asks for the generation and reads the answer (NFT_MSG_NEWGEN), skipping anything else.
fn get_generation(socket: &mnl::Socket, seq: u32) -> io::Result<u32> {
    socket.send(&generation_request(seq))?;
    let mut buffer = [0u8; 8192];
    // The answer is one small message; a bounded number of reads in case of leftovers.
    for _ in 0..16 {
        let n = socket.recv(&mut buffer)?;
        for message in messages(&buffer[..n]) {
            if message.seq != seq {
                continue;
            }
            if message.kind == NLMSG_ERROR {
                return Err(netlink_error_of(message.body));
            }
            if message.kind == (SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                return generation_of(message.body)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a generation answer without NFTA_GEN_ID"));
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "no answer to NFT_MSG_GETGEN"))
}

/// NFT_MSG_GETGEN: the header and an empty `nfgenmsg`.
fn generation_request(seq: u32) -> [u8; NLMSG_HDRLEN + NFGENMSG_LEN] {
    let mut request = [0u8; NLMSG_HDRLEN + NFGENMSG_LEN];
    request[0..4].copy_from_slice(&((NLMSG_HDRLEN + NFGENMSG_LEN) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&((SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    request[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request[8..12].copy_from_slice(&seq.to_ne_bytes());
    request
}

/// The batch with `generation` in its BATCH_BEGIN message (libnftnl writes the begin message
/// without attributes: the header and `nfgenmsg`, 20 bytes).
fn with_generation(batch: &[u8], generation: u32) -> io::Result<Vec<u8>> {
    let begin = NLMSG_HDRLEN + NFGENMSG_LEN;
    if batch.len() < begin || message_len(batch) != begin {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a batch that does not start with a bare BATCH_BEGIN"));
    }
    let mut out = Vec::with_capacity(batch.len() + 8);
    out.extend_from_slice(&batch[..begin]);
    out.extend_from_slice(&8u16.to_ne_bytes());
    out.extend_from_slice(&NFNL_BATCH_GENID.to_ne_bytes());
    out.extend_from_slice(&generation.to_be_bytes());
    out[0..4].copy_from_slice(&((begin + 8) as u32).to_ne_bytes());
    out.extend_from_slice(&batch[begin..]);
    Ok(out)
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Message<'a> {
    kind: u16,
    seq: u32,
    portid: u32,
    /// What follows the netlink header.
    body: &'a [u8],
}

/// The messages of a datagram, up to the first that does not fit.
fn messages(mut data: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if data.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = message_len(data);
        if len < NLMSG_HDRLEN || len > data.len() {
            data = &[];
            return None;
        }
        let message = Message {
            kind: u16::from_ne_bytes([data[4], data[5]]),
            seq: u32::from_ne_bytes([data[8], data[9], data[10], data[11]]),
            portid: u32::from_ne_bytes([data[12], data[13], data[14], data[15]]),
            body: &data[NLMSG_HDRLEN..len],
        };
        data = &data[align4(len).min(data.len())..];
        Some(message)
    })
}

/// The attributes (type without its flags, value) of an nfnetlink message's body.
fn attributes(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut data = body.get(NFGENMSG_LEN..).unwrap_or_default();
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            data = &[];
            return None;
        }
        let value = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((kind, value))
    })
}

/// NFTA_GEN_ID of a NEWGEN message's body.
fn generation_of(body: &[u8]) -> Option<u32> {
    attributes(body).find(|(kind, _)| *kind == NFTA_GEN_ID).and_then(|(_, v)| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)))
}

/// The error an NLMSG_ERROR message carries (a negative errno; 0 is an acknowledgement).
fn netlink_error_of(body: &[u8]) -> io::Error {
    match body.get(..4) {
        Some(b) => io::Error::from_raw_os_error(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        None => io::Error::new(io::ErrorKind::InvalidData, "truncated netlink error"),
    }
}

// ---------------------------------------------------------------------------------------------
// The monitor.

/// A notification of nf_tables about one object: who sent the change and which table it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Notice {
    /// NFT_MSG_NEWSETELEM, NFT_MSG_DELTABLE, … (without the subsystem).
    kind: u16,
    family: u8,
    table: String,
    /// The port id of the socket that sent the transaction.
    portid: u32,
}

/// The notice a message is, when it is about an object of a table: every nf_tables object's
/// message (table, chain, rule, set, elements, object, flowtable) has its table as attribute 1.
fn notice_of(message: &Message<'_>) -> Option<Notice> {
    if message.kind >> 8 != SUBSYS_NFTABLES {
        return None;
    }
    let kind = message.kind & 0xff;
    if matches!(kind, NFT_MSG_NEWGEN | NFT_MSG_GETGEN | NFT_MSG_TRACE) {
        return None;
    }
    let family = *message.body.first()?;
    let (_, name) = attributes(message.body).find(|(k, _)| *k == 1)?;
    let name = name.split(|b| *b == 0).next().unwrap_or_default();
    Some(Notice { kind, family, table: String::from_utf8_lossy(name).into_owned(), portid: message.portid })
}

/// Whether a notice is a change someone else made to `table` (family inet): not the echo of a
/// commit of this process's (its notices carry `own`, the port id rocsync commits from).
fn someone_elses(notice: &Notice, table: &str, own: u32) -> bool {
    notice.family == INET as u8 && notice.table == table && (own == 0 || notice.portid != own)
}

/// What the monitor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Someone else changed rocsync's table: one line saying what (the first change seen).
    Foreign(String),
    /// Notifications were lost (the socket's buffer overflowed, as during a large load): a
    /// change by someone else may be among them.
    Lost,
}

/// A listener on nf_tables' notifications (the group `nft monitor` listens to), filtered to one
/// table of family inet.
pub struct Monitor {
    socket: mnl::Socket,
    table: String,
    buffer: Vec<u8>,
}

// SAFETY: as for `KeptSocket`; the monitor is used by one thread at a time (`&mut self`).
unsafe impl Send for Monitor {}

/// Subscribes to nf_tables' notifications for `table`: from this call on, a change made by
/// someone else is seen by [`Monitor::recv`].
pub fn monitor(table: &str) -> io::Result<Monitor> {
    let socket = mnl::Socket::open(mnl::Bus::Netfilter)?;
    socket.bind(1 << (NFNLGRP_NFTABLES - 1), mnl::mnl_sys::MNL_SOCKET_AUTOPID)?;
    Ok(Monitor { socket, table: table.to_owned(), buffer: vec![0u8; RECV_BUFFER] })
}

impl Monitor {
    /// Blocks until someone else changes the table (or notifications were lost).
    pub fn recv(&mut self) -> io::Result<Change> {
        loop {
            let n = match self.socket.recv(&mut self.buffer) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Change::Lost),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let own = OWN_PORTID.load(Ordering::Relaxed);
            let found = messages(&self.buffer[..n])
                .filter_map(|m| notice_of(&m))
                .find(|notice| someone_elses(notice, &self.table, own));
            if let Some(notice) = found {
                return Ok(Change::Foreign(format!(
                    "message type {} on table inet {} from netlink port {}",
                    notice.kind, notice.table, notice.portid
                )));
            }
        }
    }
}

/// Starts a thread that calls `on_change` for every change someone else makes to `table`,
/// until `on_change` answers false. Subscribed before it returns.
pub fn spawn_monitor(table: &str, mut on_change: impl FnMut(Change) -> bool + Send + 'static) -> io::Result<()> {
    let mut monitor = monitor(table)?;
    std::thread::Builder::new().name("rocsync-nft-monitor".into()).spawn(move || {
        loop {
            match monitor.recv() {
                Ok(change) => {
                    if !on_change(change) {
                        return;
                    }
                }
                Err(e) => {
                    // The next poll still reads the kernel: repairs come later, not never.
                    tracing::warn!("nftables: the monitor stopped (changes are seen at the next poll): {e}");
                    return;
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for (s, family) in [("198.18.0.7", Family::V4), ("2001:db8::7", Family::V6)] {
            let e = Element { addr: s.parse().unwrap(), port: 8443 };
            let key = key_bytes(&e);
            assert_eq!(key.len() as u32, family.key().1);
            assert_eq!(element_of(&key, family), Some(e));
        }
        assert_eq!(key_bytes(&Element { addr: "198.18.0.7".parse().unwrap(), port: 443 }), [198, 18, 0, 7, 1, 187, 0, 0]);
        assert_eq!(element_of(&[1, 2, 3], Family::V4), None);
    }

    /// libnftnl's `*_alloc` results were used unchecked, and an expression that could not be
    /// allocated aborted the daemon.
    #[test]
    fn allocations_that_fail_are_errors() {
        let err = allocated(ptr::null_mut::<sys::nftnl_set>(), "a set").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert_eq!(err.to_string(), "libnftnl could not allocate a set");
        // libnftnl answers null for an expression it does not know, as when memory runs out.
        let err = Expr::new(c"no-such-expression").build().err().expect("an error, not an abort");
        assert!(err.to_string().contains("`no-such-expression`"), "{err}");
        let log = Expr::new(c"log").str(sys::NFTNL_EXPR_LOG_PREFIX, c"x".to_owned()).build().expect("log");
        // Never handed to a rule: freed by its Drop.
        drop(log);
    }

    /// A netlink message as the kernel writes it: header, `nfgenmsg` (family), attributes.
    fn message(kind: u16, seq: u32, portid: u32, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (t, v) in attrs {
            body.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(align4(body.len()), 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&portid.to_ne_bytes());
        m.extend_from_slice(&body);
        m
    }

    const NEWGEN: u16 = (SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN;
    const DELSETELEM: u16 = (SUBSYS_NFTABLES << 8) | 14;

    #[test]
    fn the_generation_is_read_from_a_newgen_answer() {
        // NFTA_GEN_ID (big-endian), NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME, as `nft` gets them.
        let answer = message(NEWGEN, 7, 0, 0, &[(1, &1234u32.to_be_bytes()), (2, &42u32.to_be_bytes()), (3, b"nft\0")]);
        let found: Vec<Message<'_>> = messages(&answer).collect();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].kind, found[0].seq), (NEWGEN, 7));
        assert_eq!(generation_of(found[0].body), Some(1234));
        // Without the attribute, or cut short: no generation, never a guess.
        assert_eq!(generation_of(&message(NEWGEN, 7, 0, 0, &[(2, &42u32.to_be_bytes())])[16..]), None);
        assert_eq!(generation_of(&[0, 0, 0, 0, 8, 0, 1]), None);
        let request = generation_request(9);
        assert_eq!(message_len(&request), 20);
        assert_eq!(messages(&request).next().map(|m| (m.kind, m.seq)), Some(((SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, 9)));
        // Two messages in one datagram, and a truncated third that is not read.
        let mut two = answer.clone();
        two.extend(message(NLMSG_ERROR, 8, 0, 0, &[]));
        two.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        assert_eq!(messages(&two).count(), 2);
        assert_eq!(next_generation(u32::MAX), 1, "the kernel skips 0");
        assert_eq!(next_generation(41), 42);
    }

    /// The batch carries the generation its diff was made against, in its BATCH_BEGIN message.
    #[test]
    fn the_batch_begin_carries_the_generation() {
        let mut batch = vec![20, 0, 0, 0, 0x10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10];
        batch.extend(message(DELSETELEM, 2, 0, 1, &[(1, b"rocsync\0")]));
        let with = with_generation(&batch, 0x0102_0304).unwrap();
        assert_eq!(message_len(&with), 28);
        assert_eq!(&with[4..20], &batch[4..20], "the begin's type, flags, seq and nfgenmsg stay");
        assert_eq!(&with[20..28], &[8, 0, 1, 0, 1, 2, 3, 4][..]);
        assert_eq!(&with[28..], &batch[20..]);
        assert!(with_generation(&batch[20..], 1).is_err(), "not a bare BATCH_BEGIN");
    }

    #[test]
    fn only_someone_elses_changes_to_rocsyncs_inet_table_count() {
        let deleted = message(DELSETELEM, 3, 777, INET as u8, &[(1, b"rocsync\0"), (2, b"rocsync_v4\0")]);
        let notice = notice_of(&messages(&deleted).next().unwrap()).unwrap();
        assert_eq!(notice, Notice { kind: 14, family: 1, table: "rocsync".into(), portid: 777 });
        assert!(someone_elses(&notice, "rocsync", 555), "nft's own socket");
        assert!(!someone_elses(&notice, "rocsync", 777), "the echo of rocsync's own commit");
        assert!(!someone_elses(&notice, "other", 555), "another table");
        let ip_family = Notice { family: 2, ..notice.clone() };
        assert!(!someone_elses(&ip_family, "rocsync", 555), "table ip rocsync is not inet rocsync");
        // The generation's own message and other subsystems are not about a table.
        assert_eq!(notice_of(&messages(&message(NEWGEN, 0, 777, 0, &[(1, &5u32.to_be_bytes())])).next().unwrap()), None);
        assert_eq!(notice_of(&messages(&message(0x0100, 0, 777, 1, &[(1, b"rocsync\0")])).next().unwrap()), None);
    }

    #[test]
    fn the_kernel_is_read_back_only_when_the_generation_moved_or_the_safety_net_says_so() {
        let key = LayoutKey::of(&Layout { names: NftNames::default(), managed: None });
        let other = LayoutKey { chain: Some("forward"), ..key.clone() };
        let minute = Duration::from_secs(60);
        assert_eq!(read_back_why(Some((&key, 5)), &key, 5, 0, minute, false), None);
        assert_eq!(read_back_why(Some((&key, 5)), &key, 6, 0, minute, false), Some(ReadReason::Moved { known: 5, now: 6 }));
        assert_eq!(read_back_why(None, &key, 5, 0, minute, false), Some(ReadReason::Unknown));
        assert_eq!(read_back_why(Some((&other, 5)), &key, 5, 0, minute, false), Some(ReadReason::Unknown));
        assert_eq!(read_back_why(Some((&key, 5)), &key, 5, 0, minute, true), Some(ReadReason::Asked));
        assert_eq!(read_back_why(Some((&key, 5)), &key, 5, READ_BACK_EVERY - 1, minute, false), Some(ReadReason::Periodic));
        assert_eq!(read_back_why(Some((&key, 5)), &key, 5, 1, READ_BACK_AFTER, false), Some(ReadReason::Periodic));
    }

    /// What is known drops the elements the kernel timed out, as the kernel does.
    #[test]
    fn known_elements_time_out_as_in_the_kernel() {
        let e = |n: u8| Element { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), port: 443 };
        let (key_type, key_len) = Family::V4.key();
        let set = KernelSet { key_type, key_len, flags: SET_FLAGS, elements: [(e(1), None), (e(2), Some(1_000)), (e(3), Some(5_000))].into() };
        let key = LayoutKey::of(&Layout { names: NftNames::default(), managed: None });
        let mut known = Known::new(key, 1, Kernel { table: true, v4: Some(set), ..Kernel::default() });
        assert_eq!(known.next_expiry, Some(1_000));
        known.prune(999);
        assert_eq!(known.kernel.v4.as_ref().unwrap().elements.len(), 3);
        known.prune(1_000);
        assert_eq!(known.kernel.v4.as_ref().unwrap().elements.keys().copied().collect::<Vec<_>>(), [e(1), e(3)]);
        assert_eq!(known.next_expiry, Some(5_000));
    }

    #[test]
    fn rule_comments_are_read_from_user_data() {
        assert_eq!(comment_of(&[0, 5, b'a', b'b', b'c', b'd', 0]), "abcd");
        assert_eq!(comment_of(&[7, 1, 9, 0, 2, b'x', 0]), "x");
        assert_eq!(comment_of(&[0, 200, b'a']), "");
        assert_eq!(comment_of(&[]), "");
    }
}
