//! The canonical binary codec: borsh, with every variable-length field bounded *while decoding*.
//!
//! Borsh is deterministic by construction (fixed field order, little-endian integers, length-
//! prefixed sequences). What it does not give is a limit on lengths read from untrusted input, so
//! every sequence in a consensus object is a [`BoundedVec`], [`BoundedBytes`] or [`BoundedString`]
//! whose decoder rejects a length prefix above its bound before reading (or allocating) anything.
//! [`decode`] additionally refuses inputs longer than the caller's byte limit and trailing bytes.

use std::{fmt, io, ops::Deref};

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why bytes could not be decoded into a consensus object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The whole input is larger than the caller allows.
    #[error("input of {len} bytes exceeds the limit of {max} bytes for {what}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// The bytes are not a valid encoding (bad tag, bound exceeded, short input, trailing bytes).
    #[error("invalid {what} encoding: {source}")]
    Invalid { what: &'static str, source: io::Error },
}

/// Encodes a value canonically.
pub fn encode<T: BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail.
    borsh::to_vec(value).unwrap_or_default()
}

/// Decodes a value from untrusted bytes: at most `max_len` bytes, every inner bound enforced
/// while reading, no trailing bytes.
pub fn decode<T: BorshDeserialize>(
    bytes: &[u8],
    max_len: usize,
    what: &'static str,
) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge { what, len: bytes.len(), max: max_len });
    }
    borsh::from_slice(bytes).map_err(|source| DecodeError::Invalid { what, source })
}

fn read_len<R: io::Read>(reader: &mut R, max: usize, what: &str) -> io::Result<usize> {
    let len = u32::deserialize_reader(reader)? as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} length {len} exceeds the bound {max}"),
        ));
    }
    Ok(len)
}

/// A vector of at most `N` elements; the bound holds on construction and while decoding.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedVec<T, const N: usize>(Vec<T>);

impl<T, const N: usize> Default for BoundedVec<T, N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const N: usize> BoundedVec<T, N> {
    /// The bound.
    pub const MAX: usize = N;

    /// An empty vector.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Wraps `items`, or hands them back when there are more than `N`.
    pub fn try_from_vec(items: Vec<T>) -> Result<Self, BoundExceeded> {
        if items.len() > N {
            return Err(BoundExceeded { len: items.len(), max: N });
        }
        Ok(Self(items))
    }

    /// Appends an element unless the vector is full.
    pub fn try_push(&mut self, item: T) -> Result<(), BoundExceeded> {
        if self.0.len() >= N {
            return Err(BoundExceeded { len: self.0.len() + 1, max: N });
        }
        self.0.push(item);
        Ok(())
    }

    /// The inner vector.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

/// A collection was given more elements than its bound allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} elements exceed the bound of {max}")]
pub struct BoundExceeded {
    /// The length that was attempted.
    pub len: usize,
    /// The bound.
    pub max: usize,
}

impl<T, const N: usize> Deref for BoundedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for BoundedVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T, const N: usize> TryFrom<Vec<T>> for BoundedVec<T, N> {
    type Error = BoundExceeded;
    fn try_from(items: Vec<T>) -> Result<Self, BoundExceeded> {
        Self::try_from_vec(items)
    }
}

impl<'a, T, const N: usize> IntoIterator for &'a BoundedVec<T, N> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: BorshSerialize, const N: usize> BorshSerialize for BoundedVec<T, N> {
    fn serialize<W: io::Write>(&self, writer: &mut W) -> io::Result<()> {
        BorshSerialize::serialize(&self.0, writer)
    }
}

impl<T: BorshDeserialize, const N: usize> BorshDeserialize for BoundedVec<T, N> {
    fn deserialize_reader<R: io::Read>(reader: &mut R) -> io::Result<Self> {
        let len = read_len(reader, N, "sequence")?;
        let mut items = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            items.push(T::deserialize_reader(reader)?);
        }
        Ok(Self(items))
    }
}

impl<T: Serialize, const N: usize> Serialize for BoundedVec<T, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Serialize::serialize(&self.0, serializer)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for BoundedVec<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = <Vec<T> as Deserialize>::deserialize(deserializer)?;
        Self::try_from_vec(items).map_err(serde::de::Error::custom)
    }
}

/// Opaque bytes, at most `N` of them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BoundedBytes<const N: usize>(Vec<u8>);

impl<const N: usize> BoundedBytes<N> {
    /// Wraps `bytes` if they fit the bound.
    pub fn try_from_vec(bytes: Vec<u8>) -> Result<Self, BoundExceeded> {
        if bytes.len() > N {
            return Err(BoundExceeded { len: bytes.len(), max: N });
        }
        Ok(Self(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(&self.0))
    }
}

impl<const N: usize> BorshSerialize for BoundedBytes<N> {
    fn serialize<W: io::Write>(&self, writer: &mut W) -> io::Result<()> {
        BorshSerialize::serialize(&self.0, writer)
    }
}

impl<const N: usize> BorshDeserialize for BoundedBytes<N> {
    fn deserialize_reader<R: io::Read>(reader: &mut R) -> io::Result<Self> {
        let len = read_len(reader, N, "byte string")?;
        let mut bytes = vec![0u8; len];
        reader.read_exact(&mut bytes)?;
        Ok(Self(bytes))
    }
}

impl<const N: usize> Serialize for BoundedBytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as Deserialize>::deserialize(deserializer)?;
        let bytes = hex::decode(text.trim_start_matches("0x")).map_err(serde::de::Error::custom)?;
        Self::try_from_vec(bytes).map_err(serde::de::Error::custom)
    }
}

/// A UTF-8 string of at most `N` bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BoundedString<const N: usize>(String);

impl<const N: usize> BoundedString<N> {
    /// Wraps `text` if it fits the bound.
    pub fn new(text: impl Into<String>) -> Result<Self, BoundExceeded> {
        let text = text.into();
        if text.len() > N {
            return Err(BoundExceeded { len: text.len(), max: N });
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const N: usize> fmt::Display for BoundedString<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const N: usize> BorshSerialize for BoundedString<N> {
    fn serialize<W: io::Write>(&self, writer: &mut W) -> io::Result<()> {
        BorshSerialize::serialize(&self.0, writer)
    }
}

impl<const N: usize> BorshDeserialize for BoundedString<N> {
    fn deserialize_reader<R: io::Read>(reader: &mut R) -> io::Result<Self> {
        let len = read_len(reader, N, "string")?;
        let mut bytes = vec![0u8; len];
        reader.read_exact(&mut bytes)?;
        String::from_utf8(bytes).map(Self).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl<const N: usize> Serialize for BoundedString<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedString<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(<String as Deserialize>::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_length_prefix_is_rejected_before_reading() {
        // A length prefix of 1 000 000 with no elements behind it: must fail on the bound, not on
        // the short read, and must not allocate a million elements.
        let mut bytes = 1_000_000u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 8]);
        let err = decode::<BoundedVec<u64, 16>>(&bytes, 1 << 20, "test").unwrap_err();
        assert!(err.to_string().contains("exceeds the bound 16"), "{err}");
    }

    #[test]
    fn whole_input_limit_and_trailing_bytes() {
        let v = BoundedVec::<u8, 4>::try_from_vec(vec![1, 2, 3]).unwrap();
        let bytes = encode(&v);
        assert_eq!(decode::<BoundedVec<u8, 4>>(&bytes, 64, "v").unwrap(), v);
        assert!(matches!(decode::<BoundedVec<u8, 4>>(&bytes, 3, "v"), Err(DecodeError::TooLarge { .. })));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<BoundedVec<u8, 4>>(&trailing, 64, "v").is_err());
        assert!(BoundedVec::<u8, 2>::try_from_vec(vec![1, 2, 3]).is_err());
        assert!(BoundedString::<3>::new("abcd").is_err());
    }
}
