//! AdamW whose state can be saved and restored, so a resumed distillation run continues
//! exactly where it stopped.
//!
//! The update is candle_nn's `AdamW` (decoupled weight decay, bias-corrected moments, the
//! same operation order, its `Optimizer` trait and `ParamsAdamW`, so results match it to the
//! last bit; a test checks that against `candle_nn::AdamW` itself), but the first/second
//! moment estimates and the step count are reachable. candle-nn 0.11.1 keeps them in private
//! fields, so checkpoints restarted the moments and their bias correction; the upstream pull
//! request that adds accessors (huggingface/candle#3819, `AdamW::moments`, `set_step_t`) is
//! still open. When a release has it, the trainer can go back to `candle_nn::AdamW` and this
//! module reduce to the state copy.

use candle_core::backprop::GradStore;
use candle_core::{Result, Var};
use candle_nn::{Optimizer, ParamsAdamW};

/// The optimizer's state: step count and, per variable in order, `m` and `v` (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

/// One variable with its moment estimates.
#[derive(Debug)]
struct Slot {
    var: Var,
    m: Var,
    v: Var,
}

/// AdamW with open state (see the module docs).
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    params: ParamsAdamW,
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let (dtype, shape, device) =
                    (var.dtype(), var.shape().clone(), var.device().clone());
                Ok(Slot {
                    m: Var::zeros(&shape, dtype, &device)?,
                    v: Var::zeros(&shape, dtype, &device)?,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            step: 0,
            params,
        })
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = &self.params;
        let lr_lambda = p.lr * p.weight_decay;
        let scale_m = 1f64 / (1f64 - p.beta1.powi(self.step as i32));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(self.step as i32));
        for s in &self.slots {
            let theta = &s.var;
            if let Some(g) = grads.get(theta) {
                let next_m = ((s.m.as_tensor() * p.beta1)? + (g * (1.0 - p.beta1))?)?;
                let next_v = ((s.v.as_tensor() * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
                let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
                let next_theta = (next_theta - (adjusted * p.lr)?)?;
                s.m.set(&next_m)?;
                s.v.set(&next_v)?;
                theta.set(&next_theta)?;
            }
        }
        Ok(())
    }
}

impl AdamW {
    /// A copy of the state (for checkpoints).
    pub fn state(&self) -> Result<AdamState> {
        let flat = |v: &Var| v.as_tensor().flatten_all()?.to_vec1::<f32>();
        Ok(AdamState {
            step: self.step,
            m: self
                .slots
                .iter()
                .map(|s| flat(&s.m))
                .collect::<Result<_>>()?,
            v: self
                .slots
                .iter()
                .map(|s| flat(&s.v))
                .collect::<Result<_>>()?,
        })
    }

    /// Restores a state saved by [`state`](Self::state) for the same variables; the number
    /// of variables and each one's element count must match.
    pub fn set_state(&mut self, state: &AdamState) -> Result<()> {
        if state.m.len() != self.slots.len() || state.v.len() != self.slots.len() {
            candle_core::bail!(
                "optimizer state holds {} / {} moment tensors for {} variables",
                state.m.len(),
                state.v.len(),
                self.slots.len()
            );
        }
        for (i, s) in self.slots.iter().enumerate() {
            let shape = s.var.shape();
            for (name, data, var) in [("m", &state.m[i], &s.m), ("v", &state.v[i], &s.v)] {
                if data.len() != shape.elem_count() {
                    candle_core::bail!(
                        "optimizer state: {name} of variable {i} has {} values, expected {}",
                        data.len(),
                        shape.elem_count()
                    );
                }
                let t = candle_core::Tensor::from_slice(data, shape, s.var.device())?
                    .to_dtype(s.var.dtype())?;
                var.set(&t)?;
            }
        }
        self.step = state.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A small least-squares problem: `|x·w - y|^2` with weight decay.
    fn problem() -> (Tensor, Tensor, Vec<f32>) {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let y: Vec<f32> = (0..8).map(|i| (i as f32 * 0.3).sin()).collect();
        let w0: Vec<f32> = (0..3).map(|i| 0.1 * i as f32 - 0.05).collect();
        (
            Tensor::from_vec(x, (8, 3), &dev).unwrap(),
            Tensor::from_vec(y, (8, 1), &dev).unwrap(),
            w0,
        )
    }

    fn loss(x: &Tensor, y: &Tensor, w: &Var) -> Tensor {
        (x.matmul(w.as_tensor()).unwrap() - y)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    }

    fn params() -> ParamsAdamW {
        ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.01,
            ..Default::default()
        }
    }

    fn values(w: &Var) -> Vec<f32> {
        w.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn matches_candle_nn_adamw_exactly() {
        let (x, y, w0) = problem();
        let ours_w = Var::from_vec(w0.clone(), (3, 1), &Device::Cpu).unwrap();
        let theirs_w = Var::from_vec(w0, (3, 1), &Device::Cpu).unwrap();
        let mut ours = AdamW::new(vec![ours_w.clone()], params()).unwrap();
        let mut theirs = candle_nn::AdamW::new(vec![theirs_w.clone()], params()).unwrap();
        for _ in 0..25 {
            ours.backward_step(&loss(&x, &y, &ours_w)).unwrap();
            theirs.backward_step(&loss(&x, &y, &theirs_w)).unwrap();
        }
        assert_eq!(values(&ours_w), values(&theirs_w));
        assert_ne!(values(&ours_w), vec![-0.05, 0.05, 0.15], "it trained");
    }

    #[test]
    fn restored_state_continues_exactly() {
        let (x, y, w0) = problem();
        let straight = Var::from_vec(w0.clone(), (3, 1), &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![straight.clone()], params()).unwrap();
        for _ in 0..20 {
            opt.backward_step(&loss(&x, &y, &straight)).unwrap();
        }

        let first = Var::from_vec(w0, (3, 1), &Device::Cpu).unwrap();
        let mut a = AdamW::new(vec![first.clone()], params()).unwrap();
        for _ in 0..10 {
            a.backward_step(&loss(&x, &y, &first)).unwrap();
        }
        let state = a.state().unwrap();
        assert_eq!(state.step, 10);
        let resumed = Var::from_vec(values(&first), (3, 1), &Device::Cpu).unwrap();
        let mut b = AdamW::new(vec![resumed.clone()], params()).unwrap();
        b.set_state(&state).unwrap();
        for _ in 0..10 {
            b.backward_step(&loss(&x, &y, &resumed)).unwrap();
        }
        assert_eq!(values(&resumed), values(&straight));

        // Without the moments the continuation differs (what checkpoints used to do).
        let fresh = Var::from_vec(values(&first), (3, 1), &Device::Cpu).unwrap();
        let mut c = AdamW::new(vec![fresh.clone()], params()).unwrap();
        for _ in 0..10 {
            c.backward_step(&loss(&x, &y, &fresh)).unwrap();
        }
        assert_ne!(values(&fresh), values(&straight));
    }

    #[test]
    fn mismatched_state_is_refused() {
        let w = Var::from_vec(vec![0f32; 3], (3, 1), &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![w], params()).unwrap();
        let err = opt
            .set_state(&AdamState {
                step: 1,
                m: vec![vec![0.0; 2]],
                v: vec![vec![0.0; 3]],
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("m of variable 0 has 2 values, expected 3"),
            "{err}"
        );
    }
}
