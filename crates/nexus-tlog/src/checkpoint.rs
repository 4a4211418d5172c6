//! Signed checkpoints: C2SP `tlog-checkpoint` bodies in C2SP `signed-note`s, Ed25519.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, Signer, StandardVerifier, VerifierList};
use tlog_tiles::Hash;

/// The C2SP signed-note algorithm byte of Ed25519 keys.
const ALG_ED25519: u8 = 0x01;

/// Why a checkpoint could not be made or was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The origin (also the key name) is not a valid signed-note key name.
    #[error("origin {0:?} is not a valid key name (non-empty, no spaces, no '+')")]
    BadOrigin(String),
    /// The verifier key is not `<name>+<8 hex key id>+<base64(0x01 || public key)>`.
    #[error("malformed log key {0:?}: expected <name>+<key id>+<base64 key>")]
    BadKey(String),
    /// The note is not a well-formed signed note.
    #[error("malformed signed note: {0}")]
    Malformed(String),
    /// The note carries no signature by the expected key.
    #[error("the checkpoint is not signed by log key {0}")]
    NotSigned(String),
    /// A signature line names the expected key but does not verify.
    #[error("the checkpoint's signature by {0} does not verify")]
    BadSignature(String),
    /// The note's text is not a C2SP checkpoint body.
    #[error("the note is not a checkpoint: {0}")]
    BadBody(String),
    /// A log key's text is not its 32-byte seed as 64 hex digits.
    #[error("a log key is its 32-byte Ed25519 seed as 64 hex digits")]
    BadSeed,
    /// The checkpoint's origin is not the one expected.
    #[error("the checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// The origin expected (the key's name).
        expected: String,
        /// The origin the checkpoint names.
        found: String,
    },
}

/// A verified (or just made) checkpoint: the origin, the tree size and its root.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The log's origin line (`nexus/<deployment id>` for a neXus host).
    pub origin: String,
    /// The number of leaves (log entries `1..=size`).
    pub size: u64,
    /// The RFC 6962 root hash of those leaves.
    pub root: Hash,
}

/// A host's secret log key (an Ed25519 seed), before it is named by an origin. Its
/// `Debug` shows the public half only.
#[derive(Clone, PartialEq, Eq)]
pub struct LogKey([u8; 32]);

impl LogKey {
    /// The key of seed `secret`.
    pub fn from_seed(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    /// The seed (what a key file holds).
    pub fn seed(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.0).verifying_key().to_bytes()
    }

    /// The signer of the log of `origin` with this key.
    pub fn signer(&self, origin: &str) -> Result<LogSigner, CheckpointError> {
        LogSigner::new(origin, self.0)
    }
}

/// Parses the seed as 64 hex digits (what a key file or a `NEXUS_LOG_KEY` secret
/// holds), surrounding whitespace ignored.
impl std::str::FromStr for LogKey {
    type Err = CheckpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Self)
            .ok_or(CheckpointError::BadSeed)
    }
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey(public {})", STANDARD.encode(self.public_key()))
    }
}

/// A host's log key: an Ed25519 key whose name is the log's origin.
#[derive(Clone)]
pub struct LogSigner {
    origin: String,
    key: SigningKey,
    id: u32,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner")
            .field("verifier_key", &self.verifier_key())
            .finish_non_exhaustive()
    }
}

/// The C2SP signed-note encoding of an Ed25519 public key: `0x01 || key`.
fn encoded_key(key: &VerifyingKey) -> Vec<u8> {
    let mut out = vec![ALG_ED25519];
    out.extend_from_slice(key.as_bytes());
    out
}

impl LogSigner {
    /// The key `secret` (an Ed25519 seed) signing the log of `origin`.
    pub fn new(origin: &str, secret: [u8; 32]) -> Result<Self, CheckpointError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(CheckpointError::BadOrigin(origin.to_owned()));
        }
        let key = SigningKey::from_bytes(&secret);
        let id = signed_note::key_id(origin, &encoded_key(&key.verifying_key()));
        Ok(Self {
            origin: origin.to_owned(),
            key,
            id,
        })
    }

    /// The log's origin (the key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The signed-note verifier key, `<origin>+<key id, 8 hex>+<base64(0x01 || key)>`:
    /// what a host publishes and what `nexus verify --log-key` takes.
    pub fn verifier_key(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.origin,
            self.id,
            STANDARD.encode(encoded_key(&self.key.verifying_key()))
        )
    }

    /// The signed checkpoint of the tree of `size` leaves with root `root`: the C2SP
    /// body (origin, size, base64 root, each on its line), a blank line, and one
    /// signature line `— <origin> <base64(key id || signature)>`.
    pub fn sign(&self, size: u64, root: &Hash) -> String {
        let body = format!("{}\n{size}\n{root}\n", self.origin);
        let sig = self.key.sign(body.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!(
            "{body}\n\u{2014} {} {}\n",
            self.origin,
            STANDARD.encode(blob)
        )
    }
}

/// signed_note's signer trait over our key, so its `Note` writes the signature (kept
/// for the test that our own encoding matches the library's).
impl Signer for LogSigner {
    fn name(&self) -> &str {
        &self.origin
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// Parses a verifier key `<name>+<key id>+<base64(0x01 || key)>` into its name and
/// Ed25519 public key, checking the key id.
pub fn parse_verifier_key(vkey: &str) -> Result<(String, [u8; 32]), CheckpointError> {
    let bad = || CheckpointError::BadKey(vkey.to_owned());
    StandardVerifier::new(vkey).map_err(|_| bad())?;
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(_), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let raw = STANDARD.decode(b64).map_err(|_| bad())?;
    let key: [u8; 32] = raw
        .get(1..)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(bad)?;
    Ok((name.to_owned(), key))
}

/// Verifies signed checkpoint `note` against verifier key `vkey` (see
/// [`LogSigner::verifier_key`]): a signature by that key must be present and valid
/// (others are ignored, as signed-note says), and the body a C2SP checkpoint whose
/// origin is the key's name.
pub fn verify_checkpoint(note: &str, vkey: &str) -> Result<Checkpoint, CheckpointError> {
    let verifier =
        StandardVerifier::new(vkey).map_err(|_| CheckpointError::BadKey(vkey.to_owned()))?;
    let (name, _) = parse_verifier_key(vkey)?;
    let parsed =
        Note::from_bytes(note.as_bytes()).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let known = VerifierList::new(vec![Box::new(verifier)]);
    match parsed.verify(&known) {
        Ok(_) => {}
        Err(signed_note::NoteError::UnverifiedNote) => {
            return Err(CheckpointError::NotSigned(vkey.to_owned()));
        }
        Err(signed_note::NoteError::InvalidSignature { .. }) => {
            return Err(CheckpointError::BadSignature(vkey.to_owned()));
        }
        Err(e) => return Err(CheckpointError::Malformed(e.to_string())),
    }
    let body = tlog_tiles::Checkpoint::from_bytes(parsed.text())
        .map_err(|e| CheckpointError::BadBody(e.to_string()))?;
    if body.origin() != name {
        return Err(CheckpointError::WrongOrigin {
            expected: name,
            found: body.origin().to_owned(),
        });
    }
    Ok(Checkpoint {
        origin: body.origin().to_owned(),
        size: body.size(),
        root: *body.hash(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> LogSigner {
        LogSigner::new("nexus/0123abcd", [seed; 32]).expect("signer")
    }

    #[test]
    fn our_checkpoint_is_the_one_the_signed_note_library_writes() {
        let s = signer(7);
        let root = crate::leaf_hash(b"x");
        let ours = s.sign(3, &root);
        let body = tlog_tiles::Checkpoint::new(s.origin(), 3, root, "").expect("body");
        let mut note = Note::new(&body.to_bytes(), &[]).expect("note");
        note.add_sigs(&[&s]).expect("sign");
        assert_eq!(ours.as_bytes(), note.to_bytes());
        let cp = verify_checkpoint(&ours, &s.verifier_key()).expect("verifies");
        assert_eq!((cp.size, cp.root), (3, root));
    }

    #[test]
    fn a_log_key_parses_from_its_hex_seed_only() {
        let key: LogKey = format!(" {}\n", "07".repeat(32)).parse().expect("parses");
        assert_eq!(key.seed(), &[7; 32]);
        for bad in ["", "07", &"07".repeat(33), &"zz".repeat(32)] {
            assert_eq!(
                bad.parse::<LogKey>(),
                Err(CheckpointError::BadSeed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_is_refused() {
        let root = crate::leaf_hash(b"x");
        let note = signer(7).sign(3, &root);
        // Same name, other key: the key id differs, so the note has no signature by it.
        assert!(matches!(
            verify_checkpoint(&note, &signer(8).verifier_key()),
            Err(CheckpointError::NotSigned(_))
        ));
        // A forged signature under the right key id.
        let tampered = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            verify_checkpoint(&tampered, &signer(7).verifier_key()),
            Err(CheckpointError::BadSignature(_))
        ));
        assert!(matches!(
            verify_checkpoint(&note, "nope"),
            Err(CheckpointError::BadKey(_))
        ));
    }
}
