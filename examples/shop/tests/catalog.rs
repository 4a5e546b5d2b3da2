//! The catalog through Celeriac's cache, with real HTTP servers, a real SQLite database and
//! a real Redis (celeriac-testkit): an update on one instance reaches the other's next
//! listing; with the cache off every request reads the database; listings keep answering
//! while Redis is down and the documented staleness bound holds.

// `Shop::open`'s future is deep.
#![recursion_limit = "256"]

mod common;

use celeriac_testkit::RedisServer;
use serde_json::Value;
use shop::catalog::{self, CatalogOptions, Listing, Updated};
use shop::shop::Shop;
use std::path::Path;
use std::time::{Duration, Instant};

/// A shop instance on the store `url`, the database `dir/shop.db` (shared by the instances
/// of a test), seeded small.
async fn open_shop(url: &str, dir: &Path, name: &str) -> Shop {
    common::open_shop(url, dir, name, 400, 4000).await
}

/// Serves the catalog's routes of `shop` with `opts`; their base URL.
async fn serve_catalog(shop: &Shop, opts: CatalogOptions) -> String {
    common::serve(
        catalog::routes_with(shop.clone(), opts)
            .await
            .expect("the catalog's routes"),
    )
    .await
}

async fn listing(client: &reqwest::Client, base: &str, category: &str) -> Listing {
    listing_page(client, base, category, 1).await
}

async fn listing_page(client: &reqwest::Client, base: &str, category: &str, page: i64) -> Listing {
    let r = client
        .get(format!("{base}/products?category={category}&page={page}"))
        .send()
        .await
        .expect("the listing answers");
    assert_eq!(r.status(), 200, "listing on {base}");
    r.json().await.expect("a listing")
}

fn price_of(l: &Listing, id: i64) -> i64 {
    l.products
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.price_cents)
        .expect("the product is on the page")
}

/// Changes a price in the database behind the service's back.
async fn set_price_directly(shop: &Shop, id: i64, price: i64) {
    sqlx::query("UPDATE products SET price_cents = $1 WHERE id = $2")
        .bind(price)
        .bind(id)
        .execute(&shop.deps.db.pool)
        .await
        .expect("the direct update");
}

async fn put_price(client: &reqwest::Client, base: &str, id: i64, price: i64) -> Updated {
    let r = client
        .put(format!("{base}/products/{id}"))
        .json(&serde_json::json!({ "price_cents": price }))
        .send()
        .await
        .expect("the update answers");
    assert_eq!(r.status(), 200, "the update succeeds");
    r.json().await.expect("the update's answer")
}

/// Long enough that nothing in these tests expires by itself: a change seen is a change
/// the invalidation carried.
fn long_ttl() -> CatalogOptions {
    CatalogOptions {
        ttl: Duration::from_secs(600),
        ..CatalogOptions::new(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_on_one_instance_is_seen_by_the_others_next_listing() {
    let redis = RedisServer::start().await.expect("redis starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let a = open_shop(&redis.url(), dir.path(), "a").await;
    let b = open_shop(&redis.url(), dir.path(), "b").await;
    let base_a = serve_catalog(&a, long_ttl()).await;
    let base_b = serve_catalog(&b, long_ttl()).await;
    let client = reqwest::Client::new();

    let first = listing(&client, &base_b, "books").await;
    assert_eq!(first.products.len(), 20, "a full page");
    assert!(first.total >= 20);
    // Best rated first.
    let ratings: Vec<f64> = first
        .products
        .iter()
        .map(|p| p.rating.unwrap_or(0.0))
        .collect();
    assert!(
        ratings.windows(2).all(|w| w[0] >= w[1]),
        "ordered by rating: {ratings:?}"
    );
    assert!(first.products.iter().all(|p| p.category == "books"));
    let id = first.products[3].id;
    let old = price_of(&first, id);

    // The listing is cached in B (and in the shared L2, so A reads it too): a change behind
    // the service's back does not show.
    set_price_directly(&b, id, old + 1).await;
    assert_eq!(
        price_of(&listing(&client, &base_b, "books").await, id),
        old,
        "B serves its cached listing"
    );
    assert_eq!(
        price_of(&listing(&client, &base_a, "books").await, id),
        old,
        "A reads the same cached listing from the L2"
    );

    // Page 2 of the same category, cached on B, then changed behind the cache's back.
    let page2 = listing_page(&client, &base_b, "books", 2).await;
    assert_eq!(page2.page, 2);
    assert_eq!(page2.products.len(), 20, "page 2 is full");
    let other = page2.products[0].id;
    assert_eq!(
        catalog::page_of(&b.deps.db.pool, "books", other)
            .await
            .expect("the rank query runs"),
        Some(2),
        "the rank query finds the page a product is listed on"
    );
    assert_eq!(
        catalog::page_of(&b.deps.db.pool, "books", id)
            .await
            .expect("rank"),
        Some(1)
    );
    let other_price = price_of(&page2, other);
    set_price_directly(&b, other, other_price + 11).await;

    let new = old + 500;
    let updated = put_price(&client, &base_a, id, new).await;
    assert_eq!(updated.product.price_cents, new);
    assert_eq!(updated.invalidated, "everywhere");
    assert_eq!(updated.stale_for_ms, 500, "the bound with the broadcast");

    // B's next listing: the broadcast is delivered in well under a millisecond, so the first
    // request normally sees it; a few tries allow for a scheduler that is slow to run the
    // subscriber. The ttl (10 minutes) cannot explain the change.
    let mut tries = 0;
    let seen = loop {
        tries += 1;
        let l = listing(&client, &base_b, "books").await;
        if price_of(&l, id) == new || tries == 50 {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(price_of(&seen, id), new, "B sees the update");
    eprintln!("B saw the update on request #{tries} after the PUT answered");
    assert!(tries <= 5, "B saw the update only on request #{tries}");

    // The product's own key too.
    let p: Value = common::get_json(client.get(format!("{base_b}/products/{id}"))).await;
    assert_eq!(p["price_cents"], new);

    // Only the product's page was invalidated: page 2 of the category is still the cached
    // one (the change behind the back stays hidden until its ttl).
    assert_eq!(
        price_of(&listing_page(&client, &base_b, "books", 2).await, other),
        other_price,
        "an update of a page-1 product leaves page 2 cached"
    );

    // Other categories were not invalidated: still the cached value after a change behind
    // the back.
    let toys = listing(&client, &base_b, "toys").await;
    let toy = toys.products[0].id;
    let toy_price = price_of(&toys, toy);
    set_price_directly(&b, toy, toy_price + 7).await;
    put_price(&client, &base_a, id, new + 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        price_of(&listing(&client, &base_b, "toys").await, toy),
        toy_price,
        "an update of books leaves the toys listing cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_every_listing_reads_the_database() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = common::sqlite_url(&dir.path().join("celeriac.db"));
    let shop = open_shop(&url, dir.path(), "solo").await;
    let uncached = common::serve(catalog::routes(shop.clone(), false).await.expect("routes")).await;
    let cached = serve_catalog(&shop, long_ttl()).await;
    let client = reqwest::Client::new();

    let first = listing(&client, &uncached, "garden").await;
    let id = first.products[0].id;
    let mut price = price_of(&first, id);
    assert_eq!(
        price_of(&listing(&client, &cached, "garden").await, id),
        price
    );
    for _ in 0..5 {
        price += 11;
        set_price_directly(&shop, id, price).await;
        assert_eq!(
            price_of(&listing(&client, &uncached, "garden").await, id),
            price,
            "without the cache, a change behind the back shows at once"
        );
    }
    // The same change through the cached routes does not show: the test can tell the two
    // apart.
    assert_eq!(
        price_of(&listing(&client, &cached, "garden").await, id),
        first.products[0].price_cents,
        "the cached routes still serve the listing they cached"
    );

    // The product page too.
    let p: Value = common::get_json(client.get(format!("{uncached}/products/{id}"))).await;
    assert_eq!(p["price_cents"], price);

    // Bad requests.
    for (path, status) in [
        ("/products", 400),
        ("/products?category=books&page=0", 400),
        ("/products?category=books&page=x", 400),
        ("/products/abc", 400),
        ("/products/999999", 404),
    ] {
        let r = client
            .get(format!("{uncached}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), status, "{path}");
    }
    let r = client
        .put(format!("{uncached}/products/{id}"))
        .json(&serde_json::json!({ "colour": "red" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 400, "an unknown field");
    let r = client
        .put(format!("{uncached}/products/999999"))
        .json(&serde_json::json!({ "price_cents": 5 }))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 404, "an unknown product");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_keep_answering_while_redis_is_down_within_the_bound() {
    let mut redis = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .expect("redis starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let a = open_shop(&redis.url(), dir.path(), "a").await;
    let b = open_shop(&redis.url(), dir.path(), "b").await;
    // A short ttl, so the bound without the broadcast is short too.
    let opts = CatalogOptions {
        ttl: Duration::from_secs(2),
        ..CatalogOptions::new(true)
    };
    let bound = opts.bound_without_broadcast();
    let base_a = serve_catalog(&a, opts.clone()).await;
    let base_b = serve_catalog(&b, opts.clone()).await;
    let client = reqwest::Client::new();

    let before = listing(&client, &base_b, "kitchen").await;
    listing(&client, &base_a, "kitchen").await;
    let id = before.products[0].id;
    let old = price_of(&before, id);

    redis.kill();
    let (host, port) = redis.host_port();
    assert!(common::refuses(&host, port).await, "Redis is really down");

    // Every listing answers: cached ones from L1, others (a cold key, a category never
    // read) from the database.
    for round in 0..10 {
        for base in [&base_a, &base_b] {
            let l = listing(&client, base, "kitchen").await;
            assert_eq!(price_of(&l, id), old, "round {round}");
            let cold = listing(&client, base, "music").await;
            assert_eq!(cold.products.len(), 20);
        }
    }

    // An update while Redis is down: A drops its own copies and says the others follow
    // within the bound.
    let new = old + 300;
    let updated = put_price(&client, &base_a, id, new).await;
    assert_eq!(updated.invalidated, "local");
    assert_eq!(
        updated.stale_for_ms,
        u64::try_from(bound.as_millis()).expect("ms")
    );
    let answered = Instant::now();
    assert_eq!(
        price_of(&listing(&client, &base_a, "kitchen").await, id),
        new,
        "A serves the update at once"
    );
    let mut stale_reads = 0;
    loop {
        let l = listing(&client, &base_b, "kitchen").await;
        if price_of(&l, id) == new {
            break;
        }
        stale_reads += 1;
        assert!(
            answered.elapsed() <= bound + Duration::from_millis(700),
            "B still serves the old price {:?} after the update answered (bound {bound:?})",
            answered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "with Redis down, B served the old listing {stale_reads} times, for {:?} (bound {bound:?})",
        answered.elapsed()
    );
    assert!(
        common::refuses(&host, port).await,
        "Redis was down the whole time"
    );

    // Redis comes back (with its AOF): listings answer throughout, and an update reaches B
    // through the broadcast again.
    redis.restart().await.expect("redis restarts");
    let back = Instant::now();
    let newer = new + 300;
    loop {
        let u = put_price(&client, &base_a, id, newer).await;
        for base in [&base_a, &base_b] {
            listing(&client, base, "kitchen").await;
        }
        if u.invalidated == "everywhere" {
            // Broadcast, but just after an outage: the others may still be resubscribing,
            // so the update promises the bound without the broadcast.
            assert_eq!(
                u.stale_for_ms,
                u64::try_from(bound.as_millis()).expect("ms")
            );
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(40),
            "the cache never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The broadcast works again; B follows at the latest within the bound (its subscription
    // may still be coming back, and then its L1 is flushed when it does).
    let sent = Instant::now();
    loop {
        if price_of(&listing(&client, &base_b, "kitchen").await, id) == newer {
            break;
        }
        assert!(
            sent.elapsed() <= bound + Duration::from_millis(700),
            "B never saw the update after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "after Redis came back, B saw the update after {:?}",
        sent.elapsed()
    );
}
