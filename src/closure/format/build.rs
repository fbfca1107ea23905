//! Building a closure file: measuring a value, encoding it, and the
//! incremental `TreeBuilder` the C and Python bindings fill. Only this
//! process's own values come here; what other processes wrote is read by
//! `validate.rs`.

use super::*;

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
