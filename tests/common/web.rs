//! For the live-view tests: a running `sensorium run` with its HTTP address, a minimal
//! HTTP/1.1 client, and a WebDriver client for Debian's headless Chromium (chromedriver).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::HANG_GUARD;

/// `sensorium run ARGS --http 127.0.0.1:0`, its stderr collected; stopped with SIGTERM.
pub struct Running {
    pub child: Child,
    pub addr: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sensorium"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut addr = None;
        let mut line = String::new();
        while addr.is_none() && err.read_line(&mut line).unwrap_or(0) > 0 {
            stderr.lock().unwrap().push_str(&line);
            if let Some(i) = line.find("live view on http://") {
                let rest = &line[i + "live view on http://".len()..];
                addr = rest.split('/').next().map(str::to_owned);
            }
            line.clear();
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("no live view address in: {}", stderr.lock().unwrap());
        };
        let s2 = stderr.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            while err.read_line(&mut rest).unwrap_or(0) > 0 {
                s2.lock().unwrap().push_str(&rest);
                rest.clear();
            }
        });
        Running {
            child,
            addr,
            stderr,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to end by itself (panics after `within`); its exit code and
    /// everything it wrote on stderr.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the stderr reader take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return (s.code(), self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "run did not end: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit code (the hang guard kills it).
    pub fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (s.code(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sensorium did not stop: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails midway leaves no process behind.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `path` to hold at least `n` lines (panics after the hang guard).
pub fn wait_for_lines(path: &std::path::Path, n: usize) {
    let deadline = Instant::now() + HANG_GUARD;
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < n {
        assert!(
            Instant::now() < deadline,
            "{} has fewer than {n} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request (`Connection: close`); the status and the body (chunked bodies decoded).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly the body (a server may keep the connection open).
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = Vec::new();
    if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Headless Chromium driven through chromedriver's WebDriver endpoint.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; `make test-deps` installs it)");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(&addr).is_ok() {
                let (code, body) = http(&addr, "GET", "/status", None);
                if code == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1500",
                         "--no-first-run", "--disable-background-networking"]
            }
        }}});
        let (code, body) = http(&addr, "POST", "/session", Some(&caps));
        assert_eq!(code, 200, "new session: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_owned();
        Browser {
            driver,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (code, text) = http(&self.addr, method, &path, body.as_ref());
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(code, 200, "{method} {path}: {text}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The element matching `css` (WebDriver's element id).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), None);
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn text_of(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `return` gives the value).
    pub fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Polls `script` until it returns true; panics with `what` after `within`.
    pub fn wait_for(&self, what: &str, within: Duration, script: &str) {
        let deadline = Instant::now() + within;
        while self.js(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "waited {within:?} for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// PNG of the page, or of one element.
    pub fn screenshot(&self, css: Option<&str>) -> Vec<u8> {
        let path = match css {
            Some(c) => format!("/element/{}/screenshot", self.find(c)),
            None => "/screenshot".into(),
        };
        let v = self.call("GET", &path, None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("PNG base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(&self.addr, "DELETE", &path, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
