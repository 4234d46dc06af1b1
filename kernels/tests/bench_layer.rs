//! The benchmark's FAVOR-shaped layer (`benches/qformer_kernels/layer.rs`, compared with
//! the same layer in PyTorch by the GPU benchmark) on the CPU references: its slot outputs
//! are causal over frames in the configured direction, and the queries see every frame.

#[path = "../benches/qformer_kernels/layer.rs"]
#[allow(dead_code)] // the benchmark's profiling entry points are not used here
mod layer;

use layer::{LayerConfig, LayerWeights, Scratch};
use rand::{Rng, SeedableRng};
use sensorium_kernels::{Backend, Causal};

fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn small_cfg(causal: Causal) -> LayerConfig {
    LayerConfig {
        slot_dim: 32,
        slot_heads: 2,
        slot_ffn: 48,
        query_dim: 16,
        query_heads: 2,
        query_ffn: 24,
        n_queries: 4,
        slots_per_frame: 3,
        frames: 3,
        causal,
        ..Default::default()
    }
}

fn run_layer(cfg: &LayerConfig, slots: &[f32], queries: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let be = Backend::Cpu;
    let w = LayerWeights::<f32>::random(cfg, &be, 9).unwrap();
    let mut s = Scratch::<f32>::new(cfg, &be, 1).unwrap();
    let (si, qi) = (be.upload(slots).unwrap(), be.upload(queries).unwrap());
    let mut so = be.zeros::<f32>(slots.len()).unwrap();
    let mut qo = be.zeros::<f32>(queries.len()).unwrap();
    layer::forward(cfg, &be, &w, &mut s, &si, &qi, None, &mut so, &mut qo).unwrap();
    (be.download(&so).unwrap(), be.download(&qo).unwrap())
}

#[test]
fn layer_slot_outputs_are_causal_over_frames() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for causal in [Causal::Past, Causal::Future] {
        let cfg = small_cfg(causal);
        let per_frame = cfg.slots_per_frame * cfg.slot_dim;
        let slots = rand_vec(&mut rng, cfg.slots() * cfg.slot_dim);
        let queries = rand_vec(&mut rng, cfg.n_queries * cfg.query_dim);
        let mut changed = slots.clone();
        for x in &mut changed[(cfg.frames - 1) * per_frame..] {
            *x += 0.5; // perturb the last frame only
        }
        let (a, qa) = run_layer(&cfg, &slots, &queries);
        let (b, qb) = run_layer(&cfg, &changed, &queries);
        let first_same = a[..per_frame] == b[..per_frame];
        match causal {
            Causal::Past => assert!(first_same, "past-only: frame 0 must not see the last frame"),
            _ => assert!(!first_same, "future: frame 0 sees the last frame"),
        }
        assert!(
            max_abs_diff(
                &a[(cfg.frames - 1) * per_frame..],
                &b[(cfg.frames - 1) * per_frame..]
            ) > 1e-3
        );
        assert!(
            max_abs_diff(&qa, &qb) > 1e-4,
            "queries cross-attend every frame"
        );
    }
}
