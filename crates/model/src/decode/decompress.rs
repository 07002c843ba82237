//! Content-Encoding: gzip and zstd bodies inflated within a hard byte limit.
//!
//! Output is read through `Read::take(limit + 1)`, so a decompression bomb stops one byte
//! past the limit instead of filling memory; the decoder never produces more than that.

use std::io::Read;

use super::{ContentEncoding, DecodeError};

/// Decompresses `body` into `out` (cleared first), failing once more than `limit` bytes
/// would be produced.
pub fn decompress_into(
    body: &[u8],
    encoding: ContentEncoding,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    out.clear();
    match encoding {
        ContentEncoding::Identity => {
            if body.len() > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            out.extend_from_slice(body);
            Ok(())
        }
        ContentEncoding::Gzip => {
            read_limited(flate2::read::MultiGzDecoder::new(body), limit, out, "gzip")
        }
        ContentEncoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|error| {
                DecodeError::Decompress {
                    encoding: "zstd",
                    message: error.to_string(),
                }
            })?;
            read_limited(decoder, limit, out, "zstd")
        }
    }
}

/// Reads at most `limit + 1` bytes: one byte past the limit proves the body too large
/// without inflating the rest of a bomb.
fn read_limited(
    reader: impl Read,
    limit: usize,
    out: &mut Vec<u8>,
    encoding: &'static str,
) -> Result<(), DecodeError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(out)
        .map_err(|error| DecodeError::Decompress {
            encoding,
            message: error.to_string(),
        })?;
    if out.len() > limit {
        out.clear();
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn compressed_bodies_round_trip_and_bombs_hit_the_limit() {
        let text = b"[{\"a\":1}]".repeat(100);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&text).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        let mut out = Vec::new();
        decompress_into(&gzip, ContentEncoding::Gzip, 1 << 20, &mut out).expect("gzip decodes");
        assert_eq!(out, text);
        let zstd = zstd::encode_all(&text[..], 3).expect("zstd");
        decompress_into(&zstd, ContentEncoding::Zstd, 1 << 20, &mut out).expect("zstd decodes");
        assert_eq!(out, text);

        let zeros = vec![0u8; 100 << 20];
        let bomb = zstd::encode_all(&zeros[..], 3).expect("zstd");
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decompress_into(&bomb, ContentEncoding::Zstd, 16 << 20, &mut out),
            Err(DecodeError::TooLarge { limit: 16 << 20 })
        );
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&zeros).expect("gzip");
        let bomb = gzip.finish().expect("gzip");
        assert_eq!(
            decompress_into(&bomb, ContentEncoding::Gzip, 16 << 20, &mut out),
            Err(DecodeError::TooLarge { limit: 16 << 20 })
        );
        assert!(
            out.capacity() <= (32 << 20),
            "bounded memory: {}",
            out.capacity()
        );
        assert!(matches!(
            decompress_into(b"not gzip", ContentEncoding::Gzip, 100, &mut out),
            Err(DecodeError::Decompress {
                encoding: "gzip",
                ..
            })
        ));
        assert_eq!(
            decompress_into(&[0; 11], ContentEncoding::Identity, 10, &mut out),
            Err(DecodeError::TooLarge { limit: 10 })
        );
    }

    #[test]
    fn corrupt_compressed_bodies_say_so_and_multi_part_streams_decode() {
        let mut out = Vec::new();
        let error = decompress_into(
            b"\x28\xb5\x2f\xfd garbage",
            ContentEncoding::Zstd,
            100,
            &mut out,
        )
        .expect_err("corrupt zstd");
        assert!(
            matches!(error, DecodeError::Decompress { encoding: "zstd", ref message } if !message.is_empty()),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("body could not be decompressed as zstd: "),
            "{error}"
        );
        // gzip with a truncated stream.
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&b"{\"a\":1}".repeat(50)).expect("gzip");
        let gzip = gzip.finish().expect("gzip");
        assert!(matches!(
            decompress_into(
                &gzip[..gzip.len() / 2],
                ContentEncoding::Gzip,
                1 << 20,
                &mut out
            ),
            Err(DecodeError::Decompress {
                encoding: "gzip",
                ..
            })
        ));
        // Concatenated gzip members and zstd frames are one body, as the formats define.
        let twice = [gzip.as_slice(), gzip.as_slice()].concat();
        decompress_into(&twice, ContentEncoding::Gzip, 1 << 20, &mut out).expect("two members");
        assert_eq!(out, b"{\"a\":1}".repeat(100));
        let frame = zstd::encode_all(&b"abc"[..], 1).expect("zstd");
        let frames = [frame.as_slice(), frame.as_slice()].concat();
        decompress_into(&frames, ContentEncoding::Zstd, 6, &mut out).expect("two frames");
        assert_eq!(out, b"abcabc");
        // Exactly at the limit is fine; one byte over is not.
        assert_eq!(
            decompress_into(&frames, ContentEncoding::Zstd, 5, &mut out),
            Err(DecodeError::TooLarge { limit: 5 })
        );
        assert!(out.is_empty(), "nothing half-decoded is left behind");
        decompress_into(b"0123456789", ContentEncoding::Identity, 10, &mut out).expect("fits");
        assert_eq!(out, b"0123456789");
    }
}
