//! The push request grammar: the one place that says what a master may send and a handler accepts.
//!
//! ```text
//! request = "sync" SP module [ SP dir ]
//! module  = [a-z0-9][a-z0-9._-]{0,63}
//! dir     = component *( "/" component )      ; 1..16 components
//! component = [A-Za-z0-9_][A-Za-z0-9._+~-]{0,127}
//! ```
//! ASCII only, single spaces, at most 1024 bytes. Input is refused, never repaired: whatever
//! parses re-renders byte for byte, so the master (which renders with [`Request`]'s `Display`)
//! can never send what a handler would refuse.

use std::fmt;

/// Longest request accepted, in bytes.
pub const MAX_REQUEST_LEN: usize = 1024;
/// Most path components a dir may have.
pub const MAX_DIR_COMPONENTS: usize = 16;
const MAX_MODULE_LEN: usize = 64;
const MAX_COMPONENT_LEN: usize = 128;
const VERB: &str = "sync";

/// Why a request was refused. Every variant is a malformed request (exit 64 on the handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Empty,
    TooLong(usize),
    NotAscii,
    ControlCharacter,
    /// Leading, trailing or doubled spaces.
    BadSpacing,
    UnknownVerb,
    WordCount(usize),
    BadModule(NameError),
    BadDir(NameError),
}

/// Why a module name or dir was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    BadFirstCharacter,
    BadCharacter,
    EmptyComponent,
    TooManyComponents,
    TrailingSlash,
    LeadingSlash,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "is empty",
            NameError::TooLong => "is too long",
            NameError::BadFirstCharacter => "starts with a character that is not allowed there",
            NameError::BadCharacter => "holds a character that is not allowed",
            NameError::EmptyComponent => "has an empty path component",
            NameError::TooManyComponents => "has too many path components",
            NameError::TrailingSlash => "ends with '/'",
            NameError::LeadingSlash => "is absolute",
        })
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Empty => write!(f, "empty request"),
            RequestError::TooLong(n) => {
                write!(f, "request is {n} bytes, the limit is {MAX_REQUEST_LEN}")
            }
            RequestError::NotAscii => write!(f, "request holds non-ASCII bytes"),
            RequestError::ControlCharacter => write!(f, "request holds control characters"),
            RequestError::BadSpacing => {
                write!(f, "words must be separated by single spaces")
            }
            RequestError::UnknownVerb => write!(f, "expected 'sync <module> [dir]'"),
            RequestError::WordCount(n) => {
                write!(f, "expected 'sync <module> [dir]', got {n} words")
            }
            RequestError::BadModule(e) => write!(f, "module name {e}"),
            RequestError::BadDir(e) => write!(f, "dir {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// A validated module name: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bytes = s.as_bytes();
        let first = *bytes.first().ok_or(NameError::Empty)?;
        if bytes.len() > MAX_MODULE_LEN {
            return Err(NameError::TooLong);
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadFirstCharacter);
        }
        let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b);
        if !bytes.iter().all(ok) {
            return Err(NameError::BadCharacter);
        }
        Ok(ModuleName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated relative dir: 1..16 components, each `[A-Za-z0-9_][A-Za-z0-9._+~-]{0,127}`.
/// No component can be `.` or `..` or start with `.`, `-` or `~`, so joining it under a
/// destination always stays inside that destination (symlinks aside: the handler checks those).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelDir(String);

impl RelDir {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.starts_with('/') {
            return Err(NameError::LeadingSlash);
        }
        if s.ends_with('/') {
            return Err(NameError::TrailingSlash);
        }
        let mut count = 0;
        for component in s.split('/') {
            count += 1;
            if count > MAX_DIR_COMPONENTS {
                return Err(NameError::TooManyComponents);
            }
            check_component(component)?;
        }
        Ok(RelDir(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dir's components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True when `self` is `other` or lies below it (`a/b` is within `a`, `ab` is not).
    pub fn is_within(&self, other: &RelDir) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes()[other.0.len()] == b'/')
    }
}

fn check_component(c: &str) -> Result<(), NameError> {
    let bytes = c.as_bytes();
    let first = *bytes.first().ok_or(NameError::EmptyComponent)?;
    if bytes.len() > MAX_COMPONENT_LEN {
        return Err(NameError::TooLong);
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err(NameError::BadFirstCharacter);
    }
    let ok = |b: &u8| b.is_ascii_alphanumeric() || b"._+~-".contains(b);
    if !bytes.iter().all(ok) {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

impl fmt::Display for RelDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated push request. Its `Display` is the exact wire form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub module: ModuleName,
    pub dir: Option<RelDir>,
}

impl Request {
    /// Builds a request from parts, validating each; the master uses this to render what it sends.
    pub fn new(module: &str, dir: Option<&str>) -> Result<Self, RequestError> {
        let module = ModuleName::parse(module).map_err(RequestError::BadModule)?;
        let dir = dir
            .map(RelDir::parse)
            .transpose()
            .map_err(RequestError::BadDir)?;
        let request = Request { module, dir };
        let len = request.to_string().len();
        if len > MAX_REQUEST_LEN {
            return Err(RequestError::TooLong(len));
        }
        Ok(request)
    }

    /// Parses raw bytes as received (e.g. `SSH_ORIGINAL_COMMAND`, which need not be UTF-8).
    pub fn parse(raw: &[u8]) -> Result<Self, RequestError> {
        if raw.is_empty() {
            return Err(RequestError::Empty);
        }
        if raw.len() > MAX_REQUEST_LEN {
            return Err(RequestError::TooLong(raw.len()));
        }
        if !raw.is_ascii() {
            return Err(RequestError::NotAscii);
        }
        if raw.iter().any(u8::is_ascii_control) {
            return Err(RequestError::ControlCharacter);
        }
        // ASCII was checked above, so this cannot fail.
        let text = std::str::from_utf8(raw).map_err(|_| RequestError::NotAscii)?;
        let words: Vec<&str> = text.split(' ').collect();
        if words.iter().any(|w| w.is_empty()) {
            return Err(RequestError::BadSpacing);
        }
        if words[0] != VERB {
            return Err(RequestError::UnknownVerb);
        }
        if !(2..=3).contains(&words.len()) {
            return Err(RequestError::WordCount(words.len()));
        }
        Request::new(words[1], words.get(2).copied())
    }

    /// `module` or `module dir`, for logs and status.
    pub fn target(&self) -> String {
        match &self.dir {
            Some(dir) => format!("{} {}", self.module, dir),
            None => self.module.to_string(),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VERB} {}", self.module)?;
        if let Some(dir) = &self.dir {
            write!(f, " {dir}")?;
        }
        Ok(())
    }
}

/// Renders client-supplied bytes so they can never forge a log line or a terminal escape:
/// printable ASCII except `\` passes through, everything else becomes `\xNN`.
pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Request {
        Request::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
    }

    fn bad(s: &[u8]) -> RequestError {
        match Request::parse(s) {
            Ok(r) => panic!("{s:?} accepted as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_full_and_dir_requests() {
        assert_eq!(ok("sync fedora").dir, None);
        let r = ok("sync fedora releases/41/Everything");
        assert_eq!(r.module.as_str(), "fedora");
        assert_eq!(r.dir.as_ref().unwrap().as_str(), "releases/41/Everything");
        assert_eq!(
            ok("sync debian-security pool/main/o/openssl_3.0+x~1").to_string(),
            "sync debian-security pool/main/o/openssl_3.0+x~1"
        );
    }

    #[test]
    fn refuses_malformed_requests() {
        for s in [
            "",
            "sync",
            "sync ",
            " sync fedora",
            "sync fedora ",
            "sync  fedora",
            "rsync fedora",
            "SYNC fedora",
            "sync Fedora",
            "sync -fedora",
            "sync fedora a b",
            "sync fedora ..",
            "sync fedora a/../b",
            "sync fedora /etc",
            "sync fedora a/",
            "sync fedora a//b",
            "sync fedora .hidden",
            "sync fedora -rf",
            "sync fedora ~root",
            "sync fedora *",
            "sync fedora a;b",
            "sync fedora $(id)",
            "sync fedora `id`",
            "sync fedora a|b",
            "sync fedora host:path",
            "sync fedora 'a'",
            "sync fedora \"a\"",
            "sync fedora a\\b",
            "sync fedora ./a",
            "sync fed/ora",
        ] {
            bad(s.as_bytes());
        }
        assert_eq!(
            bad(b"sync fedora\nsync other"),
            RequestError::ControlCharacter
        );
        assert_eq!(bad(b"sync fedora\ta"), RequestError::ControlCharacter);
        assert_eq!(
            bad("sync fedora caf\u{e9}".as_bytes()),
            RequestError::NotAscii
        );
        assert_eq!(bad(b"sync fedora \xff"), RequestError::NotAscii);
    }

    #[test]
    fn enforces_length_limits() {
        let long_module = "m".repeat(65);
        bad(format!("sync {long_module}").as_bytes());
        ok(&format!("sync {}", "m".repeat(64)));
        let long_component = "c".repeat(129);
        bad(format!("sync m {long_component}").as_bytes());
        let deep = vec!["d"; 17].join("/");
        bad(format!("sync m {deep}").as_bytes());
        ok(&format!("sync m {}", vec!["d"; 16].join("/")));
        let huge = vec!["c".repeat(128); 8].join("/");
        assert!(matches!(
            bad(format!("sync m {huge}").as_bytes()),
            RequestError::TooLong(_)
        ));
        assert!(matches!(
            bad(&vec![b'a'; 5000]),
            RequestError::TooLong(5000)
        ));
    }

    #[test]
    fn new_validates_what_the_master_renders() {
        assert_eq!(
            Request::new("fedora", Some("a/b")).unwrap().to_string(),
            "sync fedora a/b"
        );
        assert!(Request::new("fedora", Some("../x")).is_err());
        assert!(Request::new("Fedora", None).is_err());
    }

    #[test]
    fn is_within_respects_component_boundaries() {
        let d = |s| RelDir::parse(s).unwrap();
        assert!(d("a/b").is_within(&d("a")));
        assert!(d("a").is_within(&d("a")));
        assert!(!d("ab").is_within(&d("a")));
        assert!(!d("a").is_within(&d("a/b")));
    }

    #[test]
    fn escape_neutralises_line_breaks_and_escapes() {
        assert_eq!(escape_bytes(b"sync a\nfake line"), "sync a\\x0afake line");
        assert_eq!(escape_bytes(b"\x1b[31m\\"), "\\x1b[31m\\x5c");
        assert_eq!(escape_bytes(b"\xff"), "\\xff");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn dir_strategy() -> impl Strategy<Value = String> {
            proptest::collection::vec("[A-Za-z0-9_][A-Za-z0-9._+~-]{0,12}", 1..5)
                .prop_map(|parts| parts.join("/"))
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_accepted_rerenders_exactly(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(r) = Request::parse(&raw) {
                    let rendered = r.to_string();
                    prop_assert_eq!(rendered.as_bytes(), &raw[..]);
                }
            }

            #[test]
            fn near_miss_text_never_panics(raw in "sync [a-z./ ~_+-]{0,40}") {
                if let Ok(r) = Request::parse(raw.as_bytes()) {
                    prop_assert_eq!(r.to_string(), raw);
                }
            }

            #[test]
            fn accepted_dirs_stay_inside_dest(module in "[a-z0-9][a-z0-9._-]{0,20}", dir in dir_strategy()) {
                let raw = format!("sync {module} {dir}");
                let r = Request::parse(raw.as_bytes()).unwrap();
                prop_assert_eq!(r.to_string(), raw);
                let dest = std::path::Path::new("/srv/mirror/m");
                let joined = dest.join(r.dir.unwrap().as_str());
                // Lexically: no component may climb out or restart at the root.
                let mut depth = 0i32;
                for c in joined.strip_prefix(dest).unwrap().components() {
                    match c {
                        std::path::Component::Normal(_) => depth += 1,
                        _ => prop_assert!(false, "component {:?} in {:?}", c, joined),
                    }
                }
                prop_assert!(depth >= 1);
            }
        }
    }
}
