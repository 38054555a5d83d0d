//! [`ToolError`]: why a tool call produced no output, in two registers.
//!
//! Every failure carries a short `model_message`, safe to show the model as the tool result
//! so that it can recover (fix its arguments, pick another tool, apologise), and a full
//! `detail` for spans and logs. The model never sees `detail`.

use std::fmt;
use std::time::Duration;

/// A type-erased error, as tower middleware returns it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The longest `model_message` a [`ToolError`] keeps, in bytes; longer ones are cut at a
/// character boundary and end in `…`.
pub const MAX_MODEL_MESSAGE_BYTES: usize = 600;

/// What kind of failure a [`ToolError`] is. Its [`as_str`](Self::as_str) is the span's
/// `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToolErrorKind {
    /// The arguments do not match the tool's schema or do not deserialise.
    InvalidArguments,
    /// The tool ran and returned an error, or its output could not be rendered.
    Execution,
    /// The call took longer than a deadline (set by a timeout layer).
    Timeout,
    /// The call was abandoned (barge-in, turn cancelled, shutdown).
    Cancelled,
    /// The tool (or a layer around it) panicked.
    Panicked,
    /// A policy refused the call (deny list, argument guard, approval refused).
    Denied,
    /// A limit refused the call (load shedding, rate or concurrency limit).
    Overloaded,
    /// No tool of that name is registered.
    NotFound,
}

impl ToolErrorKind {
    /// The stable snake_case name, used as the span's `error.type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArguments => "invalid_arguments",
            Self::Execution => "execution",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Panicked => "panicked",
            Self::Denied => "denied",
            Self::Overloaded => "overloaded",
            Self::NotFound => "not_found",
        }
    }
}

impl fmt::Display for ToolErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed tool call.
///
/// `Display` shows the kind and the full detail (for logs); what goes back to the model is
/// [`model_message`](Self::model_message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// What kind of failure this is.
    pub kind: ToolErrorKind,
    /// Short and safe: sent back to the model as the tool result.
    pub model_message: String,
    /// Everything known about the failure, for spans and logs only.
    pub detail: String,
    /// Set when the same call may succeed if tried again later (an HTTP 429 or 5xx from a
    /// provider, a dropped connection): retry layers retry only such errors (and timeouts
    /// and overloads). Tools set it through [`Tool::transient`](super::Tool::transient).
    pub transient: Option<Transient>,
}

/// A mark on a [`ToolError`]: the failure is transient, trying again later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transient {
    /// How long the far side asked us to wait before trying again (an HTTP `Retry-After`),
    /// if it said.
    pub retry_after: Option<Duration>,
}

impl Transient {
    /// A transient failure with no hint of when to try again.
    pub const fn new() -> Self {
        Self { retry_after: None }
    }

    /// A transient failure to retry no sooner than `delay` from now.
    pub const fn retry_after(delay: Duration) -> Self {
        Self { retry_after: Some(delay) }
    }
}

impl ToolError {
    /// A new error whose detail is the model message; add more with
    /// [`with_detail`](Self::with_detail). The model message is capped at
    /// [`MAX_MODEL_MESSAGE_BYTES`].
    pub fn new(kind: ToolErrorKind, model_message: impl Into<String>) -> Self {
        let mut model_message = model_message.into();
        super::truncate_output(&mut model_message, MAX_MODEL_MESSAGE_BYTES);
        Self { kind, detail: model_message.clone(), model_message, transient: None }
    }

    /// Marks the error as transient (or not, with `None`): see [`transient`](Self::transient).
    #[must_use]
    pub fn with_transient(mut self, transient: Option<Transient>) -> Self {
        self.transient = transient;
        self
    }

    /// Replaces the operator-only detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The error for a call to a tool that is not registered, listing the registered names
    /// so that the model can correct itself.
    pub fn not_found<'a>(name: &str, available: impl IntoIterator<Item = &'a str>) -> Self {
        let available: Vec<&str> = available.into_iter().collect();
        let message = if available.is_empty() {
            format!("Unknown tool \"{name}\": no tools are available.")
        } else {
            format!("Unknown tool \"{name}\". Available tools: {}.", available.join(", "))
        };
        Self::new(ToolErrorKind::NotFound, message)
    }

    /// The error for a panic caught in tool `name`; `payload` is what `catch_unwind` returned.
    pub fn panicked(name: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".to_owned());
        Self::new(ToolErrorKind::Panicked, format!("Tool \"{name}\" failed unexpectedly."))
            .with_detail(format!("tool \"{name}\" panicked: {what}"))
    }

    /// Turns an error from a service stack into a `ToolError`: a boxed `ToolError` is taken
    /// back as it is, anything else becomes [`ToolErrorKind::Execution`] with the error chain
    /// as detail.
    ///
    /// tower's own middleware errors (`Elapsed`, `Overloaded`) arrive here as `Execution`:
    /// layers that want them reported as `Timeout` or `Overloaded` map them into a
    /// `ToolError` of that kind before they leave the stack (this is what `voxloop-policies`
    /// does).
    pub fn from_box_error(tool: &str, error: BoxError) -> Self {
        match error.downcast::<ToolError>() {
            Ok(tool_error) => *tool_error,
            Err(other) => Self::new(ToolErrorKind::Execution, format!("Tool \"{tool}\" failed."))
                .with_detail(format!("tool \"{tool}\": {}", error_chain(other.as_ref()))),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tool error ({}): {}", self.kind, self.detail)
    }
}

impl std::error::Error for ToolError {}

/// `error`'s message followed by its sources, joined by `": "`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_model_messages_are_capped_at_a_char_boundary() {
        let error = ToolError::new(ToolErrorKind::Execution, "é".repeat(1000));
        assert!(error.model_message.len() <= MAX_MODEL_MESSAGE_BYTES);
        assert!(error.model_message.ends_with("[… output truncated: 2000 bytes in all]"));
        assert_eq!(error.detail, error.model_message);
    }

    #[test]
    fn a_boxed_tool_error_comes_back_unchanged() {
        let original = ToolError::new(ToolErrorKind::Denied, "no").with_detail("deny list");
        let boxed: BoxError = Box::new(original.clone());
        assert_eq!(ToolError::from_box_error("t", boxed), original);
    }

    #[test]
    fn errors_are_not_transient_unless_marked() {
        let error = ToolError::new(ToolErrorKind::Execution, "HTTP 429");
        assert_eq!(error.transient, None);
        let hint = Transient::retry_after(Duration::from_secs(3));
        let marked = error.with_transient(Some(hint));
        assert_eq!(marked.transient.and_then(|t| t.retry_after), Some(Duration::from_secs(3)));
        let boxed: BoxError = Box::new(marked.clone());
        assert_eq!(ToolError::from_box_error("t", boxed), marked);
    }

    #[test]
    fn other_boxed_errors_become_execution_with_their_chain() {
        let io = std::io::Error::other("disk on fire");
        let error = ToolError::from_box_error("t", Box::new(io));
        assert_eq!(error.kind, ToolErrorKind::Execution);
        assert!(error.detail.contains("disk on fire"), "{}", error.detail);
        assert!(!error.model_message.contains("disk on fire"));
    }
}
