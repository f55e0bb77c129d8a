//! Screenshots for `visual` checks (SPEC §2.1): headless Chromium, run as
//! a subprocess like any command sitekeeper runs for a site (a timeout
//! that kills its whole process group, output in `hooks.log`), renders the
//! page to a PNG; the `image` crate compares two of them pixel by pixel
//! and draws where they differ. Writes only the PNGs it is given paths for.

use std::path::Path;
use std::time::Duration;

use crate::apply::hooks::{self, HookEnv};

/// The window a page is rendered in: a common laptop's.
const WINDOW: &str = "--window-size=1280,800";

/// How far a channel may move before a pixel counts as changed: font
/// antialiasing and image decoding differ by a few levels between runs.
const TOLERANCE: u8 = 24;

/// Renders `url` with the browser at `browser` into the PNG `out`.
/// `Err` says why it could not.
pub(super) fn screenshot(
    browser: &Path,
    url: &str,
    out: &Path,
    env: &HookEnv<'_>,
    timeout: Duration,
) -> Result<(), String> {
    // A stale file from an earlier change must never pass for this one.
    match std::fs::remove_file(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", out.display())),
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // A fresh profile every time: nothing cached from the page before the
    // change, and no lock shared with another run.
    let profile = tempfile::tempdir().map_err(|e| format!("a browser profile: {e}"))?;
    let argv: Vec<String> = vec![
        browser.display().to_string(),
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.path().display()),
        WINDOW.into(),
        format!("--screenshot={}", out.display()),
        url.into(),
    ];
    hooks::run(&argv, env, timeout).map_err(|e| e.to_string())?;
    if out.is_file() {
        Ok(())
    } else {
        Err("the browser wrote no screenshot".into())
    }
}

/// How alike two screenshots are, 0..1: the share of pixels that did not
/// change. Writes `diff`: the changed pixels in red over a faded copy of
/// `after`. Screenshots of different sizes are not alike at all.
pub(super) fn compare(before: &Path, after: &Path, diff: &Path) -> Result<f64, String> {
    let open = |p: &Path| {
        image::open(p)
            .map(|i| i.to_rgb8())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let (a, b) = (open(before)?, open(after)?);
    if a.dimensions() != b.dimensions() {
        return Ok(0.0);
    }
    let (w, h) = a.dimensions();
    let mut changed: u64 = 0;
    let picture = image::RgbImage::from_fn(w, h, |x, y| {
        let (pa, pb) = (a.get_pixel(x, y), b.get_pixel(x, y));
        let moved =
            pa.0.iter()
                .zip(pb.0)
                .any(|(p, q)| p.abs_diff(q) > TOLERANCE);
        if moved {
            changed += 1;
            image::Rgb([255, 0, 0])
        } else {
            // Faded, so the red stands out while the page stays readable.
            image::Rgb(pb.0.map(|c| 170 + c / 3))
        }
    });
    picture
        .save(diff)
        .map_err(|e| format!("{}: {e}", diff.display()))?;
    let total = u64::from(w) * u64::from(h);
    if total == 0 {
        return Ok(1.0);
    }
    Ok(1.0 - changed as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_block_counts_its_pixels_and_is_drawn_red() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, d) = (
            dir.path().join("a.png"),
            dir.path().join("b.png"),
            dir.path().join("d.png"),
        );
        let page = |left: bool| {
            image::RgbImage::from_fn(100, 10, |x, _| {
                let block = if left { x < 10 } else { x >= 90 };
                if block {
                    image::Rgb([0, 0, 200])
                } else {
                    image::Rgb([255, 255, 255])
                }
            })
        };
        page(true).save(&a).unwrap();
        page(false).save(&b).unwrap();
        assert_eq!(compare(&a, &a, &d).unwrap(), 1.0);
        let alike = compare(&a, &b, &d).unwrap();
        assert!((alike - 0.8).abs() < 1e-9, "{alike}");
        let drawn = image::open(&d).unwrap().to_rgb8();
        assert_eq!(drawn.get_pixel(0, 0).0, [255, 0, 0]);
        assert_ne!(drawn.get_pixel(50, 0).0, [255, 0, 0]);
    }
}
