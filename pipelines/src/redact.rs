//! Keeping credentials out of every message: URLs are shown without their `user:password@`
//! part, and known secrets are masked wherever an element's debug text might repeat them.

/// `url` without userinfo: `rtsp://user:pw@host:554/x` -> `rtsp://host:554/x`.
pub use sensorium_engine::config::load::strip_userinfo;

/// Element properties whose values are user names.
const USER_KEYS: &[&str] = &["user-id", "proxy-id"];
/// Element properties whose values are passwords.
const SECRET_KEYS: &[&str] = &["user-pw", "proxy-pw", "password", "passwd"];

/// User names shorter than this are left alone: masking every "u" in a message would make
/// it unreadable, and a name is not the secret that guards the camera.
const MIN_MASKED_USER: usize = 3;

fn push_user(pairs: &mut Vec<(String, String)>, user: &str) {
    if user.chars().count() >= MIN_MASKED_USER {
        pairs.push((user.to_owned(), "***".into()));
    }
}

/// Passwords are masked whatever their length: a garbled message beats a leaked secret.
fn push_secret(pairs: &mut Vec<(String, String)>, secret: &str) {
    if !secret.is_empty() {
        pairs.push((secret.to_owned(), "***".into()));
    }
}

/// Masks every occurrence of the given secrets (and of URLs with userinfo) in `text`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (raw, shown) pairs, longest first so a secret inside another is masked by the outer.
    pairs: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for one input URL and its separately configured credentials.
    pub fn new(url: &str, user: Option<&str>, password: Option<&str>) -> Self {
        let mut pairs = Vec::new();
        let shown = strip_userinfo(url);
        if shown != url {
            pairs.push((url.to_owned(), shown));
            // The userinfo itself, and its parts, may be echoed in pieces.
            if let Some(scheme_end) = url.find("://") {
                let rest = &url[scheme_end + 3..];
                let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                if let Some(at) = rest[..auth_end].rfind('@') {
                    let userinfo = &rest[..at];
                    pairs.push((userinfo.to_owned(), "***".into()));
                    match userinfo.split_once(':') {
                        Some((user, pw)) => {
                            push_user(&mut pairs, user);
                            push_secret(&mut pairs, pw);
                        }
                        None => push_user(&mut pairs, userinfo),
                    }
                }
            }
        }
        if let Some(u) = user {
            push_user(&mut pairs, u);
        }
        if let Some(p) = password {
            push_secret(&mut pairs, p);
        }
        pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Self { pairs }
    }

    /// A redactor for a gst-launch description: URLs with userinfo and the values of
    /// credential properties (`user-id=`, `user-pw=`, `password=`...) found in it.
    pub fn for_launch(description: &str) -> Self {
        let mut out = Self::default();
        for token in description.split_whitespace() {
            let token = token.trim_matches(|c| c == '"' || c == '\'');
            if let Some((key, value)) = token.split_once('=') {
                let value = value.trim_matches(|c| c == '"' || c == '\'');
                if USER_KEYS.contains(&key) {
                    push_user(&mut out.pairs, value);
                    continue;
                }
                if SECRET_KEYS.contains(&key) {
                    push_secret(&mut out.pairs, value);
                    continue;
                }
                if value.contains("://") {
                    out.pairs.extend(Self::new(value, None, None).pairs);
                }
            } else if token.contains("://") {
                out.pairs.extend(Self::new(token, None, None).pairs);
            }
        }
        out.pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        out
    }

    /// `text` with every known secret replaced.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (raw, shown) in &self.pairs {
            out = out.replace(raw.as_str(), shown);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_userinfo() {
        assert_eq!(
            strip_userinfo("rtsp://admin:hunter2@10.0.0.5:554/live?x=1"),
            "rtsp://10.0.0.5:554/live?x=1"
        );
        assert_eq!(
            strip_userinfo("rtsp://10.0.0.5/a@b"),
            "rtsp://10.0.0.5/a@b",
            "an '@' in the path is not userinfo"
        );
        assert_eq!(strip_userinfo("/tmp/a.mkv"), "/tmp/a.mkv");
    }

    #[test]
    fn redactor_masks_url_and_secrets() {
        let r = Redactor::new("rtsp://bob:pw1@host/x", Some("alice"), Some("topsecret"));
        let msg = r.apply("rtsp://bob:pw1@host/x failed for alice with topsecret; pw1 bob:pw1");
        assert_eq!(msg, "rtsp://host/x failed for *** with ***; *** ***");
    }

    #[test]
    fn launch_redactor_masks_credential_properties_and_urls() {
        let r = Redactor::for_launch(
            "rtspsrc location=rtsp://u1:p4ss@cam/x user-id=admin user-pw=\"s3cr3t\" ! fakesink",
        );
        assert_eq!(
            r.apply("rtsp://u1:p4ss@cam/x admin s3cr3t"),
            "rtsp://cam/x *** ***"
        );
    }

    #[test]
    fn short_user_names_stay_readable_passwords_never_do() {
        let r = Redactor::new("rtsp://u:p@host/x", None, None);
        assert_eq!(
            r.apply("rtsp://u:p@host/x: unauthorized user u, pass p"),
            "rts***://host/x: unauthorized user u, ***ass ***"
        );
    }
}
