//! Who should run what: every worker computes the same plan from the same view, and acts
//! only on its own part of it (claims it will try with a compare-and-set, streams it gives
//! back).
//!
//! Each live worker's target is its capacity's share of the total cost of the active
//! streams, rounded up. A worker below its target claims free streams (in the order of a
//! rendezvous hash of stream and worker, so workers that claim at once mostly want different
//! streams); a worker above its target gives back its excess, but only while another live
//! worker is below its own target, so nothing is released into the void. With the targets
//! rounded up, a worker at its target never claims and never releases: a stream moves only
//! from a worker above its share to one below it, at most once per change of membership.

use std::collections::BTreeMap;

/// The view one tick's plan is made from.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Live workers and their capacity.
    pub workers: BTreeMap<String, WorkerView>,
    /// Desired streams: name -> (cost, holder if a live lease names one).
    pub streams: BTreeMap<String, StreamView>,
}

#[derive(Clone, Debug, Default)]
pub struct WorkerView {
    pub capacity: u32,
    pub max_streams: usize,
}

#[derive(Clone, Debug, Default)]
pub struct StreamView {
    pub cost: u32,
    /// The worker holding a fresh lease, if any.
    pub holder: Option<String>,
    /// Held but needing no time (ended or failed): costs nothing, never moves.
    pub idle: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free streams to try to claim, best first.
    pub claim: Vec<String>,
    /// Own streams to give back.
    pub release: Vec<String>,
}

/// Rendezvous (highest random weight) score of `stream` for `worker`: FNV-1a of both.
pub fn score(stream: &str, worker: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes().chain([0xff]).chain(worker.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix so that names differing in their last byte spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl View {
    /// Cost held by `worker` (active streams only) and the number of streams it holds.
    pub fn load(&self, worker: &str) -> (u32, usize) {
        self.streams
            .values()
            .filter(|s| s.holder.as_deref() == Some(worker))
            .fold((0, 0), |(c, n), s| {
                (c + if s.idle { 0 } else { s.cost }, n + 1)
            })
    }

    /// `worker`'s target cost: its capacity's share of all active cost, rounded up.
    pub fn target(&self, worker: &str) -> u32 {
        let total: u64 = self
            .streams
            .values()
            .filter(|s| !s.idle)
            .map(|s| u64::from(s.cost))
            .sum();
        let capacity: u64 = self.workers.values().map(|w| u64::from(w.capacity)).sum();
        let mine = self
            .workers
            .get(worker)
            .map_or(0, |w| u64::from(w.capacity));
        if capacity == 0 {
            return 0;
        }
        (total * mine).div_ceil(capacity).min(u64::from(u32::MAX)) as u32
    }

    /// Whether some live worker other than `except` has room below its target.
    fn someone_wants(&self, except: &str, cost: u32) -> bool {
        self.workers.iter().any(|(w, info)| {
            let (load, n) = self.load(w);
            w != except && load + cost <= self.target(w) && n < info.max_streams
        })
    }

    /// `me`'s part of the plan.
    pub fn plan(&self, me: &str) -> Plan {
        let mut plan = Plan::default();
        let Some(info) = self.workers.get(me) else {
            return plan;
        };
        let target = self.target(me);
        let (mut load, mut count) = self.load(me);
        // Claims: free active streams, best rendezvous score first.
        let mut free: Vec<(&String, &StreamView)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.holder.is_none())
            .collect();
        free.sort_by_key(|(name, _)| std::cmp::Reverse(score(name, me)));
        for (name, s) in free {
            if count >= info.max_streams {
                break;
            }
            if load + s.cost <= target || (load == 0 && s.cost > target) {
                plan.claim.push(name.clone());
                load += s.cost;
                count += 1;
            }
        }
        // Releases: the excess, worst score first, while someone below target would take it.
        let mut mine: Vec<(&String, &StreamView)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.holder.as_deref() == Some(me) && !s.idle)
            .collect();
        mine.sort_by_key(|(name, _)| score(name, me));
        let mut excess = load.saturating_sub(target);
        for (name, s) in mine {
            if excess == 0 || !self.someone_wants(me, s.cost) {
                break;
            }
            if s.cost <= excess {
                plan.release.push(name.clone());
                excess -= s.cost;
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(workers: &[&str], streams: usize) -> View {
        let mut v = View::default();
        for w in workers {
            v.workers.insert(
                w.to_string(),
                WorkerView {
                    capacity: 8,
                    max_streams: 64,
                },
            );
        }
        for i in 0..streams {
            v.streams.insert(
                format!("cam{i}"),
                StreamView {
                    cost: 1,
                    ..Default::default()
                },
            );
        }
        v
    }

    /// Plays ticks: every worker plans on the same view; claims race (first in worker order
    /// wins, as a compare-and-set would let only one through); returns how often each stream
    /// changed hands.
    fn settle(v: &mut View) -> BTreeMap<String, usize> {
        let mut moves = BTreeMap::new();
        for _ in 0..20 {
            let workers: Vec<String> = v.workers.keys().cloned().collect();
            let plans: Vec<(String, Plan)> =
                workers.iter().map(|w| (w.clone(), v.plan(w))).collect();
            let mut changed = false;
            for (w, p) in &plans {
                for s in &p.release {
                    v.streams.get_mut(s).unwrap().holder = None;
                    changed = true;
                }
                for s in &p.claim {
                    let st = v.streams.get_mut(s).unwrap();
                    if st.holder.is_none() {
                        st.holder = Some(w.clone());
                        *moves.entry(s.clone()).or_insert(0) += 1;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        moves
    }

    fn counts(v: &View) -> Vec<usize> {
        v.workers.keys().map(|w| v.load(w).1).collect()
    }

    #[test]
    fn three_workers_share_twelve_streams_four_each() {
        let mut v = view(&["a", "b", "c"], 12);
        let moves = settle(&mut v);
        assert_eq!(counts(&v), vec![4, 4, 4]);
        assert!(moves.values().all(|&m| m == 1), "{moves:?}");
    }

    #[test]
    fn a_joining_worker_takes_a_quarter_and_nothing_moves_twice() {
        let mut v = view(&["a", "b", "c"], 12);
        settle(&mut v);
        v.workers.insert(
            "d".into(),
            WorkerView {
                capacity: 8,
                max_streams: 64,
            },
        );
        let moves = settle(&mut v);
        assert_eq!(counts(&v), vec![3, 3, 3, 3]);
        assert_eq!(moves.len(), 3, "three streams moved: {moves:?}");
        assert!(moves.values().all(|&m| m == 1), "{moves:?}");
    }

    #[test]
    fn a_dead_workers_streams_go_to_the_others_evenly() {
        let mut v = view(&["a", "b", "c"], 12);
        settle(&mut v);
        v.workers.remove("b");
        for s in v.streams.values_mut() {
            if s.holder.as_deref() == Some("b") {
                s.holder = None;
            }
        }
        settle(&mut v);
        assert_eq!(counts(&v), vec![6, 6]);
    }

    #[test]
    fn capacity_and_cost_weigh_and_the_cap_holds() {
        let mut v = view(&["big", "small"], 0);
        v.workers.get_mut("big").unwrap().capacity = 30;
        v.workers.get_mut("small").unwrap().capacity = 10;
        for i in 0..8 {
            v.streams.insert(
                format!("s{i}"),
                StreamView {
                    cost: 2,
                    ..Default::default()
                },
            );
        }
        settle(&mut v);
        assert_eq!(v.load("big"), (12, 6));
        assert_eq!(v.load("small"), (4, 2));

        let mut v = view(&["a"], 5);
        v.workers.get_mut("a").unwrap().max_streams = 3;
        settle(&mut v);
        assert_eq!(counts(&v), vec![3], "--max-streams caps a worker");
    }

    #[test]
    fn idle_streams_cost_nothing_and_never_move() {
        let mut v = view(&["a", "b"], 4);
        for (i, s) in v.streams.values_mut().enumerate() {
            if i < 2 {
                s.holder = Some("a".into());
                s.idle = true;
            }
        }
        settle(&mut v);
        assert_eq!(v.load("a"), (1, 3));
        assert_eq!(v.load("b"), (1, 1));
    }

    #[test]
    fn a_stream_dearer_than_any_share_still_runs() {
        let mut v = view(&["a", "b"], 0);
        v.streams.insert(
            "big".into(),
            StreamView {
                cost: 6,
                ..Default::default()
            },
        );
        settle(&mut v);
        assert_eq!(counts(&v).iter().sum::<usize>(), 1);
    }
}
