//! Thumbnails: the rules of their sizes and a bounded decoder, without I/O.
//!
//! Decoding is bounded twice: the image's declared dimensions are read from its
//! header first and refused above [`MAX_PIXELS`] (a decompression bomb declares huge
//! dimensions in a few bytes), and the decoder itself runs under `image`'s `Limits`
//! (dimensions and total allocation), so no input makes it allocate more than
//! [`MAX_DECODE_ALLOC`]. The source is read whole into memory, so it is bounded by
//! [`MAX_SOURCE_BYTES`] before anything is read.

use std::io::Cursor;

use beehive_common::Error;
use beehive_proto::v1::ThumbnailSize;
use image::{ImageFormat, ImageReader, Limits};

/// Largest image (in pixels) a thumbnail is made of: a 24-megapixel photo fits.
pub const MAX_PIXELS: u64 = 25_000_000;
/// Largest side accepted, whatever the other.
pub const MAX_SIDE: u32 = 16_384;
/// Most memory the decoder may allocate.
pub const MAX_DECODE_ALLOC: u64 = 160 * 1024 * 1024;
/// Largest stored image a thumbnail is made of.
pub const MAX_SOURCE_BYTES: u64 = 32 * 1024 * 1024;

/// The longest side of a thumbnail size (API.md: 160 or 640 px).
pub fn max_side(size: ThumbnailSize) -> Option<u32> {
    match size {
        ThumbnailSize::Small => Some(160),
        ThumbnailSize::Medium => Some(640),
        ThumbnailSize::Unspecified => None,
    }
}

/// A generated thumbnail.
#[derive(Debug)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

fn not_an_image() -> Error {
    Error::invalid(
        "file_id",
        "the file is not an image this server can thumbnail",
    )
}

fn too_large() -> Error {
    Error::invalid(
        "file_id",
        format!("the image is too large to thumbnail (at most {MAX_PIXELS} pixels)"),
    )
}

/// Whether content starting with `head` is an image format we decode.
pub fn is_image(head: &[u8]) -> bool {
    matches!(
        image::guess_format(head),
        Ok(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP)
    )
}

/// Makes a thumbnail of `source` no larger than `side` px on its longest side (never
/// upscaled): PNG when the image has transparency, JPEG otherwise. CPU-bound: call it
/// from a blocking thread.
pub fn generate(source: &[u8], side: u32) -> Result<Thumbnail, Error> {
    if !is_image(source) {
        return Err(not_an_image());
    }
    let reader = || {
        ImageReader::new(Cursor::new(source))
            .with_guessed_format()
            .map_err(|_| not_an_image())
    };
    let (width, height) = reader()?.into_dimensions().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        _ => not_an_image(),
    })?;
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(too_large());
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        _ => not_an_image(),
    })?;
    let thumb = if image.width() <= side && image.height() <= side {
        image
    } else {
        image.thumbnail(side, side)
    };
    let mut out = Cursor::new(Vec::new());
    let content_type = if thumb.color().has_alpha() {
        thumb
            .write_to(&mut out, ImageFormat::Png)
            .map_err(Error::internal)?;
        "image/png"
    } else {
        let rgb = thumb.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .encode_image(&rgb)
            .map_err(Error::internal)?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes: out.into_inner(),
        content_type,
        width: thumb.width(),
        height: thumb.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, alpha: bool) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        if alpha {
            image::RgbaImage::from_pixel(width, height, image::Rgba([10, 20, 30, 128]))
                .write_to(&mut out, ImageFormat::Png)
                .expect("encode");
        } else {
            image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]))
                .write_to(&mut out, ImageFormat::Png)
                .expect("encode");
        }
        out.into_inner()
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// A PNG that declares `width` x `height` in a valid header, followed by a tiny
    /// data chunk: a decompression bomb needs no more to be dangerous, since a decoder
    /// sizes its buffers from the header.
    pub(crate) fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn thumbnails_fit_their_size_and_keep_the_aspect() {
        let source = png(1000, 500, false);
        let small = generate(&source, 160).expect("thumbnail");
        assert_eq!((small.width, small.height), (160, 80));
        assert_eq!(small.content_type, "image/jpeg");
        assert_eq!(
            image::guess_format(&small.bytes).expect("format"),
            ImageFormat::Jpeg
        );
        let medium = generate(&source, 640).expect("thumbnail");
        assert_eq!((medium.width, medium.height), (640, 320));
        // Transparency survives as PNG; small images are not upscaled.
        let tiny = generate(&png(40, 30, true), 160).expect("thumbnail");
        assert_eq!((tiny.width, tiny.height), (40, 30));
        assert_eq!(tiny.content_type, "image/png");
    }

    #[test]
    fn bombs_and_non_images_are_refused() {
        let bomb = png_header_only(100_000, 100_000);
        let error = generate(&bomb, 160).expect_err("bomb");
        assert!(error.to_string().contains("too large"), "{error}");
        let wide = png_header_only(20_000, 10);
        assert!(
            generate(&wide, 160)
                .expect_err("too wide")
                .to_string()
                .contains("too large")
        );
        let error = generate(b"just text, not an image", 160).expect_err("text");
        assert!(error.to_string().contains("not an image"));
        // A valid header over truncated data fails cleanly, not with a panic.
        let truncated = &png(100, 100, false)[..200];
        assert!(generate(truncated, 160).is_err());
        assert_eq!(max_side(ThumbnailSize::Unspecified), None);
    }
}
