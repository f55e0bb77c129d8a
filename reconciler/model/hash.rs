//! Content hashes, written `sha256:<hex>` as the SPEC's plans and ledgers do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The SHA-256 of a file's content (or of a symbolic link's target text).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The hash a streaming hasher arrived at.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}…", &hex::encode(self.0)[..12])
    }
}

impl FromStr for ContentHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{s:?} does not start with sha256:"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| format!("{s:?} is not sha256: and 64 hex digits"))?;
        Ok(Self(out))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A git blob id (SHA-1 of `blob <size>\0<content>`), the identity that
/// rollback points and git catalogs already carry, so comparing a file with
/// them costs no extra read.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(pub [u8; 20]);

impl BlobId {
    /// The blob id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Self::hasher(bytes.len() as u64);
        sha1::Digest::update(&mut h, bytes);
        Self::from_hasher(h)
    }

    /// A hasher primed with the blob header for content of `size` bytes.
    pub fn hasher(size: u64) -> sha1::Sha1 {
        let mut h = <sha1::Sha1 as sha1::Digest>::new();
        sha1::Digest::update(&mut h, format!("blob {size}\0").as_bytes());
        h
    }

    /// The id a primed hasher arrived at.
    pub fn from_hasher(h: sha1::Sha1) -> Self {
        Self(sha1::Digest::finalize(h).into())
    }

    /// As a git2 object id.
    pub fn to_oid(self) -> git2::Oid {
        git2::Oid::from_bytes(&self.0).unwrap_or(git2::Oid::ZERO_SHA1)
    }

    /// From a git2 object id.
    pub fn from_oid(oid: git2::Oid) -> Self {
        let mut out = [0u8; 20];
        out.copy_from_slice(oid.as_bytes());
        Self(out)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blob:{}…", &hex::encode(self.0)[..10])
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let mut out = [0u8; 20];
        hex::decode_to_slice(text.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_equal_gits() {
        let id = BlobId::of(b"hello\n");
        assert_eq!(
            id.to_string(),
            git2::Oid::hash_object(git2::ObjectType::Blob, b"hello\n")
                .unwrap()
                .to_string()
        );
        assert_eq!(id.to_string(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn round_trips_as_text() {
        let h = ContentHash::of(b"");
        assert_eq!(
            h.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
    }
}
