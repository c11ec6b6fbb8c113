use super::*;

#[test]
fn substituters_parse_from_directories_and_urls() {
    let d = Substituter::parse("cache").unwrap();
    assert_eq!(d.location, Location::Dir(PathBuf::from("cache")));
    let h = Substituter::parse("https://cache.example.org/mobix/?priority=10").unwrap();
    assert_eq!(h.location, Location::Http("https://cache.example.org/mobix".into()));
    assert_eq!(h.priority, Some(10));
    let s = Substituter::parse("s3://team/phones/ci?endpoint=http://127.0.0.1:9000/&region=eu-1").unwrap();
    assert_eq!(
        s.location,
        Location::S3(S3Location {
            bucket: "team".into(),
            prefix: "phones/ci".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            region: "eu-1".into()
        })
    );
    for (bad, says) in [
        ("ftp://x/y", "unknown scheme ftp://"),
        ("s3://b?endpoint=nope", "is not a URL"),
        ("s3://b?endpont=http://x", "unknown parameter \"endpont\""),
        ("https://x/?priority=high", "priority=high is not a number"),
        ("https://x/?region=eu", "unknown parameter \"region\""),
        ("", "empty"),
    ] {
        let e = Substituter::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_credentials_file_is_read_by_profile() {
    let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[ci]\n# comment\naws_access_key_id = C\n";
    assert_eq!(
        ini_section(text, "default").unwrap(),
        [("aws_access_key_id".into(), "A".into()), ("aws_secret_access_key".into(), "B".into())]
    );
    assert_eq!(ini_section(text, "ci").unwrap().len(), 1);
    assert!(ini_section(text, "other").is_none());
}

#[test]
fn a_directory_cache_reads_what_it_wrote_and_says_what_it_lacks() {
    let t = tempfile::tempdir().unwrap();
    let b = open(&Substituter::parse(t.path().join("c").to_str().unwrap()).unwrap()).unwrap();
    assert!(get_small(&*b, "x.json").unwrap().is_none());
    let src = t.path().join("src");
    fs::write(&src, b"hello").unwrap();
    b.put("archives/x", &src).unwrap();
    assert!(b.exists("archives/x").unwrap());
    let moved = std::sync::atomic::AtomicI64::new(0);
    let add = |n: i64| {
        moved.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let (h, n) = download(&*b, "archives/x", &t.path().join("dl"), 5, &add).unwrap().unwrap();
    assert_eq!((h, n, moved.into_inner()), (Sha256Digest::of(b"hello"), 5, 5));
    // More bytes than the metadata promised: refused before the end.
    let e = download(&*b, "archives/x", &t.path().join("dl"), 4, &|_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("larger than its signed metadata says"), "{e:#}");
    assert!(!is_unreachable(&e));
}

/// A one-thread HTTP server answering each connection with the next of `answers`
/// (raw responses); returns its base URL and a counter of requests served.
fn serve(answers: Vec<Vec<u8>>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for a in answers {
            let Ok((mut c, _)) = l.accept() else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|k| k > 2) {
                line.clear();
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = c.write_all(&a);
        }
    });
    (url, n)
}

fn answer(status: &str, body: &[u8], length: usize) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 {status}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

#[test]
fn http_retries_5xx_then_reads_says_404_is_absent_and_a_cut_body_is_the_networks_fault() {
    let (url, n) = serve(vec![
        answer("503 Service Unavailable", b"", 0),
        answer("500 Internal Server Error", b"", 0),
        answer("200 OK", b"StoreDir: /mobix/store\n", 23),
        answer("404 Not Found", b"", 0),
    ]);
    let b = open(&Substituter::parse(&url).unwrap()).unwrap();
    assert_eq!(get_small(&*b, "mobix-cache-info").unwrap().unwrap(), b"StoreDir: /mobix/store\n");
    assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3, "two 5xx answers were retried");
    assert!(get_small(&*b, "x.json").unwrap().is_none(), "404: the cache lacks it");

    // A body shorter than its content-length, four times: given up, as the network's fault.
    let cut = answer("200 OK", b"only part", 1000);
    let (url, n) = serve(vec![cut; 4]);
    let b = open(&Substituter::parse(&url).unwrap()).unwrap();
    let t = tempfile::tempdir().unwrap();
    let e = download(&*b, "archives/a", &t.path().join("a"), 1000, &|_| {}).unwrap_err();
    assert!(is_unreachable(&e) && format!("{e:#}").contains("gave up after 4 tries"), "{e:#}");
    assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 4);

    // A 403 from a plain HTTP server is the user's to fix, not retried.
    let (url, n) = serve(vec![answer("403 Forbidden", b"", 0)]);
    let b = open(&Substituter::parse(&url).unwrap()).unwrap();
    let e = get_small(&*b, "x.json").unwrap_err();
    assert!(!is_unreachable(&e) && format!("{e:#}").contains("answered 403"), "{e:#}");
    assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_netrc_entry_is_found_by_host_else_default() {
    let text = "machine other.example login o password op\n\
                machine cache.example.org\n  login team\n  password s3cr3t account x\n\
                default login anon password guest\n\
                macdef init\nmachine late login l password lp\n";
    assert_eq!(netrc_entry(text, "cache.example.org"), Some(("team".into(), "s3cr3t".into())));
    assert_eq!(netrc_entry(text, "other.example"), Some(("o".into(), "op".into())));
    assert_eq!(netrc_entry(text, "unknown"), Some(("anon".into(), "guest".into())));
    // Past a macdef nothing is read.
    assert_eq!(netrc_entry(text, "late"), Some(("anon".into(), "guest".into())));
    assert_eq!(netrc_entry("machine a login u password p", "b"), None);
    // One line, in any order.
    assert_eq!(netrc_entry("machine h password p login u", "h"), Some(("u".into(), "p".into())));
}

#[test]
fn a_bucket_listing_gives_its_keys_and_the_next_page() {
    // As AWS documents the answer (ETag, Owner and all) with encoding-type=url.
    let aws = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>team</Name><Prefix>ci/</Prefix>
<KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
<Contents><Key>ci/0iqr-logsave-1.47.0-2%2Bb2.json</Key><LastModified>2026-12-05T10:00:00.000Z</LastModified>
<ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag><Size>723</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>ci/mobix-cache-info</Key><Size>36</Size></Contents>
<CommonPrefixes><Prefix>ci/archives/</Prefix></CommonPrefixes></ListBucketResult>"#;
    let l = parse_listing(aws).unwrap();
    assert_eq!(l.keys, ["ci/0iqr-logsave-1.47.0-2+b2.json", "ci/mobix-cache-info"]);
    assert_eq!(l.next.as_deref(), Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="));
    // Not url-encoded, the last page, with an escaped key; no ETag (as s3s-fs answers).
    let last = "<ListBucketResult><Contents><Key>a&amp;b+c.json</Key></Contents></ListBucketResult>";
    assert_eq!(parse_listing(last).unwrap(), Listing { keys: vec!["a&b+c.json".into()], next: None });
    assert!(parse_listing("<Error><Code>AccessDenied</Code></Error>").is_err());
    assert!(parse_listing("<ListBucketResult><Contents><Size>1</Size></Contents>").is_err());
    let odd = "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%zz%2</Key></Contents>";
    assert_eq!(parse_listing(odd).unwrap().keys, ["%zz%2"]);
    let latin1 = "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%E9</Key></Contents>";
    assert!(parse_listing(latin1).unwrap_err().contains("not UTF-8"));
}

#[test]
fn basic_credentials_are_base64() {
    // RFC 7617's example.
    assert_eq!(basic_credentials("Aladdin", "open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

#[test]
fn a_401_asks_for_a_login_and_is_not_retried() {
    let (url, n) = serve(vec![answer("401 Unauthorized", b"", 0), answer("401 Unauthorized", b"", 0)]);
    let b = open(&Substituter::parse(&url).unwrap()).unwrap();
    let e = get_small(&*b, "x.json").unwrap_err();
    assert!(!is_unreachable(&e) && format!("{e:#}").contains("answered 401: the server wants a login"), "{e:#}");
    assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    let resp = agent().unwrap().get(&url).call().unwrap();
    let e = read_answer("GET x", resp, Some("/root/.netrc")).err().unwrap();
    assert!(format!("{e:#}").contains("refused the login from /root/.netrc"), "{e:#}");
}
