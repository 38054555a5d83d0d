//! Text helpers for [`Error`]: the log-side `Display` pieces and the short model-side message.

use std::time::Duration;

use crate::Error;

/// `", retry after N s"` when the service said how long to wait, else nothing.
pub(crate) fn retry_after_suffix(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(", retry after {} ms", wait.as_millis()),
        None => String::new(),
    }
}

/// An error's message followed by its sources, joined by `": "`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        // reqwest and hyper often repeat the inner message in the outer one.
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}

/// What the model is told about `error`: which service failed, in a way that lets it decide
/// whether to try again, and nothing an operator would not want it to repeat.
pub(crate) fn model_message(error: &Error) -> String {
    match error {
        Error::Core(_) | Error::Background { .. } => "an internal error occurred".to_owned(),
        Error::NoSessionVoice => "this conversation has no voice to switch".to_owned(),
        Error::Auth { service, .. } => {
            format!("{service} rejected the configured credentials; this will not succeed on retry")
        }
        Error::RateLimited { service, retry_after, .. } => match retry_after {
            Some(wait) => format!(
                "{service} is rate limiting requests; try again in {} s",
                wait.as_secs().max(1)
            ),
            None => format!("{service} is rate limiting requests; try again later"),
        },
        Error::ServerError { service, .. } => {
            format!("{service} is having a temporary problem; try again later")
        }
        Error::Rejected { service, status, .. } => {
            format!("{service} rejected the request (HTTP {status})")
        }
        Error::Timeout { service, .. } => format!("{service} did not answer in time"),
        Error::Request { service, .. } => format!("{service} could not be reached"),
        Error::MalformedResponse { service, .. } => {
            format!("{service} sent a response that could not be read")
        }
        Error::BodyTooLarge { service, .. } => {
            format!("{service} sent a response larger than allowed")
        }
        Error::Blocked { .. } => "that address is not allowed".to_owned(),
        Error::UnsupportedContentType { content_type, .. } => {
            format!("the page is not text (content type {content_type:?})")
        }
        Error::TooManyRedirects { .. } => "the page redirects too many times".to_owned(),
        Error::LocationNotFound(place) => format!("no place named {place:?} was found"),
        Error::InvalidArgument { name, reason } => format!("invalid {name}: {reason}"),
        Error::Config { .. } | Error::Io { .. } | Error::Document { .. } | Error::Index { .. } => {
            "the tool is not set up correctly".to_owned()
        }
        Error::Retrieval(e) => match e {
            voxloop_retrieval::Error::EmptyQuery
            | voxloop_retrieval::Error::InvalidLimit { .. }
            | voxloop_retrieval::Error::UnknownFilterValue { .. } => e.to_string(),
            _ => "the audio index failed".to_owned(),
        },
        Error::Voices(e) => match e {
            voxloop_voices::Error::VoiceNotFound { query, .. } => {
                format!("no voice in the library matches {query:?}")
            }
            voxloop_voices::Error::InvalidInput(message) => message.clone(),
            _ => "the voice could not be changed".to_owned(),
        },
    }
}
