//! The binary format of a closure version file: an encoder for a [`Value`]
//! tree, a validator that checks a whole file in one pass, and zero-copy
//! accessors ([`ValueRef`]) over a validated file.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! 0   region header (shm::RegionHeader): magic "MTIPCCLO", layout version,
//!     header size 64, total size (= the file's size)
//! 24  format version  u32   (FORMAT_VERSION)
//! 28  reserved        u32   0
//! 32  version         u64   the closure version this file holds (v<N>)
//! 40  root            u64   offset of the root node in the data area
//! 48  data length     u64   total size - 64
//! 56  reserved        u64   0
//! 64  data area: nodes, each 8-aligned, one after the other, no gaps
//! ```
//!
//! Every offset is relative to the start of the data area (byte 64 of the
//! file, so 8-aligned in a page-aligned mapping). A node starts with one
//! header word: kind in bits 0..8, height in bits 8..16, bits 16..32 zero,
//! length in bits 32..64; then its body:
//!
//! | kind      | length          | body                                            |
//! |-----------|-----------------|-------------------------------------------------|
//! | 1 bytes   | bytes           | the bytes, zero-padded to 8                     |
//! | 2 str     | bytes (no NUL)  | UTF-8, a NUL, zero-padded to 8                  |
//! | 3 int     | 0               | i64                                             |
//! | 4 float   | 0               | f64 (IEEE 754 bits)                             |
//! | 5 list    | items           | one u64 offset per item                         |
//! | 6 map     | entries         | per entry: u64 offset of a str key, u64 offset of the value; keys sorted by bytes, unique |
//!
//! The height of a leaf is 0, of a list or map 1 + the largest height of
//! its children (1 when empty); it is at most [`MAX_DEPTH`]. Children come
//! before their parents: every offset inside a node is smaller than the
//! node's own, so there are no cycles. (A node may be the child of several
//! parents; the encoder never does that, the validator allows it.)
//!
//! # Validation
//!
//! [`validate`] walks the nodes from the first to the last, once: it checks
//! each header (known kind, zero reserved bits, a size that fits), each body
//! (UTF-8 and the NUL of strings, zero padding), and each offset (aligned,
//! smaller than the node's, the start of a node already seen: a bitmap with
//! one bit per 8 bytes), the recorded heights, and key order. After it the
//! accessors of [`ValueRef`] need no check: a validated file cannot make
//! them read out of bounds, loop or recurse without end.

use crate::error::{err, Result};
use std::collections::BTreeMap;

/// Magic of a closure version file.
pub const MAGIC: &[u8; 8] = b"MTIPCCLO";
/// Version of the closure format described above.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the file header (the region header with the closure fields).
pub const FILE_HEADER: usize = 64;
/// Largest closure version file, header included (1 GiB).
pub const MAX_CLOSURE_SIZE: u64 = 1 << 30;
/// Deepest nesting of lists and maps (the height of the root).
pub const MAX_DEPTH: u32 = 64;

const NODE_HEADER: usize = 8;

/// The kind of a value. The numbers are the format's and the C ABI's
/// (`mt_value_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A byte string.
    Bytes = 1,
    /// A UTF-8 string.
    Str = 2,
    /// A signed 64-bit integer.
    Int = 3,
    /// A 64-bit float.
    Float = 4,
    /// A list of values.
    List = 5,
    /// A map from string keys (sorted) to values.
    Map = 6,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Bytes,
            2 => Kind::Str,
            3 => Kind::Int,
            4 => Kind::Float,
            5 => Kind::List,
            6 => Kind::Map,
            _ => return None,
        })
    }

    /// Its name, for messages ("bytes", "str", ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bytes => "bytes",
            Kind::Str => "str",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::List => "list",
            Kind::Map => "map",
        }
    }
}

/// A value to publish: owned, built by the application.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A byte string.
    Bytes(Vec<u8>),
    /// A UTF-8 string.
    Str(String),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A list.
    List(Vec<Value>),
    /// A map; keys are kept sorted (by bytes) and unique.
    Map(BTreeMap<String, Value>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::List(v)
    }
}

fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

fn too_large(size: u64) -> crate::Error {
    err!(
        Invalid,
        "closure of {size} bytes is too large (at most {MAX_CLOSURE_SIZE} bytes, header included)"
    )
}

fn too_deep() -> crate::Error {
    err!(
        Invalid,
        "closure value is nested too deeply (at most {MAX_DEPTH} levels of lists and maps)"
    )
}

fn node_size(kind: Kind, len: u64) -> u64 {
    NODE_HEADER as u64
        + match kind {
            Kind::Bytes => pad8(len),
            Kind::Str => pad8(len + 1),
            Kind::Int | Kind::Float => 8,
            Kind::List => 8 * len,
            Kind::Map => 16 * len,
        }
}

/// Size and height of the encoding of `v` (data area only), or `Invalid`
/// past the limits. Stops as soon as a limit is passed.
fn measure(v: &Value, depth: u32) -> Result<(u64, u32)> {
    let leaf = |kind, len: usize| Ok((node_size(kind, len as u64), 0));
    let (size, height) = match v {
        Value::Bytes(b) => leaf(Kind::Bytes, b.len())?,
        Value::Str(s) => leaf(Kind::Str, s.len())?,
        Value::Int(_) => leaf(Kind::Int, 0)?,
        Value::Float(_) => leaf(Kind::Float, 0)?,
        Value::List(items) => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            let mut size = node_size(Kind::List, items.len() as u64);
            let mut h = 0;
            for it in items {
                let (s, ch) = measure(it, depth + 1)?;
                size += s;
                h = h.max(ch);
                if size > MAX_CLOSURE_SIZE {
                    return Err(too_large(size + FILE_HEADER as u64));
                }
            }
            (size, h + 1)
        }
        Value::Map(m) => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            let mut size = node_size(Kind::Map, m.len() as u64);
            let mut h = 0;
            for (k, it) in m {
                let (s, ch) = measure(it, depth + 1)?;
                size += s + node_size(Kind::Str, k.len() as u64);
                h = h.max(ch);
                if size > MAX_CLOSURE_SIZE {
                    return Err(too_large(size + FILE_HEADER as u64));
                }
            }
            (size, h + 1)
        }
    };
    if size + FILE_HEADER as u64 > MAX_CLOSURE_SIZE {
        return Err(too_large(size + FILE_HEADER as u64));
    }
    Ok((size, height))
}

/// The size of the file that encodes `v`, or `Invalid` (with the limit) if
/// it is larger than [`MAX_CLOSURE_SIZE`] or nested deeper than
/// [`MAX_DEPTH`].
pub fn encoded_size(v: &Value) -> Result<u64> {
    Ok(measure(v, 0)?.0 + FILE_HEADER as u64)
}

/// The size of the file that holds a bytes closure of `len` bytes, or
/// `Invalid` (with the limit) if it is larger than [`MAX_CLOSURE_SIZE`].
pub fn bytes_file_size(len: u64) -> Result<u64> {
    let size = (FILE_HEADER as u64)
        .saturating_add(NODE_HEADER as u64)
        .saturating_add(pad8(len.min(u64::MAX - 8)));
    if size > MAX_CLOSURE_SIZE {
        return Err(too_large(size));
    }
    Ok(size)
}

/// The 64-byte file header of a closure of `total` bytes holding `version`,
/// root at `root`.
pub fn file_header(total: u64, version: u64, root: u64) -> [u8; FILE_HEADER] {
    let mut h = crate::shm::RegionHeader {
        magic: *MAGIC,
        layout_version: crate::LAYOUT_VERSION,
        header_size: crate::shm::HEADER_SIZE as u32,
        total_size: total,
    }
    .encode();
    h[24..28].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[32..40].copy_from_slice(&version.to_le_bytes());
    h[40..48].copy_from_slice(&root.to_le_bytes());
    h[48..56].copy_from_slice(&(total - FILE_HEADER as u64).to_le_bytes());
    h
}

/// The header word of a node.
pub fn node_header(kind: Kind, height: u32, len: u64) -> [u8; 8] {
    debug_assert!(len <= u32::MAX as u64 && height <= MAX_DEPTH);
    (kind as u64 | (height as u64) << 8 | len << 32).to_le_bytes()
}

struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    fn pos(&self) -> u64 {
        (self.out.len() - FILE_HEADER) as u64
    }

    fn node(&mut self, kind: Kind, height: u32, len: u64) -> u64 {
        let at = self.pos();
        self.out.extend_from_slice(&node_header(kind, height, len));
        at
    }

    fn pad(&mut self) {
        let n = pad8(self.out.len() as u64) as usize;
        self.out.resize(n, 0);
    }

    fn str(&mut self, s: &str) -> u64 {
        let at = self.node(Kind::Str, 0, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(0);
        self.pad();
        at
    }

    /// Writes `v` (children first) and returns (offset, height).
    fn value(&mut self, v: &Value) -> (u64, u32) {
        match v {
            Value::Bytes(b) => {
                let at = self.node(Kind::Bytes, 0, b.len() as u64);
                self.out.extend_from_slice(b);
                self.pad();
                (at, 0)
            }
            Value::Str(s) => (self.str(s), 0),
            Value::Int(i) => {
                let at = self.node(Kind::Int, 0, 0);
                self.out.extend_from_slice(&i.to_le_bytes());
                (at, 0)
            }
            Value::Float(f) => {
                let at = self.node(Kind::Float, 0, 0);
                self.out.extend_from_slice(&f.to_bits().to_le_bytes());
                (at, 0)
            }
            Value::List(items) => {
                let mut refs = Vec::with_capacity(items.len());
                let mut h = 0;
                for it in items {
                    let (r, ch) = self.value(it);
                    refs.push(r);
                    h = h.max(ch);
                }
                let at = self.node(Kind::List, h + 1, items.len() as u64);
                for r in refs {
                    self.out.extend_from_slice(&r.to_le_bytes());
                }
                (at, h + 1)
            }
            Value::Map(m) => {
                let mut refs = Vec::with_capacity(m.len());
                let mut h = 0;
                for (k, it) in m {
                    let kr = self.str(k);
                    let (vr, ch) = self.value(it);
                    refs.push((kr, vr));
                    h = h.max(ch);
                }
                let at = self.node(Kind::Map, h + 1, m.len() as u64);
                for (k, v) in refs {
                    self.out.extend_from_slice(&k.to_le_bytes());
                    self.out.extend_from_slice(&v.to_le_bytes());
                }
                (at, h + 1)
            }
        }
    }
}

/// Encodes `v` as the whole file of closure version `version`. `Invalid`
/// (with the limit) past [`MAX_CLOSURE_SIZE`] or [`MAX_DEPTH`].
pub fn encode(v: &Value, version: u64) -> Result<Vec<u8>> {
    let total = encoded_size(v)?;
    let mut e = Encoder {
        out: Vec::with_capacity(total as usize),
    };
    e.out.resize(FILE_HEADER, 0);
    let (root, _) = e.value(v);
    debug_assert_eq!(e.out.len() as u64, total);
    e.out[..FILE_HEADER].copy_from_slice(&file_header(total, version, root));
    Ok(e.out)
}

/// What [`validate`] learnt from a valid file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The closure version the file holds.
    pub version: u64,
    /// Offset of the root node in the data area.
    pub root: usize,
    /// One bit per 8-byte word of the data area: set where a node starts
    /// (what the validator walked), so that an offset a caller hands back
    /// (a C `mt_value`, a Python view) is checked to be a value's
    /// ([`Checked::is_value`]). 1/64 of the data area's size.
    nodes: Vec<u64>,
}

impl Checked {
    /// Whether `offset` is the start of a value in the data area.
    pub fn is_value(&self, offset: usize) -> bool {
        if offset % 8 != 0 {
            return false;
        }
        let w = offset / 8;
        self.nodes
            .get(w / 64)
            .is_some_and(|word| word >> (w % 64) & 1 == 1)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks a whole closure version file (see the module docs) in one pass.
/// `expected_version`, if given, must be the version the file records.
///
/// This is the parser of untrusted closure files; `fuzz/` has a target for
/// it. `Corrupt` for anything malformed, `Version` for another layout or
/// format version.
pub fn validate(file: &[u8], expected_version: Option<u64>) -> Result<Checked> {
    let what = "closure file";
    crate::shm::validate(file, MAGIC, file.len() as u64, what)?;
    if file.len() as u64 > MAX_CLOSURE_SIZE {
        return Err(err!(
            Corrupt,
            "{what}: {} bytes, larger than the limit of {MAX_CLOSURE_SIZE}",
            file.len()
        ));
    }
    let format = u32::from_le_bytes(file[24..28].try_into().expect("4 bytes"));
    if format != FORMAT_VERSION {
        return Err(err!(
            Version,
            "{what}: closure format {format}; this mtipc {} reads format {FORMAT_VERSION}",
            crate::VERSION
        ));
    }
    let version = u64_at(file, 32);
    let root = u64_at(file, 40);
    let data_len = u64_at(file, 48);
    if file[28..32] != [0; 4] || u64_at(file, 56) != 0 {
        return Err(err!(Corrupt, "{what}: reserved header bytes are not zero"));
    }
    if let Some(v) = expected_version {
        if v != version {
            return Err(err!(
                Corrupt,
                "{what}: holds version {version}, expected {v}"
            ));
        }
    }
    let data = &file[FILE_HEADER..];
    if data_len != data.len() as u64 {
        return Err(err!(
            Corrupt,
            "{what}: data length {data_len} does not match the file ({} bytes of data)",
            data.len()
        ));
    }
    if data.len() % 8 != 0 {
        return Err(err!(
            Corrupt,
            "{what}: data length {} is not a multiple of 8",
            data.len()
        ));
    }
    let mut seen = vec![0u64; data.len() / 8 / 64 + 1];
    let is_node = |seen: &[u64], off: u64, before: usize| -> bool {
        off % 8 == 0 && off < before as u64 && {
            let w = (off / 8) as usize;
            seen[w / 64] >> (w % 64) & 1 == 1
        }
    };
    let mut pos = 0usize;
    while pos < data.len() {
        let bad = |why: String| err!(Corrupt, "{what}: node at offset {pos}: {why}");
        if data.len() - pos < NODE_HEADER {
            return Err(bad("truncated header".into()));
        }
        let word = u64_at(data, pos);
        let kind = Kind::of(word as u8).ok_or_else(|| bad(format!("bad kind {}", word as u8)))?;
        let height = (word >> 8 & 0xff) as u32;
        if word >> 16 & 0xffff != 0 {
            return Err(bad("reserved header bits are not zero".into()));
        }
        let len = word >> 32;
        let size = node_size(kind, len);
        if size > (data.len() - pos) as u64 {
            return Err(bad(format!(
                "{} of length {len} does not fit in the file",
                kind.name()
            )));
        }
        let size = size as usize;
        let body = &data[pos + NODE_HEADER..pos + size];
        let len = len as usize;
        let child = |seen: &[u64], off: u64, what_child: &str| -> Result<u32> {
            if !is_node(seen, off, pos) {
                return Err(bad(format!(
                    "{what_child} offset {off} is not the start of an earlier node"
                )));
            }
            Ok((u64_at(data, off as usize) >> 8 & 0xff) as u32)
        };
        let mut want_height = 0;
        match kind {
            Kind::Bytes | Kind::Str => {
                let (content, rest) = body.split_at(len);
                if kind == Kind::Str {
                    std::str::from_utf8(content)
                        .map_err(|e| bad(format!("string is not UTF-8: {e}")))?;
                    if rest.first() != Some(&0) {
                        return Err(bad("string has no terminating NUL".into()));
                    }
                }
                if rest.iter().any(|&b| b != 0) {
                    return Err(bad("padding is not zero".into()));
                }
            }
            Kind::Int | Kind::Float => {
                if len != 0 {
                    return Err(bad(format!("{} with length {len}", kind.name())));
                }
            }
            Kind::List => {
                let mut h = 0;
                for i in 0..len {
                    h = h.max(child(&seen, u64_at(body, 8 * i), "item")?);
                }
                want_height = h + 1;
            }
            Kind::Map => {
                let mut h = 0;
                let mut prev: Option<&[u8]> = None;
                for i in 0..len {
                    let k = u64_at(body, 16 * i);
                    child(&seen, k, "key")?;
                    let kw = u64_at(data, k as usize);
                    if Kind::of(kw as u8) != Some(Kind::Str) {
                        return Err(bad(format!("key {i} is not a string")));
                    }
                    let ks = k as usize + NODE_HEADER;
                    let key = &data[ks..ks + (kw >> 32) as usize];
                    if prev.is_some_and(|p| p >= key) {
                        return Err(bad(format!("key {i} is not after the key before it")));
                    }
                    prev = Some(key);
                    h = h.max(child(&seen, u64_at(body, 16 * i + 8), "value")?);
                }
                want_height = h + 1;
            }
        }
        if height != want_height {
            return Err(bad(format!("height {height}, expected {want_height}")));
        }
        if height > MAX_DEPTH {
            return Err(bad(format!(
                "nested {height} levels deep (at most {MAX_DEPTH})"
            )));
        }
        let w = pos / 8;
        seen[w / 64] |= 1 << (w % 64);
        pos += size;
    }
    if !is_node(&seen, root, data.len()) {
        return Err(err!(
            Corrupt,
            "{what}: root offset {root} is not the start of a node"
        ));
    }
    Ok(Checked {
        version,
        root: root as usize,
        nodes: seen,
    })
}

/// A value inside a validated closure: a view of the mapped bytes, no copy.
/// Cheap to copy; lives as long as the closure it came from.
#[derive(Clone, Copy)]
pub struct ValueRef<'a> {
    data: &'a [u8],
    off: usize,
}

impl std::fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind() {
            Kind::Bytes => write!(f, "<{} bytes>", self.len()),
            Kind::Str => write!(f, "{:?}", self.as_str().unwrap_or_default()),
            Kind::Int => write!(f, "{}", self.as_int().unwrap_or_default()),
            Kind::Float => write!(f, "{:?}", self.as_float().unwrap_or_default()),
            Kind::List => f.debug_list().entries(self.list_iter()).finish(),
            Kind::Map => f.debug_map().entries(self.map_iter()).finish(),
        }
    }
}

impl<'a> ValueRef<'a> {
    /// The root of a file that [`validate`] accepted with `checked`.
    /// `file` must be exactly the bytes it validated.
    pub fn root(file: &'a [u8], checked: &Checked) -> ValueRef<'a> {
        ValueRef {
            data: &file[FILE_HEADER..],
            off: checked.root,
        }
    }

    /// The value at `offset` of the data area of a `file` that
    /// [`validate`] accepted with `checked`; `None` if no value starts
    /// there (an offset made up or damaged by a caller).
    pub fn at(file: &'a [u8], checked: &Checked, offset: usize) -> Option<ValueRef<'a>> {
        checked.is_value(offset).then(|| ValueRef {
            data: &file[FILE_HEADER..],
            off: offset,
        })
    }

    /// Its offset in the data area (what [`ValueRef::at`] takes back).
    pub fn offset(&self) -> usize {
        self.off
    }

    fn word(&self) -> u64 {
        u64_at(self.data, self.off)
    }

    fn body(&self, at: usize) -> u64 {
        u64_at(self.data, self.off + NODE_HEADER + at)
    }

    fn child(&self, off: u64) -> ValueRef<'a> {
        ValueRef {
            data: self.data,
            off: off as usize,
        }
    }

    fn content(&self) -> &'a [u8] {
        let s = self.off + NODE_HEADER;
        &self.data[s..s + self.raw_len()]
    }

    fn raw_len(&self) -> usize {
        (self.word() >> 32) as usize
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        // Validated: the kind byte is a known one.
        Kind::of(self.word() as u8).unwrap_or(Kind::Bytes)
    }

    /// Length: bytes of a byte string or string, items of a list, entries
    /// of a map; 0 for a number.
    pub fn len(&self) -> usize {
        self.raw_len()
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.raw_len() == 0
    }

    /// The bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        (self.kind() == Kind::Bytes).then(|| self.content())
    }

    /// The text of a string.
    pub fn as_str(&self) -> Option<&'a str> {
        (self.kind() == Kind::Str).then(|| {
            let b = self.content();
            // SAFETY: the validator checked that every string node is UTF-8,
            // and version files are never written after they are published
            // (read-only, mode 0400).
            unsafe { std::str::from_utf8_unchecked(b) }
        })
    }

    /// The bytes of a string followed by its NUL (for C).
    pub fn str_with_nul(&self) -> Option<&'a [u8]> {
        (self.kind() == Kind::Str).then(|| {
            let s = self.off + NODE_HEADER;
            &self.data[s..s + self.raw_len() + 1]
        })
    }

    /// The value of an integer.
    pub fn as_int(&self) -> Option<i64> {
        (self.kind() == Kind::Int).then(|| self.body(0) as i64)
    }

    /// The value of a float.
    pub fn as_float(&self) -> Option<f64> {
        (self.kind() == Kind::Float).then(|| f64::from_bits(self.body(0)))
    }

    /// Item `i` of a list (`None` if not a list or out of range).
    pub fn list_get(&self, i: usize) -> Option<ValueRef<'a>> {
        (self.kind() == Kind::List && i < self.raw_len()).then(|| self.child(self.body(8 * i)))
    }

    /// The items of a list (nothing if not a list).
    pub fn list_iter(&self) -> impl ExactSizeIterator<Item = ValueRef<'a>> + 'a {
        let this = *self;
        let n = if this.kind() == Kind::List {
            this.raw_len()
        } else {
            0
        };
        (0..n).map(move |i| this.child(this.body(8 * i)))
    }

    /// Entry `i` of a map, in key order.
    pub fn map_entry(&self, i: usize) -> Option<(&'a str, ValueRef<'a>)> {
        if self.kind() != Kind::Map || i >= self.raw_len() {
            return None;
        }
        let key = self.child(self.body(16 * i)).as_str().unwrap_or_default();
        Some((key, self.child(self.body(16 * i + 8))))
    }

    /// The key of entry `i` of a map, as a string node (for C: NUL-ended).
    pub fn map_key(&self, i: usize) -> Option<ValueRef<'a>> {
        (self.kind() == Kind::Map && i < self.raw_len()).then(|| self.child(self.body(16 * i)))
    }

    /// The entries of a map, in key order (nothing if not a map).
    pub fn map_iter(&self) -> impl ExactSizeIterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let this = *self;
        let n = if this.kind() == Kind::Map {
            this.raw_len()
        } else {
            0
        };
        (0..n).map(move |i| this.map_entry(i).expect("in range"))
    }

    /// The value of `key` in a map (binary search), `None` if absent or
    /// not a map.
    pub fn map_get(&self, key: &[u8]) -> Option<ValueRef<'a>> {
        self.map_find(key)
            .map(|i| self.child(self.body(16 * i + 8)))
    }

    /// The index of `key` in a map.
    pub fn map_find(&self, key: &[u8]) -> Option<usize> {
        if self.kind() != Kind::Map {
            return None;
        }
        let (mut lo, mut hi) = (0, self.raw_len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.child(self.body(16 * mid)).content();
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// An owned copy of the value (for tests and small values).
    pub fn to_value(&self) -> Value {
        match self.kind() {
            Kind::Bytes => Value::Bytes(self.content().to_vec()),
            Kind::Str => Value::Str(self.as_str().unwrap_or_default().to_owned()),
            Kind::Int => Value::Int(self.as_int().unwrap_or_default()),
            Kind::Float => Value::Float(self.as_float().unwrap_or_default()),
            Kind::List => Value::List(self.list_iter().map(|v| v.to_value()).collect()),
            Kind::Map => Value::Map(
                self.map_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// Builds a [`Value`] one piece at a time, in document order (the C ABI's
/// builder): scalars, `begin_list`/`begin_map` ... `end`, and in a map a
/// `key` before each value.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    /// Open containers, innermost last, with the key waiting for its value.
    stack: Vec<(Value, Option<String>)>,
    done: Option<Value>,
}

impl TreeBuilder {
    /// An empty builder.
    pub fn new() -> TreeBuilder {
        TreeBuilder::default()
    }

    fn add(&mut self, v: Value) -> Result<()> {
        if self.done.is_some() {
            return Err(err!(
                Invalid,
                "closure builder: the value is complete; nothing more can be added"
            ));
        }
        match self.stack.last_mut() {
            None => self.done = Some(v),
            Some((Value::List(items), _)) => items.push(v),
            Some((Value::Map(m), key)) => match key.take() {
                Some(k) => {
                    m.insert(k, v);
                }
                None => {
                    return Err(err!(
                        Invalid,
                        "closure builder: a value in a map needs a key first"
                    ))
                }
            },
            Some(_) => unreachable!("only lists and maps are open"),
        }
        Ok(())
    }

    /// Adds a value (a scalar, or a whole tree).
    pub fn value(&mut self, v: Value) -> Result<()> {
        self.add(v)
    }

    fn open(&mut self, v: Value) -> Result<()> {
        if self.done.is_some() {
            return self.add(v);
        }
        if let Some((Value::Map(_), None)) = self.stack.last() {
            return Err(err!(
                Invalid,
                "closure builder: a value in a map needs a key first"
            ));
        }
        if self.stack.len() >= MAX_DEPTH as usize {
            return Err(too_deep());
        }
        self.stack.push((v, None));
        Ok(())
    }

    /// Opens a list: the next values are its items until [`end`](Self::end).
    pub fn begin_list(&mut self) -> Result<()> {
        self.open(Value::List(Vec::new()))
    }

    /// Opens a map: then `key`, value, `key`, value, ... and [`end`](Self::end).
    pub fn begin_map(&mut self) -> Result<()> {
        self.open(Value::Map(BTreeMap::new()))
    }

    /// The key of the next value in the open map. A key given twice is
    /// `Invalid`.
    pub fn key(&mut self, k: &str) -> Result<()> {
        match self.stack.last_mut() {
            Some((Value::Map(m), slot @ None)) => {
                if m.contains_key(k) {
                    return Err(err!(Invalid, "closure builder: key {k:?} given twice"));
                }
                *slot = Some(k.to_owned());
                Ok(())
            }
            Some((Value::Map(_), Some(_))) => Err(err!(
                Invalid,
                "closure builder: two keys in a row (the first has no value)"
            )),
            _ => Err(err!(Invalid, "closure builder: a key outside of a map")),
        }
    }

    /// Closes the innermost open list or map.
    pub fn end(&mut self) -> Result<()> {
        match self.stack.pop() {
            None => Err(err!(
                Invalid,
                "closure builder: end without an open list or map"
            )),
            Some((_, Some(k))) => Err(err!(
                Invalid,
                "closure builder: key {k:?} has no value before end"
            )),
            Some((v, None)) => self.add(v),
        }
    }

    /// The finished value: `Invalid` if nothing was added or a list or map
    /// is still open. The builder is then empty again.
    pub fn finish(&mut self) -> Result<Value> {
        if !self.stack.is_empty() {
            return Err(err!(
                Invalid,
                "closure builder: {} list(s) or map(s) still open",
                self.stack.len()
            ));
        }
        self.done
            .take()
            .ok_or_else(|| err!(Invalid, "closure builder: no value was added"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        let mut m = BTreeMap::new();
        m.insert("name".to_string(), Value::from("routing"));
        m.insert("weight".to_string(), Value::Float(0.25));
        m.insert("ids".to_string(), Value::List(vec![1.into(), (-7).into()]));
        m.insert("blob".to_string(), Value::Bytes(vec![0, 1, 2, 255, 9]));
        m.insert("empty".to_string(), Value::Map(BTreeMap::new()));
        m.insert("".to_string(), Value::Str(String::new()));
        Value::Map(m)
    }

    impl From<i32> for Value {
        fn from(v: i32) -> Value {
            Value::Int(v.into())
        }
    }

    #[test]
    fn round_trip() {
        let v = sample();
        let f = encode(&v, 7).unwrap();
        assert_eq!(f.len() as u64, encoded_size(&v).unwrap());
        let c = validate(&f, Some(7)).unwrap();
        assert_eq!(c.version, 7);
        let r = ValueRef::root(&f, &c);
        assert_eq!(r.to_value(), v);
        assert_eq!(r.kind(), Kind::Map);
        assert_eq!(r.len(), 6);
        assert_eq!(r.map_get(b"name").unwrap().as_str(), Some("routing"));
        assert_eq!(r.map_get(b"weight").unwrap().as_float(), Some(0.25));
        assert_eq!(
            r.map_get(b"ids").unwrap().list_get(1).unwrap().as_int(),
            Some(-7)
        );
        assert!(r.map_get(b"ids").unwrap().list_get(2).is_none());
        assert_eq!(
            r.map_get(b"blob").unwrap().as_bytes(),
            Some(&[0, 1, 2, 255, 9][..])
        );
        assert_eq!(r.map_get(b"").unwrap().str_with_nul(), Some(&b"\0"[..]));
        assert!(r.map_get(b"nope").is_none());
        assert!(r.map_get(b"zzz").is_none());
        let keys: Vec<_> = r.map_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["", "blob", "empty", "ids", "name", "weight"]);
        assert_eq!(
            validate(&f, Some(8)).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
    }

    #[test]
    fn every_truncation_and_byte_flip_is_refused_or_valid() {
        let f = encode(&sample(), 1).unwrap();
        for n in 0..f.len() {
            assert!(validate(&f[..n], None).is_err(), "truncated at {n}");
        }
        // Flipping any byte is either refused, or still gives a file whose
        // accessors work (a changed number, for example).
        for i in 0..f.len() {
            for bit in [0x01u8, 0x80] {
                let mut g = f.clone();
                g[i] ^= bit;
                if let Ok(c) = validate(&g, None) {
                    let _ = ValueRef::root(&g, &c).to_value();
                }
            }
        }
    }

    #[test]
    fn limits_are_invalid_with_the_limit() {
        let mut v = Value::Int(1);
        for _ in 0..MAX_DEPTH {
            v = Value::List(vec![v]);
        }
        let f = encode(&v, 1).unwrap();
        validate(&f, None).unwrap();
        let deeper = Value::List(vec![v]);
        let e = encode(&deeper, 1).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        assert!(e.message().contains(&MAX_DEPTH.to_string()), "{e}");
        let e = bytes_file_size(MAX_CLOSURE_SIZE).unwrap_err();
        assert!(e.message().contains(&MAX_CLOSURE_SIZE.to_string()), "{e}");
        bytes_file_size(MAX_CLOSURE_SIZE - 72).unwrap();
    }

    #[test]
    fn forward_and_inner_offsets_are_refused() {
        // A list whose item points at itself, then at the middle of a node.
        let mut f = encode(&Value::List(vec![Value::Int(5)]), 1).unwrap();
        let list_at = FILE_HEADER + 16;
        f[list_at + 8..list_at + 16].copy_from_slice(&16u64.to_le_bytes());
        assert!(validate(&f, None)
            .unwrap_err()
            .message()
            .contains("earlier node"));
        f[list_at + 8..list_at + 16].copy_from_slice(&8u64.to_le_bytes());
        assert!(validate(&f, None)
            .unwrap_err()
            .message()
            .contains("earlier node"));
        f[list_at + 8..list_at + 16].copy_from_slice(&0u64.to_le_bytes());
        validate(&f, None).unwrap();
    }

    #[test]
    fn builder_builds_and_refuses_misuse() {
        let mut b = TreeBuilder::new();
        b.begin_map().unwrap();
        b.key("a").unwrap();
        b.value(1.into()).unwrap();
        assert!(b.key("a").is_err());
        b.key("l").unwrap();
        assert!(b.key("m").is_err());
        b.begin_list().unwrap();
        b.value("x".into()).unwrap();
        b.end().unwrap();
        assert!(b.value(2.into()).is_err());
        assert!(b.finish().is_err());
        b.end().unwrap();
        assert!(b.end().is_err());
        assert!(b.value(3.into()).is_err());
        let v = b.finish().unwrap();
        let mut m = BTreeMap::new();
        m.insert("a".into(), Value::Int(1));
        m.insert("l".into(), Value::List(vec!["x".into()]));
        assert_eq!(v, Value::Map(m));
        assert!(b.finish().is_err());
        assert!(b.key("k").is_err());
    }
}
