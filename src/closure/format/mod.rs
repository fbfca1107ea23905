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

pub(super) fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

pub(super) fn node_size(kind: Kind, len: u64) -> u64 {
    NODE_HEADER as u64
        + match kind {
            Kind::Bytes => pad8(len),
            Kind::Str => pad8(len + 1),
            Kind::Int | Kind::Float => 8,
            Kind::List => 8 * len,
            Kind::Map => 16 * len,
        }
}

mod build;
mod validate;

pub use build::{bytes_file_size, encode, encoded_size, file_header, node_header, TreeBuilder};
pub use validate::{validate, Checked, ValueRef};

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
