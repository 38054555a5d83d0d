//! An LLM judge of tool-call parameters through any OpenAI-compatible Chat Completions
//! endpoint, as StepFun's `LLM_judge.py` judges StepEval-Audio-Toolcall with Qwen3-32B: it is
//! shown the user's request, the reference call and the call made, and answers whether the
//! call made serves the request as well as the reference (`yes` or `no`).

use std::time::Duration;

use serde_json::{json, Value};

/// A judge at `url` (the API base, `/chat/completions` appended).
#[derive(Debug, Clone)]
pub struct Judge {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
}

/// The instruction the judge is given (our wording).
const INSTRUCTION: &str = "You grade the arguments of a tool call made by a voice assistant. \
You are given the user's last request, the reference call and the call the assistant made. \
Answer \"yes\" when the call made would serve the request as well as the reference (same tool, \
arguments that mean the same: spelling, language, case and word order may differ), else \
\"no\". Answer with the single word yes or no.";

impl Judge {
    /// A judge speaking to `url` with `model`.
    pub fn new(url: &str, model: &str, api_key: Option<String>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("building the judge's HTTP client: {e}"))?;
        let endpoint = format!("{}/chat/completions", url.trim_end_matches('/'));
        Ok(Self { client, endpoint, model: model.to_owned(), api_key })
    }

    /// The verdict (`None`: the answer was neither yes nor no) and the judge's answer.
    pub async fn verdict(
        &self,
        request: &str,
        reference: &str,
        made: &str,
    ) -> Result<(Option<bool>, String), String> {
        let question = format!(
            "User request: {request}\nReference call: {reference}\nCall made: {made}\nAnswer:"
        );
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "max_completion_tokens": 16,
            "messages": [
                { "role": "system", "content": INSTRUCTION },
                { "role": "user", "content": question },
            ],
        });
        let mut post = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            post = post.bearer_auth(key);
        }
        let response = post.send().await.map_err(|e| format!("judge {}: {e}", self.endpoint))?;
        let status = response.status();
        let answer: Value =
            response.json().await.map_err(|e| format!("judge {}: {e}", self.endpoint))?;
        if !status.is_success() {
            return Err(format!("judge {} answered {status}: {answer}", self.endpoint));
        }
        let text = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((read_verdict(&text), text))
    }
}

/// `yes`/`no` (or 是/否) at the start of the answer, after any white space and punctuation.
fn read_verdict(text: &str) -> Option<bool> {
    let word: String = text
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    match word.as_str() {
        "yes" | "是" | "是的" => Some(true),
        "no" | "否" | "不是" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::read_verdict;

    #[test]
    fn verdicts_are_read_from_the_first_word() {
        assert_eq!(read_verdict("Yes."), Some(true));
        assert_eq!(read_verdict("  **no** because"), Some(false));
        assert_eq!(read_verdict("是"), Some(true));
        assert_eq!(read_verdict("maybe"), None);
        assert_eq!(read_verdict(""), None);
    }
}
