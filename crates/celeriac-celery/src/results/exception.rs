//! Exceptions as Celery stores them (`{"exc_type", "exc_message", "exc_module"}`) and how a
//! Python client turns them back into exception objects.
//!
//! Python resolves `exc_module` in `sys.modules` (already imported modules only) and walks
//! `exc_type` as an attribute path; a missing module or attribute gives a synthetic `Exception`
//! subclass of that name in `celery.exceptions`. If the path resolves to something that is not
//! an exception class (e.g. `os`/`system`), the *reader* raises `SecurityError` (§12.19), so
//! the constructors here only build pairs that resolve to exception classes:
//! [`ExceptionInfo::builtin`] and [`ExceptionInfo::celery`] check allowlists taken from Python
//! 3.11 and Celery 5.3–5.7; [`ExceptionInfo::custom`] uses a module no Python program imports
//! (a synthetic class on the Python side); [`ExceptionInfo::with_module`] accepts other modules
//! only for class names that read as exception classes.

use serde_json::{Map, Value};

use super::error::{Error, Result};
use crate::pyjson::py_repr;

/// The module [`ExceptionInfo::custom`] names: never importable, so Python creates a synthetic
/// exception class of the given name.
pub const CUSTOM_MODULE: &str = "celeriac.errors";

/// Exception classes of Python 3.11's `builtins`.
#[rustfmt::skip]
pub const BUILTIN_EXCEPTIONS: &[&str] = &[
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BaseExceptionGroup",
    "BlockingIOError", "BrokenPipeError", "BufferError", "BytesWarning", "ChildProcessError",
    "ConnectionAbortedError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
    "DeprecationWarning", "EOFError", "EncodingWarning", "EnvironmentError", "Exception",
    "ExceptionGroup", "FileExistsError", "FileNotFoundError", "FloatingPointError",
    "FutureWarning", "GeneratorExit", "IOError", "ImportError", "ImportWarning",
    "IndentationError", "IndexError", "InterruptedError", "IsADirectoryError", "KeyError",
    "KeyboardInterrupt", "LookupError", "MemoryError", "ModuleNotFoundError", "NameError",
    "NotADirectoryError", "NotImplementedError", "OSError", "OverflowError",
    "PendingDeprecationWarning", "PermissionError", "ProcessLookupError", "RecursionError",
    "ReferenceError", "ResourceWarning", "RuntimeError", "RuntimeWarning", "StopAsyncIteration",
    "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError", "SystemExit", "TabError",
    "TimeoutError", "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError",
    "UnicodeError", "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError",
    "Warning", "ZeroDivisionError",
];

/// Exception classes of `celery.exceptions` in every Celery from 5.3 to 5.7.
#[rustfmt::skip]
pub const CELERY_EXCEPTIONS: &[&str] = &[
    "AlreadyRegistered", "AlwaysEagerIgnored", "BackendError", "BackendGetMetaError",
    "BackendStoreError", "CDeprecationWarning", "CPendingDeprecationWarning",
    "CeleryCommandException", "CeleryError", "CeleryWarning", "ChordError", "ClickException",
    "DuplicateNodenameWarning", "FixupWarning", "Ignore", "ImproperlyConfigured",
    "IncompleteStream", "InvalidTaskError", "MaxRetriesExceededError", "NotConfigured",
    "NotRegistered", "OperationalError", "QueueNotFound", "Reject", "Retry", "RetryTaskError",
    "SecurityError", "SecurityWarning", "SoftTimeLimitExceeded", "SystemTerminate", "TaskError",
    "TaskPredicate", "TaskRevokedError", "Terminated", "TimeLimitExceeded", "TimeoutError",
    "WorkerLostError", "WorkerShutdown", "WorkerTerminate",
];

/// Class-name endings [`ExceptionInfo::with_module`] accepts for modules it cannot check.
const EXCEPTION_SUFFIXES: &[&str] = &["Error", "Exception", "Warning", "Exit", "Interrupt"];

/// A stored exception: the `result` of a FAILURE, RETRY or REVOKED record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    /// `exc_type`: the class's `__qualname__` (`"ValueError"`, `"Outer.Inner"`).
    pub exc_type: String,
    /// `exc_message`: the exception's args (usually a list; Python also accepts a bare value).
    pub exc_message: Value,
    /// `exc_module`: where Python looks the class up; `None` (absent) gives a synthetic class
    /// in `celery.backends.base`.
    pub exc_module: Option<String>,
}

/// The class a Python client raises for an [`ExceptionInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonClass {
    /// A class of `builtins` (`ValueError`).
    Builtin(String),
    /// A class of `celery.exceptions`.
    Celery(String),
    /// A class Python creates on the fly: `module.name` (`celery.exceptions.PanicError`).
    Synthetic {
        /// The synthetic class's module.
        module: String,
        /// Its name.
        name: String,
    },
    /// Whatever `module.type` is in the reading process (a module Rust cannot check).
    Resolved {
        /// `exc_module`.
        module: String,
        /// `exc_type`.
        name: String,
    },
}

impl ExceptionInfo {
    /// A class of Python's `builtins` (`"ValueError"`, `"RuntimeError"`, ...) with these args.
    ///
    /// # Errors
    /// [`Error::Exception`] when `class` is not a builtin exception class.
    pub fn builtin(class: &str, args: Vec<Value>) -> Result<Self> {
        if !BUILTIN_EXCEPTIONS.contains(&class) {
            return Err(Error::Exception {
                field: "exc_type",
                reason: format!("{class:?} is not an exception class of Python's builtins"),
            });
        }
        Ok(Self::unchecked(class, Some("builtins"), Value::Array(args)))
    }

    /// A class of `celery.exceptions` (`"TimeLimitExceeded"`, `"ChordError"`, ...).
    ///
    /// # Errors
    /// [`Error::Exception`] when `class` is not one of [`CELERY_EXCEPTIONS`].
    pub fn celery(class: &str, args: Vec<Value>) -> Result<Self> {
        if !CELERY_EXCEPTIONS.contains(&class) {
            return Err(Error::Exception {
                field: "exc_type",
                reason: format!("{class:?} is not an exception class of celery.exceptions"),
            });
        }
        Ok(Self::unchecked(
            class,
            Some("celery.exceptions"),
            Value::Array(args),
        ))
    }

    /// A custom class name (`"PanicError"`): stored with module [`CUSTOM_MODULE`], which Python
    /// never has, so it raises a synthetic `celery.exceptions.<name>` (an `Exception` subclass).
    ///
    /// # Errors
    /// [`Error::Exception`] when `name` is not a Python identifier.
    pub fn custom(name: &str, args: Vec<Value>) -> Result<Self> {
        if !is_identifier(name) {
            return Err(Error::Exception {
                field: "exc_type",
                reason: format!("{name:?} is not a Python identifier"),
            });
        }
        Ok(Self::unchecked(
            name,
            Some(CUSTOM_MODULE),
            Value::Array(args),
        ))
    }

    /// A class in any module (`"myapp.errors"`, `"PaymentError"`). `builtins` and
    /// `celery.exceptions` are checked against their allowlists; for other modules the class
    /// name (last segment) must end in `Error`, `Exception`, `Warning`, `Exit` or `Interrupt`,
    /// so that it cannot name a function or another non-exception (§12.19).
    ///
    /// # Errors
    /// [`Error::Exception`] naming the field that is not acceptable.
    pub fn with_module(module: &str, class: &str, args: Vec<Value>) -> Result<Self> {
        match module {
            "builtins" => return Self::builtin(class, args),
            "celery.exceptions" => return Self::celery(class, args),
            _ => {}
        }
        if !module.split('.').all(is_identifier) {
            return Err(Error::Exception {
                field: "exc_module",
                reason: format!("{module:?} is not a dotted Python module name"),
            });
        }
        if !class.split('.').all(is_identifier) {
            return Err(Error::Exception {
                field: "exc_type",
                reason: format!("{class:?} is not a (dotted) Python class name"),
            });
        }
        let last = class.rsplit('.').next().unwrap_or(class);
        if !EXCEPTION_SUFFIXES.iter().any(|s| last.ends_with(s)) {
            return Err(Error::Exception {
                field: "exc_type",
                reason: format!(
                    "{class:?} in module {module:?} may not be an exception class; use a name \
                     ending in Error/Exception/Warning, or ExceptionInfo::custom"
                ),
            });
        }
        Ok(Self::unchecked(class, Some(module), Value::Array(args)))
    }

    /// A generic error as Python sees it: `builtins.RuntimeError(message)`.
    pub fn runtime_error(message: impl Into<String>) -> Self {
        Self::unchecked("RuntimeError", Some("builtins"), single(message))
    }

    /// `builtins.ValueError(message)`.
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::unchecked("ValueError", Some("builtins"), single(message))
    }

    /// `celery.exceptions.TimeLimitExceeded(message)`: a hard time limit.
    pub fn time_limit_exceeded(message: impl Into<String>) -> Self {
        Self::unchecked(
            "TimeLimitExceeded",
            Some("celery.exceptions"),
            single(message),
        )
    }

    /// `celery.exceptions.TaskRevokedError(reason)`: `"expired"`, `"revoked"`, ...
    pub fn task_revoked(reason: impl Into<String>) -> Self {
        Self::unchecked(
            "TaskRevokedError",
            Some("celery.exceptions"),
            single(reason),
        )
    }

    /// `celery.exceptions.NotRegistered(task_name)`.
    pub fn not_registered(task_name: impl Into<String>) -> Self {
        Self::unchecked(
            "NotRegistered",
            Some("celery.exceptions"),
            single(task_name),
        )
    }

    /// `celery.exceptions.ChordError(message)`.
    pub fn chord_error(message: impl Into<String>) -> Self {
        Self::unchecked("ChordError", Some("celery.exceptions"), single(message))
    }

    /// `celery.exceptions.Retry(message)` (the exception of a RETRY record without `exc=`).
    pub fn retry(message: impl Into<String>) -> Self {
        Self::unchecked("Retry", Some("celery.exceptions"), single(message))
    }

    fn unchecked(exc_type: &str, exc_module: Option<&str>, exc_message: Value) -> Self {
        ExceptionInfo {
            exc_type: exc_type.to_owned(),
            exc_message,
            exc_module: exc_module.map(str::to_owned),
        }
    }

    /// Reads an exception dict as Python stores it (tolerant: `exc_message` may be a list or a
    /// bare value, `exc_module` may be absent or null). `None` when `value` is not an object
    /// with a string `exc_type`.
    pub fn from_json(value: &Value) -> Option<Self> {
        let map = value.as_object()?;
        let exc_type = map.get("exc_type")?.as_str()?.to_owned();
        Some(ExceptionInfo {
            exc_type,
            exc_message: map.get("exc_message").cloned().unwrap_or(Value::Null),
            exc_module: map
                .get("exc_module")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The dict as stored: `{"exc_type": ..., "exc_message": [...], "exc_module": ...}`.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("exc_type".into(), Value::String(self.exc_type.clone()));
        map.insert("exc_message".into(), self.exc_message.clone());
        if let Some(module) = &self.exc_module {
            map.insert("exc_module".into(), Value::String(module.clone()));
        }
        Value::Object(map)
    }

    /// The exception's args (`exc_message` as a list; a bare value is one arg).
    pub fn args(&self) -> Vec<Value> {
        match &self.exc_message {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        }
    }

    /// `str(exc)` as Python prints it for the common cases: the single arg as text, several
    /// args as their tuple repr, no args as `""`.
    pub fn message(&self) -> String {
        let args = self.args();
        match args.as_slice() {
            [] => String::new(),
            [Value::String(s)] => s.clone(),
            [one] => py_repr(one),
            many => format!(
                "({})",
                many.iter().map(py_repr).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Which class a Python client raises for it.
    pub fn python_class(&self) -> PythonClass {
        let name = self.exc_type.clone();
        match self.exc_module.as_deref() {
            None => PythonClass::Synthetic {
                module: "celery.backends.base".into(),
                name,
            },
            Some("builtins") if BUILTIN_EXCEPTIONS.contains(&name.as_str()) => {
                PythonClass::Builtin(name)
            }
            Some("celery.exceptions") if CELERY_EXCEPTIONS.contains(&name.as_str()) => {
                PythonClass::Celery(name)
            }
            Some("builtins" | "celery.exceptions" | CUSTOM_MODULE) => PythonClass::Synthetic {
                module: "celery.exceptions".into(),
                name,
            },
            Some(module) => PythonClass::Resolved {
                module: module.to_owned(),
                name,
            },
        }
    }

    /// `repr(exc)` as Python shows it (`ValueError('boom')`): what a chord's `ChordError`
    /// message quotes.
    pub fn py_repr(&self) -> String {
        let class = self.exc_type.rsplit('.').next().unwrap_or(&self.exc_type);
        let args = self.args();
        let inner = args.iter().map(py_repr).collect::<Vec<_>>().join(", ");
        format!("{class}({inner})")
    }
}

fn single(message: impl Into<String>) -> Value {
    Value::Array(vec![Value::String(message.into())])
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constructors_refuse_pairs_that_python_would_not_resolve_to_an_exception() {
        assert!(ExceptionInfo::builtin("ValueError", vec![json!("x")]).is_ok());
        assert!(ExceptionInfo::builtin("print", vec![]).is_err());
        assert!(ExceptionInfo::celery("ChordError", vec![]).is_ok());
        assert!(ExceptionInfo::celery("Celery", vec![]).is_err());
        assert!(ExceptionInfo::with_module("os", "system", vec![]).is_err());
        assert!(ExceptionInfo::with_module("os", "PathLike", vec![]).is_err());
        assert!(ExceptionInfo::with_module("builtins", "eval", vec![]).is_err());
        assert!(ExceptionInfo::with_module("os;x", "BadError", vec![]).is_err());
        assert!(ExceptionInfo::with_module("myapp.errors", "PaymentError", vec![]).is_ok());
        assert!(ExceptionInfo::custom("Panic Error", vec![]).is_err());
        let custom = ExceptionInfo::custom("PanicError", vec![json!("boom")]).expect("valid");
        assert_eq!(
            custom.python_class(),
            PythonClass::Synthetic {
                module: "celery.exceptions".into(),
                name: "PanicError".into()
            }
        );
    }

    #[test]
    fn json_round_trip_and_tolerant_reading() {
        let e = ExceptionInfo::value_error("bad");
        assert_eq!(
            e.to_json(),
            json!({"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"})
        );
        assert_eq!(ExceptionInfo::from_json(&e.to_json()), Some(e));
        let bare = ExceptionInfo::from_json(&json!({"exc_type": "KeyError", "exc_message": "k"}))
            .expect("an exception dict");
        assert_eq!(bare.args(), vec![json!("k")]);
        assert_eq!(bare.message(), "k");
        assert_eq!(
            bare.python_class(),
            PythonClass::Synthetic {
                module: "celery.backends.base".into(),
                name: "KeyError".into()
            }
        );
        assert_eq!(ExceptionInfo::from_json(&json!({"exc_message": []})), None);
    }

    #[test]
    fn repr_matches_python() {
        let e = ExceptionInfo::value_error("inchord");
        assert_eq!(e.py_repr(), "ValueError('inchord')");
        let many = ExceptionInfo::builtin(
            "KeyError",
            vec![
                json!("it's"),
                json!(1),
                json!(2.0),
                json!(null),
                json!([true]),
                json!({"a": "b\n"}),
            ],
        )
        .expect("valid");
        assert_eq!(
            many.py_repr(),
            r#"KeyError("it's", 1, 2.0, None, [True], {'a': 'b\n'})"#
        );
        assert_eq!(
            ExceptionInfo::builtin("Exception", vec![])
                .expect("valid")
                .py_repr(),
            "Exception()"
        );
        assert_eq!(py_repr(&json!(1e20)), "1e+20");
        assert_eq!(py_repr(&json!(1.5e-5)), "1.5e-05");
        assert_eq!(py_repr(&json!(0.1)), "0.1");
    }
}
