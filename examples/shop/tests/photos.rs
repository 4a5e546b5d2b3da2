//! The photo chord with a real worker on a SQLite store: three real resizes written as PNG
//! files of the right sizes, one `photo_variants` row each, the callback run once; a seeded
//! product without a photo gets a drawn placeholder; a photo that is not a PNG and a product
//! that does not exist fail the workflow with the reason.

mod common;

use std::path::Path;
use std::time::Duration;

use celeriac::backend::WorkflowState;
use celeriac::{JobId, JobState, WorkflowHandle};
use shop::db::Db;
use shop::photos::{self, Variant, RECORD_TASK, RESIZE_TASK, SIZES};
use sqlx::Row;

type Env = common::TaskEnv;

async fn env() -> Env {
    common::task_env("smtp://127.0.0.1:1", Some("data"), photos::tasks, |app| app).await
}

async fn insert_product(db: &Db, id: i64) {
    sqlx::query(
        "INSERT INTO products (id, category, name, price_cents, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind("kitchen")
    .bind(format!("Product {id}"))
    .bind(1999_i64)
    .bind(0_i64)
    .execute(&db.pool)
    .await
    .expect("the product is stored");
}

/// Runs a worker on `photos` until the workflow `id` ends.
async fn run_workflow(e: &Env, id: &str) -> celeriac::backend::WorkflowRecord {
    let worker = common::start_worker(&e.app, common::worker_config(photos::PHOTO_QUEUE, 4));
    let handle = WorkflowHandle::new(
        id.parse::<JobId>().expect("a workflow id"),
        e.app.backend().clone(),
        e.app.client().clock().clone(),
    );
    let rec = handle
        .wait(Duration::from_secs(60))
        .await
        .expect("the workflow ends");
    worker.stop().await;
    rec
}

fn write_png(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("the folder is made");
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    img.save_with_format(path, image::ImageFormat::Png)
        .expect("the original is written");
}

async fn rows(db: &Db, product: i64) -> Vec<(i64, i64, i64, i64)> {
    sqlx::query(
        "SELECT size, width, height, bytes FROM photo_variants WHERE product_id = $1 ORDER BY size",
    )
    .bind(product)
    .fetch_all(&db.pool)
    .await
    .expect("the variants are read")
    .iter()
    .map(|r| {
        (
            r.try_get("size").expect("size"),
            r.try_get("width").expect("width"),
            r.try_get("height").expect("height"),
            r.try_get("bytes").expect("bytes"),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chord_writes_three_resized_files_and_records_them_once() {
    let e = env().await;
    insert_product(&e.db, 7).await;
    let original = photos::original_path(&e.deps.data_dir, 7);
    write_png(&original, 1000, 500);
    for size in SIZES {
        assert!(!photos::variant_path(&e.deps.data_dir, 7, size).exists());
    }

    let id = photos::start(&e.app, 7).await.expect("the workflow starts");
    let rec = run_workflow(&e, &id).await;
    assert_eq!(rec.state, WorkflowState::Succeeded, "{:?}", rec.error);
    assert_eq!(
        serde_json::from_slice::<usize>(rec.result.as_deref().expect("a result"))
            .expect("the callback's count"),
        3
    );

    // Three real files, 2:1 like the original, the longest side at each size.
    let mut expected = Vec::new();
    for size in SIZES {
        let path = photos::variant_path(&e.deps.data_dir, 7, size);
        let (w, h) = image::image_dimensions(&path).expect("a readable PNG");
        assert_eq!((w, h), (size, size / 2), "{}", path.display());
        let bytes = std::fs::metadata(&path).expect("exists").len();
        expected.push((i64::from(size), i64::from(w), i64::from(h), bytes as i64));
    }
    assert_eq!(rows(&e.db, 7).await, expected, "one row per size");
    assert_eq!(
        photos::variants(&e.deps, 7).await.expect("read"),
        expected
            .iter()
            .map(|&(s, w, h, b)| Variant {
                product_id: 7,
                size: s as u32,
                width: w as u32,
                height: h as u32,
                bytes: b as u64,
            })
            .collect::<Vec<_>>()
    );

    // The callback ran once: one job, one attempt, under the id the chord derives.
    let handle = WorkflowHandle::new(
        id.parse::<JobId>().expect("an id"),
        e.app.backend().clone(),
        e.app.client().clock().clone(),
    );
    let callback = e
        .app
        .client()
        .handle(handle.callback_id())
        .info()
        .await
        .expect("the callback's job");
    assert_eq!(callback.job.task, RECORD_TASK);
    assert_eq!(callback.state, JobState::Succeeded);
    assert_eq!(callback.job.attempts, 1);
    for i in 0..SIZES.len() {
        let member = e
            .app
            .client()
            .handle(handle.member_id(i))
            .info()
            .await
            .expect("a resize job");
        assert_eq!(member.job.task, RESIZE_TASK);
        assert_eq!(member.state, JobState::Succeeded);
    }
    // No stray temporary files.
    let names: Vec<String> = std::fs::read_dir(e.deps.data_dir.join("photos"))
        .expect("the folder")
        .map(|f| {
            f.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_product_without_a_photo_gets_a_placeholder() {
    let e = env().await;
    insert_product(&e.db, 42).await;
    assert!(!photos::original_path(&e.deps.data_dir, 42).exists());
    let id = photos::start(&e.app, 42)
        .await
        .expect("the workflow starts");
    let rec = run_workflow(&e, &id).await;
    assert_eq!(rec.state, WorkflowState::Succeeded, "{:?}", rec.error);
    let (w, h) = image::image_dimensions(photos::original_path(&e.deps.data_dir, 42))
        .expect("a placeholder was drawn");
    assert_eq!((w, h), (800, 600));
    let sizes: Vec<(i64, i64, i64)> = rows(&e.db, 42)
        .await
        .into_iter()
        .map(|(s, w, h, _)| (s, w, h))
        .collect();
    assert_eq!(sizes, vec![(64, 64, 48), (256, 256, 192), (512, 512, 384)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_photo_or_an_unknown_product_fails_the_workflow_with_the_reason() {
    let e = env().await;
    insert_product(&e.db, 5).await;
    let original = photos::original_path(&e.deps.data_dir, 5);
    std::fs::create_dir_all(original.parent().expect("a folder")).expect("made");
    std::fs::write(&original, b"this is not a PNG").expect("written");
    let id = photos::start(&e.app, 5).await.expect("the workflow starts");
    let rec = run_workflow(&e, &id).await;
    assert_eq!(rec.state, WorkflowState::Failed);
    let error = rec.error.expect("a reason");
    assert!(error.contains("not a readable PNG"), "{error}");
    assert!(rows(&e.db, 5).await.is_empty(), "nothing recorded");

    // Too large an original (over 8192 pixels on a side) is refused, not decoded.
    insert_product(&e.db, 6).await;
    write_png(
        &photos::original_path(&e.deps.data_dir, 6),
        photos::MAX_SIDE + 1,
        2,
    );
    let id = photos::start(&e.app, 6).await.expect("the workflow starts");
    let rec = run_workflow(&e, &id).await;
    assert_eq!(rec.state, WorkflowState::Failed);
    let error = rec.error.expect("a reason");
    assert!(error.contains("limit"), "{error}");
    assert!(rows(&e.db, 6).await.is_empty(), "nothing recorded");

    let id = photos::start(&e.app, 999)
        .await
        .expect("the workflow starts");
    let rec = run_workflow(&e, &id).await;
    assert_eq!(rec.state, WorkflowState::Failed);
    let error = rec.error.expect("a reason");
    assert!(
        error.contains("product 999") && error.contains("does not exist"),
        "{error}"
    );
    assert!(!e.dir.path().join("data/photos/999.png").exists());
}

#[test]
fn the_flow_is_a_chord_of_three_resizes_and_a_callback() {
    assert_eq!(
        photos::flow(1).describe(),
        "chord(group(shop.photo_resize, shop.photo_resize, shop.photo_resize), shop.photo_variants)"
    );
    photos::flow(1).validate().expect("a valid definition");
}
