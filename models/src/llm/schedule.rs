//! Which scheduled questions to ask for a window: every window, every Nth window, or every S
//! seconds of stream (running) time, per stream, optionally limited to some streams.

use std::collections::HashMap;

use super::answerer::WindowMeta;
use super::settings::ScheduledQuestion;

/// Per-stream schedule state.
#[derive(Debug, Default)]
pub struct QuestionScheduler {
    questions: Vec<ScheduledQuestion>,
    /// (stream, question index) -> (windows seen, stream time of the last ask, ns).
    state: HashMap<(String, usize), (u64, Option<u64>)>,
}

impl QuestionScheduler {
    pub fn new(questions: Vec<ScheduledQuestion>) -> Self {
        Self {
            questions,
            state: HashMap::new(),
        }
    }

    /// Questions due on `meta`'s window, in config order.
    pub fn due(&mut self, meta: &WindowMeta) -> Vec<String> {
        let mut out = Vec::new();
        for (i, q) in self.questions.iter().enumerate() {
            if !q.streams.is_empty() && !q.streams.contains(&meta.stream) {
                continue;
            }
            let (seen, last) = self.state.entry((meta.stream.clone(), i)).or_default();
            let ask = match q.every_s {
                Some(s) => match *last {
                    None => true,
                    Some(t) => meta.t_end.saturating_sub(t) as f64 >= s * 1e9,
                },
                None => *seen % q.every_windows.unwrap_or(1).max(1) == 0,
            };
            *seen += 1;
            if ask {
                *last = Some(meta.t_end);
                out.push(q.text.clone());
            }
        }
        out
    }

    /// Forgets a stream's schedule (it ended).
    pub fn end_stream(&mut self, stream: &str) {
        self.state.retain(|(s, _), _| s != stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(stream: &str, index: u64) -> WindowMeta {
        // 5 s windows
        WindowMeta {
            stream: stream.into(),
            index,
            t_start: index * 5_000_000_000,
            t_end: (index + 1) * 5_000_000_000,
            captured: None,
            queued: None,
        }
    }

    #[test]
    fn every_window_every_n_and_every_seconds() {
        let q = |text: &str, w: Option<u64>, s: Option<f64>, streams: &[&str]| ScheduledQuestion {
            text: text.into(),
            every_windows: w,
            every_s: s,
            streams: streams.iter().map(|s| s.to_string()).collect(),
        };
        let mut s = QuestionScheduler::new(vec![
            q("all", None, None, &[]),
            q("third", Some(3), None, &[]),
            q("12s", None, Some(12.0), &[]),
            q("cam2", None, None, &["cam2"]),
        ]);
        let asked: Vec<Vec<String>> = (0..7).map(|i| s.due(&meta("cam1", i))).collect();
        let count = |t: &str| asked.iter().filter(|a| a.iter().any(|x| x == t)).count();
        assert_eq!(count("all"), 7);
        assert_eq!(count("third"), 3); // windows 0, 3, 6
                                       // t_end = 5, 10, ..., 35 s: asked at 5, 20 (15 >= 12), 35 (15 >= 12)
        assert_eq!(count("12s"), 3);
        assert!(asked[3].contains(&"12s".to_string()));
        assert_eq!(count("cam2"), 0);
        assert_eq!(s.due(&meta("cam2", 0)), vec!["all", "third", "12s", "cam2"]);
        s.end_stream("cam1");
        assert_eq!(s.due(&meta("cam1", 7)), vec!["all", "third", "12s"]);
    }
}
