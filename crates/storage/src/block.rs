//! The sample block codec of the embedded store: one series' samples of one
//! block window, timestamps and values compressed apart.
//!
//! Layout (format 2), all integers little-endian:
//!
//! ```text
//! u8 format = 2 | u32 count
//! timestamps: u8 0 = regular, i64 first, i64 step
//!           | u8 1 = pco,     u32 length, pco(i64 timestamps)
//! values:     u8 0..=MAX_DECIMALS = decimal, pco(i64 mantissas), value = m / 10^k
//!           | u8 FLOAT = pco(f64 values)
//! ```
//!
//! Scrape timestamps are usually evenly spaced, and most metric values are
//! decimals with few digits (counts, bytes, readings like `12.3`): those are
//! stored as integer mantissas, which `pco` packs far tighter than the bits
//! of the floats. Decoding repeats the exact division, so every value comes
//! back bit for bit. Format 1 (pco timestamps and pco floats) is still read.

use crate::{StorageError, model::Sample};

const FORMAT_1: u8 = 1;
const FORMAT_2: u8 = 2;
const TIMESTAMPS_REGULAR: u8 = 0;
const TIMESTAMPS_PCO: u8 = 1;
/// Most decimal places tried before values are stored as floats.
const MAX_DECIMALS: u8 = 9;
const VALUES_FLOAT: u8 = 255;
/// More samples than a block can hold (a 2 h window at 1 ms is 7.2 M):
/// a damaged header, not data.
const MAX_COUNT: usize = 1 << 26;
/// Mantissas beyond this are not exact in an f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Encodes samples (in timestamp order) into a block.
pub fn encode_block(samples: &[Sample]) -> Result<Vec<u8>, StorageError> {
    let count = u32::try_from(samples.len())
        .map_err(|_| StorageError::InvalidData("too many samples for one block".into()))?;
    let mut out = Vec::with_capacity(32 + samples.len());
    out.push(FORMAT_2);
    out.extend_from_slice(&count.to_le_bytes());
    let timestamps: Vec<i64> = samples.iter().map(|s| s.timestamp_ms).collect();
    match regular_step(&timestamps) {
        Some((first, step)) => {
            out.push(TIMESTAMPS_REGULAR);
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&step.to_le_bytes());
        }
        None => {
            let ts = compress(&timestamps, "timestamps")?;
            let len = u32::try_from(ts.len())
                .map_err(|_| StorageError::InvalidData("block too large".into()))?;
            out.push(TIMESTAMPS_PCO);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&ts);
        }
    }
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    match decimal_mantissas(&values) {
        Some((decimals, mantissas)) => {
            out.push(decimals);
            out.extend_from_slice(&compress(&mantissas, "values")?);
        }
        None => {
            out.push(VALUES_FLOAT);
            out.extend_from_slice(&compress(&values, "values")?);
        }
    }
    Ok(out)
}

/// Decodes a block written by [`encode_block`] (or by format 1), checking
/// its structure.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<Sample>, StorageError> {
    let mut reader = Reader { rest: bytes };
    let format = reader.u8("empty")?;
    let count = reader.u32()? as usize;
    if count > MAX_COUNT {
        return Err(corrupt(&format!("implausible sample count {count}")));
    }
    let (timestamps, values) = match format {
        FORMAT_1 => {
            let ts_len = reader.u32()? as usize;
            let ts = reader.take(ts_len, "truncated timestamps")?;
            (
                decompress(ts, "timestamps")?,
                decompress(reader.rest, "values")?,
            )
        }
        FORMAT_2 => {
            let timestamps = match reader.u8("truncated timestamps")? {
                TIMESTAMPS_REGULAR => {
                    let first = reader.i64()?;
                    let step = reader.i64()?;
                    (0..count as i64)
                        .map(|i| first.saturating_add(step.saturating_mul(i)))
                        .collect()
                }
                TIMESTAMPS_PCO => {
                    let len = reader.u32()? as usize;
                    decompress(reader.take(len, "truncated timestamps")?, "timestamps")?
                }
                other => return Err(corrupt(&format!("unknown timestamp encoding {other}"))),
            };
            let values = match reader.u8("truncated values")? {
                VALUES_FLOAT => decompress(reader.rest, "values")?,
                decimals @ 0..=MAX_DECIMALS => {
                    let scale = 10f64.powi(i32::from(decimals));
                    decompress::<i64>(reader.rest, "values")?
                        .into_iter()
                        .map(|m| m as f64 / scale)
                        .collect()
                }
                other => return Err(corrupt(&format!("unknown value encoding {other}"))),
            };
            (timestamps, values)
        }
        other => return Err(corrupt(&format!("unknown format {other}"))),
    };
    if timestamps.len() != count || values.len() != count {
        return Err(corrupt("sample count does not match"));
    }
    Ok(timestamps
        .into_iter()
        .zip(values)
        .map(|(timestamp_ms, value)| Sample {
            timestamp_ms,
            value,
        })
        .collect())
}

/// `(first, step)` when the timestamps are evenly spaced (and more than one).
fn regular_step(timestamps: &[i64]) -> Option<(i64, i64)> {
    let (&first, rest) = timestamps.split_first()?;
    let step = rest.first()?.checked_sub(first)?;
    let mut expected = first;
    for &ts in timestamps {
        if ts != expected {
            return None;
        }
        expected = expected.checked_add(step)?;
    }
    Some((first, step))
}

/// The fewest decimal places `k` such that every value is exactly
/// `m / 10^k` for an integer `m`, with those integers.
fn decimal_mantissas(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    'decimals: for decimals in 0..=MAX_DECIMALS {
        let scale = 10f64.powi(i32::from(decimals));
        let mut mantissas = Vec::with_capacity(values.len());
        for &v in values {
            let m = (v * scale).round();
            if !m.is_finite() || m.abs() > MAX_EXACT || (m / scale).to_bits() != v.to_bits() {
                continue 'decimals;
            }
            mantissas.push(m as i64);
        }
        return Some((decimals, mantissas));
    }
    None
}

fn compress<T: pco::data_types::Number>(
    numbers: &[T],
    what: &str,
) -> Result<Vec<u8>, StorageError> {
    pco::standalone::simple_compress(numbers, &pco::ChunkConfig::default())
        .map_err(|e| StorageError::Corrupt(format!("cannot compress {what}: {e}")))
}

fn decompress<T: pco::data_types::Number>(
    bytes: &[u8],
    what: &str,
) -> Result<Vec<T>, StorageError> {
    pco::standalone::simple_decompress(bytes).map_err(|e| corrupt(&format!("{what}: {e}")))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("sample block: {what}"))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StorageError> {
        if self.rest.len() < n {
            return Err(corrupt(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, StorageError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self) -> Result<u32, StorageError> {
        let raw = self.take(4, "truncated header")?;
        Ok(u32::from_le_bytes(
            raw.try_into().map_err(|_| corrupt("header"))?,
        ))
    }

    fn i64(&mut self) -> Result<i64, StorageError> {
        let raw = self.take(8, "truncated header")?;
        Ok(i64::from_le_bytes(
            raw.try_into().map_err(|_| corrupt("header"))?,
        ))
    }
}

/// Records (spans, log lines) written together, compressed together: a
/// format byte, then zstd over their postcard encoding. Records of one
/// batch share most of their strings (attribute keys, services, routes),
/// which zstd removes.
const CHUNK_FORMAT: u8 = 1;
/// zstd's default level: a good ratio at a few hundred MB/s.
const CHUNK_LEVEL: i32 = 3;
/// A chunk that would inflate beyond this is damaged, not data.
const MAX_CHUNK_BYTES: usize = 512 << 20;

pub fn encode_chunk<T: serde::Serialize>(records: &[T]) -> Result<Vec<u8>, StorageError> {
    let raw = postcard::to_stdvec(records)
        .map_err(|e| StorageError::Corrupt(format!("cannot encode records: {e}")))?;
    let mut out = vec![CHUNK_FORMAT];
    out.extend(
        zstd::bulk::compress(&raw, CHUNK_LEVEL)
            .map_err(|e| StorageError::Corrupt(format!("cannot compress records: {e}")))?,
    );
    Ok(out)
}

pub fn decode_chunk<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Vec<T>, StorageError> {
    let corrupt = |what: String| StorageError::Corrupt(format!("record chunk: {what}"));
    let (&format, body) = bytes.split_first().ok_or_else(|| corrupt("empty".into()))?;
    if format != CHUNK_FORMAT {
        return Err(corrupt(format!("unknown format {format}")));
    }
    let raw = zstd::bulk::decompress(body, MAX_CHUNK_BYTES).map_err(|e| corrupt(e.to_string()))?;
    postcard::from_bytes(&raw).map_err(|e| corrupt(e.to_string()))
}

/// Records compressed together but decodable one by one: zstd over
/// `u32 count | u32 end offset per record | postcard of each record`, so a
/// search that knows which records hold a term decodes only those.
const INDEXED_FORMAT: u8 = 2;

pub fn encode_indexed_chunk<T: serde::Serialize>(records: &[T]) -> Result<Vec<u8>, StorageError> {
    let encode_err =
        |e: postcard::Error| StorageError::Corrupt(format!("cannot encode records: {e}"));
    let mut bodies = Vec::new();
    let mut ends = Vec::with_capacity(records.len());
    for record in records {
        bodies.extend(postcard::to_stdvec(record).map_err(encode_err)?);
        ends.push(
            u32::try_from(bodies.len())
                .map_err(|_| StorageError::InvalidData("record chunk too large".into()))?,
        );
    }
    let mut raw = Vec::with_capacity(4 + 4 * ends.len() + bodies.len());
    raw.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    for end in &ends {
        raw.extend_from_slice(&end.to_le_bytes());
    }
    raw.extend(bodies);
    let mut out = vec![INDEXED_FORMAT];
    out.extend(
        zstd::bulk::compress(&raw, CHUNK_LEVEL)
            .map_err(|e| StorageError::Corrupt(format!("cannot compress records: {e}")))?,
    );
    Ok(out)
}

/// The records of an indexed chunk with their positions: all of them, or
/// only those at `positions`.
pub fn decode_indexed_chunk<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    positions: Option<&std::collections::BTreeSet<u32>>,
) -> Result<Vec<(u32, T)>, StorageError> {
    let corrupt = |what: String| StorageError::Corrupt(format!("record chunk: {what}"));
    let (&format, body) = bytes.split_first().ok_or_else(|| corrupt("empty".into()))?;
    if format != INDEXED_FORMAT {
        return Err(corrupt(format!("unknown format {format}")));
    }
    let raw = zstd::bulk::decompress(body, MAX_CHUNK_BYTES).map_err(|e| corrupt(e.to_string()))?;
    let word = |at: usize| -> Result<usize, StorageError> {
        raw.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b| u32::from_le_bytes(b) as usize)
            .ok_or_else(|| corrupt("truncated offsets".into()))
    };
    let count = word(0)?;
    let table_end = 4usize
        .checked_add(
            count
                .checked_mul(4)
                .ok_or_else(|| corrupt("bad count".into()))?,
        )
        .ok_or_else(|| corrupt("bad count".into()))?;
    let bodies = raw
        .get(table_end..)
        .ok_or_else(|| corrupt("truncated offsets".into()))?;
    let mut out = Vec::new();
    let mut start = 0usize;
    for i in 0..count {
        let end = word(4 + 4 * i)?;
        if positions.is_none_or(|p| p.contains(&(i as u32))) {
            let body = bodies
                .get(start..end)
                .ok_or_else(|| corrupt(format!("record {i} out of bounds")))?;
            out.push((
                i as u32,
                postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?,
            ));
        }
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ts: impl Fn(i64) -> i64, value: impl Fn(i64) -> f64) -> Vec<Sample> {
        (0..720)
            .map(|i| Sample {
                timestamp_ms: ts(i),
                value: value(i),
            })
            .collect()
    }

    fn round_trip(samples: &[Sample]) -> Vec<u8> {
        let block = encode_block(samples).unwrap();
        let back = decode_block(&block).unwrap();
        assert_eq!(back.len(), samples.len());
        for (a, b) in back.iter().zip(samples) {
            assert_eq!(a.timestamp_ms, b.timestamp_ms);
            assert_eq!(
                a.value.to_bits(),
                b.value.to_bits(),
                "{} vs {}",
                a.value,
                b.value
            );
        }
        block
    }

    #[test]
    fn every_value_comes_back_bit_for_bit() {
        let regular = |i| 1_700_000_000_000 + i * 10_000;
        let jittered = |i: i64| 1_700_000_000_000 + i * 10_000 + (i * 7919) % 13;
        // decimals with one place, integers, negative zero and huge values
        let decimal = round_trip(&samples(regular, |i| ((i % 7) - 3) as f64 / 10.0));
        round_trip(&samples(jittered, |i| (i * 1000) as f64));
        round_trip(&samples(regular, |i| if i % 2 == 0 { -0.0 } else { 1e300 }));
        round_trip(&samples(regular, |i| (i as f64) * 1e-12));
        round_trip(&samples(regular, |i| f64::MAX / (i + 1) as f64));
        // values that are no short decimal are kept as floats
        let float = round_trip(&samples(regular, |i| ((i as f64) * 0.37).sin()));
        assert_eq!(float[1 + 4 + 1 + 16], VALUES_FLOAT);
        assert_eq!(decimal[1 + 4 + 1 + 16], 1, "one decimal place detected");
        assert_eq!(decimal[5], TIMESTAMPS_REGULAR);
        assert!(
            decimal.len() < 720 / 2,
            "regular decimal data packs below half a byte per sample: {} bytes",
            decimal.len()
        );
        // one sample, and none
        round_trip(&samples(regular, |_| 1.5)[..1]);
        round_trip(&[]);
    }

    #[test]
    fn damage_is_detected() {
        let block = encode_block(&samples(|i| i * 10_000 + i % 3, |i| i as f64 * 0.25)).unwrap();
        assert!(decode_block(&block[..block.len() / 2]).is_err());
        assert!(decode_block(&[]).is_err());
        let mut bad = block.clone();
        bad[0] = 99;
        let error = decode_block(&bad).unwrap_err().to_string();
        assert!(error.contains("unknown format 99"), "{error}");
        let mut bad = block;
        bad[5] = 7;
        let error = decode_block(&bad).unwrap_err().to_string();
        assert!(error.contains("timestamp encoding 7"), "{error}");
    }

    #[test]
    fn chunks_round_trip_and_detect_damage() {
        let records: Vec<(String, u64)> = (0..500)
            .map(|i| (format!("GET /api/{}", i % 7), i))
            .collect();
        let chunk = encode_chunk(&records).unwrap();
        assert!(
            chunk.len() < 500 * 4,
            "repetitive records compress: {} bytes",
            chunk.len()
        );
        assert_eq!(decode_chunk::<(String, u64)>(&chunk).unwrap(), records);
        assert!(decode_chunk::<(String, u64)>(&chunk[..chunk.len() / 2]).is_err());
        let mut bad = chunk;
        bad[0] = 7;
        assert!(
            decode_chunk::<(String, u64)>(&bad)
                .unwrap_err()
                .to_string()
                .contains("unknown format 7")
        );
    }

    #[test]
    fn indexed_chunks_decode_all_or_some() {
        let records: Vec<(u64, String)> =
            (0..300).map(|i| (i, format!("line {}", i % 9))).collect();
        let chunk = encode_indexed_chunk(&records).unwrap();
        let all: Vec<(u32, (u64, String))> = decode_indexed_chunk(&chunk, None).unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(all[299], (299, records[299].clone()));
        let some: std::collections::BTreeSet<u32> = [0, 7, 299, 5000].into();
        let picked: Vec<(u32, (u64, String))> = decode_indexed_chunk(&chunk, Some(&some)).unwrap();
        assert_eq!(
            picked.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 7, 299]
        );
        assert_eq!(picked[1].1, records[7]);
        assert!(decode_indexed_chunk::<(u64, String)>(&chunk[..chunk.len() / 2], None).is_err());
        let spans_format = encode_chunk(&records).unwrap();
        assert!(decode_indexed_chunk::<(u64, String)>(&spans_format, None).is_err());
    }

    #[test]
    fn format_1_blocks_are_still_read() {
        let samples = samples(|i| i * 10_000, |i| i as f64 * 0.5);
        let ts: Vec<i64> = samples.iter().map(|s| s.timestamp_ms).collect();
        let vs: Vec<f64> = samples.iter().map(|s| s.value).collect();
        let ts = compress(&ts, "t").unwrap();
        let vs = compress(&vs, "v").unwrap();
        let mut block = vec![FORMAT_1];
        block.extend_from_slice(&(samples.len() as u32).to_le_bytes());
        block.extend_from_slice(&(ts.len() as u32).to_le_bytes());
        block.extend_from_slice(&ts);
        block.extend_from_slice(&vs);
        assert_eq!(decode_block(&block).unwrap(), samples);
    }
}
