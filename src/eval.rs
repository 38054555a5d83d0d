//! The tool-calling evaluation in the layout of StepFun's StepEval-Audio-Toolcall
//! (`stepfun-ai/Step-Audio2`, `Step-Audio_Toolcall/`): multi-turn speech dialogues whose last
//! user turn does or does not call for one of four tools (`timbre_rag`, `get_date_time`,
//! `get_weather`, `web_search`), scored as the Step-Audio 2 report scores them: trigger
//! precision and recall per tool, type accuracy on the triggered turns, parameter accuracy on
//! the right-typed ones.
//!
//! [`dataset`] reads the benchmark's files, [`score`] turns outputs into the figures, and
//! `voxloop eval toolcall` (`crate::cli::eval`) produces the outputs with the agent, or reads
//! them from a predictions file.

pub mod dataset;
pub mod judge;
pub mod score;
