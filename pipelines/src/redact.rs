//! Keeping credentials out of every message: URLs are shown without their `user:password@`
//! part, and known secrets are masked wherever an element's debug text might repeat them.

/// `url` without userinfo: `rtsp://user:pw@host:554/x` -> `rtsp://host:554/x`.
pub fn strip_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    // The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Element properties whose values are credentials.
const CREDENTIAL_KEYS: &[&str] = &[
    "user-id",
    "user-pw",
    "password",
    "passwd",
    "proxy-id",
    "proxy-pw",
    "user-agent-password",
];

/// Masks every occurrence of the given secrets (and of URLs with userinfo) in `text`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (raw, shown) pairs, longest first so a secret inside another is masked by the outer.
    pairs: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for one input URL and its separately configured credentials.
    pub fn new(url: &str, secrets: &[&str]) -> Self {
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
                    for part in userinfo.split(':') {
                        if !part.is_empty() {
                            pairs.push((part.to_owned(), "***".into()));
                        }
                    }
                }
            }
        }
        for s in secrets {
            if !s.is_empty() {
                pairs.push(((*s).to_owned(), "***".into()));
            }
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
                if CREDENTIAL_KEYS.contains(&key) && !value.is_empty() {
                    out.pairs.push((value.to_owned(), "***".into()));
                    continue;
                }
                if value.contains("://") {
                    out.pairs.extend(Self::new(value, &[]).pairs);
                }
            } else if token.contains("://") {
                out.pairs.extend(Self::new(token, &[]).pairs);
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
        let r = Redactor::new("rtsp://bob:pw1@host/x", &["topsecret", "alice"]);
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
}
