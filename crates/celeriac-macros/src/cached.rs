//! `#[cached]`: an `async fn` whose results go through a Celeriac cache namespace.

use crate::options::parse_duration_ms;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, Meta, Pat, ReturnType, Token, Type};

/// The options of one `#[cached(..)]`.
struct CachedAttr {
    namespace: Option<String>,
    ttl_ms: u64,
    stale_ms: Option<u64>,
    negative_ms: Option<u64>,
    key: Option<String>,
    tags: Vec<String>,
    version: Option<u32>,
    format: Option<String>,
}

const KNOWN: &str = "namespace, ttl, stale, negative_ttl, key, tags, version, format";

fn lit_str(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

fn duration(expr: &Expr, name: &str, errors: &mut Vec<syn::Error>) -> Option<u64> {
    let Some(text) = lit_str(expr) else {
        errors.push(syn::Error::new(
            expr.span(),
            format!("`{name}` takes a duration string, like `{name} = \"60s\"`"),
        ));
        return None;
    };
    match parse_duration_ms(&text) {
        Ok(0) => {
            errors.push(syn::Error::new(
                expr.span(),
                format!("`{name}` must be longer than zero"),
            ));
            None
        }
        Ok(ms) => Some(ms),
        Err(e) => {
            errors.push(syn::Error::new(expr.span(), format!("`{name}`: {e}")));
            None
        }
    }
}

fn parse_attr(attr: TokenStream) -> syn::Result<CachedAttr> {
    let metas = syn::parse::Parser::parse2(Punctuated::<Meta, Token![,]>::parse_terminated, attr)?;
    let mut out = CachedAttr {
        namespace: None,
        ttl_ms: 60_000,
        stale_ms: None,
        negative_ms: None,
        key: None,
        tags: Vec::new(),
        version: None,
        format: None,
    };
    let mut errors = Vec::new();
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            errors.push(syn::Error::new(
                meta.span(),
                format!("expected `name = value`; the options are {KNOWN}"),
            ));
            continue;
        };
        let name = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let v = &nv.value;
        let need_str = |errors: &mut Vec<syn::Error>| {
            let s = lit_str(v);
            if s.is_none() {
                errors.push(syn::Error::new(
                    v.span(),
                    format!("`{name}` takes a string"),
                ));
            }
            s
        };
        match name.as_str() {
            "namespace" => out.namespace = need_str(&mut errors),
            "key" => out.key = need_str(&mut errors),
            "format" => {
                out.format = need_str(&mut errors);
                if let Some(f) = &out.format {
                    if !["json", "msgpack", "postcard"].contains(&f.as_str()) {
                        errors.push(syn::Error::new(
                            v.span(),
                            "`format` is one of \"json\", \"msgpack\", \"postcard\"",
                        ));
                    }
                }
            }
            "ttl" => {
                if let Some(ms) = duration(v, "ttl", &mut errors) {
                    out.ttl_ms = ms;
                }
            }
            "stale" => out.stale_ms = duration(v, "stale", &mut errors),
            "negative_ttl" => out.negative_ms = duration(v, "negative_ttl", &mut errors),
            "version" => match v {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(i), ..
                }) => match i.base10_parse::<u32>() {
                    Ok(n) => out.version = Some(n),
                    Err(e) => errors.push(syn::Error::new(v.span(), e)),
                },
                _ => errors.push(syn::Error::new(
                    v.span(),
                    "`version` takes a whole number, like `version = 2`",
                )),
            },
            "tags" => match v {
                Expr::Array(a) => {
                    for e in &a.elems {
                        match lit_str(e) {
                            Some(t) => out.tags.push(t),
                            None => errors.push(syn::Error::new(
                                e.span(),
                                "a tag is a string (it may name arguments: \"product:{id}\")",
                            )),
                        }
                    }
                }
                _ => errors.push(syn::Error::new(
                    v.span(),
                    "`tags` takes a list of strings, like `tags = [\"catalog\"]`",
                )),
            },
            other => errors.push(syn::Error::new(
                nv.path.span(),
                format!("unknown option `{other}`; the options are {KNOWN}"),
            )),
        }
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The error type `E` of a function returning `Result<T, E>`; `_` (inferred) when the
/// return type names none, as an alias like `io::Result<T>` does.
fn error_type(ret: &ReturnType) -> Type {
    if let ReturnType::Type(_, ty) = ret {
        if let Type::Path(p) = &**ty {
            if let Some(last) = p.path.segments.last() {
                if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(syn::GenericArgument::Type(t)) = args.args.iter().nth(1) {
                        return t.clone();
                    }
                }
            }
        }
    }
    syn::parse_quote!(_)
}

/// The value type cached, and whether the function returns a `Result`.
fn value_type(ret: &ReturnType) -> Result<(Type, bool), syn::Error> {
    let ReturnType::Type(_, ty) = ret else {
        return Err(syn::Error::new(
            ret.span(),
            "a #[cached] function returns the value to cache",
        ));
    };
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(syn::GenericArgument::Type(t)) = args.args.first() {
                        return Ok((t.clone(), true));
                    }
                }
            }
        }
    }
    Ok(((**ty).clone(), false))
}

pub(crate) fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error(),
    };
    let attr = match parse_attr(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error(),
    };
    match expand(&func, &attr) {
        Ok(t) => t,
        Err(e) => e.to_compile_error(),
    }
}

fn expand(func: &ItemFn, attr: &CachedAttr) -> syn::Result<TokenStream> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "#[cached] goes on an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a #[cached] function cannot be generic",
        ));
    }
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a #[cached] function cannot take `self`",
                ))
            }
            FnArg::Typed(t) => {
                if matches!(&*t.ty, Type::Reference(_)) {
                    return Err(syn::Error::new(
                        t.ty.span(),
                        "a #[cached] function takes owned arguments (they move into the loader)",
                    ));
                }
                match &*t.pat {
                    Pat::Ident(i) if i.by_ref.is_none() && i.subpat.is_none() => {
                        names.push(i.ident.clone())
                    }
                    other => {
                        return Err(syn::Error::new(
                            other.span(),
                            "a #[cached] function's arguments are plain names",
                        ))
                    }
                }
            }
        }
    }
    let (value_ty, fallible) = value_type(&sig.output)?;
    let vis = &func.vis;
    let attrs = &func.attrs;
    let inputs = &sig.inputs;
    let output = &sig.output;
    let body = &func.block;
    let name = &sig.ident;
    let namespace = attr.namespace.clone().unwrap_or_else(|| name.to_string());
    let key = match &attr.key {
        Some(k) => quote! { ::std::format!(#k) },
        None if names.is_empty() => quote! { ::std::string::String::from("()") },
        None => quote! { ::std::format!("{:?}", (#(&#names,)*)) },
    };
    let tags = attr.tags.iter().map(|t| quote! { ::std::format!(#t) });
    let ttl = attr.ttl_ms;
    let mut options = quote! { .ttl(::std::time::Duration::from_millis(#ttl)) };
    if let Some(ms) = attr.stale_ms {
        options.extend(quote! { .stale_for(::std::time::Duration::from_millis(#ms)) });
    }
    if let Some(ms) = attr.negative_ms {
        options.extend(quote! { .negative_ttl(::std::time::Duration::from_millis(#ms)) });
    }
    if let Some(v) = attr.version {
        options.extend(quote! { .version(#v) });
    }
    if let Some(f) = &attr.format {
        let variant = match f.as_str() {
            "msgpack" => format_ident!("MsgPack"),
            "postcard" => format_ident!("Postcard"),
            _ => format_ident!("Json"),
        };
        options.extend(quote! { .format(::celeriac::cache::Format::#variant) });
    }
    let uncached = format_ident!("__celeriac_uncached_{}", name);
    let copies: Vec<_> = names
        .iter()
        .map(|n| format_ident!("__celeriac_copy_{}", n))
        .collect();
    let span = Span::call_site();
    let load = if fallible {
        // Every caller that waited for a failed load returns its error: the cache hands each
        // the same `Arc<E>`, and the last one to take it unwraps it (the others clone it).
        let error_ty = error_type(&sig.output);
        let clone_error = quote_spanned! {error_ty.span()=>
            ::std::sync::Arc::try_unwrap(error)
                .unwrap_or_else(|shared| <#error_ty as ::std::clone::Clone>::clone(&shared))
        };
        quote_spanned! {span=>
            let __celeriac_read = __celeriac_cache
                .entry(__celeriac_key.as_str())
                .tags(__celeriac_tags)
                .try_get_with(move || async move {
                    #uncached(#(#names),*).await.map(::std::option::Option::Some)
                })
                .await;
            match __celeriac_read {
                ::std::result::Result::Ok(v) => ::std::result::Result::Ok(v),
                // The load failed, this call's or one it waited for: its error.
                ::std::result::Result::Err(::celeriac::cache::CacheError::Load { error, .. }) => {
                    ::std::result::Result::Err(#clone_error)
                }
                // The cache could not answer: run the function itself.
                ::std::result::Result::Err(_) => #uncached(#(#copies),*).await,
            }
        }
    } else {
        quote_spanned! {span=>
            let __celeriac_read = __celeriac_cache
                .entry(__celeriac_key.as_str())
                .tags(__celeriac_tags)
                .get_with(move || #uncached(#(#names),*))
                .await;
            match __celeriac_read {
                ::std::result::Result::Ok(v) => v,
                ::std::result::Result::Err(_) => #uncached(#(#copies),*).await,
            }
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis async fn #name(#inputs) #output {
            #[allow(clippy::too_many_arguments)]
            async fn #uncached(#inputs) #output #body

            static __CELERIAC_CACHE: ::celeriac::__private::tokio::sync::OnceCell<
                ::celeriac::cache::Cache<str, #value_ty, ::celeriac::AnyBackend>,
            > = ::celeriac::__private::tokio::sync::OnceCell::const_new();
            let __celeriac_cache = ::celeriac::__private::function_cache(&__CELERIAC_CACHE, || {
                ::celeriac::cache::Cache::<str, #value_ty, ()>::builder(#namespace) #options
            })
            .await;
            let ::std::option::Option::Some(__celeriac_cache) = __celeriac_cache else {
                return #uncached(#(#names),*).await;
            };
            let __celeriac_key: ::std::string::String = #key;
            let __celeriac_tags: ::std::vec::Vec<::std::string::String> =
                ::std::vec![#(#tags),*];
            #(let #copies = ::std::clone::Clone::clone(&#names);)*
            #load
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(attr: TokenStream, item: TokenStream) -> String {
        cached(attr, item).to_string()
    }

    #[test]
    fn bad_options_are_named() {
        let item = quote! { async fn f(id: u64) -> u64 { id } };
        let e = errors(quote! { ttl = "0s" }, item.clone());
        assert!(e.contains("longer than zero"), "{e}");
        let e = errors(quote! { ttl = "soon" }, item.clone());
        assert!(e.contains("not a duration"), "{e}");
        let e = errors(quote! { colour = "red" }, item.clone());
        assert!(e.contains("unknown option `colour`"), "{e}");
        let e = errors(quote! { tags = "x" }, item.clone());
        assert!(e.contains("list of strings"), "{e}");
        let e = errors(quote! { format = "xml" }, item);
        assert!(e.contains("postcard"), "{e}");
    }

    #[test]
    fn unusable_functions_are_refused() {
        let e = errors(quote! {}, quote! { fn f(id: u64) -> u64 { id } });
        assert!(e.contains("async fn"), "{e}");
        let e = errors(quote! {}, quote! { async fn f(id: &str) -> u64 { 1 } });
        assert!(e.contains("owned arguments"), "{e}");
        let e = errors(quote! {}, quote! { async fn f(id: u64) { } });
        assert!(e.contains("returns the value"), "{e}");
    }

    #[test]
    fn a_valid_function_expands() {
        let out = errors(
            quote! { namespace = "products", ttl = "1m", key = "{id}", tags = ["catalog"] },
            quote! { async fn product(id: u64) -> Result<String, std::io::Error> { Ok(id.to_string()) } },
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("\"products\""), "{out}");
    }
}
