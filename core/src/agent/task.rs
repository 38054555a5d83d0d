//! The model's single-shot tasks besides conversation — transcription, audio description,
//! speech translation and reading text aloud — each a one-turn session with the system prompt
//! the model was trained with for it, no tools, and the sampling upstream uses.
//!
//! The prompts are upstream's: stepfun-ai/Step-Audio2 `examples.py` (`asr_test`,
//! `audio_caption_test`, `uac_test`, `s2tt_test`, `s2st_test`) for the chat checkpoints, and
//! `examples-base.py` (`tts_test`) for reading aloud, which the chat examples do not show: its
//! instruction becomes the system turn and the text the human turn. Translation into English
//! uses the English wording upstream gives beside the Chinese one, with the target language
//! changed.

use std::sync::Arc;

use futures::StreamExt;

use super::{Agent, AgentEvent, TurnEndReason, TurnInput, TurnStream, Usage};
use crate::protocol::ToolChoice;
use crate::session::{DateLine, HumanPart, SamplingSettings, Session, SessionSettings, Turn};
use crate::{Error, Result};

/// The language a translation is into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetLanguage {
    Chinese,
    English,
}

/// One of the model's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Speech → its transcript (ASR).
    Transcribe,
    /// Audio → a short account of what happens in it.
    Caption,
    /// Audio → a detailed description: the speakers' gender, age and emotion, background
    /// sounds, environment and events, with a transcript.
    Describe,
    /// Speech → its translation, as text or (`spoken`) as speech.
    Translate { into: TargetLanguage, spoken: bool },
    /// Text → speech (TTS).
    ReadAloud,
}

impl Task {
    /// The system prompt upstream gives the task.
    pub fn system_prompt(self) -> &'static str {
        match self {
            Task::Transcribe => "请记录下你所听到的语音内容。",
            Task::Caption => {
                "Please briefly explain the important events involved in this audio clip."
            }
            Task::Describe => {
                "你是一位经验丰富的音频分析专家，擅长对各种语音音频进行深入细致的分析。\
                 你的任务不仅仅是将音频内容准确转写为文字，还要对说话人的声音特征（如性别、\
                 年龄、情绪状态）、背景声音、环境信息以及可能涉及的事件进行全面描述。\
                 请以专业、客观的视角，详细、准确地完成每一次分析和转写。"
            }
            Task::Translate { into: TargetLanguage::Chinese, spoken: false } => {
                "请仔细聆听这段语音，然后将其内容翻译成中文。"
            }
            Task::Translate { into: TargetLanguage::Chinese, spoken: true } => {
                "请仔细聆听这段语音，然后将其内容翻译成中文并用语音播报。"
            }
            Task::Translate { into: TargetLanguage::English, spoken: false } => {
                "Please listen carefully to this audio and then translate its content into English."
            }
            Task::Translate { into: TargetLanguage::English, spoken: true } => {
                "Please listen carefully to this audio and then translate its content into \
                 English speech."
            }
            Task::ReadAloud => "以自然的语速读出下面的文字。",
        }
    }

    /// Whether the answer is speech (`<tts_start>` opens it).
    pub fn speaks(self) -> bool {
        matches!(self, Task::ReadAloud | Task::Translate { spoken: true, .. })
    }

    /// Whether the input is text (reading aloud) rather than audio.
    pub fn reads_text(self) -> bool {
        self == Task::ReadAloud
    }

    /// Upstream's sampling for the task, for input of `audio_chunks` 25-s chunks: greedy
    /// transcription, temperature 0.1 for short text answers, 0.5 / top-p 0.9 for the detailed
    /// description, 0.7 for speech. Text answers get upstream's token budget per 25 s of audio.
    pub fn sampling(self, audio_chunks: usize) -> SamplingSettings {
        let chunks = audio_chunks.max(1);
        let (temperature, top_p, max_new_tokens) = match self {
            Task::Transcribe => (0.0, 1.0, 256 * chunks),
            Task::Caption | Task::Translate { spoken: false, .. } => (0.1, 1.0, 256 * chunks),
            Task::Describe => (0.5, 0.9, 1024 * chunks),
            Task::Translate { spoken: true, .. } | Task::ReadAloud => (0.7, 1.0, 2048),
        };
        SamplingSettings {
            temperature,
            top_k: 0,
            top_p,
            repetition_penalty: 1.0,
            seed: None,
            max_new_tokens,
        }
    }

    /// The one-turn session of the task on `input` (audio, or text for reading aloud),
    /// sampled as [`sampling`](Self::sampling) says with `adjust` applied.
    pub fn session(
        self,
        input: TurnInput,
        adjust: impl FnOnce(&mut SamplingSettings),
    ) -> Result<Session> {
        let has_audio = input.parts().iter().any(|p| matches!(p, HumanPart::Audio { .. }));
        let has_text = input.parts().iter().any(|p| matches!(p, HumanPart::Text { .. }));
        match (self.reads_text(), has_audio, has_text) {
            (true, false, true) | (false, true, _) => {}
            (true, _, _) => {
                return Err(Error::Agent("reading aloud takes text, and only text".to_owned()))
            }
            (false, false, _) => {
                return Err(Error::Agent(format!("{self:?} takes audio: there is none")))
            }
        }
        let chunks = input
            .parts()
            .iter()
            .map(|p| match p {
                HumanPart::Audio { chunks } => chunks.len(),
                HumanPart::Text { .. } => 0,
            })
            .sum();
        let mut sampling = self.sampling(chunks);
        adjust(&mut sampling);
        let settings = SessionSettings {
            system_prompt: self.system_prompt().to_owned(),
            date_line: DateLine::Off,
            voice_instruction: None,
            speech: self.speaks(),
            sampling,
            tool_choice: ToolChoice::None,
            follow_up_tool_choice: ToolChoice::None,
            max_steps: 1,
            ..SessionSettings::default()
        };
        let system = Turn::System { text: settings.system_text(std::time::UNIX_EPOCH) };
        let human = Turn::Human { parts: input.parts().to_vec() };
        Ok(Session::with_history(settings, vec![system, human]))
    }
}

impl Agent {
    /// Runs a task's session (see [`Task::session`]): one generation step, the model told of
    /// no tools; speech is rendered by `renderer` in the session's voice as for
    /// [`Agent::speak_turn`].
    pub fn run_task<'a>(
        &'a self,
        session: &'a mut Session,
        renderer: Option<&super::SpeechRenderer>,
    ) -> Result<TurnStream<'a>> {
        let none = Arc::new(self.client_tools(Vec::new(), false)?);
        Ok(self.continue_turn(session, Some(none), renderer))
    }
}

/// What a task's turn gave: its text (the transcript, description or translation, or the
/// text a spoken answer carried) and its rendered speech.
#[derive(Debug, Clone, Default)]
pub struct TaskOutput {
    pub text: String,
    /// The speech, mono, at `sample_rate` (empty for a text answer, or without a renderer).
    pub speech: Vec<f32>,
    pub sample_rate: u32,
    /// The speech codes the model wrote (25 Hz, ids of the 6561-entry codebook).
    pub speech_codes: Vec<u16>,
    pub usage: Usage,
}

impl TaskOutput {
    /// Runs `stream` to its end; `on_text` sees each piece of text as it comes. A turn that
    /// failed, was cancelled, or whose speech could not be rendered is an error.
    pub async fn collect(
        mut stream: TurnStream<'_>,
        mut on_text: impl FnMut(&str),
    ) -> Result<Self> {
        let mut out = TaskOutput::default();
        let mut failed_speech = None;
        while let Some(event) = stream.next().await {
            match event {
                AgentEvent::TextDelta { text, .. } => {
                    on_text(&text);
                    out.text.push_str(&text);
                }
                AgentEvent::AudioTokens(codes) => out.speech_codes.extend(codes),
                AgentEvent::Audio { pcm, sample_rate } => {
                    out.speech.extend(pcm);
                    out.sample_rate = sample_rate;
                }
                AgentEvent::SpeechFailed { message } => failed_speech = Some(message),
                AgentEvent::TurnFinished { reason, usage } => {
                    out.usage = usage;
                    match reason {
                        TurnEndReason::Error(message) => return Err(Error::Agent(message)),
                        TurnEndReason::Cancelled => {
                            return Err(Error::Agent("the task was cancelled".to_owned()))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if let Some(message) = failed_speech {
            return Err(Error::Agent(format!("rendering the speech failed: {message}")));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{prepare_audio, wav_file, AudioInput, AudioLimits};
    use crate::protocol::{render, Message};

    /// The prompt of a task's session as upstream's segment text (`apply_chat_template` in
    /// stepfun-ai/Step-Audio2 `stepaudio2.py`: each turn `<|BOT|>{role}\n{content}<|EOT|>`,
    /// then the open assistant turn, with `<tts_start>` for speech).
    fn prompt_text(session: &Session) -> String {
        let mut messages: Vec<Message> = session.history().iter().map(Turn::message).collect();
        messages.push(Message::generation_prompt(session.settings().mode()));
        render(&messages).iter().filter_map(|piece| piece.text()).collect()
    }

    fn tone(seconds: usize) -> TurnInput {
        let samples: Vec<i16> =
            (0..16_000 * seconds).map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16).collect();
        let data = wav_file(&samples, 16_000);
        let input = AudioInput::Bytes { name: "tone.wav".into(), data };
        TurnInput::audio(prepare_audio(input, &AudioLimits::default()).unwrap())
    }

    #[test]
    fn tasks_render_upstreams_prompts() {
        let audio = tone(2);
        let clip = |session: &Session| match &session.history()[1] {
            Turn::Human { parts } => match &parts[0] {
                HumanPart::Audio { chunks } => {
                    let patches: usize = chunks.iter().map(|c| c.patches()).sum();
                    format!("<audio_start>{}<audio_end>", "<audio_patch>".repeat(patches))
                }
                HumanPart::Text { .. } => unreachable!(),
            },
            _ => unreachable!(),
        };
        let asr = Task::Transcribe.session(audio.clone(), |_| {}).unwrap();
        assert_eq!(
            prompt_text(&asr),
            format!(
                "<|BOT|>system\n请记录下你所听到的语音内容。<|EOT|><|BOT|>human\n{}<|EOT|>\
                 <|BOT|>assistant\n",
                clip(&asr)
            )
        );
        let s2st = Task::Translate { into: TargetLanguage::Chinese, spoken: true };
        let s2st = s2st.session(audio.clone(), |_| {}).unwrap();
        assert_eq!(
            prompt_text(&s2st),
            format!(
                "<|BOT|>system\n请仔细聆听这段语音，然后将其内容翻译成中文并用语音播报。<|EOT|>\
                 <|BOT|>human\n{}<|EOT|><|BOT|>assistant\n<tts_start>",
                clip(&s2st)
            )
        );
        let tts = Task::ReadAloud.session(TurnInput::text("你好呀"), |_| {}).unwrap();
        assert_eq!(
            prompt_text(&tts),
            "<|BOT|>system\n以自然的语速读出下面的文字。<|EOT|><|BOT|>human\n你好呀<|EOT|>\
             <|BOT|>assistant\n<tts_start>"
        );
        // No date line, no voice line, no tools: the system turn is the instruction alone.
        assert_eq!(tts.history().len(), 2);
        assert!(Task::Describe.system_prompt().starts_with("你是一位经验丰富的音频分析专家"));
        assert!(Task::Describe.system_prompt().ends_with("详细、准确地完成每一次分析和转写。"));
    }

    #[test]
    fn tasks_take_their_kind_of_input_and_upstreams_sampling() {
        let text = TurnInput::text("hello");
        let err = Task::Transcribe.session(text.clone(), |_| {}).unwrap_err();
        assert!(err.to_string().contains("takes audio"), "{err}");
        let err = Task::ReadAloud.session(tone(1), |_| {}).unwrap_err();
        assert!(err.to_string().contains("only text"), "{err}");
        assert_eq!(Task::Transcribe.sampling(1).temperature, 0.0, "greedy, as upstream's ASR");
        assert_eq!(Task::Transcribe.sampling(3).max_new_tokens, 768, "256 per 25-s chunk");
        assert_eq!(Task::Caption.sampling(1).temperature, 0.1);
        let describe = Task::Describe.sampling(1);
        assert_eq!(
            (describe.temperature, describe.top_p, describe.max_new_tokens),
            (0.5, 0.9, 1024)
        );
        assert_eq!(Task::ReadAloud.sampling(0).max_new_tokens, 2048);
        let capped = Task::ReadAloud.session(text, |s| s.max_new_tokens = 9).unwrap();
        assert_eq!(capped.settings().sampling.max_new_tokens, 9);
        assert!(capped.settings().speech && !Task::Caption.speaks());
        assert_eq!(capped.settings().tool_choice, ToolChoice::None);
    }
}
