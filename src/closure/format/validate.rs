//! Reading a closure file another process wrote: hostile input. The
//! validator checks every byte before anything is read, and `ValueRef`
//! reads only what it accepted (fuzz target `closure`).

use super::*;

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
    // Not API (Closure::root is): takes the validator's `Checked`; public
    // for fuzz/closure and tests/closure (mtipc::internals::closure::format).
    #[doc(hidden)]
    pub fn root(file: &'a [u8], checked: &Checked) -> ValueRef<'a> {
        ValueRef {
            data: &file[FILE_HEADER..],
            off: checked.root,
        }
    }

    /// The value at `offset` of the data area of a `file` that
    /// [`validate`] accepted with `checked`; `None` if no value starts
    /// there (an offset made up or damaged by a caller).
    // Not API (Closure::value_at is), like `root`.
    #[doc(hidden)]
    pub fn at(file: &'a [u8], checked: &Checked, offset: usize) -> Option<ValueRef<'a>> {
        checked.is_value(offset).then(|| ValueRef {
            data: &file[FILE_HEADER..],
            off: offset,
        })
    }

    /// Its offset in the data area (what
    /// [`Closure::value_at`](crate::closure::Closure::value_at) takes back).
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
