mod common;
use common::*;
use sensorium_engine::QueueMode;

#[test]
fn explore() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("av.mkv");
    make_av_mkv(&p, 4);
    for fps in [2.0, 5.0] {
        let s = stream(&format!("kind = \"file\"\npath = \"{}\"", p.display()));
        let (_h, rx) = start(&s, &params(fps, QueueMode::Lossless), 8).unwrap();
        let ev = collect(&rx);
        let sp = split(&ev);
        println!("fps {fps}: video {:?}", sp.video_pts);
        let total: usize = sp.audio.iter().map(|a| a.1).sum();
        println!("audio chunks {} total {} first {:?} last {:?} last_ev {:?}", sp.audio.len(), total, sp.audio.first(), sp.audio.last(), sp.last);
    }
    let bytes = std::fs::read(&p).unwrap();
    let t = dir.path().join("trunc.mkv");
    std::fs::write(&t, &bytes[..bytes.len()/2]).unwrap();
    let s = stream(&format!("kind = \"file\"\npath = \"{}\"", t.display()));
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Lossless), 8).unwrap();
    let sp = split(&collect(&rx));
    println!("trunc: video {:?} audio {} last {:?}", sp.video_pts, sp.audio.len(), sp.last);
    let n = dir.path().join("notes.mkv");
    std::fs::write(&n, "hello, this is not a video\n".repeat(100)).unwrap();
    let s = stream(&format!("kind = \"file\"\npath = \"{}\"", n.display()));
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Lossless), 8).unwrap();
    let sp = split(&collect(&rx));
    println!("nonmedia: last {:?}", sp.last);
    println!("probe nonmedia: {:?}", sensorium_pipelines::probe(n.to_str().unwrap()));
    let s = stream(&format!("kind = \"file\"\npath = \"{}\"", dir.path().join("nope.mkv").display()));
    println!("missing: {:?}", start(&s, &params(2.0, QueueMode::Lossless), 8).err());
    let s = stream("kind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:1/cam\"\nuser = \"bob\"\npassword = \"hunter2\"\n[reconnect]\ninitial_ms = 50\nmax_attempts = 2");
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Realtime), 8).unwrap();
    let t0 = std::time::Instant::now();
    let sp = split(&collect(&rx));
    println!("rtsp unreachable ({:?}): {:?}", t0.elapsed(), sp.last);
    let s = stream("kind = \"launch\"\npipeline = \"videotestsrc num-buffers=10 ! appsink name=video\"\nlive = false");
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Lossless), 8).unwrap();
    let sp = split(&collect(&rx));
    println!("launch: {:?} {:?}", sp.video_pts, sp.last);
    let s = stream("kind = \"test\"\nis_live = false\nduration_s = 2.0");
    let (_h, rx) = start(&s, &params(2.0, QueueMode::Lossless), 8).unwrap();
    let sp = split(&collect(&rx));
    println!("test: {:?} {} {:?}", sp.video_pts, sp.audio.iter().map(|a| a.1).sum::<usize>(), sp.last);
}
