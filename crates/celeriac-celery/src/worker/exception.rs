//! Rust task errors as the Python exceptions a client's `get()` raises.

use celeriac_core::task::TaskError;
use serde_json::Value;

use crate::results::{ExceptionInfo, BUILTIN_EXCEPTIONS, CELERY_EXCEPTIONS};

/// A fatal [`TaskError`] that Python clients raise as `class(message)`: a class of
/// `builtins` (`"ValueError"`) or `celery.exceptions` (`"Ignore"`...). The error's message is
/// `"<class>: <message>"`, Python's own last traceback line, which is how
/// [`exception_of`] reads it back.
pub fn python_error(class: &str, message: impl std::fmt::Display) -> TaskError {
    TaskError::fatal(format!("{class}: {message}"))
}

/// The exception stored for a failed Rust task: a message `"<Class>: <text>"` whose class is
/// a Python builtin or Celery exception becomes that class with `text` as its argument;
/// anything else becomes `builtins.RuntimeError(message)`.
pub fn exception_of(error: &TaskError) -> ExceptionInfo {
    exception_of_message(error.message())
}

pub(crate) fn exception_of_message(message: &str) -> ExceptionInfo {
    if let Some((class, text)) = message.split_once(": ") {
        let args = vec![Value::String(text.to_owned())];
        if BUILTIN_EXCEPTIONS.contains(&class) {
            if let Ok(e) = ExceptionInfo::builtin(class, args.clone()) {
                return e;
            }
        }
        if CELERY_EXCEPTIONS.contains(&class) {
            if let Ok(e) = ExceptionInfo::celery(class, args) {
                return e;
            }
        }
    }
    ExceptionInfo::runtime_error(message)
}

/// A traceback text in Python's shape, naming the Rust task: Python shows it as
/// `AsyncResult.traceback`.
pub(crate) fn traceback(task: &str, exc: &ExceptionInfo) -> String {
    format!(
        "Traceback (most recent call last):\n  File \"<rust task {task}>\", line 0, in run\n{}: {}\n",
        exc.exc_type,
        exc.message()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_read_from_the_message() {
        let e = exception_of(&python_error("ValueError", "boom"));
        assert_eq!(
            (e.exc_type.as_str(), e.exc_module.as_deref(), e.message()),
            ("ValueError", Some("builtins"), "boom".to_owned())
        );
        let e = exception_of(&TaskError::msg("disk full: /tmp"));
        assert_eq!(e.exc_type, "RuntimeError");
        assert_eq!(e.message(), "disk full: /tmp");
        let e = exception_of(&python_error("TaskRevokedError", "x"));
        assert_eq!(e.exc_module.as_deref(), Some("celery.exceptions"));
        assert!(traceback("t", &e).ends_with("TaskRevokedError: x\n"));
    }
}
