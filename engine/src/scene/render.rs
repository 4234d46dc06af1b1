//! Drawing a scene: RGB frames at any size (anti-aliased by 4× supersampling, brightness and
//! sensor noise per scene) and 16 kHz audio (tones, white noise, clicks as 5 ms bursts).

use super::world::{Colour, Rng, Scene, SceneTimeline, Shape, Sound};
use crate::frame::AUDIO_RATE;

/// Length of one click, s.
const CLICK_S: f64 = 0.005;
/// Pitch of the click burst, Hz.
const CLICK_HZ: f64 = 3000.0;

/// Whether the point `(dx, dy)` (frame heights, relative to the centre) lies in the shape.
fn inside(shape: Shape, dx: f64, dy: f64, r: f64) -> bool {
    match shape {
        Shape::Circle => dx * dx + dy * dy <= r * r,
        Shape::Square => dx.abs() <= r && dy.abs() <= r,
        // Apex up, base down, as wide as it is tall.
        Shape::Triangle => dy >= -r && dy <= r && dx.abs() <= (dy + r) / 2.0,
    }
}

/// Frame at stream time `t_s` (`frame_index` seeds its sensor noise), `width`×`height` RGB24.
pub fn picture(
    tl: &mut SceneTimeline,
    t_s: f64,
    frame_index: u64,
    width: u32,
    height: u32,
) -> Vec<u8> {
    let s = tl.at(t_s);
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let scale = h as f64; // pixels per frame height
    let xscale = w as f64 / s.aspect; // keeps the layout when the frame's aspect differs
    let local = t_s - s.start_s;
    let mut acc = vec![0f64; w * h * 3];
    for o in s.objects.iter().filter(|o| o.visible(local)) {
        let (cx, cy) = o.centre(local, s.aspect);
        let (px, py) = (cx * xscale, cy * scale);
        let (rx, ry) = (o.radius * xscale, o.radius * scale);
        let x0 = (px - rx - 1.0).floor().max(0.0) as usize;
        let x1 = ((px + rx + 1.0).ceil() as usize).min(w);
        let y0 = (py - ry - 1.0).floor().max(0.0) as usize;
        let y1 = ((py + ry + 1.0).ceil() as usize).min(h);
        let rgb = o.colour.rgb();
        for y in y0..y1 {
            for x in x0..x1 {
                let mut cover = 0.0;
                for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let dx = (x as f64 + sx) / xscale - cx;
                    let dy = (y as f64 + sy) / scale - cy;
                    if inside(o.shape, dx, dy, o.radius) {
                        cover += 0.25;
                    }
                }
                if cover > 0.0 {
                    let i = (y * w + x) * 3;
                    for c in 0..3 {
                        // Later objects paint over earlier ones.
                        acc[i + c] = acc[i + c] * (1.0 - cover) + rgb[c] * cover;
                    }
                }
            }
        }
    }
    let mut noise = Rng::for_item(s.seed, frame_index);
    acc.iter()
        .map(|v| {
            let n = if s.noise_std > 0.0 {
                s.noise_std * noise.normal()
            } else {
                0.0
            };
            ((v * s.brightness + n).clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect()
}

/// `n` samples from sample `first` of the stream.
pub fn audio(tl: &mut SceneTimeline, first: u64, n: usize) -> Vec<f32> {
    let rate = AUDIO_RATE as f64;
    let mut out = Vec::with_capacity(n);
    let mut p = first;
    let end = first + n as u64;
    while p < end {
        let s = tl.at(p as f64 / rate);
        let scene_end = (s.end_s() * rate).round() as u64;
        let stop = end.min(scene_end.max(p + 1));
        render_scene_audio(s, p, stop, &mut out);
        p = stop;
    }
    out
}

fn render_scene_audio(s: &Scene, from: u64, to: u64, out: &mut Vec<f32>) {
    let rate = AUDIO_RATE as f64;
    let local = |p: u64| p as f64 / rate - s.start_s;
    let clicks = s.clicks(local(from) - CLICK_S, local(to));
    for p in from..to {
        let t = local(p);
        let v = if t + 1e-9 < s.sound_onset_s {
            0.0
        } else {
            match s.sound {
                Sound::Silence => 0.0,
                Sound::LowTone | Sound::HighTone => {
                    let cycles = (s.freq * (t - s.sound_onset_s)).fract();
                    s.level * (std::f64::consts::TAU * cycles).sin()
                }
                Sound::Noise => {
                    let mut r = Rng::for_item(s.seed ^ 0x5EED, p);
                    s.level * 0.6 * (2.0 * r.unit() - 1.0)
                }
                Sound::Clicks => clicks
                    .iter()
                    .filter(|c| t >= **c && t < **c + CLICK_S)
                    .map(|c| {
                        let d = t - c;
                        s.level * (-d / 0.0012).exp() * (std::f64::consts::TAU * CLICK_HZ * d).sin()
                    })
                    .sum(),
            }
        };
        out.push(v as f32);
    }
}

/// The name of a colour/shape pair as answers say it ("red square").
pub fn name(colour: Colour, shape: Shape) -> String {
    format!("{} {}", colour.name(), shape.name())
}
