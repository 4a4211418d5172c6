//! How layout 2 stores a value: empty as empty, anything else as one header byte and
//! the bytes it names ([`Stored`]): the value itself, a zstd frame of it (with or
//! without the file's own dictionary), or, in the key-value tier, the number of its
//! entry in the append-order heap table.
//!
//! # The dictionary
//!
//! neXus values are short JSON documents (a record is about 500 bytes) whose field
//! names and structure repeat from one value to the next but never inside one, so
//! zstd alone saves little on them (a record shrinks to 67%) and zstd with a
//! dictionary trained on the same kind of values much more (34%; BENCHMARKS.md §9).
//! Each file trains its own: the first [`TRAIN_SAMPLES`] values of at least
//! [`MIN_COMPRESS`] bytes a store encodes are kept as samples (and stored with zstd
//! alone); the store then trains a dictionary of at most [`DICT_BYTES`] on them
//! ([`Codec::take_samples`]), commits it to the file's metadata in a transaction of
//! its own, and only after that commit encodes with it ([`Codec::install`]). So no
//! stored value ever names a dictionary its file lacks; values written before keep
//! their own header and stay readable. A file has at most one dictionary, and a
//! failed training is not retried ([`Codec::give_up_training`]).

use std::sync::{Mutex, MutexGuard, PoisonError};

use zstd::bulk::{Compressor, Decompressor};

/// Header byte: the value's bytes follow as they are.
const RAW: u8 = 0;
/// Header byte: a zstd frame (content size included) without a dictionary follows.
const ZSTD: u8 = 1;
/// Header byte: a zstd frame made with the file's dictionary follows.
const ZSTD_DICT: u8 = 2;
/// Header byte: the big-endian number of the value's entry in the heap table follows
/// (key-value tier only; the heap entry holds the value's own [`Stored`] encoding).
const HEAP: u8 = 3;

/// Values shorter than this are stored raw: a zstd frame costs more than it saves.
pub(crate) const MIN_COMPRESS: usize = 64;
/// Values a store samples before it trains its dictionary.
pub(crate) const TRAIN_SAMPLES: usize = 1_024;
/// Largest dictionary a store trains.
pub(crate) const DICT_BYTES: usize = 16 << 10;
/// zstd's level: 3 is its default, a few µs for a value of a few hundred bytes.
const LEVEL: i32 = 3;
/// Largest value a frame may claim to decompress to (a blob may be large; this only
/// keeps a corrupt frame from asking for an absurd allocation).
const MAX_VALUE: u64 = 4 << 30;

/// A stored value, decoded as far as its header goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored<'a> {
    /// The value is in the heap table under this number.
    Heap(u64),
    /// The value is here, encoded (raw or compressed).
    Inline(&'a [u8]),
}

impl<'a> Stored<'a> {
    /// Reads the header of `stored`.
    pub(crate) fn of(stored: &'a [u8]) -> Result<Self, String> {
        match stored.split_first() {
            Some((&HEAP, id)) => {
                let id: [u8; 8] = id
                    .try_into()
                    .map_err(|_| format!("a heap reference of {} bytes", id.len()))?;
                Ok(Stored::Heap(u64::from_be_bytes(id)))
            }
            _ => Ok(Stored::Inline(stored)),
        }
    }
}

/// The stored form of a reference to heap entry `id`.
pub(crate) fn heap_ref(id: u64) -> [u8; 9] {
    let mut out = [HEAP; 9];
    out[1..].copy_from_slice(&id.to_be_bytes());
    out
}

/// Encodes and decodes the values of one file (with its dictionary, once trained).
pub(crate) struct Codec {
    enc: Mutex<Encoder>,
    dec: Mutex<Decoder>,
}

struct Encoder {
    plain: Compressor<'static>,
    dict: Option<Compressor<'static>>,
    /// Samples for the dictionary; [`None`] once trained (or given up).
    samples: Option<Vec<Vec<u8>>>,
}

struct Decoder {
    plain: Decompressor<'static>,
    dict: Option<Decompressor<'static>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both states stay consistent across a panic (a context is reset by each call).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn zstd_err(what: &str, e: std::io::Error) -> String {
    format!("zstd: {what}: {e}")
}

impl Codec {
    /// A codec for a file with `dict` (its stored dictionary, if it has one).
    pub(crate) fn new(dict: Option<&[u8]>) -> Result<Self, String> {
        let codec = Self {
            enc: Mutex::new(Encoder {
                plain: Compressor::new(LEVEL).map_err(|e| zstd_err("compressor", e))?,
                dict: None,
                samples: Some(Vec::new()),
            }),
            dec: Mutex::new(Decoder {
                plain: Decompressor::new().map_err(|e| zstd_err("decompressor", e))?,
                dict: None,
            }),
        };
        if let Some(dict) = dict {
            codec.install(dict)?;
        }
        Ok(codec)
    }

    /// Encodes `value` for storage.
    pub(crate) fn encode(&self, value: &[u8]) -> Vec<u8> {
        if value.is_empty() {
            return Vec::new();
        }
        let raw = || [&[RAW], value].concat();
        if value.len() < MIN_COMPRESS {
            return raw();
        }
        let mut enc = lock(&self.enc);
        if let Some(samples) = &mut enc.samples
            && samples.len() < TRAIN_SAMPLES
        {
            samples.push(value.to_vec());
        }
        let (header, frame) = match &mut enc.dict {
            Some(c) => (ZSTD_DICT, c.compress(value)),
            None => (ZSTD, enc.plain.compress(value)),
        };
        match frame {
            Ok(frame) if frame.len() < value.len() => [&[header], &frame[..]].concat(),
            // Incompressible (or zstd failed, which it does not on memory it allocated
            // itself): the value is kept as it is.
            _ => raw(),
        }
    }

    /// Decodes an inline stored value (not a heap reference).
    pub(crate) fn decode(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
        let Some((&header, body)) = stored.split_first() else {
            return Ok(Vec::new());
        };
        let capacity = || -> Result<usize, String> {
            match zstd::zstd_safe::get_frame_content_size(body) {
                Ok(Some(n)) if n <= MAX_VALUE => {
                    usize::try_from(n).map_err(|_| "a frame too large".to_owned())
                }
                Ok(Some(n)) => Err(format!("a frame claiming {n} bytes")),
                _ => Err("a zstd frame without its content size".to_owned()),
            }
        };
        match header {
            RAW => Ok(body.to_vec()),
            ZSTD => lock(&self.dec)
                .plain
                .decompress(body, capacity()?)
                .map_err(|e| zstd_err("decompress", e)),
            ZSTD_DICT => {
                let mut dec = lock(&self.dec);
                let d = dec
                    .dict
                    .as_mut()
                    .ok_or("compressed with a dictionary the file lacks")?;
                d.decompress(body, capacity()?)
                    .map_err(|e| zstd_err("decompress", e))
            }
            HEAP => Err("a heap reference where a value belongs".to_owned()),
            other => Err(format!("unknown value header {other}")),
        }
    }

    /// The samples to train the dictionary on, once there are enough and no
    /// dictionary yet. The caller trains, stores the dictionary, then calls
    /// [`Codec::install`] (or [`Codec::give_up_training`]).
    pub(crate) fn take_samples(&self) -> Option<Vec<Vec<u8>>> {
        let mut enc = lock(&self.enc);
        if enc
            .samples
            .as_ref()
            .is_some_and(|s| s.len() >= TRAIN_SAMPLES)
        {
            enc.samples.take()
        } else {
            None
        }
    }

    /// Trains a dictionary on `samples` (zstd's trainer).
    pub(crate) fn train(samples: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        zstd::dict::from_samples(samples, DICT_BYTES).map_err(|e| zstd_err("train", e))
    }

    /// Encodes with `dict` from now on (it must be committed to the file already).
    pub(crate) fn install(&self, dict: &[u8]) -> Result<(), String> {
        let c = Compressor::with_dictionary(LEVEL, dict).map_err(|e| zstd_err("dictionary", e))?;
        let d = Decompressor::with_dictionary(dict).map_err(|e| zstd_err("dictionary", e))?;
        lock(&self.dec).dict = Some(d);
        let mut enc = lock(&self.enc);
        enc.dict = Some(c);
        enc.samples = None;
        Ok(())
    }

    /// Gives back samples [`Codec::take_samples`] took, when their dictionary could not
    /// be stored: training is tried again with the next write.
    pub(crate) fn return_samples(&self, samples: Vec<Vec<u8>>) {
        let mut enc = lock(&self.enc);
        if enc.dict.is_none() {
            enc.samples = Some(samples);
        }
    }

    /// Stops sampling: the file goes on without a dictionary.
    pub(crate) fn give_up_training(&self) {
        lock(&self.enc).samples = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: usize) -> Vec<u8> {
        format!(
            r#"{{"kind":"fact","topic":"t/{}","body":{{"n":{i}}},"hash":"{:064x}"}}"#,
            i % 7,
            i * 7919
        )
        .into_bytes()
    }

    #[test]
    fn values_round_trip_before_and_after_the_dictionary() {
        let codec = Codec::new(None).expect("codec");
        let mut stored = Vec::new();
        for i in 0..TRAIN_SAMPLES {
            stored.push((value(i), codec.encode(&value(i))));
        }
        let samples = codec.take_samples().expect("enough samples");
        assert!(codec.take_samples().is_none(), "taken once");
        let dict = Codec::train(&samples).expect("train");
        codec.install(&dict).expect("install");
        let with_dict = codec.encode(&value(5));
        assert_eq!(with_dict[0], ZSTD_DICT);
        assert!(with_dict.len() < stored[5].1.len(), "the dictionary pays");
        stored.push((value(5), with_dict));
        for short in [&b""[..], b"x", &[7u8; 63]] {
            stored.push((short.to_vec(), codec.encode(short)));
        }
        for (v, s) in &stored {
            assert_eq!(&codec.decode(s).expect("decode"), v);
        }
        // A file reopened with its dictionary reads them all too.
        let reopened = Codec::new(Some(&dict)).expect("codec");
        for (v, s) in &stored {
            assert_eq!(&reopened.decode(s).expect("decode"), v);
        }
        // Without it, the dictionary's values are refused, not misread.
        let without = Codec::new(None).expect("codec");
        assert!(without.decode(&stored[TRAIN_SAMPLES].1).is_err());
    }

    #[test]
    fn corrupt_values_are_refused() {
        let codec = Codec::new(None).expect("codec");
        assert!(codec.decode(&[ZSTD, 1, 2, 3]).is_err());
        assert!(codec.decode(&[9, 1]).is_err());
        assert!(codec.decode(&heap_ref(4)).is_err());
        assert_eq!(Stored::of(&heap_ref(4)), Ok(Stored::Heap(4)));
        assert!(Stored::of(&[HEAP, 1]).is_err());
    }
}
