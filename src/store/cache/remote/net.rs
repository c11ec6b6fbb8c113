//! The HTTP and S3 backends of [`super`]: a static HTTP server (read only; https checked
//! against the host's certificate authorities; a Basic login from the netrc file) and an S3
//! bucket (requests signed with rusty-s3 and the user's AWS credentials).

use super::*;

// ---- HTTP ----

/// The HTTP client: timeouts for a dead connection, answers read whatever their status, and
/// the host's certificate authorities for https (see [`root_certs`]).
fn agent() -> Result<ureq::Agent> {
    let tls = ureq::tls::TlsConfig::builder().root_certs(root_certs()?).build();
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .timeout_per_write(Some(Duration::from_secs(60)))
        .user_agent(concat!("mobix/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into())
}

/// The certificate authorities an https cache is checked against, as curl and OpenSSL find
/// them on Debian: `SSL_CERT_FILE`, else the system bundle (which carries the CAs a team added
/// with update-ca-certificates), else the Mozilla roots built in.
fn root_certs() -> Result<ureq::tls::RootCerts> {
    let (file, explicit) = match std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        Some(f) => (PathBuf::from(f), true),
        None => (PathBuf::from("/etc/ssl/certs/ca-certificates.crt"), false),
    };
    let pem = match fs::read(&file) {
        Ok(p) => p,
        Err(e) if !explicit && e.kind() == io::ErrorKind::NotFound => return Ok(ureq::tls::RootCerts::WebPki),
        Err(e) => return Err(util::user_error(e, format!("reading {} (SSL_CERT_FILE)", file.display()))),
    };
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        if explicit {
            return Err(Fail::new(format!("{} (SSL_CERT_FILE) holds no PEM certificate", file.display())).into());
        }
        return Ok(ureq::tls::RootCerts::WebPki);
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// A ureq failure: the network's (retry, then build) or the user's (a bad URL, TLS).
fn ureq_error(what: &str, e: ureq::Error) -> anyhow::Error {
    // rustls refuses a certificate inside the connection's I/O: the user's to fix.
    if let ureq::Error::Io(io) = &e {
        if io.kind() == io::ErrorKind::InvalidData && io.to_string().contains("certificate") {
            return Fail::new(format!("{what}: {io}"))
                .hint(
                    "add the certificate authority that signed the server's certificate to the host \
                     (update-ca-certificates), or name a PEM file of it in SSL_CERT_FILE",
                )
                .into();
        }
    }
    match e {
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => Unreachable(format!("{what}: {e}")).into(),
        other => Fail::new(format!("{what}: {other}")).into(),
    }
}

/// What an answer's status means for a read: Some(body), None (absent), or an error.
/// `login`: where the credentials sent came from, if any (for a 401's message).
fn read_answer(
    what: &str,
    resp: ureq::http::Response<ureq::Body>,
    login: Option<&str>,
) -> Result<Option<Box<dyn Read + Send>>> {
    let status = resp.status().as_u16();
    match status {
        200..=299 => Ok(Some(Box::new(resp.into_body().into_reader()))),
        404 | 410 => Ok(None),
        408 | 429 | 500..=599 => Err(Unreachable(format!("{what}: the server answered {status}")).into()),
        401 => {
            let (said, hint) = match login {
                Some(from) => (
                    format!("the server refused the login from {from}"),
                    "check the login and password there".to_string(),
                ),
                None => (
                    "the server wants a login".to_string(),
                    "put `machine HOST login USER password PASSWORD` for it in ~/.netrc (or in the file NETRC names)"
                        .to_string(),
                ),
            };
            Err(Fail::new(format!("{what}: the server answered 401: {said}")).hint(hint).into())
        }
        _ => Err(Fail::new(format!("{what}: the server answered {status}")).into()),
    }
}

pub(super) struct HttpCache {
    base: String,
    agent: ureq::Agent,
    name: String,
    /// The `Authorization` header from the netrc file, and which file and host it is.
    login: Option<(String, String)>,
}

impl HttpCache {
    pub(super) fn new(base: &str) -> Result<HttpCache> {
        let host = url::Url::parse(base).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        let login = netrc_login(&host)?.map(|(user, password, file)| {
            let header = format!("Basic {}", basic_credentials(&user, &password));
            (header, format!("{} (machine {host}, login {user})", file.display()))
        });
        Ok(HttpCache { base: base.to_string(), agent: agent()?, name: base.to_string(), login })
    }

    fn call(&self, method: &str, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        let url = format!("{}/{key}", self.base);
        let what = format!("{method} {url}");
        let mut req = match method {
            "HEAD" => self.agent.head(&url),
            _ => self.agent.get(&url),
        };
        if let Some((header, _)) = &self.login {
            req = req.header("Authorization", header);
        }
        let resp = req.call().map_err(|e| ureq_error(&what, e))?;
        read_answer(&what, resp, self.login.as_ref().map(|l| l.1.as_str()))
    }
}

impl Backend for HttpCache {
    fn describe(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        self.call("GET", key)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.call("HEAD", key)?.is_some())
    }

    fn put(&self, _key: &str, _file: &Path) -> Result<()> {
        Err(Fail::new(format!("{} is an HTTP cache: it is read only", self.base))
            .hint("push to the directory or S3 bucket the server serves (`--to DIR` or `--to s3://…`)")
            .into())
    }
}

// ---- S3 ----

pub(super) struct S3Cache {
    bucket: rusty_s3::Bucket,
    creds: Option<rusty_s3::Credentials>,
    /// Where the credentials came from, for messages.
    creds_from: String,
    prefix: String,
    agent: ureq::Agent,
    name: String,
}

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

impl S3Cache {
    pub(super) fn new(loc: &S3Location, text: &str) -> Result<S3Cache> {
        let (endpoint, style) = match &loc.endpoint {
            Some(e) => (e.clone(), rusty_s3::UrlStyle::Path),
            None => (format!("https://s3.{}.amazonaws.com", loc.region), rusty_s3::UrlStyle::VirtualHost),
        };
        let endpoint_url = url::Url::parse(&endpoint)
            .map_err(|e| Fail::new(format!("{text}: endpoint {endpoint:?} is not a URL: {e}")))?;
        let bucket = rusty_s3::Bucket::new(endpoint_url, style, loc.bucket.clone(), loc.region.clone())
            .map_err(|e| Fail::new(format!("{text}: bucket {:?} at {endpoint}: {e:?}", loc.bucket)))?;
        let (creds, creds_from) = credentials()?;
        Ok(S3Cache { bucket, creds, creds_from, prefix: loc.prefix.clone(), agent: agent()?, name: text.to_string() })
    }

    fn object(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// An S3 error answer (XML `<Code>`, `<Message>`) as the user's problem or the network's.
    fn refusal(&self, what: &str, status: u16, body: &str) -> anyhow::Error {
        let code = element(body, "Code").unwrap_or_default();
        let key_id = self.creds.as_ref().map(|c| c.key().to_string()).unwrap_or_default();
        let msg = match code.as_str() {
            "SignatureDoesNotMatch" => {
                return Fail::new(format!(
                    "{what}: the S3 server refused the request's signature (SignatureDoesNotMatch): the secret \
                     key for access key {key_id} ({}) is wrong",
                    self.creds_from
                ))
                .hint("set AWS_SECRET_ACCESS_KEY (or the profile's aws_secret_access_key) to the key's secret")
                .into()
            }
            "InvalidAccessKeyId" => {
                return Fail::new(format!(
                    "{what}: the S3 server does not know the access key {key_id} ({}) (InvalidAccessKeyId)",
                    self.creds_from
                ))
                .hint("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE for ~/.aws/credentials")
                .into()
            }
            "NoSuchBucket" => {
                return Fail::new(format!("{what}: the bucket {} does not exist", self.bucket.name()))
                    .hint("create the bucket first; mobix does not create buckets")
                    .into()
            }
            "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                return Unreachable(format!("{what}: the server answered {status} {code}")).into()
            }
            "" => format!("{what}: the server answered {status}"),
            c => format!("{what}: the server answered {status} {c}: {}", element(body, "Message").unwrap_or_default()),
        };
        if status >= 500 || status == 429 {
            return Unreachable(msg).into();
        }
        let hint = if status == 403 && self.creds.is_none() {
            "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        } else {
            "check the bucket's permissions for this access key"
        };
        Fail::new(msg).hint(hint).into()
    }

    /// Sends a signed GET, or a PUT of `body`: 2xx gives the answer, a missing object
    /// None, anything else an error.
    fn send(&self, url: url::Url, key: &str, body: Option<&Path>) -> Result<Option<ureq::http::Response<ureq::Body>>> {
        let method = if body.is_some() { "PUT" } else { "GET" };
        let what = format!("{method} {}", self.object_url(key));
        let resp = match body {
            Some(file) => {
                let f = fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
                self.agent.put(url.as_str()).send(&f)
            }
            None => self.agent.get(url.as_str()).call(),
        }
        .map_err(|e| ureq_error(&what, e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(Some(resp));
        }
        if status == 404 && body.is_none() {
            // A missing object; a missing bucket says so in the body.
            let mut body = String::new();
            let _ = resp.into_body().into_reader().take(64 << 10).read_to_string(&mut body);
            if body.contains("<Code>NoSuchBucket</Code>") {
                return Err(self.refusal(&what, status, &body));
            }
            return Ok(None);
        }
        let mut body = String::new();
        let _ = resp.into_body().into_reader().take(64 << 10).read_to_string(&mut body);
        Err(self.refusal(&what, status, &body))
    }

    fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket.name(), self.object(key))
    }
}

impl Backend for S3Cache {
    fn describe(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        use rusty_s3::actions::S3Action;
        let url =
            rusty_s3::actions::GetObject::new(&self.bucket, self.creds.as_ref(), &self.object(key)).sign(SIGNED_FOR);
        Ok(self.send(url, key, None)?.map(|r| Box::new(r.into_body().into_reader()) as Box<dyn Read + Send>))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        use rusty_s3::actions::S3Action;
        retrying(|| {
            let url = rusty_s3::actions::HeadObject::new(&self.bucket, self.creds.as_ref(), &self.object(key))
                .sign(SIGNED_FOR);
            let what = format!("HEAD {}", self.object_url(key));
            let resp = self.agent.head(url.as_str()).call().map_err(|e| ureq_error(&what, e))?;
            match resp.status().as_u16() {
                200..=299 => Ok(true),
                404 => Ok(false),
                s @ (429 | 500..=599) => Err(Unreachable(format!("{what}: the server answered {s}")).into()),
                // A HEAD answer has no body to say why: a GET's does.
                _ => Ok(self.get(key)?.is_some()),
            }
        })
    }

    fn put(&self, key: &str, file: &Path) -> Result<()> {
        use rusty_s3::actions::S3Action;
        retrying(|| {
            let url = rusty_s3::actions::PutObject::new(&self.bucket, self.creds.as_ref(), &self.object(key))
                .sign(SIGNED_FOR);
            self.send(url, key, Some(file)).map(|_| ())
        })
    }

    /// ListObjectsV2 under the prefix with `/` as delimiter (so `archives/` is one common
    /// prefix, not thousands of keys), a page of up to 1000 keys at a time.
    fn list(&self) -> Result<Option<Vec<String>>> {
        use rusty_s3::actions::S3Action;
        let prefix = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = retrying(|| {
                let mut action = rusty_s3::actions::ListObjectsV2::new(&self.bucket, self.creds.as_ref());
                action.with_prefix(prefix.as_str());
                action.with_delimiter("/");
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let Some(resp) = self.send(action.sign(SIGNED_FOR), "", None)? else {
                    return Err(Fail::new(format!("listing {}: the bucket does not exist", self.object_url(""))).into());
                };
                let mut body = String::new();
                resp.into_body()
                    .into_reader()
                    .take(64 << 20)
                    .read_to_string(&mut body)
                    .map_err(|e| transport(&self.name, "(listing)", &e))?;
                parse_listing(&body)
                    .map_err(|e| anyhow::Error::from(Fail::new(format!("listing {}: {e}", self.object_url("")))))
            })?;
            names.extend(page.keys.iter().filter_map(|k| k.strip_prefix(&prefix)).map(str::to_string));
            match page.next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(Some(names)),
            }
        }
    }
}

/// One page of a ListObjectsV2 answer: the keys, and the token for the next page.
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    pub keys: Vec<String>,
    pub next: Option<String>,
}

/// Reads the keys (`<Contents><Key>`) and `<NextContinuationToken>` of a ListObjectsV2
/// answer, and nothing else: servers differ in the rest (s3s-fs sends no ETag). Keys are
/// percent-decoded where the answer says `<EncodingType>url`, then XML-unescaped.
pub fn parse_listing(body: &str) -> Result<Listing, String> {
    if !body.contains("<ListBucketResult") {
        return Err("the answer is not a ListObjectsV2 result".into());
    }
    let url_encoded = element(body, "EncodingType").as_deref() == Some("url");
    let mut keys = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<Contents>") {
        let end = rest[start..].find("</Contents>").ok_or("a <Contents> element is not closed")? + start;
        let key = element(&rest[start..end], "Key").ok_or("a <Contents> element has no <Key>")?;
        keys.push(if url_encoded { percent_decode(&key)? } else { key });
        rest = &rest[end..];
    }
    Ok(Listing { keys, next: element(body, "NextContinuationToken") })
}

/// The unescaped text of the first `<tag>…</tag>` in `xml`.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    let mut out = String::new();
    let mut t = &xml[start..end];
    while let Some(amp) = t.find('&') {
        out.push_str(&t[..amp]);
        let semi = t[amp..].find(';')? + amp;
        out.push(match &t[amp + 1..semi] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            n => {
                let code = match n.strip_prefix("#x") {
                    Some(h) => u32::from_str_radix(h, 16).ok()?,
                    None => n.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(code)?
            }
        });
        t = &t[semi + 1..];
    }
    out.push_str(t);
    Some(out)
}

/// `%XX` escapes decoded (a `+` stays a `+`: S3 encodes a space as `%20`; a malformed
/// escape stays as it is, and such a key names no store path).
fn percent_decode(s: &str) -> Result<String, String> {
    let decoded =
        percent_encoding::percent_decode_str(s).decode_utf8().map_err(|_| format!("the key {s:?} is not UTF-8"))?;
    Ok(decoded.into_owned())
}

/// AWS credentials as the AWS tools find them: the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) at profile `AWS_PROFILE`
/// (default `default`). None: unsigned requests, for public buckets.
fn credentials() -> Result<(Option<rusty_s3::Credentials>, String)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        let c = match env("AWS_SESSION_TOKEN") {
            Some(t) => rusty_s3::Credentials::new_with_token(id, secret, t),
            None => rusty_s3::Credentials::new(id, secret),
        };
        return Ok((Some(c), "from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_string()));
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let Some(file) = file else { return Ok((None, "none".into())) };
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, "none".into())),
        Err(e) => return Err(util::user_error(e, format!("reading {}", file.display()))),
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
    let Some(section) = ini_section(&text, &profile) else {
        if env("AWS_PROFILE").is_some() {
            return Err(Fail::new(format!("{} has no profile [{profile}] (AWS_PROFILE)", file.display())).into());
        }
        return Ok((None, "none".into()));
    };
    let get = |k: &str| section.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => {
            let c = match get("aws_session_token") {
                Some(t) => rusty_s3::Credentials::new_with_token(id, secret, t),
                None => rusty_s3::Credentials::new(id, secret),
            };
            Ok((Some(c), format!("from [{profile}] in {}", file.display())))
        }
        _ => Err(Fail::new(format!(
            "[{profile}] in {} lacks aws_access_key_id or aws_secret_access_key",
            file.display()
        ))
        .into()),
    }
}

/// The login for `host` in the netrc file, as curl and git read it: `$NETRC`, else
/// `~/.netrc`. None: no file, or no entry for the host (and no `default`).
fn netrc_login(host: &str) -> Result<Option<(String, String, PathBuf)>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (file, explicit) = match env("NETRC") {
        Some(f) => (PathBuf::from(f), true),
        None => match env("HOME") {
            Some(h) => (PathBuf::from(h).join(".netrc"), false),
            None => return Ok(None),
        },
    };
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(util::user_error(e, format!("reading {} (NETRC)", file.display()))),
    };
    Ok(netrc_entry(&text, host).map(|(u, p)| (u, p, file)))
}

/// `user:password` in base64, for an `Authorization: Basic` header (RFC 7617).
fn basic_credentials(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// The login and password of `machine host` in netrc text, else of `default`. Tokens are
/// separated by any white space; a `macdef` ends the entries read.
fn netrc_entry(text: &str, host: &str) -> Option<(String, String)> {
    let mut words = text.split_whitespace();
    let (mut found, mut fallback) = (None, None);
    // The entry being read: (is it the host's, is it default, login, password).
    let mut cur: Option<(bool, bool, Option<String>, Option<String>)> = None;
    let mut finish = |cur: Option<(bool, bool, Option<String>, Option<String>)>| {
        if let Some((mine, default, Some(login), password)) = cur {
            let entry = (login, password.unwrap_or_default());
            if mine && found.is_none() {
                found = Some(entry);
            } else if default && fallback.is_none() {
                fallback = Some(entry);
            }
        }
    };
    while let Some(w) = words.next() {
        match w {
            "machine" => {
                finish(cur.take());
                cur = Some((words.next() == Some(host), false, None, None));
            }
            "default" => {
                finish(cur.take());
                cur = Some((false, true, None, None));
            }
            "login" => {
                if let Some(c) = cur.as_mut() {
                    c.2 = words.next().map(str::to_string);
                }
            }
            "password" => {
                if let Some(c) = cur.as_mut() {
                    c.3 = words.next().map(str::to_string);
                }
            }
            "account" => {
                words.next();
            }
            "macdef" => break,
            _ => {}
        }
    }
    finish(cur.take());
    found.or(fallback)
}

/// The `key = value` lines of `[name]` in an INI file.
fn ini_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut inside = None;
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(sec) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if inside.is_some() {
                break;
            }
            if sec.trim() == name {
                inside = Some(Vec::new());
            }
            continue;
        }
        if let (Some(v), Some((k, val))) = (inside.as_mut(), l.split_once('=')) {
            v.push((k.trim().to_string(), val.trim().to_string()));
        }
    }
    inside
}

#[cfg(test)]
mod tests;
