//! `audio_clip`: an indexed clip as MCP audio content, for clients that found it with
//! `audio_search` and want to hear it. MCP only: the speech LLM cannot take audio from a tool
//! result, so the agent is not offered it.

use std::sync::Arc;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use voxloop_retrieval::{AudioIndex, ItemId};

/// The tool's name.
pub const NAME: &str = "audio_clip";

/// Clips larger than this are refused rather than sent (base64 makes them a third larger).
pub const MAX_CLIP_BYTES: u64 = 10 * 1024 * 1024;

/// The tool as listed: one required `id`, the 16 hex digits `audio_search` prints.
pub fn definition() -> Tool {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "description": "The clip's id: the 16 hex digits after `id=` in an audio_search result.",
                "pattern": "^[0-9a-f]{16}$"
            }
        },
        "required": ["id"],
        "additionalProperties": false
    });
    let output = serde_json::json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "description": { "type": "string" },
            "seconds": { "type": "number" },
            "mime_type": { "type": "string" },
            "bytes": { "type": "integer" }
        },
        "required": ["id", "description", "seconds", "mime_type", "bytes"]
    });
    let (serde_json::Value::Object(schema), serde_json::Value::Object(output)) = (schema, output)
    else {
        unreachable!("JSON object literals")
    };
    let mut tool = Tool::new(
        NAME,
        "Returns an indexed audio clip (a sound or a voice sample) as audio content, by the id \
         audio_search gave it.",
        Arc::new(schema),
    );
    tool.output_schema = Some(Arc::new(output));
    tool
}

/// The clip `arguments.id` names, or an error result saying what was wrong.
pub async fn fetch(
    index: Option<Arc<AudioIndex>>,
    arguments: Option<JsonObject>,
) -> CallToolResult {
    match fetch_clip(index, arguments).await {
        Ok((summary, data, mime)) => {
            let mut result = CallToolResult::structured(summary);
            result.content.push(ContentBlock::audio(data, mime));
            result
        }
        Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
    }
}

async fn fetch_clip(
    index: Option<Arc<AudioIndex>>,
    arguments: Option<JsonObject>,
) -> Result<(serde_json::Value, String, &'static str), String> {
    let id = arguments.as_ref().and_then(|a| a.get("id")).and_then(|v| v.as_str());
    let Some(id) = id else { return Err("`id` is required: a clip id from audio_search".into()) };
    let id: ItemId = id.parse().map_err(|e| format!("`id`: {e}"))?;
    let Some(index) = index else {
        return Err("there is no audio index (run `voxloop index add` first)".into());
    };
    // Tantivy lookups and file reads are blocking work: off the executor.
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let item = index.get(id).map_err(|e| format!("audio index: {e}"))?;
        let Some(item) = item else { return Err(format!("no clip with id {id} in the index")) };
        let size = std::fs::metadata(&item.path)
            .map_err(|e| format!("clip {id} ({}): {e}", item.path.display()))?
            .len();
        if size > MAX_CLIP_BYTES {
            return Err(format!("clip {id} is {size} bytes, more than the {MAX_CLIP_BYTES} sent"));
        }
        let bytes = std::fs::read(&item.path)
            .map_err(|e| format!("clip {id} ({}): {e}", item.path.display()))?;
        Ok((item, bytes))
    });
    let (item, bytes) = read.await.map_err(|e| format!("reading the clip: {e}"))??;
    let mime = crate::http::audio::audio_media_type(&item.path);
    let summary = serde_json::json!({
        "id": id.to_string(),
        "description": item.description,
        "seconds": item.duration_s,
        "mime_type": mime,
        "bytes": bytes.len(),
    });
    Ok((summary, base64::engine::general_purpose::STANDARD.encode(bytes), mime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_ids_and_a_missing_index_are_error_results() {
        let text = |r: &CallToolResult| format!("{:?}", r.content);
        let missing = fetch(None, None).await;
        assert_eq!(missing.is_error, Some(true));
        assert!(text(&missing).contains("`id` is required"), "{}", text(&missing));
        let mut args = JsonObject::new();
        args.insert("id".into(), "xyz".into());
        let bad = fetch(None, Some(args.clone())).await;
        assert!(text(&bad).contains("`id`"), "{}", text(&bad));
        args.insert("id".into(), "00112233445566ff".into());
        let no_index = fetch(None, Some(args)).await;
        assert!(text(&no_index).contains("no audio index"), "{}", text(&no_index));
    }
}
