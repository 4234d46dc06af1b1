//! The bounded replay buffer: a ring of the most recent accepted pairs, from which update
//! batches are drawn. Memory stays capped for always-on streams.

use std::collections::VecDeque;

/// One training example: the student modality's pooled features and the teacher's logits
/// for the same window, plus the audio SNR estimate for the difficulty model.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub student_features: Vec<f32>,
    pub teacher_logits: Vec<f32>,
    pub snr_db: f32,
}

/// A pair as kept in the buffer, with the teacher's decision precomputed.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub pair: Pair,
    pub teacher_class: usize,
}

/// Ring of at most `capacity` pairs; pushing into a full ring evicts the oldest.
#[derive(Debug)]
pub(crate) struct ReplayBuffer {
    capacity: usize,
    items: VecDeque<Stored>,
}

impl ReplayBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            items: VecDeque::with_capacity(capacity.max(1)),
        }
    }
    pub fn push(&mut self, item: Stored) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn get(&self, i: usize) -> Option<&Stored> {
        self.items.get(i)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.items.iter()
    }
}
