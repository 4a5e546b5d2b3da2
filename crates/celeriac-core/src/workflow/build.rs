//! What a workflow is: [`Step`]s (one task call each, with its arguments and options) and the
//! [`Flow`]s that combine them (chain, group, chord, map, error handlers), checked by
//! [`Flow::validate`].

use super::MAX_DEPTH;
use crate::clock::duration_ms;
use crate::error::{Error, Result};
use crate::job::{Encoding, Priority};
use crate::task::{Task, TaskOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a step's arguments come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StepArgs {
    /// Fixed when the workflow was defined.
    Fixed(Value),
    /// The previous step's output (a group's outputs as a list).
    Input,
    /// The arguments did not serialize; reported when the workflow starts.
    Invalid(String),
}

/// The options a step's job is built with, taken from its task when the step is defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StepOptions {
    pub(super) queue: String,
    pub(super) priority: u8,
    pub(super) max_attempts: u32,
    pub(super) encoding: Encoding,
    pub(super) soft_ms: Option<i64>,
    pub(super) hard_ms: Option<i64>,
    pub(super) result_ttl_ms: Option<i64>,
    pub(super) expires_ms: Option<i64>,
}

impl From<&TaskOptions> for StepOptions {
    fn from(o: &TaskOptions) -> Self {
        StepOptions {
            queue: o.queue.clone(),
            priority: o.priority.get(),
            max_attempts: o.max_attempts,
            encoding: o.encoding,
            soft_ms: o.soft_time_limit.map(duration_ms),
            hard_ms: o.hard_time_limit.map(duration_ms),
            result_ttl_ms: (!o.ignore_result).then(|| duration_ms(o.result_ttl)),
            expires_ms: o.expires.map(duration_ms),
        }
    }
}

/// One task call in a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub(super) task: String,
    pub(super) args: StepArgs,
    pub(super) opts: StepOptions,
}

impl Step {
    /// A step of task `T` with fixed arguments (the previous step's output is not passed).
    pub fn of<T: Task>(args: T::Args) -> Step {
        let args = match serde_json::to_value(&args) {
            Ok(v) => StepArgs::Fixed(v),
            Err(e) => StepArgs::Invalid(e.to_string()),
        };
        Step {
            task: T::NAME.to_string(),
            args,
            opts: StepOptions::from(&T::options()),
        }
    }

    /// A step of task `T` whose arguments are the previous step's output (after a group or
    /// a map: the list of the members' outputs, in order).
    pub fn piped<T: Task>() -> Step {
        Step {
            task: T::NAME.to_string(),
            args: StepArgs::Input,
            opts: StepOptions::from(&T::options()),
        }
    }

    /// A step of a task known by name only (it may run in another service), with JSON
    /// arguments, or `None` to take the previous step's output.
    pub fn named(task: impl Into<String>, args: Option<Value>, options: &TaskOptions) -> Step {
        Step {
            task: task.into(),
            args: args.map_or(StepArgs::Input, StepArgs::Fixed),
            opts: StepOptions::from(options),
        }
    }

    /// Runs this step in another queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.opts.queue = queue.into();
        self
    }

    /// Another priority for this step.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.opts.priority = priority.get();
        self
    }

    /// Total attempts for this step.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.opts.max_attempts = attempts;
        self
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }
}

pub(super) fn invalid_args(task: &str, e: &str) -> Error {
    Error::config(
        "workflow",
        format!("the arguments of step `{task}` do not serialize: {e}"),
    )
}

/// A workflow definition: a step, or steps combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// One task call.
    Task(Step),
    /// Each part runs after the previous one, with its output as input.
    Chain(Vec<Flow>),
    /// The parts run in parallel on the same input; the output is the list of their outputs.
    Group(Vec<Flow>),
    /// A group, then `body` once with the list of the group's outputs.
    Chord {
        /// The parallel part.
        header: Vec<Flow>,
        /// What runs once after all of them.
        body: Box<Flow>,
    },
    /// The step once per element of the input list, in parallel; the output is the list of
    /// their outputs.
    Map(Step),
    /// `body`, with `handler` enqueued if a step inside it fails.
    OnError {
        /// What is guarded.
        body: Box<Flow>,
        /// Runs with a description of the failure (`workflow`, `job`, `task`, `error`).
        handler: Step,
    },
}

impl From<Step> for Flow {
    fn from(step: Step) -> Self {
        Flow::Task(step)
    }
}

/// Parts that run one after the other, each taking the previous one's output.
pub fn chain(parts: impl IntoIterator<Item = Flow>) -> Flow {
    Flow::Chain(parts.into_iter().collect())
}

/// Parts that run in parallel on the same input; the output is the list of their outputs, in
/// order.
pub fn group(parts: impl IntoIterator<Item = Flow>) -> Flow {
    Flow::Group(parts.into_iter().collect())
}

/// A group, then `body` exactly once with the list of the group's outputs.
pub fn chord(header: impl IntoIterator<Item = Flow>, body: impl Into<Flow>) -> Flow {
    Flow::Chord {
        header: header.into_iter().collect(),
        body: Box::new(body.into()),
    }
}

/// `step` once per element of the input list, in parallel.
pub fn map(step: Step) -> Flow {
    Flow::Map(step)
}

impl Flow {
    /// Enqueues `handler` if a step inside this part fails (Celery's `link_error`).
    pub fn on_error(self, handler: Step) -> Flow {
        Flow::OnError {
            body: Box::new(self),
            handler,
        }
    }

    /// A short description of the shape: `chain(fetch, group(resize, resize), report)`.
    pub fn describe(&self) -> String {
        let list = |parts: &[Flow]| {
            parts
                .iter()
                .map(Flow::describe)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Flow::Task(s) => s.task.clone(),
            Flow::Chain(p) => format!("chain({})", list(p)),
            Flow::Group(p) => format!("group({})", list(p)),
            Flow::Chord { header, body } => {
                format!("chord(group({}), {})", list(header), body.describe())
            }
            Flow::Map(s) => format!("map({})", s.task),
            Flow::OnError { body, handler } => {
                format!("{}.on_error({})", body.describe(), handler.task)
            }
        }
    }

    /// Checks the definition, naming the first problem: an empty chain or group, a step that
    /// takes the previous output where there is none, arguments that do not serialize, an
    /// invalid step option, nesting deeper than [`MAX_DEPTH`].
    pub fn validate(&self) -> Result<()> {
        self.check(false, 0, "workflow")
    }

    fn check(&self, has_input: bool, depth: usize, at: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::config("workflow", format!("{at}: {msg}")));
        if depth > MAX_DEPTH {
            return bad(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let step = |s: &Step, has_input: bool| -> Result<()> {
            match &s.args {
                StepArgs::Invalid(e) => return Err(invalid_args(&s.task, e)),
                StepArgs::Input if !has_input => {
                    return bad(format!(
                        "step `{}` takes the previous step's output, but nothing comes before \
                         it; give it arguments with `Step::of`",
                        s.task
                    ))
                }
                _ => {}
            }
            if s.task.is_empty() || s.task.len() > 200 {
                return bad(format!("task name `{}` must be 1 to 200 bytes", s.task));
            }
            if s.opts.max_attempts == 0 {
                return bad(format!("step `{}` needs at least one attempt", s.task));
            }
            Ok(())
        };
        match self {
            Flow::Task(s) => step(s, has_input),
            Flow::Chain(parts) => {
                if parts.is_empty() {
                    return bad("a chain needs at least one part".into());
                }
                let mut input = has_input;
                for (i, p) in parts.iter().enumerate() {
                    p.check(input, depth + 1, &format!("{at} > chain part {i}"))?;
                    input = true;
                }
                Ok(())
            }
            Flow::Group(parts) => {
                if parts.is_empty() {
                    return bad("a group needs at least one part".into());
                }
                for (i, p) in parts.iter().enumerate() {
                    p.check(has_input, depth + 1, &format!("{at} > group member {i}"))?;
                }
                Ok(())
            }
            Flow::Chord { header, body } => {
                if header.is_empty() {
                    return bad("a chord needs at least one member".into());
                }
                for (i, p) in header.iter().enumerate() {
                    p.check(has_input, depth + 1, &format!("{at} > chord member {i}"))?;
                }
                body.check(true, depth + 1, &format!("{at} > chord body"))
            }
            Flow::Map(s) => {
                if !has_input {
                    return bad(format!(
                        "map({}) maps over the previous step's output, but nothing comes \
                         before it",
                        s.task
                    ));
                }
                step(s, true)
            }
            Flow::OnError { body, handler } => {
                step(handler, true)?;
                body.check(has_input, depth + 1, at)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskContext, TaskError};
    use crate::workflow::test_tasks::Double;

    struct Fetch;
    impl Task for Fetch {
        const NAME: &'static str = "fetch";
        type Args = String;
        type Output = Vec<u32>;
        async fn run(_: TaskContext, _: String) -> std::result::Result<Vec<u32>, TaskError> {
            Ok(vec![1, 2])
        }
    }

    #[test]
    fn definitions_are_checked_naming_the_place() {
        let err = |f: Flow| f.validate().expect_err("invalid").to_string();
        assert!(err(chain([])).contains("a chain needs at least one part"));
        let e = err(chain([Step::piped::<Double>().into()]));
        assert!(e.contains("chain part 0") && e.contains("`double`"), "{e}");
        let e = err(chain([
            Step::of::<Fetch>("a".into()).into(),
            group([Step::of::<Double>(1).into(), group([])]),
        ]));
        assert!(e.contains("chain part 1 > group member 1"), "{e}");
        assert!(err(map(Step::piped::<Double>())).contains("map(double)"));
        let mut deep = Flow::from(Step::of::<Double>(1));
        for _ in 0..=MAX_DEPTH {
            deep = chain([deep]);
        }
        assert!(err(deep).contains("nested deeper"));
        let ok = chain([
            Step::of::<Fetch>("a".into()).into(),
            chord([map(Step::piped::<Double>())], Step::piped::<Fetch>()),
        ]);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn unserializable_arguments_are_reported_at_start() {
        struct Keys;
        impl Task for Keys {
            const NAME: &'static str = "keys";
            type Args = std::collections::HashMap<(u8, u8), u8>;
            type Output = ();
            async fn run(_: TaskContext, _: Self::Args) -> std::result::Result<(), TaskError> {
                Ok(())
            }
        }
        let args = std::collections::HashMap::from([((1, 2), 3)]);
        let e = Flow::from(Step::of::<Keys>(args))
            .validate()
            .expect_err("tuple keys are not JSON")
            .to_string();
        assert!(e.contains("`keys`") && e.contains("serialize"), "{e}");
    }
}
