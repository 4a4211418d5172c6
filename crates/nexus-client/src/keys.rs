//! Agent key files: generate an Ed25519 key from OS randomness, save it privately, load it.
//!
//! A key file is a small JSON object,
//!
//! ```json
//! {"version":1,"seed":"<64 hex digits: the secret>","author":"<64 hex digits: the public key>"}
//! ```
//!
//! written with mode `0600` on unix (its directory, when created, with `0700`). `author`
//! is informative: on load it must match the key the seed derives, so a damaged file is
//! caught. A file holding nothing but the 64 hex digits of the seed (and optional
//! surrounding whitespace) is accepted on load too.
//!
//! The default location is `$NEXUS_HOME/key` when `NEXUS_HOME` is set (a directory),
//! otherwise `$HOME/.config/nexus/key` ([`KeyFile::default_path`]).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nexus_core::{AuthorKey, FihHash, Signature, SigningKey};
use serde::{Deserialize, Serialize};

/// The file name under `$NEXUS_HOME` (or `~/.config/nexus`).
pub const KEY_FILE_NAME: &str = "key";

/// Why a key could not be made, saved or loaded. Every variant that concerns a file
/// names its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("cannot read OS randomness to make a key: {0}")]
    Random(String),
    /// Saving would replace an existing key file.
    #[error("{}: a key file already exists (refusing to overwrite it)", .path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// No key file at the path.
    #[error("{}: no key file here (create one with `nexus keygen`)", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a key file.
    #[error("{}: not a neXus key file: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Group or others may read the file (unix).
    #[error(
        "{}: the key file is readable by group or others (mode {mode:o}); run `chmod 600` on it",
        .path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Neither `NEXUS_HOME` nor `HOME` is set.
    #[error("cannot find a default key location: set NEXUS_HOME (or HOME)")]
    NoHome,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    version: u32,
    seed: String,
    author: String,
}

/// An agent's signing key, possibly tied to the file it was loaded from or saved to.
///
/// `Debug` shows only the author, never the secret.
#[derive(Clone)]
pub struct KeyFile {
    key: SigningKey,
    path: Option<PathBuf>,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("author", &self.key.author())
            .field("path", &self.path)
            .finish()
    }
}

impl KeyFile {
    /// A fresh key from 32 bytes of OS randomness (not yet saved anywhere).
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_seed(&seed);
        seed.fill(0);
        Ok(Self { key, path: None })
    }

    /// Wraps an existing key (e.g. a fixed test key).
    pub fn from_signing_key(key: SigningKey) -> Self {
        Self { key, path: None }
    }

    /// The default key file: `$NEXUS_HOME/key` when `NEXUS_HOME` is set and not empty,
    /// else `$HOME/.config/nexus/key`.
    pub fn default_path() -> Result<PathBuf, KeyError> {
        Self::default_path_from(
            std::env::var_os("NEXUS_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }

    fn default_path_from(
        nexus_home: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> Result<PathBuf, KeyError> {
        if let Some(dir) = nexus_home.filter(|d| !d.as_os_str().is_empty()) {
            return Ok(dir.join(KEY_FILE_NAME));
        }
        match home.filter(|d| !d.as_os_str().is_empty()) {
            Some(home) => Ok(home.join(".config").join("nexus").join(KEY_FILE_NAME)),
            None => Err(KeyError::NoHome),
        }
    }

    /// Loads a key file (JSON, or bare seed hex). On unix, refuses a file that group or
    /// others may read.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::NotFound {
                KeyError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                KeyError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        check_private(path, &meta)?;
        if meta.len() > 4096 {
            return Err(KeyError::Malformed {
                path: path.to_owned(),
                reason: format!("{} bytes is too large for a key file", meta.len()),
            });
        }
        let text = fs::read_to_string(path).map_err(io_err)?;
        let key = parse_key_text(&text).map_err(|reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Self {
            key,
            path: Some(path.to_owned()),
        })
    }

    /// Loads the key at [`default_path`](Self::default_path).
    pub fn load_default() -> Result<Self, KeyError> {
        Self::load(Self::default_path()?)
    }

    /// Saves the key to `path` with mode `0600` (unix), creating missing parent
    /// directories (mode `0700`). An existing file is an error unless `overwrite`, in
    /// which case it is replaced atomically.
    pub fn save(&mut self, path: impl AsRef<Path>, overwrite: bool) -> Result<(), KeyError> {
        let path = path.as_ref();
        let at = |p: &Path| {
            let p = p.to_owned();
            move |source: io::Error| KeyError::Io { path: p, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(at(dir))?;
        }
        let mut text = serde_json::to_string(&KeyJson {
            version: 1,
            seed: hex::encode(self.key.seed()),
            author: self.key.author().to_string(),
        })
        .map_err(|e| KeyError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        if overwrite {
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push(format!(".tmp-{}", std::process::id()));
            let tmp = path.with_file_name(name);
            let _ = fs::remove_file(&tmp);
            write_new_private(&tmp, text.as_bytes()).map_err(at(&tmp))?;
            if let Err(e) = fs::rename(&tmp, path) {
                let _ = fs::remove_file(&tmp);
                return Err(at(path)(e));
            }
        } else {
            write_new_private(path, text.as_bytes()).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    at(path)(e)
                }
            })?;
        }
        self.path = Some(path.to_owned());
        Ok(())
    }

    /// The file this key was loaded from or last saved to.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The public key records name as their author.
    pub fn author(&self) -> AuthorKey {
        self.key.author()
    }

    /// The signing key, for the builders in [`crate::builders`].
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs a hash.
    pub fn sign(&self, hash: &FihHash) -> Signature {
        self.key.sign(hash)
    }
}

impl AsRef<SigningKey> for KeyFile {
    fn as_ref(&self) -> &SigningKey {
        &self.key
    }
}

fn parse_key_text(text: &str) -> Result<SigningKey, String> {
    let trimmed = text.trim();
    let (seed_hex, author) = if trimmed.starts_with('{') {
        let j: KeyJson = serde_json::from_str(trimmed).map_err(|e| e.to_string())?;
        if j.version != 1 {
            return Err(format!("unsupported version {}", j.version));
        }
        (j.seed, Some(j.author))
    } else {
        (trimmed.to_owned(), None)
    };
    if seed_hex.len() != 64
        || !seed_hex
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("the seed must be 64 lowercase hex digits".into());
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(&seed_hex, &mut seed).map_err(|e| e.to_string())?;
    let key = SigningKey::from_seed(&seed);
    seed.fill(0);
    if let Some(author) = author
        && author != key.author().to_string()
    {
        return Err(format!(
            "the author {author} does not match the seed (which gives {})",
            key.author()
        ));
    }
    Ok(key)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Creates `path` (which must not exist) with mode 0600 and writes `bytes`, synced.
fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_save_load_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dir/key");
        let mut k = KeyFile::generate().expect("generate");
        assert_ne!(
            k.author(),
            KeyFile::generate().expect("generate").author(),
            "two keys from OS randomness differ"
        );
        k.save(&path, false).expect("save");
        assert_eq!(k.path(), Some(path.as_path()));
        let back = KeyFile::load(&path).expect("load");
        assert_eq!(back.author(), k.author());
        assert_eq!(back.key().seed(), k.key().seed());
        let h = FihHash::of_canonical(b"x");
        assert!(k.author().verify(&h, &back.sign(&h)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = fs::metadata(path.parent().expect("parent"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        assert!(!format!("{k:?}").contains(&hex::encode(k.key().seed())));
    }

    #[test]
    fn refuses_to_overwrite_unless_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        let mut a = KeyFile::generate().expect("generate");
        a.save(&path, false).expect("save");
        let mut b = KeyFile::generate().expect("generate");
        let err = b.save(&path, false).expect_err("exists");
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(KeyFile::load(&path).expect("load").author(), a.author());
        b.save(&path, true).expect("overwrite");
        assert_eq!(KeyFile::load(&path).expect("load").author(), b.author());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = KeyFile::load(&missing).expect_err("missing");
        assert!(matches!(err, KeyError::NotFound { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));

        let bad = dir.path().join("bad");
        write_new_private(&bad, b"{\"version\":1,\"seed\":\"zz\",\"author\":\"\"}").expect("w");
        let err = KeyFile::load(&bad).expect_err("bad");
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains(&bad.display().to_string()));

        // A seed whose stated author does not match.
        let wrong = dir.path().join("wrong");
        let text = format!(
            "{{\"version\":1,\"seed\":\"{}\",\"author\":\"{}\"}}",
            hex::encode([1u8; 32]),
            SigningKey::from_seed(&[2; 32]).author()
        );
        write_new_private(&wrong, text.as_bytes()).expect("w");
        assert!(matches!(
            KeyFile::load(&wrong),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn bare_hex_seed_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hex");
        write_new_private(&path, format!("{}\n", hex::encode([3u8; 32])).as_bytes()).expect("w");
        let k = KeyFile::load(&path).expect("load");
        assert_eq!(k.author(), SigningKey::from_seed(&[3; 32]).author());
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        KeyFile::generate()
            .expect("generate")
            .save(&path, false)
            .expect("save");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = KeyFile::load(&path).expect_err("too open");
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn default_path_prefers_nexus_home() {
        let p = KeyFile::default_path_from(Some("/n".into()), Some("/h".into())).expect("path");
        assert_eq!(p, PathBuf::from("/n/key"));
        let p = KeyFile::default_path_from(Some("".into()), Some("/h".into())).expect("path");
        assert_eq!(p, PathBuf::from("/h/.config/nexus/key"));
        assert!(matches!(
            KeyFile::default_path_from(None, None),
            Err(KeyError::NoHome)
        ));
    }
}
