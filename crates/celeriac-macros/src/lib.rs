//! `#[celeriac::task]`.
use proc_macro::TokenStream;

/// Turns an `async fn` into a Celeriac task.
#[proc_macro_attribute]
pub fn task(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
