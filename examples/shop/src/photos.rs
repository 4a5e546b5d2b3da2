//! Product photos: resizing as a chord.
//!
//! `POST /products/{id}/photo` stores the original at `<data_dir>/photos/<id>.png` and calls
//! [`start`], which starts a workflow: a chord of three resize jobs (64, 256 and 512 pixels on
//! the longest side, with the `image` crate, each written to `<data_dir>/photos/<id>-<size>.png`)
//! whose callback, run once when all three are done, records the variants in
//! `photo_variants` (one row per product and size, replaced by a later upload).
//!
//! A seeded product has no photo: its resize jobs draw a placeholder original first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use celeriac::{chord, App, Flow, Step, TaskContext, TaskDef, TaskError, TaskOptions};
use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::deps::Deps;

/// The resize task (one size of one photo).
pub const RESIZE_TASK: &str = "shop.photo_resize";
/// The chord's callback, recording the variants.
pub const RECORD_TASK: &str = "shop.photo_variants";
/// The queue of both.
pub const PHOTO_QUEUE: &str = "photos";
/// The sizes made, in pixels on the longest side.
pub const SIZES: [u32; 3] = [64, 256, 512];

/// A resize job's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeArgs {
    /// The product.
    pub product_id: i64,
    /// The longest side of the variant, in pixels.
    pub size: u32,
}

/// A resized variant, as a resize job returns it and `photo_variants` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// The product.
    pub product_id: i64,
    /// The size asked for (the longest side).
    pub size: u32,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// The PNG file's size in bytes.
    pub bytes: u64,
}

/// Where a product's original photo is kept.
pub fn original_path(data_dir: &Path, product_id: i64) -> PathBuf {
    data_dir.join("photos").join(format!("{product_id}.png"))
}

/// Where a product's variant of `size` is written.
pub fn variant_path(data_dir: &Path, product_id: i64, size: u32) -> PathBuf {
    data_dir
        .join("photos")
        .join(format!("{product_id}-{size}.png"))
}

/// The resize task's defaults: queue `photos`, 3 attempts, a 60 s hard time limit.
pub fn resize_options() -> TaskOptions {
    TaskOptions {
        queue: PHOTO_QUEUE.to_string(),
        max_attempts: 3,
        hard_time_limit: Some(Duration::from_secs(60)),
        ..TaskOptions::default()
    }
}

/// The callback's defaults: queue `photos`, 5 attempts.
pub fn record_options() -> TaskOptions {
    TaskOptions {
        queue: PHOTO_QUEUE.to_string(),
        max_attempts: 5,
        hard_time_limit: Some(Duration::from_secs(30)),
        ..TaskOptions::default()
    }
}

/// The workflow for one product's photo: `chord(group(resize 64, resize 256, resize 512),
/// record)`.
pub fn flow(product_id: i64) -> Flow {
    let resize = |size| {
        let args = serde_json::to_value(ResizeArgs { product_id, size }).ok();
        Flow::from(Step::named(RESIZE_TASK, args, &resize_options()))
    };
    chord(
        SIZES.map(resize),
        Step::named(RECORD_TASK, None, &record_options()),
    )
}

/// Starts resizing a product's photo (the original must be at [`original_path`], or the
/// product must exist for a placeholder to be drawn); returns the workflow's id, whose state
/// `celeriac` and the dashboard show.
///
/// # Errors
/// The store's error.
pub async fn start(app: &App, product_id: i64) -> anyhow::Result<String> {
    let run = flow(product_id).start(app).await?;
    Ok(run.id().to_string())
}

/// The resize task and the chord's callback, with the shop's dependencies.
pub fn tasks(deps: Deps) -> Vec<TaskDef> {
    let deps = Arc::new(deps);
    let resize_deps = deps.clone();
    vec![
        TaskDef::from_fn(
            RESIZE_TASK,
            resize_options(),
            move |ctx: TaskContext, args: ResizeArgs| {
                let deps = resize_deps.clone();
                async move { resize(&ctx, &deps, args).await }
            },
        ),
        TaskDef::from_fn(
            RECORD_TASK,
            record_options(),
            move |_ctx: TaskContext, variants: Vec<Variant>| {
                let deps = deps.clone();
                async move {
                    record(&deps, &variants)
                        .await
                        .map_err(|e| TaskError::msg(format!("cannot record the variants: {e}")))
                }
            },
        ),
    ]
}

async fn resize(ctx: &TaskContext, deps: &Deps, args: ResizeArgs) -> Result<Variant, TaskError> {
    let ResizeArgs { product_id, size } = args;
    if size == 0 || size > 4096 {
        return Err(TaskError::fatal(format!(
            "size {size} is out of range (1..=4096)"
        )));
    }
    let original = original_path(&deps.data_dir, product_id);
    let exists = tokio::fs::try_exists(&original)
        .await
        .map_err(|e| TaskError::msg(format!("cannot look for {}: {e}", original.display())))?;
    if !exists {
        let known = sqlx::query("SELECT id FROM products WHERE id = $1")
            .bind(product_id)
            .fetch_optional(&deps.db.pool)
            .await
            .map_err(|e| TaskError::msg(format!("cannot read product {product_id}: {e}")))?
            .is_some();
        if !known {
            return Err(TaskError::fatal(format!(
                "product {product_id} has no photo at {} and does not exist",
                original.display()
            )));
        }
    }
    let out = variant_path(&deps.data_dir, product_id, size);
    let tmp_tag = ctx.job_id().to_string();
    ctx.blocking(move || -> Result<Variant, TaskError> {
        if !exists {
            write_placeholder(&original, product_id, &tmp_tag)?;
        }
        let img = decode(&original)?;
        let small = img.resize(size, size, FilterType::Triangle);
        let tmp = out.with_extension(format!("png.{tmp_tag}.tmp"));
        small
            .save_with_format(&tmp, ImageFormat::Png)
            .and_then(|()| std::fs::rename(&tmp, &out).map_err(image::ImageError::IoError))
            .map_err(|e| TaskError::msg(format!("cannot write {}: {e}", out.display())))?;
        let bytes = std::fs::metadata(&out)
            .map_err(|e| TaskError::msg(format!("cannot read {}: {e}", out.display())))?
            .len();
        Ok(Variant {
            product_id,
            size,
            width: small.width(),
            height: small.height(),
            bytes,
        })
    })
    .await?
}

/// The largest original accepted, in pixels on each side.
pub const MAX_SIDE: u32 = 8192;

/// Reads an original photo, refusing one over [`MAX_SIDE`] or that is not a PNG (for good:
/// another attempt would not change it); a file that cannot be read is retried.
fn decode(path: &Path) -> Result<image::DynamicImage, TaskError> {
    let unreadable =
        |e: &dyn std::fmt::Display| TaskError::msg(format!("cannot read {}: {e}", path.display()));
    let mut reader = image::ImageReader::open(path).map_err(|e| unreadable(&e))?;
    reader.set_format(ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::IoError(e) => unreadable(&e),
        e => TaskError::fatal(format!("{} is not a readable PNG: {e}", path.display())),
    })
}

/// Draws a product's placeholder photo (800 × 600, colours from its id) at `path`.
fn write_placeholder(path: &Path, product_id: i64, tmp_tag: &str) -> Result<(), TaskError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TaskError::msg(format!("cannot create {}: {e}", dir.display())))?;
    }
    let (w, h) = (800u32, 600u32);
    let hue = (product_id.unsigned_abs() % 251) as u8;
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            hue.wrapping_add(((x / 40 + y / 40) % 2) as u8 * 64),
        ])
    });
    // Written aside and renamed: the three resize jobs may draw it at once.
    let tmp = path.with_extension(format!("png.{tmp_tag}.tmp"));
    img.save_with_format(&tmp, ImageFormat::Png)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(image::ImageError::IoError))
        .map_err(|e| TaskError::msg(format!("cannot write {}: {e}", path.display())))
}

/// Stores the variants (one row per product and size: a later upload replaces them);
/// returns how many.
///
/// # Errors
/// The database's error.
pub async fn record(deps: &Deps, variants: &[Variant]) -> Result<usize, sqlx::Error> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut tx = deps.db.pool.begin().await?;
    for v in variants {
        sqlx::query(
            "INSERT INTO photo_variants (product_id, size, width, height, bytes, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (product_id, size) DO UPDATE SET width = excluded.width, \
                 height = excluded.height, bytes = excluded.bytes, \
                 created_at_ms = excluded.created_at_ms",
        )
        .bind(v.product_id)
        .bind(i64::from(v.size))
        .bind(i64::from(v.width))
        .bind(i64::from(v.height))
        .bind(i64::try_from(v.bytes).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(variants.len())
}

/// The recorded variants of a product, smallest first.
///
/// # Errors
/// The database's error.
pub async fn variants(deps: &Deps, product_id: i64) -> Result<Vec<Variant>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT product_id, size, width, height, bytes FROM photo_variants \
         WHERE product_id = $1 ORDER BY size",
    )
    .bind(product_id)
    .fetch_all(&deps.db.pool)
    .await?;
    let num = |r: &sqlx::any::AnyRow, c: &str| -> Result<u32, sqlx::Error> {
        let v: i64 = r.try_get(c)?;
        u32::try_from(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    rows.iter()
        .map(|r| {
            Ok(Variant {
                product_id: r.try_get("product_id")?,
                size: num(r, "size")?,
                width: num(r, "width")?,
                height: num(r, "height")?,
                bytes: u64::try_from(r.try_get::<i64, _>("bytes")?).unwrap_or_default(),
            })
        })
        .collect()
}
