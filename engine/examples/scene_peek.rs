//! Prints a scene stream's windows with their questions and writes a contact sheet of
//! frames (PPM): `cargo run -p sensorium-engine --example scene_peek -- SEED WINDOWS OUT.ppm`.

use sensorium_engine::scene::{qa, render, Rng, SceneTimeline, WorldParams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let windows: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(6);
    let out = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "/tmp/scene.ppm".into());
    let p = WorldParams {
        window_s: 2.0,
        aspect: 1.0,
    };
    let mut tl = SceneTimeline::new(seed, p);
    let (w, h, per) = (64u32, 64u32, 4usize);
    let mut sheet = vec![0u8; (w as usize * per) * (h as usize * windows) * 3];
    for k in 0..windows {
        let t0 = k as f64 * 2.0;
        let s = tl.at(t0).clone();
        println!(
            "window {k} [{t0}, {}) scene {:?} origin {:?} onset {}",
            t0 + 2.0,
            s.sound,
            s.origin,
            s.sound_onset_s
        );
        let mut r = Rng::for_item(seed, 1000 + k as u64);
        for q in qa::questions(&mut tl, t0, t0 + 2.0, &mut r) {
            println!("  [{}] {} -> {}", q.task, q.question, q.answer);
        }
        for f in 0..per {
            let img = render::picture(&mut tl, t0 + f as f64 * 0.5, (4 * k + f) as u64, w, h);
            for y in 0..h as usize {
                let row = (k * h as usize + y) * w as usize * per + f * w as usize;
                sheet[row * 3..(row + w as usize) * 3]
                    .copy_from_slice(&img[y * w as usize * 3..(y + 1) * w as usize * 3]);
            }
        }
    }
    let mut bytes = format!("P6 {} {} 255\n", w as usize * per, h as usize * windows).into_bytes();
    bytes.extend(sheet);
    std::fs::write(&out, bytes).unwrap();
}
