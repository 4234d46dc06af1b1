//! Training data in the shape users already write (LLaVA / video-SALMONN conversations), one
//! JSON object per line:
//!
//! ```json
//! {"media": "clips/a.mp4", "start_s": 0.0, "end_s": 5.0, "task": "audio",
//!  "conversation": [{"from": "human", "value": "<AV>\nWhat do you hear?"},
//!                   {"from": "gpt", "value": "a dog barking"}]}
//! ```
//!
//! `media` is one file or `["video.mp4", "audio.wav"]`; paths are relative to the manifest.
//! `start_s`/`end_s` are optional (whole file). `<AV>` marks the clip's AV tokens in the first
//! human turn; every gpt turn is learnt, each answering the human turn before it with the
//! clip's AV tokens in the prompt exactly as `sensorium run` lays them out.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::TrainError;
use crate::llm::AV_PLACEHOLDER;

/// Where a sample's media comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Media {
    /// One file with video and/or audio.
    File(PathBuf),
    /// Video from the first file, audio from the second.
    Pair(PathBuf, PathBuf),
}

impl Media {
    /// The files, for hashing and error messages.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Media::File(p) => vec![p],
            Media::Pair(v, a) => vec![v, a],
        }
    }
}

/// One question and the answer to learn.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

/// One manifest line, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `file:line`, for messages.
    pub origin: String,
    pub media: Media,
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
    pub task: String,
    pub turns: Vec<Turn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    media: RawMedia,
    #[serde(default)]
    start_s: Option<f64>,
    #[serde(default)]
    end_s: Option<f64>,
    #[serde(default)]
    task: Option<String>,
    conversation: Vec<RawTurn>,
    /// Free-form bookkeeping users keep in their manifests (ignored).
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawMedia {
    One(String),
    Two(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    from: String,
    value: String,
}

/// Reads a manifest; the first bad line stops it with an error naming `file:line`.
/// Media files must exist (checked here, so a typo fails before any decoding).
pub fn read_manifest(path: &Path) -> Result<Vec<Sample>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Manifest {
        origin: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let origin = format!("{}:{}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(line, base, &origin)?);
    }
    if out.is_empty() {
        return Err(TrainError::Manifest {
            origin: path.display().to_string(),
            message: "no samples".into(),
        });
    }
    Ok(out)
}

fn parse_line(line: &str, base: &Path, origin: &str) -> Result<Sample, TrainError> {
    let bad = |message: String| TrainError::Manifest {
        origin: origin.to_owned(),
        message,
    };
    let raw: RawSample = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let resolve = |p: &str| -> Result<PathBuf, TrainError> {
        let full = base.join(p);
        if !full.is_file() {
            return Err(bad(format!("media file {} not found", full.display())));
        }
        Ok(full)
    };
    let media = match raw.media {
        RawMedia::One(p) => Media::File(resolve(&p)?),
        RawMedia::Two(v) if v.len() == 2 => Media::Pair(resolve(&v[0])?, resolve(&v[1])?),
        RawMedia::Two(v) => {
            return Err(bad(format!(
                "`media` must be a path or [video, audio] ({} paths given)",
                v.len()
            )))
        }
    };
    for (name, v) in [("start_s", raw.start_s), ("end_s", raw.end_s)] {
        if v.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
            return Err(bad(format!("`{name}` must be a time >= 0 in seconds")));
        }
    }
    if let (Some(s), Some(e)) = (raw.start_s, raw.end_s) {
        if e <= s {
            return Err(bad(format!("`end_s` ({e}) must be after `start_s` ({s})")));
        }
    }
    let mut turns = Vec::new();
    let mut question: Option<String> = None;
    let mut saw_av = false;
    for (t, turn) in raw.conversation.iter().enumerate() {
        match turn.from.as_str() {
            "human" | "user" => {
                let n = turn.value.matches(AV_PLACEHOLDER).count();
                if n > 1 || (n == 1 && saw_av) {
                    return Err(bad(format!(
                        "conversation turn {}: {AV_PLACEHOLDER} may appear once, in the first human turn",
                        t + 1
                    )));
                }
                if n == 1 && !turns.is_empty() {
                    return Err(bad(format!(
                        "conversation turn {}: {AV_PLACEHOLDER} must be in the first human turn",
                        t + 1
                    )));
                }
                saw_av |= n == 1;
                let q = turn.value.replace(AV_PLACEHOLDER, "").trim().to_owned();
                if q.is_empty() {
                    return Err(bad(format!("conversation turn {}: empty question", t + 1)));
                }
                question = Some(q);
            }
            "gpt" | "assistant" => {
                let Some(q) = question.take() else {
                    return Err(bad(format!(
                        "conversation turn {}: a gpt turn must follow a human turn",
                        t + 1
                    )));
                };
                let a = turn.value.trim().to_owned();
                if a.is_empty() {
                    return Err(bad(format!("conversation turn {}: empty answer", t + 1)));
                }
                turns.push(Turn {
                    question: q,
                    answer: a,
                });
            }
            other => {
                return Err(bad(format!(
                    "conversation turn {}: `from` is {other:?} (expected \"human\" or \"gpt\")",
                    t + 1
                )))
            }
        }
    }
    if !saw_av {
        return Err(bad(format!(
            "no {AV_PLACEHOLDER} placeholder in the conversation (put it in the first human turn)"
        )));
    }
    if turns.is_empty() {
        return Err(bad("the conversation has no gpt turn to learn".into()));
    }
    Ok(Sample {
        origin: origin.to_owned(),
        media,
        start_s: raw.start_s,
        end_s: raw.end_s,
        task: raw.task.unwrap_or_else(|| "default".into()),
        turns,
    })
}

/// Refuses samples whose time range is shorter than one frame at `fps` (nothing to see or
/// hear there), naming the line.
pub fn check_ranges(samples: &[Sample], fps: f64) -> Result<(), TrainError> {
    for s in samples {
        if let (Some(a), Some(b)) = (s.start_s, s.end_s) {
            if b - a < 1.0 / fps {
                return Err(TrainError::Manifest {
                    origin: s.origin.clone(),
                    message: format!(
                        "the clip [{a}, {b}) s is shorter than one frame ({} s at {fps} fps)",
                        1.0 / fps
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Sample, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"x").unwrap();
        parse_line(line, dir.path(), "m.jsonl:3").map_err(|e| e.to_string())
    }

    #[test]
    fn a_line_in_the_llava_shape_parses() {
        let s = parse(r#"{"media": "a.mp4", "start_s": 1, "end_s": 6, "task": "audio", "conversation": [{"from": "human", "value": "<AV>\nWhat do you hear?"}, {"from": "gpt", "value": "a dog barking"}, {"from": "human", "value": "Loud?"}, {"from": "gpt", "value": "yes"}]}"#).unwrap();
        assert_eq!(s.task, "audio");
        assert_eq!((s.start_s, s.end_s), (Some(1.0), Some(6.0)));
        assert_eq!(
            s.turns,
            vec![
                Turn {
                    question: "What do you hear?".into(),
                    answer: "a dog barking".into()
                },
                Turn {
                    question: "Loud?".into(),
                    answer: "yes".into()
                },
            ]
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        let cases = [
            (
                r#"{"media": "a.mp4", "conversation": [{"from": "human", "value": "<AV> q"}]}"#,
                "no gpt turn",
            ),
            (
                r#"{"media": "a.mp4", "conversation": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
                "no <AV> placeholder",
            ),
            (
                r#"{"media": "b.mp4", "conversation": [{"from": "human", "value": "<AV> q"}, {"from": "gpt", "value": "a"}]}"#,
                "b.mp4 not found",
            ),
            (r#"{"media": "a.mp4", "conversation": [}"#, "m.jsonl:3"),
            (
                r#"{"media": "a.mp4", "start_s": 5, "end_s": 2, "conversation": [{"from": "human", "value": "<AV> q"}, {"from": "gpt", "value": "a"}]}"#,
                "must be after",
            ),
            (
                r#"{"media": "a.mp4", "colour": 1, "conversation": []}"#,
                "unknown field `colour`",
            ),
        ];
        for (line, want) in cases {
            let e = parse(line).unwrap_err();
            assert!(e.contains("m.jsonl:3"), "{e}");
            assert!(e.contains(want), "{e} should say {want}");
        }
    }
}
