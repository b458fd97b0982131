//! User photos. Delta queries do not track photos, so the directory tells each round which users to (re)check and
//! this module fetches `/users/{id}/photos/{size}/$value` (or `/photo/$value`) for them, at most
//! [`MAX_IN_FLIGHT`] at a time (Exchange Online's limit for photo requests per app).
//!
//! A photo failure never fails the round: the user is skipped (logged) and the directory keeps what it had, so it
//! will ask again in a later round. 404 means the user has no photo.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use super::http::{Counters, GraphHttp};
use super::unix_now;
use crate::directory::change::{PhotoChange, PhotoState};

/// Concurrent photo requests.
pub const MAX_IN_FLIGHT: usize = 4;

/// Photo failures logged one by one per round; the rest only count.
const LOGGED_FAILURES: usize = 5;

/// The photo URL for a user: `size` like `96x96`, or `None` for Graph's default size.
pub fn photo_url(graph_url: &str, user: &str, size: Option<&str>) -> String {
    let user = encode_segment(user);
    match size {
        Some(size) => format!("{graph_url}/v1.0/users/{user}/photos/{size}/$value"),
        None => format!("{graph_url}/v1.0/users/{user}/photo/$value"),
    }
}

/// Whether `size` looks like Graph's `{width}x{height}` photo sizes.
pub fn valid_size(size: &str) -> bool {
    let Some((w, h)) = size.split_once('x') else {
        return false;
    };
    let dim = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    dim(w) && dim(h)
}

/// Checks that a photo body is a JPEG or PNG image.
pub fn check_image(bytes: &[u8]) -> Result<(), String> {
    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF];
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(JPEG) || bytes.starts_with(PNG) {
        Ok(())
    } else {
        Err(format!(
            "not a JPEG or PNG image ({} bytes starting {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(4)]
        ))
    }
}

/// Fetches the photos of `users`; users whose photo could not be fetched are left out (and logged).
pub(crate) async fn fetch_photos(
    http: &GraphHttp,
    graph_url: &str,
    size: Option<&str>,
    users: Vec<String>,
    counters: &Counters,
) -> Vec<PhotoChange> {
    let total = users.len();
    let failures = AtomicUsize::new(0);
    let failures = &failures;
    let mut photos: Vec<PhotoChange> = stream::iter(users)
        .map(|user| async move {
            let url = photo_url(graph_url, &user, size);
            match fetch_one(http, &url, counters).await {
                Ok(state) => Some(PhotoChange {
                    user,
                    state,
                    checked_at: unix_now(),
                }),
                Err(why) => {
                    // A missing permission fails every photo the same way; name the first few, count the rest.
                    if failures.fetch_add(1, Ordering::Relaxed) < LOGGED_FAILURES {
                        tracing::warn!(%user, %url, "skipping this user's photo until a later round: {why}");
                    } else {
                        tracing::debug!(%user, %url, "skipping this user's photo until a later round: {why}");
                    }
                    None
                }
            }
        })
        .buffer_unordered(MAX_IN_FLIGHT)
        .filter_map(|photo| async move { photo })
        .collect()
        .await;
    // Completion order depends on the network; report in a stable order.
    photos.sort_by(|a, b| a.user.cmp(&b.user));
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        tracing::warn!(
            failed,
            total,
            "some photos could not be fetched; they are retried in a later round"
        );
    }
    photos
}

async fn fetch_one(http: &GraphHttp, url: &str, counters: &Counters) -> Result<PhotoState, String> {
    let Some(photo) = http.get_photo(url, counters).await.map_err(|e| e.to_string())? else {
        return Ok(PhotoState::Absent);
    };
    check_image(&photo.bytes)?;
    // Graph's ETag identifies the photo version; without one, the content hash serves the same purpose.
    let etag = photo.etag.unwrap_or_else(|| {
        let digest = Sha256::digest(&photo.bytes);
        format!(
            "sha256:{}",
            digest.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    });
    Ok(PhotoState::Present {
        etag,
        jpeg: photo.bytes,
    })
}

/// Percent-encodes a path segment (user ids are GUIDs, but a UPN or anything else must not break the path).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_urls() {
        assert_eq!(
            photo_url(
                "https://graph.microsoft.com",
                "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
                Some("96x96")
            ),
            "https://graph.microsoft.com/v1.0/users/87d349ed-44d7-43e1-9a83-5f2406dee5bd/photos/96x96/$value"
        );
        assert_eq!(
            photo_url("https://g", "a/b?c", None),
            "https://g/v1.0/users/a%2Fb%3Fc/photo/$value"
        );
    }

    #[test]
    fn sizes_and_images_are_checked() {
        assert!(valid_size("96x96") && valid_size("648x648"));
        assert!(!valid_size("96") && !valid_size("x96") && !valid_size("96x96/../x") && !valid_size("large"));
        assert!(check_image(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]).is_ok());
        assert!(check_image(b"\x89PNG\r\n\x1a\n....").is_ok());
        assert!(check_image(b"<html>error</html>").unwrap_err().contains("not a JPEG"));
        assert!(check_image(b"").is_err());
    }
}
