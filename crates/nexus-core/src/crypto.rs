//! FihHash (BLAKE3-256, domain-separated) and Ed25519 authorship.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// BLAKE3 `derive_key` context under which every FihHash is computed. Changing it
/// changes every hash: it names the format version.
pub const HASH_CONTEXT: &str = "neXus 2026-11 FihHash v1";

/// Bytes prepended to the 32 hash bytes to form the message an author signs.
pub const SIG_DOMAIN: &[u8] = b"neXus sig v1\0";

/// Errors reading hashes, keys and signatures from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Wrong length or not lowercase hexadecimal.
    #[error("{what} must be {len} lowercase hex digits, got {got:?}")]
    BadHex {
        /// What was being parsed.
        what: &'static str,
        /// Expected number of hex digits.
        len: usize,
        /// The text (truncated).
        got: String,
    },
    /// Hex that does not decode to a valid Ed25519 public key.
    #[error("{0} is not a valid Ed25519 public key")]
    BadKey(String),
}

fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], ParseError> {
    let bad = || ParseError::BadHex {
        what,
        len: N * 2,
        got: s.chars().take(140).collect(),
    };
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
    Ok(out)
}

macro_rules! hex_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The content address of a record: BLAKE3-256 of its canonical encoding under
/// [`HASH_CONTEXT`]; written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FihHash(pub [u8; 32]);

impl FihHash {
    /// Hashes canonical bytes.
    pub fn of_canonical(bytes: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        h.update(bytes);
        Self(*h.finalize().as_bytes())
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for FihHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // encode_to_slice cannot fail: the buffer is exactly twice the input.
        if hex::encode_to_slice(self.0, &mut buf).is_err() {
            return Err(fmt::Error);
        }
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for FihHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FihHash({self})")
    }
}

impl FromStr for FihHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        parse_hex::<32>("a FihHash", s).map(Self)
    }
}
hex_serde!(FihHash);

/// An author: an Ed25519 public key, written as 64 lowercase hex digits. Holds the
/// compressed key bytes (checked to decode when parsed); the curve point is computed
/// only when a signature is verified.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthorKey([u8; 32]);

impl AuthorKey {
    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `sig` over `hash` (strict verification: no malleable or small-order forms).
    pub fn verify(&self, hash: &FihHash, sig: &Signature) -> bool {
        let Some(key) = decompressed(&self.0) else {
            return false;
        };
        key.verify_strict(&signed_message(hash), &sig.0).is_ok()
    }
}

/// Most decompressed author keys kept by [`decompressed`].
const KEY_CACHE_ENTRIES: usize = 4096;

/// The curve point of an author key, or `None` if the bytes decode to none.
///
/// Decompressing a key is a field square root — about a quarter of a signature check —
/// and the same few agents sign almost every record, so points are memoised. The memo
/// is a plain map emptied when full, not an LRU crate: it caches a pure function, so
/// which entries survive changes only speed, never a result, and agent sets are far
/// smaller than the bound. (On wasm32 the mutex never contends.)
fn decompressed(bytes: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], ed25519_dalek::VerifyingKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(key) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(bytes)
    {
        return Some(*key);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()?;
    let mut map = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= KEY_CACHE_ENTRIES {
        map.clear();
    }
    map.insert(*bytes, key);
    Some(key)
}

/// Serde for author keys in the host's own stored state (Intent states): the hex is
/// checked, the curve point is not (it was when the key first arrived, in a signed
/// record or action). Decompressing the point costs microseconds on every read.
pub mod stored_author {
    use super::{AuthorKey, parse_hex};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as lowercase hex.
    pub fn serialize<S: Serializer>(k: &AuthorKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(k)
    }

    /// Reads lowercase hex without re-validating the point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AuthorKey, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_hex::<32>("an author key", &s)
            .map(AuthorKey)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}
impl fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorKey({self})")
    }
}
impl FromStr for AuthorKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bytes = parse_hex::<32>("an author key", s)?;
        decompressed(&bytes)
            .map(|_| Self(bytes))
            .ok_or_else(|| ParseError::BadKey(s.to_owned()))
    }
}
hex_serde!(AuthorKey);

/// An Ed25519 signature over [`SIG_DOMAIN`] ‖ hash, written as 128 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.to_bytes()))
    }
}
impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}
impl FromStr for Signature {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        parse_hex::<64>("a signature", s).map(|b| Self(ed25519_dalek::Signature::from_bytes(&b)))
    }
}
hex_serde!(Signature);

fn signed_message(hash: &FihHash) -> [u8; 45] {
    let mut msg = [0u8; 45];
    msg[..SIG_DOMAIN.len()].copy_from_slice(SIG_DOMAIN);
    msg[SIG_DOMAIN.len()..].copy_from_slice(&hash.0);
    msg
}

/// An agent's private signing key. The core never generates keys (it has no source of
/// randomness); hosts create them from 32 random bytes.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// The key whose secret seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The secret seed (keep it private).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half: the author key records name.
    pub fn author(&self) -> AuthorKey {
        AuthorKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a hash.
    pub fn sign(&self, hash: &FihHash) -> Signature {
        Signature(self.0.sign(&signed_message(hash)))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(author {})", self.author())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_roundtrip_and_strictness() {
        let h = FihHash::of_canonical(b"{}");
        let s = h.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<FihHash>(), Ok(h));
        assert!(s.to_uppercase().parse::<FihHash>().is_err());
        assert!(s[..63].parse::<FihHash>().is_err());
        assert_eq!(h.to_hex(), s);
    }

    #[test]
    fn hash_is_domain_separated() {
        let plain = blake3::hash(b"{}");
        assert_ne!(plain.as_bytes(), &FihHash::of_canonical(b"{}").0);
        let derived = blake3::derive_key(HASH_CONTEXT, b"{}");
        assert_eq!(derived, FihHash::of_canonical(b"{}").0);
    }

    #[test]
    fn memoised_keys_give_the_same_answers_past_the_cache_bound() {
        let h = FihHash::of_canonical(b"x");
        let first = SigningKey::from_seed(&[1; 32]);
        let sig = first.sign(&h);
        // More distinct keys than the memo holds: it empties and refills meanwhile.
        for i in 0..KEY_CACHE_ENTRIES + 10 {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 2).to_le_bytes());
            let k = SigningKey::from_seed(&seed).author();
            assert!(k.to_string().parse::<AuthorKey>().is_ok());
            if i % 512 == 0 {
                assert!(!k.verify(&h, &sig), "another key never verifies");
                assert!(first.author().verify(&h, &sig), "hit or miss, same answer");
            }
        }
        assert!(first.author().verify(&h, &sig));
        assert!(!first.author().verify(&FihHash::of_canonical(b"y"), &sig));
        // A 32-byte string that is no curve point is refused every time, never memoised.
        let not_a_point = "02".repeat(32);
        for _ in 0..2 {
            assert!(not_a_point.parse::<AuthorKey>().is_err());
        }
    }

    #[test]
    fn signatures_verify_only_for_their_hash_and_key() {
        let k = SigningKey::from_seed(&[7; 32]);
        let other = SigningKey::from_seed(&[8; 32]);
        let h = FihHash::of_canonical(b"x");
        let sig = k.sign(&h);
        assert!(k.author().verify(&h, &sig));
        assert!(!other.author().verify(&h, &sig));
        assert!(!k.author().verify(&FihHash::of_canonical(b"y"), &sig));
        let text = sig.to_string();
        assert_eq!(text.parse::<Signature>(), Ok(sig));
        let author = k.author().to_string();
        assert_eq!(author.parse::<AuthorKey>(), Ok(k.author()));
    }
}
