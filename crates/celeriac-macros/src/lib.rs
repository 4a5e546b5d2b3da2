//! `#[celeriac::task]` turns an `async fn` into a Celeriac task; `#[celeriac::cached]` puts
//! one behind a cache namespace.
//!
//! Use it through the `celeriac` crate (`#[celeriac::task]`); the generated code names only
//! `::celeriac::...` paths, so a crate depending on `celeriac` alone can use it.

mod cached;
mod expand;
mod options;
mod signature;

use proc_macro::TokenStream;

/// Turns an `async fn` into a Celeriac task.
///
/// (A runnable version is `crates/celeriac/examples/quickstart.rs`; this crate alone cannot
/// run it.)
///
/// ```text
/// #[celeriac::task(queue = "emails", retries = 5, backoff = "2s", time_limit = "60s")]
/// async fn send_email(ctx: &TaskContext, email: Email) -> Result<Receipt, TaskError> {
///     // ...
/// }
/// ```
///
/// The function stays as written. Next to it comes a module of the same name (functions and
/// modules live in different namespaces) and visibility, holding:
///
/// | item | what it is |
/// |------|------------|
/// | `Task` | a unit struct implementing `celeriac::Task`: `App::builder().task::<send_email::Task>()` |
/// | `NAME` | the task's name: the function's name, or `name = "..."` |
/// | `Args` | the payload type: the one argument's type itself (a struct is stored as a JSON object), a tuple `(A, B, ..)` for several (a JSON array), `()` for none |
/// | `Output` | the result type: `T` for a `Result<T, E>` (by the last path segment: `anyhow::Result<T>` too), the return type otherwise (`()` when there is none) |
/// | `options()` | the task's `TaskOptions` |
/// | `def()` | `TaskDef::of::<Task>()` |
/// | `enqueue(&app, args..)` | enqueues one job with the defaults |
/// | `with(args..)` | an `Enqueue` builder: `.delay(..)`, `.priority(..)`, `.queue(..)`... then `.enqueue(&app)` |
/// | `enqueue_many(&app, iter)` | enqueues one job per `Args` item, in one atomic batch |
///
/// # Parameters
/// The first parameter may be the task context, `&TaskContext` (any path ending in
/// `TaskContext`; by value works too). The others are the task's arguments: plain names (or
/// `_`) with owned, serde types.
///
/// # Return type
/// A `Result<T, E>` whose error converts into `TaskError` (any `std::error::Error + Send +
/// Sync`, or `TaskError` itself to choose fatal or retry-after), or else displays (such as
/// `anyhow::Error`, converted into a retryable error with its whole chain). Any other type is
/// the output itself.
///
/// # Options
/// All optional. Durations are strings in Celeriac's duration grammar (`celeriac::duration`):
/// a number and a unit, `ms`, `s`, `m`, `h` or `d`, or several added up (`"250ms"`, `"2s"`,
/// `"10m"`, `"1h30m"`, `"1.5s"`).
///
/// | option | effect |
/// |--------|--------|
/// | `name = "..."` | the task's name (default: the function's name) |
/// | `queue = "..."` | the queue its jobs go to (default: `"default"`) |
/// | `retries = N` | retries after the first attempt: `max_attempts = N + 1` |
/// | `backoff = "2s"` | the first retry's delay bound (doubles each retry) |
/// | `backoff_max = "10m"` | the cap on any retry delay |
/// | `no_jitter` | wait the backoff bound itself instead of a random delay below it |
/// | `soft_time_limit = "30s"` | the context's cancellation fires after this long |
/// | `time_limit = "60s"` | the attempt is abandoned after this long |
/// | `priority = 0..=9` | the default priority (9 runs first) |
/// | `ignore_result` | keep no result on success |
/// | `result_ttl = "1h"` | how long results are kept |
/// | `encoding = "json" \| "msgpack"` | payload and result serialization |
/// | `expires = "5m"` | jobs not started within this long end as expired |
/// | `concurrency_limit = 5` | at most this many jobs of the task run at once, across every worker |
/// | `rate_limit = "100/m"` | at most this many starts per period (`"10/s"`, `"5/30s"`), spaced evenly, across every worker |
///
/// Unknown options, malformed durations, a priority above 9 and contradictions (a soft limit
/// not below the hard one, `backoff` above `backoff_max`, `result_ttl` with `ignore_result`)
/// are compile errors, as are functions that are not `async`, generic, or take `self`.
///
/// # Limitations
/// The generated module reaches the function and its types through `super::`, so a task and
/// the types in its signature must be declared at module level: not inside a function body
/// (mind doctests, which wrap their code in `fn main` unless it has one; add `# fn main() {}`),
/// and not as a method in an `impl` block.
///
/// The module's items reach as far as the function does (`pub` for a `pub fn`, the enclosing
/// module for a private one), so a `pub` task needs `pub` argument and return types.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}

/// Puts an `async fn` behind a Celeriac cache namespace: a call with the same key returns
/// the cached value (L1 in process, L2 in the store), and the function runs only on a miss,
/// once per key across processes.
///
/// ```text
/// #[celeriac::cached(namespace = "products", ttl = "60s", stale = "10m",
///                    key = "{id}:{lang}", tags = ["catalog", "product:{id}"])]
/// async fn product(id: u64, lang: String) -> Result<Product, DbError> {
///     // ... the database query
/// }
/// ```
///
/// The store is the first `App`'s backend (or `celeriac::install_cache_store`); before one
/// is installed the function runs uncached. The cached value is the return type, or `T` of
/// a `Result<T, E>`: errors are never cached and reach the caller as the function returned
/// them; a stale value covers a failing call within `stale`. Concurrent calls with the same
/// key share one run, and when it fails each of them returns its error, so `E` implements
/// `Clone` (wrap one that does not in an `Arc`) and `Display`, and is `Send + Sync`.
/// Arguments are owned and `Clone`; the value is `Clone` and serde.
///
/// | option | effect |
/// |--------|--------|
/// | `namespace = ".."` | the cache namespace (default: the function's name) |
/// | `ttl = "60s"` | how long a value is fresh (default 60 s) |
/// | `stale = "10m"` | how long past that a value may be served while refreshing or when the function fails |
/// | `negative_ttl = "5s"` | with `Option<T>` values: how long `None` counts |
/// | `key = ".."` | the key, a format string over the arguments (default: all arguments, `Debug`) |
/// | `tags = [..]` | tags, format strings over the arguments, for `invalidate_tag` |
/// | `version = N` | the key version: change it when the value's shape changes |
/// | `format = "json" \| "msgpack" \| "postcard"` | the value's serialization in the store |
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    cached::cached(attr.into(), item.into()).into()
}
