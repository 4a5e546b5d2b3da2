//! What the task function's signature says: context, arguments, return value.

use crate::options::Errors;
use proc_macro2::{Ident, Span};
use syn::{
    FnArg, GenericArgument, ItemFn, Pat, Path, PathArguments, PathSegment, ReturnType, Type,
    TypeParamBound,
};

/// How the task function takes its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// `ctx: &TaskContext`.
    Ref,
    /// `ctx: TaskContext`.
    Value,
}

/// One serialized argument.
pub(crate) struct Arg {
    /// Its name in the generated functions.
    pub ident: Ident,
    /// Its type, with paths adjusted to be read from inside the generated module.
    pub ty: Type,
}

/// What the task function returns.
pub(crate) enum Ret {
    /// Nothing (`()`): the output is `()`.
    Unit,
    /// A plain value, wrapped in `Ok`.
    Plain(Type),
    /// A `Result`; the output is its first type argument, the error is converted.
    Result(Type),
}

/// The analysed signature.
pub(crate) struct TaskFn {
    pub ctx: Option<Ctx>,
    pub args: Vec<Arg>,
    pub ret: Ret,
}

/// Checks the function and reads its signature; `None` (with `errors` filled) when it cannot
/// be a task.
pub(crate) fn analyze(f: &ItemFn, errors: &mut Errors) -> Option<TaskFn> {
    let sig = &f.sig;
    let before = errors.len();
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(c.span, "a task cannot be a `const fn`"));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            format!(
                "#[celeriac::task] needs an `async fn`: write `async fn {}(...)`",
                sig.ident
            ),
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new(u.span, "a task cannot be an `unsafe fn`"));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a task cannot have an `extern` ABI",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a task cannot be generic: its argument and return types must be concrete so jobs \
             can be decoded by name; write one task per type",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(v, "a task cannot be variadic"));
    }

    let mut ctx = None;
    let mut args: Vec<Arg> = Vec::new();
    let mut wildcards = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        let pt = match input {
            FnArg::Receiver(r) => {
                errors.push(syn::Error::new_spanned(
                    r,
                    "a task cannot take `self`: write a free `async fn` (call your method \
                     from it if needed)",
                ));
                continue;
            }
            FnArg::Typed(pt) => pt,
        };
        match context_kind(&pt.ty) {
            Some(Ok(kind)) if i == 0 => {
                ctx = Some(kind);
                continue;
            }
            Some(Ok(_)) => {
                errors.push(syn::Error::new_spanned(
                    &pt.ty,
                    "the task context must be the first parameter",
                ));
                continue;
            }
            Some(Err(e)) => {
                errors.push(e);
                continue;
            }
            None => {}
        }
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(p.ident.clone()),
            Pat::Wild(_) => {
                wildcards.push(args.len());
                Some(Ident::new("arg", Span::call_site()))
            }
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "task parameters must be plain names, like `email: Email` (destructure \
                     inside the function body instead)",
                ));
                None
            }
        };
        let mut ty = (*pt.ty).clone();
        rebase_type(&mut ty, Position::Arg, errors);
        if let Some(ident) = ident {
            args.push(Arg { ident, ty });
        }
    }
    // Name `_` parameters `arg0`, `arg1`, ... avoiding the names already taken.
    for index in wildcards {
        let mut n = index;
        let name = loop {
            let candidate = format!("arg{n}");
            if !args.iter().any(|a| a.ident == candidate) {
                break candidate;
            }
            n += 1;
        };
        if let Some(arg) = args.get_mut(index) {
            arg.ident = Ident::new(&name, Span::call_site());
        }
    }

    let ret = match &sig.output {
        ReturnType::Default => Ret::Unit,
        ReturnType::Type(_, ty) => match return_kind(ty) {
            Ok(Ret::Plain(mut t)) => {
                rebase_type(&mut t, Position::Output, errors);
                Ret::Plain(t)
            }
            Ok(Ret::Result(mut t)) => {
                rebase_type(&mut t, Position::Output, errors);
                Ret::Result(t)
            }
            Ok(Ret::Unit) => Ret::Unit,
            Err(e) => {
                errors.push(e);
                Ret::Unit
            }
        },
    };

    if errors.len() > before {
        return None;
    }
    Some(TaskFn { ctx, args, ret })
}

fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => peel(&g.elem),
        Type::Paren(p) => peel(&p.elem),
        other => other,
    }
}

fn last_ident(ty: &Type) -> Option<&Ident> {
    match peel(ty) {
        Type::Path(tp) if tp.qself.is_none() => tp.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

/// `Some` when the type is the task context (`&TaskContext`, `&celeriac::TaskContext`,
/// `TaskContext`), an error for `&mut TaskContext`.
fn context_kind(ty: &Type) -> Option<syn::Result<Ctx>> {
    match peel(ty) {
        Type::Reference(r) => {
            if last_ident(&r.elem)? != "TaskContext" {
                return None;
            }
            Some(match r.mutability {
                Some(m) => Err(syn::Error::new(
                    m.span,
                    "take the task context as `&TaskContext` (it cannot be borrowed mutably)",
                )),
                None => Ok(Ctx::Ref),
            })
        }
        other => (last_ident(other)? == "TaskContext").then_some(Ok(Ctx::Value)),
    }
}

/// Reads the return type: `Result<T, ..>` (by the last path segment), `()`, or a plain type.
fn return_kind(ty: &Type) -> syn::Result<Ret> {
    let peeled = peel(ty);
    if let Type::Tuple(t) = peeled {
        if t.elems.is_empty() {
            return Ok(Ret::Unit);
        }
    }
    if let Type::Path(tp) = peeled {
        if tp.qself.is_none() {
            if let Some(last) = tp.path.segments.last() {
                if last.ident == "Result" {
                    if let PathArguments::AngleBracketed(a) = &last.arguments {
                        if let Some(GenericArgument::Type(ok)) = a.args.first() {
                            return Ok(Ret::Result(ok.clone()));
                        }
                    }
                    return Err(syn::Error::new_spanned(
                        ty,
                        "#[celeriac::task] cannot see this `Result`'s success type; write it \
                         out, like `Result<(), MyError>` or `anyhow::Result<()>`",
                    ));
                }
            }
        }
    }
    Ok(Ret::Plain(ty.clone()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Arg,
    Output,
}

/// Adjusts a type written next to the function so it means the same inside the generated
/// module (`mod name { use super::*; ... }`), and rejects types a task cannot have:
/// - `self::X` becomes `super::X`, and `super::X` becomes `super::super::X`;
/// - `Task`, `Args` and `Output`, which the module defines itself, become `super::Task`...;
/// - `impl Trait` anywhere, and references in arguments (which are deserialized, so owned).
fn rebase_type(ty: &mut Type, pos: Position, errors: &mut Errors) {
    match ty {
        Type::Path(tp) => {
            match &mut tp.qself {
                Some(q) => rebase_type(&mut q.ty, pos, errors),
                None => rebase_path(&mut tp.path),
            }
            rebase_path_args(&mut tp.path, pos, errors);
        }
        Type::Reference(r) => {
            if pos == Position::Arg {
                errors.push(syn::Error::new(
                    r.and_token.span,
                    "task arguments are deserialized from the job's payload, so they must be \
                     owned: use e.g. `String` instead of `&str`, `Vec<T>` instead of `&[T]`",
                ));
            }
            rebase_type(&mut r.elem, pos, errors);
        }
        Type::ImplTrait(i) => errors.push(syn::Error::new(
            i.impl_token.span,
            "`impl Trait` is not allowed in a task's signature: name a concrete type",
        )),
        Type::Tuple(t) => {
            for e in t.elems.iter_mut() {
                rebase_type(e, pos, errors);
            }
        }
        Type::Array(a) => rebase_type(&mut a.elem, pos, errors),
        Type::Slice(s) => rebase_type(&mut s.elem, pos, errors),
        Type::Ptr(p) => rebase_type(&mut p.elem, pos, errors),
        Type::Paren(p) => rebase_type(&mut p.elem, pos, errors),
        Type::Group(g) => rebase_type(&mut g.elem, pos, errors),
        Type::TraitObject(t) => {
            for bound in t.bounds.iter_mut() {
                if let TypeParamBound::Trait(tb) = bound {
                    rebase_path(&mut tb.path);
                    rebase_path_args(&mut tb.path, pos, errors);
                }
            }
        }
        _ => {}
    }
}

fn rebase_path_args(path: &mut Path, pos: Position, errors: &mut Errors) {
    for seg in path.segments.iter_mut() {
        match &mut seg.arguments {
            PathArguments::AngleBracketed(a) => {
                for arg in a.args.iter_mut() {
                    match arg {
                        GenericArgument::Type(t) => rebase_type(t, pos, errors),
                        GenericArgument::AssocType(at) => rebase_type(&mut at.ty, pos, errors),
                        _ => {}
                    }
                }
            }
            PathArguments::Parenthesized(p) => {
                for t in p.inputs.iter_mut() {
                    rebase_type(t, pos, errors);
                }
                if let ReturnType::Type(_, t) = &mut p.output {
                    rebase_type(t, pos, errors);
                }
            }
            PathArguments::None => {}
        }
    }
}

/// Names the generated module defines, which would otherwise shadow the user's types.
const SHADOWED: &[&str] = &["Task", "Args", "Output"];

fn rebase_path(path: &mut Path) {
    if path.leading_colon.is_some() {
        return;
    }
    let Some(first) = path.segments.first_mut() else {
        return;
    };
    let span = first.ident.span();
    if first.ident == "self" {
        first.ident = Ident::new("super", span);
    } else if first.ident == "super" || SHADOWED.iter().any(|s| first.ident == s) {
        path.segments
            .insert(0, PathSegment::from(Ident::new("super", span)));
    }
}
