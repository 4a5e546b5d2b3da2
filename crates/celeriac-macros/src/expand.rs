//! The expansion of `#[celeriac::task]`.

use crate::options::{Encoding, Errors, TaskAttr};
use crate::signature::{self, Ctx, Ret, TaskFn};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Item, ItemFn, Visibility};

/// Expands the attribute: the function unchanged, then a module of the same name.
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let func: ItemFn = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(f)) => f,
        Ok(other) => {
            let err = syn::Error::new_spanned(
                other,
                "#[celeriac::task] applies to an `async fn` (a free function, not a method)",
            )
            .to_compile_error();
            return quote!(#item #err);
        }
        Err(e) => {
            let err = e.to_compile_error();
            return quote!(#item #err);
        }
    };
    let attr = TaskAttr::parse(attr, &mut errors);
    let module = signature::analyze(&func, &mut errors).map(|sig| module(&func, &attr, &sig));
    let errors = errors.to_compile_errors();
    quote! {
        #func
        #module
        #errors
    }
}

fn module(func: &ItemFn, attr: &TaskAttr, sig: &TaskFn) -> TokenStream {
    let vis = &func.vis;
    let item_vis = inner_visibility(vis);
    let fn_ident = &func.sig.ident;
    let fn_name = fn_ident.unraw().to_string();
    let name = attr
        .name
        .as_ref()
        .map_or_else(|| fn_name.clone(), |n| n.value.clone());
    let queue = attr.queue.as_ref().map_or("default", |q| q.value.as_str());

    // Arguments: their names and types in the generated functions, the `Args` type, and the
    // expression that builds `Args` from the names.
    let arg_idents: Vec<&Ident> = sig.args.iter().map(|a| &a.ident).collect();
    let arg_types: Vec<&syn::Type> = sig.args.iter().map(|a| &a.ty).collect();
    let (args_ty, args_value) = match (arg_idents.as_slice(), arg_types.as_slice()) {
        ([], _) => (quote!(()), quote!(())),
        ([one], [ty]) => (quote!(#ty), quote!(#one)),
        _ => (quote!((#(#arg_types,)*)), quote!((#(#arg_idents,)*))),
    };
    let params = quote!(#(#arg_idents: #arg_types),*);
    // The client parameter must not clash with a task parameter.
    let app = ["app", "client", "to"]
        .into_iter()
        .find(|c| !sig.args.iter().any(|a| a.ident == c))
        .map_or_else(
            || Ident::new("__celeriac_app", Span::call_site()),
            |c| Ident::new(c, Span::call_site()),
        );
    let client_ty = if sig.args.iter().any(|a| mentions_ident(&a.ty, "C")) {
        format_ident!("__C")
    } else {
        format_ident!("C")
    };

    let output_ty = match &sig.ret {
        Ret::Unit => quote!(()),
        Ret::Plain(t) | Ret::Result(t) => quote!(#t),
    };

    // The call of the original function inside `Task::run`.
    let (ctx_param, ctx_arg) = match sig.ctx {
        Some(Ctx::Ref) => (quote!(ctx), quote!(&ctx,)),
        Some(Ctx::Value) => (quote!(ctx), quote!(ctx,)),
        None => (quote!(_ctx), quote!()),
    };
    let (args_param, call_args) = match sig.args.len() {
        0 => (quote!(_args), quote!()),
        1 => (quote!(args), quote!(args)),
        n => {
            let fields = (0..n).map(syn::Index::from);
            (quote!(args), quote!(#(args.#fields),*))
        }
    };
    let call = quote!(super::#fn_ident(#ctx_arg #call_args).await);
    // Errors about the generated code point at the part of the function they are about.
    let here = |span: Span| Span::call_site().located_at(span);
    let args_span = here(func.sig.paren_token.span.join());
    let (output_span, convert) = match &func.sig.output {
        syn::ReturnType::Type(_, ty) => {
            let span = here(first_span(ty));
            (
                span,
                quote_spanned!(span=> __CeleriacError(e).__celeriac_into_task_error()),
            )
        }
        syn::ReturnType::Default => (args_span, quote!()),
    };
    let future_span = here(
        func.sig
            .asyncness
            .map_or_else(|| func.sig.fn_token.span, |a| a.span),
    );
    let (helpers, body) = match &sig.ret {
        Ret::Unit => (
            quote!(),
            quote! {
                #call;
                ::core::result::Result::Ok(())
            },
        ),
        Ret::Plain(_) => (quote!(), quote!(::core::result::Result::Ok(#call))),
        Ret::Result(_) => (
            error_conversion(),
            quote! {
                #call.map_err(|e| #convert)
            },
        ),
    };

    let options = options_expr(attr);
    let args_assoc = quote_spanned!(args_span=> type Args = self::Args;);
    let output_assoc = quote_spanned!(output_span=> type Output = self::Output;);
    let future = quote_spanned!(future_span=> async move { #body });
    let future_ty = quote_spanned! {future_span=>
        impl ::core::future::Future<
            Output = ::core::result::Result<Self::Output, ::celeriac::TaskError>,
        > + ::core::marker::Send
    };

    let mod_doc = format!(
        " The `{name}` task (queue `{queue}`), generated by `#[celeriac::task]` from \
         `async fn {fn_name}`."
    );
    let mod_doc2 = format!(
        " Register it with `App::builder().task::<{fn_name}::Task>()`, enqueue jobs with \
         `{fn_name}::enqueue(&app, ..)`, or adjust one with \
         `{fn_name}::with(..).delay(..).enqueue(&app)`."
    );
    let task_doc = format!(
        " The task type of `{fn_name}`: implements `celeriac::Task` under the name `{name}`."
    );
    let args_doc = match sig.args.len() {
        0 => " The task's arguments: none, stored as `null`.".to_string(),
        1 => " The task's argument, stored as the job's payload as it is.".to_string(),
        _ => " The task's arguments, stored as the job's payload as a tuple (a JSON array)."
            .to_string(),
    };

    quote! {
        #[doc = #mod_doc]
        #[doc = ""]
        #[doc = #mod_doc2]
        #vis mod #fn_ident {
            #[allow(unused_imports)]
            use super::*;

            #[doc = #task_doc]
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
            #item_vis struct Task;

            /// The name jobs of this task carry.
            #item_vis const NAME: &str = #name;

            #[doc = #args_doc]
            #item_vis type Args = #args_ty;

            /// The task's return value, stored as the job's result.
            #item_vis type Output = #output_ty;

            /// The task's defaults, as given to `#[celeriac::task(..)]`.
            #[allow(clippy::needless_update)]
            #item_vis fn options() -> ::celeriac::TaskOptions {
                #options
            }

            /// The task's type-erased definition, for `AppBuilder::register` or a `Registry`.
            #item_vis fn def() -> ::celeriac::TaskDef {
                ::celeriac::TaskDef::of::<Task>()
            }

            /// Enqueues one job of this task with its default options.
            ///
            /// # Errors
            /// When the arguments do not serialize or the backend refuses the job.
            // Send whenever the client is `Sync`, as `App` and `Client` are.
            #[allow(clippy::too_many_arguments, clippy::future_not_send)]
            #item_vis async fn enqueue<#client_ty: ::celeriac::AsClient>(
                #app: &#client_ty,
                #params
            ) -> ::celeriac::Result<::celeriac::JobHandle<#client_ty::Backend>> {
                ::celeriac::AsClient::client(#app).enqueue::<Task>(#args_value).await
            }

            /// Prepares one job of this task, to adjust before enqueueing it:
            /// `with(..).delay(..).priority(..).enqueue(&app)`.
            #item_vis fn with(#params) -> ::celeriac::Enqueue<Task> {
                ::celeriac::Enqueue::new(#args_value)
            }

            /// A step of this task in a workflow (`chain`, `group`, `chord`), with these
            /// arguments.
            #item_vis fn step(#params) -> ::celeriac::Step {
                ::celeriac::Step::of::<Task>(#args_value)
            }

            /// A step of this task in a workflow that takes the previous step's output as
            /// its arguments (after a group: the list of the members' outputs).
            #item_vis fn piped() -> ::celeriac::Step {
                ::celeriac::Step::piped::<Task>()
            }

            /// Enqueues one job of this task per item of `args`, all of them or none.
            ///
            /// # Errors
            /// When some arguments do not serialize or the backend refuses the batch; then no
            /// job is enqueued.
            #[allow(clippy::future_not_send)]
            #item_vis async fn enqueue_many<#client_ty: ::celeriac::AsClient>(
                #app: &#client_ty,
                args: impl ::core::iter::IntoIterator<Item = Args>,
            ) -> ::celeriac::Result<::std::vec::Vec<::celeriac::JobHandle<#client_ty::Backend>>> {
                ::celeriac::AsClient::client(#app).enqueue_many::<Task>(args).await
            }

            impl ::celeriac::Task for Task {
                const NAME: &'static str = self::NAME;
                #args_assoc
                #output_assoc

                fn options() -> ::celeriac::TaskOptions {
                    self::options()
                }

                fn run(
                    #ctx_param: ::celeriac::TaskContext,
                    #args_param: Self::Args,
                ) -> #future_ty {
                    #helpers
                    #future
                }
            }
        }
    }
}

/// The visibility of the generated module's items: the function's visibility, seen from one
/// module further in, so they reach exactly as far as the function does (and a private
/// function's argument types, private to its module, do not leak through `pub` items).
fn inner_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Public(_) => quote!(pub),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(r) => {
            let mut path = (*r.path).clone();
            if path.leading_colon.is_none() {
                if let Some(first) = path.segments.first_mut() {
                    let span = first.ident.span();
                    if first.ident == "self" {
                        first.ident = Ident::new("super", span);
                    } else if first.ident == "super" {
                        path.segments
                            .insert(0, syn::PathSegment::from(Ident::new("super", span)));
                    }
                }
            }
            quote!(pub(in #path))
        }
    }
}

/// Converts the task function's error into a `TaskError`: through `Into<TaskError>` when it
/// has it (`TaskError` itself, every `std::error::Error + Send + Sync`), or else through its
/// `Display` (`anyhow::Error`, `Box<dyn Error>`, `String`), as a retryable error. The choice is
/// made by method resolution: the by-value impl wins when it applies, the by-reference one is
/// the fallback.
fn error_conversion() -> TokenStream {
    quote! {
        struct __CeleriacError<E>(E);
        trait __CeleriacViaInto {
            fn __celeriac_into_task_error(self) -> ::celeriac::TaskError;
        }
        impl<E: ::core::convert::Into<::celeriac::TaskError>> __CeleriacViaInto for __CeleriacError<E> {
            fn __celeriac_into_task_error(self) -> ::celeriac::TaskError {
                self.0.into()
            }
        }
        trait __CeleriacViaDisplay {
            fn __celeriac_into_task_error(self) -> ::celeriac::TaskError;
        }
        impl<E: ::core::fmt::Display> __CeleriacViaDisplay for &__CeleriacError<E> {
            fn __celeriac_into_task_error(self) -> ::celeriac::TaskError {
                // `{:#}` shows the whole chain of an `anyhow::Error`.
                ::celeriac::TaskError::msg(::std::format!("{:#}", self.0))
            }
        }
    }
}

/// The body of `options()`: the defaults with the attribute's settings on top.
fn options_expr(attr: &TaskAttr) -> TokenStream {
    let millis = |ms: u64| quote!(::core::time::Duration::from_millis(#ms));
    let some_millis = |ms: u64| {
        let d = millis(ms);
        quote!(::core::option::Option::Some(#d))
    };
    let mut fields = Vec::new();
    if let Some(q) = &attr.queue {
        let q = &q.value;
        fields.push(quote!(queue: ::std::string::String::from(#q)));
    }
    if let Some(r) = &attr.retries {
        let attempts = r.value.saturating_add(1);
        fields.push(quote!(max_attempts: #attempts));
    }
    let mut backoff = Vec::new();
    if let Some(b) = &attr.backoff {
        let d = millis(b.value);
        backoff.push(quote!(base: #d));
    }
    if let Some(b) = &attr.backoff_max {
        let d = millis(b.value);
        backoff.push(quote!(cap: #d));
    }
    if let Some(j) = &attr.no_jitter {
        let jitter = !j.value;
        backoff.push(quote!(jitter: #jitter));
    }
    if !backoff.is_empty() {
        fields.push(quote! {
            backoff: ::celeriac::Backoff { #(#backoff,)* ..::celeriac::Backoff::default() }
        });
    }
    if let Some(t) = &attr.soft_time_limit {
        let d = some_millis(t.value);
        fields.push(quote!(soft_time_limit: #d));
    }
    if let Some(t) = &attr.time_limit {
        let d = some_millis(t.value);
        fields.push(quote!(hard_time_limit: #d));
    }
    if let Some(p) = &attr.priority {
        // Checked to be in 0..=9 at compile time, so the fallback never happens.
        let p = p.value;
        fields.push(quote!(priority: ::celeriac::Priority::clamped(#p)));
    }
    if let Some(i) = &attr.ignore_result {
        let i = i.value;
        fields.push(quote!(ignore_result: #i));
    }
    if let Some(t) = &attr.result_ttl {
        let d = millis(t.value);
        fields.push(quote!(result_ttl: #d));
    }
    if let Some(e) = &attr.encoding {
        let e = match e.value {
            Encoding::Json => quote!(::celeriac::Encoding::Json),
            Encoding::MsgPack => quote!(::celeriac::Encoding::MsgPack),
        };
        fields.push(quote!(encoding: #e));
    }
    if let Some(t) = &attr.expires {
        let d = some_millis(t.value);
        fields.push(quote!(expires: #d));
    }
    if attr.concurrency_limit.is_some() || attr.rate_limit.is_some() {
        let concurrency = match &attr.concurrency_limit {
            Some(n) => {
                let n = n.value;
                quote!(::core::option::Option::Some(#n))
            }
            None => quote!(::core::option::Option::None),
        };
        let rate = match &attr.rate_limit {
            Some(r) => {
                let (count, ms) = r.value;
                quote!(::core::option::Option::Some(::celeriac::Rate {
                    count: #count,
                    per: ::std::time::Duration::from_millis(#ms),
                }))
            }
            None => quote!(::core::option::Option::None),
        };
        fields.push(quote!(limits: ::celeriac::TaskLimits {
            concurrency: #concurrency,
            rate: #rate,
        }));
    }
    if let Some(b) = &attr.breaker {
        let b = &b.value;
        fields.push(quote!(breaker: ::core::option::Option::Some(::std::string::String::from(#b))));
    }
    if fields.is_empty() {
        quote!(::celeriac::TaskOptions::default())
    } else {
        quote! {
            ::celeriac::TaskOptions {
                #(#fields,)*
                ..::celeriac::TaskOptions::default()
            }
        }
    }
}

/// The span of a type's first token (a whole span needs nightly's `Span::join`).
fn first_span(ty: &syn::Type) -> Span {
    quote!(#ty)
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// True when `ident` appears anywhere in the type's tokens.
fn mentions_ident(ty: &syn::Type, ident: &str) -> bool {
    fn walk(tokens: TokenStream, ident: &str) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == ident,
            proc_macro2::TokenTree::Group(g) => walk(g.stream(), ident),
            _ => false,
        })
    }
    walk(quote!(#ty), ident)
}

#[cfg(test)]
mod tests {
    use super::task;
    use quote::quote;

    /// The expansion as text, with `compile_error!` messages intact.
    fn expand(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        task(attr, item).to_string()
    }

    fn errors_of(expanded: &str) -> Vec<String> {
        expanded
            .split("compile_error ! {")
            .skip(1)
            .map(|rest| {
                rest.split('}')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn a_valid_task_expands_without_errors() {
        let out = expand(
            quote!(
                queue = "emails",
                retries = 5,
                priority = 7,
                time_limit = "1m"
            ),
            quote!(
                pub async fn send_email(ctx: &TaskContext, email: Email) -> Result<Receipt, E> {
                    todo!()
                }
            ),
        );
        assert!(errors_of(&out).is_empty(), "{out}");
        assert!(out.contains("pub mod send_email"), "{out}");
        assert!(out.contains("pub struct Task"), "{out}");
        assert!(out.contains("max_attempts : 6u32"), "{out}");
        assert!(out.contains("Priority :: clamped (7u8)"), "{out}");
        assert!(out.contains("from_millis (60000u64)"), "{out}");
        assert!(out.contains("pub type Args = Email"), "{out}");
        assert!(out.contains("pub type Output = Receipt"), "{out}");
        assert!(out.contains("super :: send_email (& ctx , args)"), "{out}");
    }

    #[test]
    fn private_functions_get_items_visible_in_their_module() {
        let out = expand(
            quote!(),
            quote!(
                async fn ping() {}
            ),
        );
        assert!(out.contains("mod ping"), "{out}");
        assert!(!out.contains("pub mod ping"), "{out}");
        assert!(out.contains("pub (super) struct Task"), "{out}");
        let out = expand(
            quote!(),
            quote!(
                pub(super) async fn ping() {}
            ),
        );
        assert!(out.contains("pub (super) mod ping"), "{out}");
        assert!(out.contains("pub (in super :: super) struct Task"), "{out}");
    }

    #[test]
    fn paths_are_rebased_into_the_module() {
        let out = expand(
            quote!(),
            quote!(
                async fn t(a: self::A, b: super::B, c: Vec<Task>, d: crate::D) -> Output {}
            ),
        );
        assert!(errors_of(&out).is_empty(), "{out}");
        assert!(
            out.contains(
                "type Args = (super :: A , super :: super :: B , Vec < super :: Task > , crate :: D ,)"
            ),
            "{out}"
        );
        assert!(out.contains("type Output = super :: Output ;"), "{out}");
    }

    #[test]
    fn unknown_options_are_named_with_the_valid_ones() {
        let out = expand(
            quote!(queue = "q", bogus = 1),
            quote!(
                async fn t() {}
            ),
        );
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 1, "{out}");
        assert!(errors[0].contains("unknown option `bogus`"), "{out}");
        assert!(
            errors[0].contains("valid options: name, queue, retries"),
            "{out}"
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let out = expand(
            quote!(
                priority = 10,
                time_limit = "1m30",
                backoff = 5,
                encoding = "xml",
                queue
            ),
            quote!(
                async fn t() {}
            ),
        );
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors[0].contains("outside 0..=9"), "{errors:#?}");
        assert!(errors[1].contains("without a unit"), "{errors:#?}");
        assert!(errors[2].contains("takes a string literal"), "{errors:#?}");
        assert!(errors[3].contains("unknown encoding `xml`"), "{errors:#?}");
        assert!(errors[4].contains("`queue` needs a value"), "{errors:#?}");
        // The task is still generated, so no error about missing items follows.
        assert!(out.contains("struct Task"), "{out}");
    }

    #[test]
    fn contradictions_are_errors() {
        let out = expand(
            quote!(
                soft_time_limit = "1m",
                time_limit = "30s",
                retries = 1,
                retries = 2
            ),
            quote!(
                async fn t() {}
            ),
        );
        let errors = errors_of(&out);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].contains("more than once"), "{errors:#?}");
        assert!(
            errors[1].contains("`soft_time_limit` must be shorter"),
            "{errors:#?}"
        );
    }

    #[test]
    fn unusable_signatures_are_errors() {
        let cases = [
            (
                quote!(
                    fn t() {}
                ),
                "needs an `async fn`",
            ),
            (
                quote!(
                    async fn t<T>(x: T) {}
                ),
                "cannot be generic",
            ),
            (
                quote!(
                    async fn t(&self) {}
                ),
                "cannot take `self`",
            ),
            (
                quote!(
                    async fn t((a, b): (u8, u8)) {}
                ),
                "plain names",
            ),
            (
                quote!(
                    async fn t(s: &str) {}
                ),
                "must be owned",
            ),
            (
                quote!(
                    async fn t(x: impl Display) {}
                ),
                "`impl Trait`",
            ),
            (
                quote!(
                    async fn t(x: u8, c: &TaskContext) {}
                ),
                "first parameter",
            ),
            (
                quote!(
                    async fn t(c: &mut TaskContext) {}
                ),
                "borrowed mutably",
            ),
            (
                quote!(
                    async fn t() -> fmt::Result {}
                ),
                "success type",
            ),
            (
                quote!(
                    struct S;
                ),
                "applies to an `async fn`",
            ),
        ];
        for (item, message) in cases {
            let shown = item.to_string();
            let out = expand(quote!(), item);
            let errors = errors_of(&out);
            assert_eq!(errors.len(), 1, "{shown}: {errors:#?}");
            assert!(errors[0].contains(message), "{shown}: {errors:#?}");
            assert!(!out.contains("struct Task"), "{shown}: {out}");
        }
    }
}
