//! The compile errors of `#[celeriac::task]` and `#[celeriac::cached]`, as a user sees them:
//! each file in `tests/ui/` must fail to compile with exactly the messages in the `.stderr`
//! file beside it (after a deliberate change of a message, regenerate them with
//! `TRYBUILD=overwrite cargo test -p celeriac --test compile_fail`, and read them).

#[test]
fn macro_misuse_is_a_clear_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
