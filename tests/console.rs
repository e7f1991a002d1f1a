//! The review console of `rocsync run` (issue 13), met as people and attackers meet it.
//!
//! Over HTTP with reqwest: pages without a session, the session cookie, CSRF, a helpdesk
//! account's approval, login throttling, the security headers, an idle session, account
//! changes, an approval applied and audited, a rejection, names from outside escaped, proxy
//! mode, TLS, the configuration check, the review mail's link, the AMC search.
//!
//! In a real browser (Debian's chromium, driven by chromedriver through fantoccini): the RSSI
//! reads the plan grouped by AMC, approves it with a comment and sees it applied; a wrong
//! password shows its message and an idle session goes back to the login page; the helpdesk
//! signs in with the keyboard, finds no button, and a forged approval is refused. A screenshot of
//! each page goes to `target/console-screenshots/`; with `ROCSYNC_SAVE_SCREENSHOTS=1`, the
//! dashboard's and the plan's also to `docs/` for the README.

mod util;

use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use util::Sandbox;
use util::daemon::Daemon;
use util::smtp::SmtpSink;

const RSSI: (&str, &str) = ("marie", "correct horse battery");
const ENGINEER: (&str, &str) = ("paul", "réseau sans fil 2026");
const HELPDESK: (&str, &str) = ("accueil", "le standard du matin");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A sandbox reading urls-v1.json in review `mode`, with the console on `port` and `console`
/// lines added to its section.
fn sandbox(mode: &str, port: u16, console: &str) -> Sandbox {
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"{mode}\"\n\
         [console]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{console}"
    ));
    sb.set_answer("urls-v1.json");
    sb
}

fn add_user(sb: &Sandbox, (name, password): (&str, &str), role: &str) {
    let out = sb.cmd().args(["user", "add", name, "--role", role, "--password-stdin"]).write_stdin(format!("{password}\n")).output().unwrap();
    assert!(out.status.success(), "user add {name}: {}", util::stderr(&out));
}

/// The RSSI, an engineer and the helpdesk.
fn accounts(sb: &Sandbox) {
    add_user(sb, RSSI, "rssi");
    add_user(sb, ENGINEER, "engineer");
    add_user(sb, HELPDESK, "helpdesk");
}

fn plan_status(sb: &Sandbox, id: &str) -> serde_json::Value {
    sb.json(&["plan", "show", id, "--format", "json"])
}

/// `util::wait_until` at a finer step (20 ms): the click-to-export time is measured with it.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Every byte rocsync keeps in its state directory.
fn state_bytes(sb: &Sandbox) -> Vec<u8> {
    ["state/state.db", "state/state.db-wal"].iter().flat_map(|f| std::fs::read(sb.path(f)).unwrap_or_default()).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// An answer of the console.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The whole `Set-Cookie` of the session this answer opens.
    fn set_cookie(&self) -> String {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.contains("rocsync_session="))
            .unwrap_or_else(|| panic!("no session cookie in {} {:?}", self.status, self.headers))
            .to_owned()
    }

    /// `name=value` of that cookie, to send back.
    fn cookie(&self) -> String {
        self.set_cookie().split(';').next().unwrap().to_owned()
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let field = r#"<input type="hidden" name="csrf" value=""#;
        let at = self.body.find(field).unwrap_or_else(|| panic!("no CSRF field in {}", self.body)) + field.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    /// The login page's message.
    fn login_message(&self) -> &str {
        let start = self.body.find(r#"id="login-error">"#).map(|i| i + r#"id="login-error">"#.len()).unwrap_or(0);
        self.body[start..].split("</p>").next().unwrap_or("")
    }
}

async fn fetch(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("an answer from the console");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    Reply { status, headers, body: response.text().await.unwrap_or_default() }
}

/// A client that follows no redirect, trusts only `ca` (rustls with ring, as rocsync), and
/// connects from `from` when given.
fn http_client(from: Option<IpAddr>, ca: Option<&str>) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca.map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Vec<_>>()).unwrap_or_default() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .local_address(from)
        .build()
        .unwrap()
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

/// The console over HTTP, one request at a time.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Http {
        Http::with(base, None, None)
    }

    fn with(base: &str, from: Option<IpAddr>, ca: Option<&str>) -> Http {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = {
            let _inside = rt.enter();
            http_client(from, ca)
        };
        Http { rt, client, base: base.to_owned() }
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.rt.block_on(fetch(request))
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.client.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        match cookie {
            Some(cookie) => self.get_with(path, &[("cookie", cookie)]),
            None => self.get_with(path, &[]),
        }
    }

    fn post_with(&self, path: &str, headers: &[(&str, &str)], fields: &[(&str, &str)]) -> Reply {
        let mut request =
            self.client.post(format!("{}{path}", self.base)).header("content-type", "application/x-www-form-urlencoded").body(form(fields));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    fn post(&self, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Reply {
        match cookie {
            Some(cookie) => self.post_with(path, &[("cookie", cookie)], fields),
            None => self.post_with(path, &[], fields),
        }
    }

    /// Signs in; the session cookie to send back.
    fn login(&self, (name, password): (&str, &str)) -> String {
        let reply = self.post("/login", None, &[("username", name), ("password", password)]);
        assert_eq!((reply.status, reply.header("location")), (303, "/"), "login of {name}: {}", reply.body);
        reply.cookie()
    }
}

#[test]
fn every_page_but_the_login_page_and_the_style_sheet_needs_a_session() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let forged = format!("rocsync_session={}", "0".repeat(64));
    for path in ["/", "/plans", "/plans/1", "/amc?q=123456789", "/notifications", "/alerts", "/audit"] {
        let reply = http.get(path, None);
        assert_eq!((reply.status, reply.header("location")), (303, "/login"), "{path}");
        assert!(!reply.body.contains("mutuelle-exemple"), "{path} shows nothing: {}", reply.body);
        assert_eq!(http.get(path, Some(forged.as_str())).status, 303, "{path}: a made-up session is no session");
    }
    for path in ["/plans/1/approve", "/plans/1/reject", "/rollback", "/logout"] {
        let reply = http.post(path, None, &[("csrf", "x"), ("comment", "x")]);
        assert_eq!((reply.status, reply.header("location")), (303, "/login"), "{path}");
    }
    assert_eq!(plan_status(&sb, "1")["status"], "pending");
    let login = http.get("/login", None);
    assert_eq!(login.status, 200);
    assert!(login.body.contains(r#"<label for="username">"#) && login.body.contains(r#"<label for="password">"#), "{}", login.body);
    let css = http.get("/static/console.css", None);
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"), "{:?}", css.headers);
}

#[test]
fn a_login_opens_a_random_http_only_strict_session_that_the_store_keeps_only_hashed() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    // The name is not case-sensitive.
    let reply = http.post("/login", None, &[("username", "Marie"), ("password", RSSI.1)]);
    assert_eq!((reply.status, reply.header("location")), (303, "/"), "{}", reply.body);
    let set = reply.set_cookie();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    let cookie = reply.cookie();
    let id = cookie.strip_prefix("rocsync_session=").unwrap().to_owned();
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_ne!(http.login(RSSI), cookie, "each session its own random id");
    let page = http.get("/", Some(cookie.as_str()));
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"href="/plans/1""#), "the pending plan on the dashboard: {}", page.body);
    assert!(page.body.contains("<strong>marie</strong>"), "{}", page.body);
    assert!(!contains(&state_bytes(&sb), &id), "the store keeps a digest of the session id, not the id");
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("console:marie (rssi) from 127.0.0.1") && audit.contains("console.login"), "{audit}");
    // Signed out: the cookie is removed and the session ended.
    let out = http.post("/logout", Some(cookie.as_str()), &[("csrf", page.csrf().as_str())]);
    assert_eq!((out.status, out.header("location")), (303, "/login"));
    assert!(out.headers.get_all("set-cookie").iter().any(|v| v.to_str().unwrap_or("").contains("Max-Age=0")), "{:?}", out.headers);
    assert_eq!(http.get("/", Some(cookie.as_str())).status, 303);
}

#[test]
fn a_post_without_the_sessions_csrf_token_is_refused_403() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(RSSI);
    let page = http.get("/plans/1", Some(cookie.as_str()));
    assert_eq!(page.status, 200);
    for action in ["approve", "reject"] {
        assert!(page.body.contains(&format!(r#"<form method="post" action="/plans/1/{action}">"#)), "{}", page.body);
    }
    let csrf = page.csrf();
    let others = http.get("/plans/1", Some(http.login(ENGINEER).as_str())).csrf();
    assert_ne!(csrf, others, "a token per session");
    let zeros = "0".repeat(64);
    for action in ["approve", "reject"] {
        let path = format!("/plans/1/{action}");
        for token in [None, Some(""), Some(zeros.as_str()), Some(others.as_str())] {
            let mut fields = vec![("comment", "forged")];
            fields.extend(token.map(|t| ("csrf", t)));
            assert_eq!(http.post(&path, Some(cookie.as_str()), &fields).status, 403, "{path} with {token:?}");
        }
        // Another site's page posting the right token through the browser.
        let cross = http.post_with(&path, &[("cookie", cookie.as_str()), ("sec-fetch-site", "cross-site")], &[("csrf", csrf.as_str())]);
        assert_eq!(cross.status, 403, "{path} from another site");
        // Not a form at all.
        let json = http.send(
            http.client.post(format!("{}{path}", http.base)).header("cookie", cookie.as_str()).header("content-type", "application/json").body("{}"),
        );
        assert_eq!(json.status, 403, "{path} as JSON");
    }
    let plan = plan_status(&sb, "1");
    assert_eq!(plan["status"], "pending", "{plan}");
    assert_eq!(plan["decisions"].as_array().map(Vec::len), Some(0), "{plan}");
}

#[test]
fn a_helpdesk_account_has_no_approve_form_and_its_approval_is_refused_403() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(HELPDESK);
    let page = http.get("/plans/1", Some(cookie.as_str()));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("idb.roc.mutuelle-exemple.test"), "the helpdesk reads the plan: {}", page.body);
    assert!(!page.body.contains("/plans/1/approve") && !page.body.contains("/plans/1/reject"), "{}", page.body);
    assert!(page.body.contains(r#"id="read-only""#), "{}", page.body);
    assert!(!http.get("/plans", Some(cookie.as_str())).body.contains(r#"action="/rollback""#));
    // The session's own token (the sign-out form's): the role still decides nothing.
    let csrf = page.csrf();
    for path in ["/plans/1/approve", "/plans/1/reject", "/rollback"] {
        assert_eq!(http.post(path, Some(cookie.as_str()), &[("csrf", csrf.as_str()), ("comment", "forged")]).status, 403, "{path}");
    }
    let plan = plan_status(&sb, "1");
    assert_eq!((plan["status"].as_str(), plan["decisions"].as_array().map(Vec::len)), (Some("pending"), Some(0)), "{plan}");
    // An engineer decides.
    let engineer = http.login(ENGINEER);
    let csrf = http.get("/plans/1", Some(engineer.as_str())).csrf();
    assert_eq!(http.post("/plans/1/reject", Some(engineer.as_str()), &[("csrf", csrf.as_str()), ("comment", "pas maintenant")]).status, 303);
    assert_eq!(plan_status(&sb, "1")["status"], "rejected");
}

#[test]
fn login_failures_are_throttled_per_account_and_per_address_with_one_message_for_both_mistakes() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let daemon = Daemon::start(&sb);
    let base = format!("http://127.0.0.1:{port}");
    let http = Http::new(&base);
    let unknown = http.post("/login", None, &[("username", "personne"), ("password", "nimporte quoi 123")]);
    let wrong = http.post("/login", None, &[("username", RSSI.0), ("password", "not the password")]);
    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(wrong.login_message(), "Identifiant ou mot de passe incorrect.", "{}", wrong.body);
    assert_eq!(unknown.login_message(), wrong.login_message(), "an unknown account and a wrong password look the same");
    assert!(unknown.headers.get("set-cookie").is_none() && wrong.headers.get("set-cookie").is_none());
    for _ in 0..3 {
        assert_eq!(http.post("/login", None, &[("username", RSSI.0), ("password", "not the password")]).status, 401);
    }
    // Five failures from this address: the right password waits too, without being checked.
    let locked = http.post("/login", None, &[("username", RSSI.0), ("password", RSSI.1)]);
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.body.contains("attendez une minute"), "{}", locked.body);
    assert!(locked.headers.get("set-cookie").is_none());
    // From another address, the account itself: its fifth failure locks it there too.
    let other = Http::with(&base, Some("127.0.0.2".parse().unwrap()), None);
    assert_eq!(other.post("/login", None, &[("username", RSSI.0), ("password", "not the password")]).status, 401);
    assert_eq!(other.post("/login", None, &[("username", RSSI.0), ("password", RSSI.1)]).status, 429, "the account waits");
    // Another account from that address is not held back.
    other.login(HELPDESK);
    // No password in the log, the store or the pages.
    for secret in ["not the password", "nimporte quoi 123", RSSI.1, HELPDESK.1] {
        assert!(!daemon.log().contains(secret), "{secret} in the log:\n{}", daemon.log());
        assert!(!contains(&state_bytes(&sb), secret), "{secret} in the store");
        assert!(!wrong.body.contains(secret) && !locked.body.contains(secret));
    }
    assert!(daemon.log().contains("Console login failed"), "{}", daemon.log());
}

/// Found by the third attack: guesses sent together all passed the throttle before any was
/// counted (60 passwords checked at once), and a good login with any account of one's own reset
/// the address's count; a name like `-` stood for every invalid name.
#[test]
fn guesses_sent_together_are_throttled_and_a_good_login_keeps_the_address_limit() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let base = format!("http://127.0.0.1:{port}");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let tries: Vec<_> = (0..20)
            .map(|i| {
                let base = base.clone();
                scope.spawn(move || {
                    let http = Http::with(&base, Some("127.0.0.3".parse().unwrap()), None);
                    http.post("/login", None, &[("username", RSSI.0), ("password", &format!("wrong guess {i:04}"))]).status
                })
            })
            .collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "{checked} of 20 simultaneous guesses were checked: {statuses:?}");
    assert_eq!(checked + statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
    // Four failures from an address, then a good login of one's own: the fifth failure still
    // counts, and the sixth try waits. Spread over several names (each counted under its own
    // key), so that no name reaches five and only the address's limit can answer 429.
    let from = Http::with(&base, Some("127.0.0.4".parse().unwrap()), None);
    for name in [ENGINEER.0, ENGINEER.0, "x1", "x2"] {
        assert_eq!(from.post("/login", None, &[("username", name), ("password", "nimporte quoi 123")]).status, 401);
    }
    from.login(HELPDESK);
    assert_eq!(from.post("/login", None, &[("username", ENGINEER.0), ("password", "nimporte quoi 123")]).status, 401);
    assert_eq!(from.post("/login", None, &[("username", "x3"), ("password", "nimporte quoi 123")]).status, 429);
    // Unknown names are counted each under its own key, like accounts: the throttle does not
    // tell which names exist (five tries on made-up names from one address, then, from another,
    // a made-up name and an account both answer 401).
    let spray = Http::with(&base, Some("127.0.0.5".parse().unwrap()), None);
    for name in ["y1", "y2", "y3", "y4", "y5"] {
        assert_eq!(spray.post("/login", None, &[("username", name), ("password", "nimporte quoi 123")]).status, 401);
    }
    let other = Http::with(&base, Some("127.0.0.6".parse().unwrap()), None);
    assert_eq!(other.post("/login", None, &[("username", "y6"), ("password", "nimporte quoi 123")]).status, 401);
    assert_eq!(other.post("/login", None, &[("username", HELPDESK.0), ("password", "nimporte quoi 123")]).status, 401);
    // `-` is no one's name.
    let out = sb.cmd().args(["user", "add", "--role", "engineer", "--password-stdin", "--", "-"]).write_stdin("a good long password\n").output().unwrap();
    assert!(!out.status.success(), "`-` taken as an account name");
}

#[test]
fn every_answer_carries_a_csp_without_script_no_referrer_and_pages_are_not_cached() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(RSSI);
    let pages = ["/", "/plans", "/plans/1", "/amc?q=mutuelle", "/notifications", "/alerts", "/audit"];
    let mut answers: Vec<(String, Reply)> = pages.iter().map(|p| (p.to_string(), http.get(p, Some(cookie.as_str())))).collect();
    for path in ["/login", "/static/console.css", "/nowhere"] {
        answers.push((path.to_owned(), http.get(path, None)));
    }
    answers.push(("/ without a session".into(), http.get("/", None)));
    for (path, reply) in &answers {
        let csp = reply.header("content-security-policy");
        for directive in ["default-src 'none'", "script-src 'none'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp:?}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(reply.header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(reply.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(reply.header("x-frame-options"), "DENY", "{path}");
    }
    for (path, reply) in answers.iter().filter(|(p, _)| pages.contains(&p.as_str()) || p == "/login") {
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("cache-control"), "no-store", "{path}");
        assert!(reply.header("content-type").starts_with("text/html"), "{path}");
        assert!(!reply.body.contains("<script") && !reply.body.contains(" style="), "{path}: no script, no inline style");
    }
}

#[test]
fn an_idle_session_ends_and_pages_go_back_to_the_login() {
    let port = free_port();
    let sb = sandbox("review", port, "session_idle = \"5s\"\n");
    accounts(&sb);
    let daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(RSSI);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(http.get("/", Some(cookie.as_str())).status, 200, "used within five seconds: still open");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(http.get("/plans", Some(cookie.as_str())).status, 200, "each use starts the idle time again");
    std::thread::sleep(Duration::from_secs(6));
    let after = http.get("/plans/1", Some(cookie.as_str()));
    assert_eq!((after.status, after.header("location")), (303, "/login"));
    assert_eq!(http.get("/", Some(cookie.as_str())).status, 303, "ended, not only refused once");
    assert!(daemon.log().contains("Console session ended"), "{}", daemon.log());
}

#[test]
fn a_new_password_or_removing_the_account_ends_its_sessions_at_once() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let (marie, paul) = (http.login(RSSI), http.login(ENGINEER));
    let out = sb.cmd().args(["user", "passwd", "marie", "--password-stdin"]).write_stdin("une toute nouvelle phrase\n").output().unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(http.get("/", Some(marie.as_str())).status, 303, "a new password ends the session");
    assert_eq!(http.get("/", Some(paul.as_str())).status, 200, "other accounts keep theirs");
    assert_eq!(http.post("/login", None, &[("username", "marie"), ("password", RSSI.1)]).status, 401, "the old password");
    http.login(("marie", "une toute nouvelle phrase"));
    let removed = sb.ok(&["user", "remove", "paul"]);
    assert!(removed.contains("removed"), "{removed}");
    assert_eq!(http.get("/", Some(paul.as_str())).status, 303, "a removed account's session ends");
    assert_eq!(http.post("/login", None, &[("username", ENGINEER.0), ("password", ENGINEER.1)]).status, 401);
    let users = sb.json(&["user", "list", "--json"]);
    let names: Vec<&str> = users.as_array().unwrap().iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["accueil", "marie"]);
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("user.password_changed") && audit.contains("user.removed"), "{audit}");
}

#[test]
fn an_approval_in_the_console_is_applied_at_once_and_audited_with_the_name_and_address() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    assert!(!sb.path("out/hosts.txt").exists(), "nothing applied before approval");
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(RSSI);
    let page = http.get("/plans/1", Some(cookie.as_str()));
    assert!(page.body.contains("MUTUELLE EXEMPLE (123456789)"), "grouped by AMC: {}", page.body);
    let line = page.body.lines().find(|l| l.contains("+ idb.roc.mutuelle-exemple.test")).unwrap_or_else(|| panic!("{}", page.body));
    assert!(line.contains("tcp/443") && line.contains("IDB"), "{line}");
    let started = Instant::now();
    let reply = http.post("/plans/1/approve", Some(cookie.as_str()), &[("csrf", page.csrf().as_str()), ("comment", "Vérifié avec l'AMC\nticket 1234")]);
    assert_eq!((reply.status, reply.header("location")), (303, "/plans/1"), "{}", reply.body);
    assert!(wait_until(Duration::from_secs(5), || sb.path("out/hosts.txt").exists()), "applied within 5 s");
    eprintln!("console approval to the export in force: {:?}", started.elapsed());
    assert!(sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test"));
    let plan = plan_status(&sb, "1");
    assert!(wait_until(Duration::from_secs(5), || plan_status(&sb, "1")["status"] == "applied"), "{plan}");
    let plan = plan_status(&sb, "1");
    assert_eq!(plan["decisions"][0]["by"], "console:marie (rssi) from 127.0.0.1", "{plan}");
    assert_eq!(plan["decisions"][0]["comment"], "Vérifié avec l'AMC\\nticket 1234", "one escaped line: {plan}");
    let audit = sb.ok(&["audit"]);
    let approved = audit.lines().find(|l| l.contains("plan.approved")).unwrap_or_else(|| panic!("{audit}"));
    assert!(approved.contains("console:marie (rssi) from 127.0.0.1"), "{approved}");
    // The page says so, and offers no decision any more.
    let after = http.get("/plans/1", Some(cookie.as_str()));
    assert!(after.body.contains("appliqué") && !after.body.contains("/plans/1/approve"), "{}", after.body);
}

#[test]
fn a_rejection_in_the_console_leaves_what_is_in_force_and_a_decided_plan_is_not_decided_again() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(RSSI);
    let csrf = http.get("/plans/1", Some(cookie.as_str())).csrf();
    let reply = http.post("/plans/1/reject", Some(cookie.as_str()), &[("csrf", csrf.as_str()), ("comment", "page de maintenance")]);
    assert_eq!((reply.status, reply.header("location")), (303, "/plans/1"));
    let plan = plan_status(&sb, "1");
    assert_eq!((plan["status"].as_str(), plan["decisions"][0]["decision"].as_str()), (Some("rejected"), Some("reject")), "{plan}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!sb.path("out/hosts.txt").exists(), "nothing applied");
    let again = http.post("/plans/1/approve", Some(cookie.as_str()), &[("csrf", csrf.as_str())]);
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("plan 1 is rejected"), "{}", again.body);
    assert_eq!(plan_status(&sb, "1")["status"], "rejected");
}

#[test]
fn names_from_the_annuaire_are_escaped_on_every_page() {
    let port = free_port();
    let sb = sandbox("review", port, "");
    let hostile = r#"{"format": "annuaire-urls/1", "organismes": [{"numero_amc": "123456789",
        "libelle": "<script>alert(1)</script> <img src=x onerror=alert(2)> & \"Co\"", "etat": "cercle_de_confiance",
        "services": [{"code": "IDB", "url": "https://idb.hostile.test/idb"}], "domaines": []}]}"#;
    std::fs::write(sb.path("annuaire.json"), hostile).unwrap();
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(HELPDESK);
    for path in ["/plans/1", "/amc?q=script", "/amc?q=123456789"] {
        let page = http.get(path, Some(cookie.as_str()));
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{path}: {}", page.body);
        assert!(!page.body.contains("<script") && !page.body.contains("<img"), "{path}: {}", page.body);
    }
    // The search box gives back what was typed, escaped.
    let typed = http.get("/amc?q=%22%3E%3Cscript%3E", Some(cookie.as_str()));
    assert!(!typed.body.contains("\"><script>") && typed.body.contains("&#34;&#62;&#60;script&#62;"), "{}", typed.body);
}

#[test]
fn the_proxys_user_is_believed_only_from_a_trusted_proxy_and_only_for_an_account() {
    let port = free_port();
    let sb = sandbox("review", port, "auth = \"proxy\"\ntrusted_proxies = [\"127.0.0.1\"]\n");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let base = format!("http://127.0.0.1:{port}");
    let http = Http::new(&base);
    let as_marie = [("x-remote-user", "marie"), ("x-forwarded-for", "203.0.113.7, 198.18.1.2")];
    let page = http.get_with("/plans/1", &as_marie);
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = page.cookie();
    assert_eq!(http.get("/plans/1", None).status, 403, "no user named");
    assert_eq!(http.get_with("/plans/1", &[("x-remote-user", "inconnu")]).status, 403, "no such account");
    // Found by the third attack: two user headers (a proxy that appends the header leaves the
    // client's forged one first) made the first one believed.
    let twice = http.get_with("/plans/1", &[("x-remote-user", "marie"), ("x-remote-user", "accueil")]);
    assert_eq!(twice.status, 403, "{}", twice.body);
    // Found by the third attack: a client keeping no cookie opened a session, and wrote an
    // audit line, at every request. It goes on in its live session.
    let logins = || sb.ok(&["audit"]).matches("console.login").count();
    let before = logins();
    for _ in 0..5 {
        assert_eq!(http.get_with("/plans", &as_marie).status, 200);
    }
    assert_eq!(logins(), before, "no new session per cookieless request");
    assert_eq!(http.get("/login", None).header("location"), "/", "no password in proxy mode");
    assert_eq!(http.post("/login", None, &[("username", RSSI.0), ("password", RSSI.1)]).status, 404);
    // Not from the trusted proxy: the header is not believed.
    let direct = Http::with(&base, Some("127.0.0.2".parse().unwrap()), None);
    assert_eq!(direct.get_with("/plans/1", &as_marie).status, 403);
    // The helpdesk through the proxy decides nothing; the RSSI does, named with the client's address.
    let helpdesk = http.get_with("/plans/1", &[("x-remote-user", "accueil")]);
    let refused = http.post_with("/plans/1/approve", &[("x-remote-user", "accueil"), ("cookie", helpdesk.cookie().as_str())], &[("csrf", helpdesk.csrf().as_str())]);
    assert_eq!(refused.status, 403);
    let headers = [as_marie[0], as_marie[1], ("cookie", cookie.as_str())];
    let approved = http.post_with("/plans/1/approve", &headers, &[("csrf", page.csrf().as_str()), ("comment", "via le SSO")]);
    assert_eq!(approved.status, 303, "{}", approved.body);
    assert_eq!(plan_status(&sb, "1")["decisions"][0]["by"], "console:marie (rssi) from 198.18.1.2");
}

#[test]
fn over_tls_the_session_cookie_is_secure_and_bound_to_the_host() {
    let port = free_port();
    let ca = util::annuaire_server::Ca::new("rocsync test console CA");
    let leaf = ca.leaf("127.0.0.1", -1, 30);
    let sb = sandbox("review", port, "tls_cert = \"console.pem\"\ntls_key = \"console.key\"\n");
    std::fs::write(sb.path("console.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(sb.path("console.key"), &leaf.key_pem).unwrap();
    accounts(&sb);
    let daemon = Daemon::start(&sb);
    assert!(daemon.log().contains(&format!("Review console on https://127.0.0.1:{port}/")), "{}", daemon.log());
    let https = Http::with(&format!("https://127.0.0.1:{port}"), None, Some(ca.pem.as_str()));
    let reply = https.post("/login", None, &[("username", RSSI.0), ("password", RSSI.1)]);
    assert_eq!(reply.status, 303, "{}", reply.body);
    let set = reply.set_cookie();
    assert!(set.starts_with("__Host-rocsync_session=") && set.contains("; Secure") && set.contains("HttpOnly"), "{set}");
    assert_eq!(https.get("/", Some(reply.cookie().as_str())).status, 200);
}

#[test]
fn check_config_refuses_a_console_beyond_loopback_without_tls() {
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\n[console]\nenabled = true\nlisten = \"0.0.0.0:9443\"\n");
    sb.set_answer("urls-v1.json");
    let out = sb.run(&["check-config"]);
    assert!(!out.status.success());
    let err = util::stderr(&out);
    assert!(err.contains("console.tls_cert") && err.contains("0.0.0.0:9443"), "{err}");
}

#[test]
fn the_review_mail_links_to_the_plan_in_the_console() {
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"review\"\n\
         [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
         [alerts.recipients]\nrssi = [\"rssi@hopital.test\"]\n\
         [console]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://rocsync.hopital.test:9443/\"\n",
        smtp.addr.port()
    ));
    sb.set_answer("urls-v1.json");
    let _daemon = Daemon::start(&sb);
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    let review = mails.iter().find(|m| m.subject() == "[rocsync] Plan 1 à valider").unwrap_or_else(|| panic!("{mails:?}"));
    let body = review.body();
    assert!(body.contains("Relire et approuver : https://rocsync.hopital.test:9443/plans/1"), "{body}");
    assert!(body.contains("Approuver : rocsync approve 1 --by NOM"), "the commands stay: {body}");
}

#[test]
fn user_commands_refuse_short_passwords_and_never_show_a_hash() {
    let sb = sandbox("review", free_port(), "");
    let short = sb.cmd().args(["user", "add", "marie", "--role", "rssi", "--password-stdin"]).write_stdin("s3cret!\n").output().unwrap();
    assert!(!short.status.success());
    let err = util::stderr(&short);
    assert!(err.contains("at least 12") && !err.contains("s3cret"), "{err}");
    accounts(&sb);
    let again = sb.cmd().args(["user", "add", "MARIE", "--role", "helpdesk", "--password-stdin"]).write_stdin("another long phrase\n").output().unwrap();
    assert!(!again.status.success() && util::stderr(&again).contains("already an account marie"), "{}", util::stderr(&again));
    let bad = sb.run(&["user", "add", "marie martin", "--role", "rssi", "--password-stdin"]);
    assert!(!bad.status.success() && util::stderr(&bad).contains("not an account name"), "{}", util::stderr(&bad));
    let list = sb.ok(&["user", "list"]);
    assert!(list.lines().any(|l| l.starts_with("marie") && l.contains("rssi")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("accueil") && l.contains("helpdesk")), "{list}");
    let json = sb.ok(&["user", "list", "--json"]);
    assert!(!json.contains("argon2") && !json.contains("hash") && !json.contains(RSSI.1), "{json}");
    assert!(!sb.run(&["user", "remove", "nobody"]).status.success());
}

#[test]
fn the_helpdesk_finds_an_amc_by_number_or_name_with_its_state_hosts_and_what_waits() {
    let port = free_port();
    let sb = sandbox("hybrid", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    let cookie = http.login(HELPDESK);
    let found = http.get("/amc?q=123456789", Some(cookie.as_str()));
    assert_eq!(found.status, 200);
    for text in ["MUTUELLE EXEMPLE (123456789)", "dans le cercle de confiance", "Ouverte : ", "idb.roc.mutuelle-exemple.test", "tcp/8443"] {
        assert!(found.body.contains(text), "{text}: {}", found.body);
    }
    assert!(found.body.contains("<dt>En vigueur depuis</dt><dd>20"), "in force since when: {}", found.body);
    // A name that several AMCs share: the list; one that only one has: its page.
    let many = http.get("/amc?q=mutuelle", Some(cookie.as_str()));
    for name in ["MUTUELLE EXEMPLE", "MUTUELLE MIROIR", "MUTUELLE DU BOCAGE"] {
        assert!(many.body.contains(name), "{name}: {}", many.body);
    }
    let mirror = http.get("/amc?q=miroir", Some(cookie.as_str()));
    assert!(mirror.body.contains("production sous surveillance") && mirror.body.contains("Fermée"), "{}", mirror.body);
    assert!(mirror.body.contains("idb.mutuelle-miroir.test") && mirror.body.contains("listé, non autorisé"), "{}", mirror.body);
    // Leading zeros do not matter in a number.
    assert!(http.get("/amc?q=432109876", Some(cookie.as_str())).body.contains("MUTUELLE DU BOCAGE (0432109876)"));
    assert!(http.get("/amc?q=999999999", Some(cookie.as_str())).body.contains("Aucune AMC ne correspond."));
}

// ---- In a real browser --------------------------------------------------------------------

/// `chromedriver --port=PORT`, in a process group of its own with the browsers it starts;
/// the whole group is killed when dropped.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt as _;
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let driver = Chromedriver { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver does not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

/// A headless chromium session (Debian's `chromium`).
async fn browser(driver: &Chromedriver) -> Client {
    let mut options = serde_json::json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
    });
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = serde_json::Value::from("/usr/bin/chromium");
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".to_owned(), options);
    let mut builder = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(capabilities);
    builder.connect(&format!("http://127.0.0.1:{}", driver.port)).await.expect("a headless chromium session")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("console-screenshots")
}

/// Saves a screenshot of the page as `target/console-screenshots/NAME.png`.
async fn shot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::create_dir_all(screenshots()).unwrap();
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    path
}

async fn path_of(client: &Client) -> String {
    client.current_url().await.map(|u| u.path().to_owned()).unwrap_or_default()
}

/// Waits until the browser shows `path`.
async fn wait_path(client: &Client, path: &str) {
    let start = Instant::now();
    while path_of(client).await != path {
        assert!(start.elapsed() < Duration::from_secs(10), "still on {} instead of {path}", path_of(client).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_in(client: &Client, (name, password): (&str, &str)) {
    let user = client.find(Locator::Id("username")).await.unwrap();
    user.clear().await.unwrap();
    user.send_keys(name).await.unwrap();
    client.find(Locator::Id("password")).await.unwrap().send_keys(password).await.unwrap();
    client.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
}

async fn text_of(client: &Client, id: &str) -> String {
    client.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

#[test]
fn in_a_browser_the_rssi_reads_the_plan_by_amc_approves_it_and_sees_it_applied() {
    if !util::have("chromedriver", false) {
        return;
    }
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let driver = Chromedriver::start();
    let base = format!("http://127.0.0.1:{port}");
    let (dashboard, plan, took) = runtime().block_on(async {
        let client = browser(&driver).await;
        client.goto(&format!("{base}/plans/1")).await.unwrap();
        wait_path(&client, "/login").await;
        shot(&client, "login").await;
        sign_in(&client, RSSI).await;
        wait_path(&client, "/").await;
        let dashboard = shot(&client, "dashboard").await;
        client.find(Locator::Css("a[href='/plans/1']")).await.unwrap().click().await.unwrap();
        wait_path(&client, "/plans/1").await;
        assert_eq!(text_of(&client, "plan-status").await, "en attente d'approbation");
        let groups: Vec<String> = {
            let mut titles = Vec::new();
            for h in client.find_all(Locator::Css("section.group h3")).await.unwrap() {
                titles.push(h.text().await.unwrap());
            }
            titles
        };
        assert!(groups.iter().any(|g| g == "MUTUELLE EXEMPLE (123456789)"), "{groups:?}");
        let source = client.source().await.unwrap();
        assert!(source.contains("idb.roc.mutuelle-exemple.test"), "{source}");
        let plan = shot(&client, "plan").await;
        client.find(Locator::Id("comment-approve")).await.unwrap().send_keys("Vérifié avec la liste de l'annuaire").await.unwrap();
        assert!(!sb.path("out/hosts.txt").exists(), "nothing in force before the click");
        let started = Instant::now();
        client.find(Locator::Id("approve")).await.unwrap().click().await.unwrap();
        while !sb.path("out/hosts.txt").exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "not applied 10 s after the click");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed();
        wait_path(&client, "/plans/1").await;
        let start = Instant::now();
        while text_of(&client, "plan-status").await != "appliqué" {
            assert!(start.elapsed() < Duration::from_secs(10), "the page never says applied");
            client.refresh().await.unwrap();
        }
        assert!(client.find_all(Locator::Id("approve")).await.unwrap().is_empty(), "no decision on an applied plan");
        shot(&client, "plan-applied").await;
        for (path, name) in [("/plans", "plans"), ("/amc?q=123456789", "amc"), ("/notifications", "notifications"), ("/alerts", "alerts"), ("/audit", "audit")] {
            client.goto(&format!("{base}{path}")).await.unwrap();
            shot(&client, name).await;
        }
        assert!(client.source().await.unwrap().contains("console:marie (rssi) from 127.0.0.1"), "the audit page names the RSSI");
        client.close().await.unwrap();
        (dashboard, plan, took)
    });
    eprintln!("console: from the RSSI's click on Approuver to the export in force: {took:?}");
    assert!(sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test"));
    let audit = sb.ok(&["audit"]);
    let approved = audit.lines().find(|l| l.contains("plan.approved")).unwrap_or_else(|| panic!("{audit}"));
    assert!(approved.contains("console:marie (rssi) from 127.0.0.1") && approved.contains("Vérifié avec la liste"), "{approved}");
    if std::env::var("ROCSYNC_SAVE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&dashboard, docs.join("console-dashboard.png")).unwrap();
        std::fs::copy(&plan, docs.join("console-plan.png")).unwrap();
    }
}

#[test]
fn in_a_browser_a_wrong_password_shows_the_message_and_an_idle_session_goes_back_to_the_login() {
    if !util::have("chromedriver", false) {
        return;
    }
    let port = free_port();
    let sb = sandbox("review", port, "session_idle = \"5s\"\n");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let driver = Chromedriver::start();
    let base = format!("http://127.0.0.1:{port}");
    runtime().block_on(async {
        let client = browser(&driver).await;
        client.goto(&format!("{base}/login")).await.unwrap();
        sign_in(&client, (RSSI.0, "pas le bon mot de passe")).await;
        let message = client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("login-error")).await.unwrap();
        assert_eq!(message.text().await.unwrap(), "Identifiant ou mot de passe incorrect.");
        assert_eq!(path_of(&client).await, "/login");
        shot(&client, "login-failed").await;
        sign_in(&client, RSSI).await;
        wait_path(&client, "/").await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        client.goto(&format!("{base}/plans/1")).await.unwrap();
        wait_path(&client, "/login").await;
        assert!(client.find_all(Locator::Id("approve")).await.unwrap().is_empty());
        shot(&client, "session-expired").await;
        client.close().await.unwrap();
    });
}

#[test]
fn in_a_browser_the_helpdesk_signs_in_by_keyboard_finds_no_button_and_a_forged_approval_is_refused() {
    if !util::have("chromedriver", false) {
        return;
    }
    let port = free_port();
    let sb = sandbox("review", port, "");
    accounts(&sb);
    let _daemon = Daemon::start(&sb);
    let driver = Chromedriver::start();
    let base = format!("http://127.0.0.1:{port}");
    runtime().block_on(async {
        let client = browser(&driver).await;
        client.goto(&format!("{base}/login")).await.unwrap();
        // Tab from the name to the password, Enter to sign in: no mouse needed.
        client.find(Locator::Id("username")).await.unwrap().send_keys(&format!("{}\u{E004}", HELPDESK.0)).await.unwrap();
        let focused = client.active_element().await.unwrap();
        assert_eq!(focused.attr("id").await.unwrap().as_deref(), Some("password"));
        focused.send_keys(&format!("{}\u{E007}", HELPDESK.1)).await.unwrap();
        wait_path(&client, "/").await;
        client.goto(&format!("{base}/plans/1")).await.unwrap();
        assert!(client.source().await.unwrap().contains("idb.roc.mutuelle-exemple.test"));
        assert!(client.find_all(Locator::Css("form[action='/plans/1/approve'], #approve, #reject")).await.unwrap().is_empty());
        assert!(!text_of(&client, "read-only").await.is_empty());
        shot(&client, "helpdesk-plan").await;
        // The AMC search, typed and sent with Enter.
        client.goto(&format!("{base}/amc")).await.unwrap();
        client.find(Locator::Id("q")).await.unwrap().send_keys("123456789\u{E007}").await.unwrap();
        client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("amc-opening")).await.unwrap();
        assert!(text_of(&client, "amc-opening").await.starts_with("Fermée"), "nothing in force yet in review mode");
        assert!(client.source().await.unwrap().contains("idb.roc.mutuelle-exemple.test"), "its pending opening");
        shot(&client, "helpdesk-amc").await;
        // What the browser holds, posted by hand: refused all the same.
        let session = client.get_named_cookie("rocsync_session").await.unwrap();
        client.goto(&format!("{base}/plans/1")).await.unwrap();
        let csrf = client.find(Locator::Css("form.logout input[name='csrf']")).await.unwrap().attr("value").await.unwrap().unwrap();
        let forged = fetch(
            http_client(None, None)
                .post(format!("{base}/plans/1/approve"))
                .header("cookie", format!("rocsync_session={}", session.value()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[("csrf", csrf.as_str()), ("comment", "forged")])),
        )
        .await;
        assert_eq!(forged.status, 403, "{}", forged.body);
        client.close().await.unwrap();
    });
    assert_eq!(plan_status(&sb, "1")["status"], "pending");
}
