//! Directory photos by URL, `/photo/<objectGUID>.jpg`: as synced, or scaled down with `?size=<pixels>` for
//! phones and apps that show a small picture and should not download a 648-pixel original for it.
//!
//! A scaled photo is made once per photo content and size (decoding and encoding a JPEG takes milliseconds,
//! always on a blocking thread) and kept in a cache bounded by bytes. The ETag is a hash of the photo's content
//! and the size, so it is the same on every replica and changes exactly when the picture does.

use bytes::Bytes;
use std::hash::{Hash, Hasher};

/// Sizes a client may ask for: at least this many pixels…
pub(crate) const MIN_SIZE: u32 = 16;
/// …and at most this many (Entra's largest photo is 648 pixels; larger asks get the original).
pub(crate) const MAX_SIZE: u32 = 1024;
/// JPEG quality of scaled photos: small pictures, where artefacts of lower settings show at once.
const QUALITY: u8 = 85;
/// Scaled photos kept: 48-pixel thumbnails are 2-3 KiB, so this holds a 100k-user tenant's at one size.
const CACHE_BYTES: u64 = 32 << 20;

/// Why a stored photo could not be scaled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PhotoError {
    #[error("the stored photo is not a readable JPEG or PNG: {0}")]
    Decode(image::ImageError),
    #[error("the scaled photo could not be encoded: {0}")]
    Encode(image::ImageError),
}

/// A stable tag of a photo's bytes (the same on every replica and across restarts).
pub(crate) fn content_tag(photo: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    photo.hash(&mut h);
    h.finish()
}

/// The ETag of a photo at `size` (`None`: as stored).
pub(crate) fn etag(tag: u64, size: Option<u32>) -> String {
    match size {
        Some(s) => format!("\"{tag:016x}-{s}\""),
        None => format!("\"{tag:016x}\""),
    }
}

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<(u64, u32), Bytes> for ByBytes {
    fn weight(&self, _: &(u64, u32), v: &Bytes) -> u64 {
        v.len() as u64 + 64
    }
}

/// Scaled photos by (content tag, size).
pub(crate) struct Cache {
    map: quick_cache::sync::Cache<(u64, u32), Bytes, ByBytes>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            map: quick_cache::sync::Cache::with_weighter(4096, CACHE_BYTES, ByBytes),
        }
    }
}

impl Cache {
    /// `photo` as a JPEG fitted into `size`×`size` pixels (`None`: at its own size), from the cache or made
    /// now (call it on a blocking thread). A JPEG that fits already is returned as it is; a PNG (Graph has
    /// some) is re-encoded, since the URL promises a JPEG.
    pub(crate) fn jpeg(&self, photo: &Bytes, tag: u64, size: Option<u32>) -> Result<Bytes, PhotoError> {
        if size.is_none() && is_jpeg(photo) {
            return Ok(photo.clone());
        }
        let key = (tag, size.unwrap_or(0));
        if let Some(hit) = self.map.get(&key) {
            return Ok(hit);
        }
        let out = scale(photo, size)?;
        self.map.insert(key, out.clone());
        Ok(out)
    }
}

fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Fit an image into `size`×`size`, keeping its aspect ratio, as a JPEG; a JPEG that fits already is returned
/// as it is (scaling up only adds bytes).
fn scale(photo: &Bytes, size: Option<u32>) -> Result<Bytes, PhotoError> {
    let format = if is_jpeg(photo) {
        image::ImageFormat::Jpeg
    } else {
        image::ImageFormat::Png
    };
    let img = image::load_from_memory_with_format(photo, format).map_err(PhotoError::Decode)?;
    let fits = size.is_none_or(|s| img.width() <= s && img.height() <= s);
    if fits && format == image::ImageFormat::Jpeg {
        return Ok(photo.clone());
    }
    // Triangle (bilinear) filtering over the whole source: smooth at a tenth of the size, unlike nearest
    // sampling, and a fraction of Lanczos's cost.
    let small = match size {
        Some(s) if !fits => img.resize(s, s, image::imageops::FilterType::Triangle),
        _ => img,
    }
    .into_rgb8();
    let mut out = Vec::with_capacity(8 << 10);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&small)
        .map_err(PhotoError::Encode)?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Bytes {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        Bytes::from(out)
    }

    fn dimensions(b: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory_with_format(b, image::ImageFormat::Jpeg).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn photos_are_fitted_into_the_size_keeping_their_shape() {
        let cache = Cache::default();
        let square = jpeg(240, 240);
        let small = cache.jpeg(&square, content_tag(&square), Some(48)).unwrap();
        assert_eq!(dimensions(&small), (48, 48));
        assert!(small.len() < square.len());
        let wide = jpeg(300, 150);
        assert_eq!(
            dimensions(&cache.jpeg(&wide, content_tag(&wide), Some(96)).unwrap()),
            (96, 48)
        );
        let tiny = jpeg(32, 32);
        assert_eq!(
            cache.jpeg(&tiny, content_tag(&tiny), Some(96)).unwrap(),
            tiny,
            "never scaled up"
        );
    }

    #[test]
    fn png_photos_become_jpegs() {
        let img = image::RgbImage::from_fn(64, 64, |x, _| image::Rgb([(x * 4) as u8, 0, 0]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let png = Bytes::from(png);
        let cache = Cache::default();
        for (size, dims) in [(None, (64, 64)), (Some(32), (32, 32))] {
            let out = cache.jpeg(&png, content_tag(&png), size).unwrap();
            assert!(is_jpeg(&out), "{size:?}");
            assert_eq!(dimensions(&out), dims);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cache = Cache::default();
        for bad in [&b""[..], b"\xff\xd8\xff\xe0 truncated", b"<html>not a photo</html>"] {
            let b = Bytes::copy_from_slice(bad);
            assert!(matches!(
                cache.jpeg(&b, content_tag(&b), Some(48)),
                Err(PhotoError::Decode(_))
            ));
        }
    }

    #[test]
    fn tags_follow_the_content_and_the_size() {
        let (a, b) = (jpeg(20, 20), jpeg(21, 20));
        assert_ne!(content_tag(&a), content_tag(&b));
        assert_eq!(content_tag(&a), content_tag(&a.clone()));
        assert_ne!(etag(1, Some(48)), etag(1, Some(96)));
        assert_ne!(etag(1, None), etag(1, Some(48)));
    }
}
